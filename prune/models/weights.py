"""Weights from local files only: checkpoints the user passes (`--weights`) and timm's pretrained
backbone weights when they already sit in the local Hugging Face cache. Nothing here downloads.

A checkpoint that does not fit the model is an `EdgesegError` naming the first mismatched tensor
(in the model's own parameter order), so a user sees at once whether they passed the wrong model
name, the wrong number of classes or another run's pruned network.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from runner.errors import EdgesegError

log = logging.getLogger(__name__)

TORCH_SUFFIXES = (".pt", ".pth", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"
# Trainers wrap the state_dict under one of these keys (Lightning, timm's train.py, DeiT...).
WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")
# timm's hub repositories hold one of these files; safetensors first, as timm itself prefers.
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state_dict from a `.pt/.pth/.bin` or `.safetensors` file, unwrapping trainer wrappers."""
    path = Path(path)
    if not path.is_file():
        raise EdgesegError(f"weights file {path} does not exist.", "Pass --weights with the path of a local checkpoint.")
    try:
        if path.suffix == SAFETENSORS_SUFFIX:
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        elif path.suffix in TORCH_SUFFIXES:
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise EdgesegError(
                f"weights file {path} has suffix {path.suffix!r}, which edgeseg cannot read.",
                f"Pass a torch state_dict ({', '.join(TORCH_SUFFIXES)}) or a {SAFETENSORS_SUFFIX} file.",
            )
    except EdgesegError:
        raise
    except Exception as err:  # torch/safetensors raise many types for a corrupt or foreign file
        raise EdgesegError(
            f"weights file {path} could not be read ({type(err).__name__}: {err}).",
            "Pass a checkpoint saved with torch.save(model.state_dict()) or safetensors.",
        ) from err
    while isinstance(state, Mapping):
        inner = next((state[k] for k in WRAPPER_KEYS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EdgesegError(
            f"weights file {path} holds no state_dict of tensors.",
            "Pass a checkpoint saved with torch.save(model.state_dict()) or safetensors.",
        )
    state = dict(state)
    if state and all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def first_mismatch(model: nn.Module, state: Mapping[str, torch.Tensor]) -> str | None:
    """Describe the first tensor where `state` does not fit `model`, or None when it fits."""
    expected = model.state_dict()
    for name, tensor in expected.items():
        if name not in state:
            return f"tensor {name!r} (shape {list(tensor.shape)}) is missing from the checkpoint"
        if state[name].shape != tensor.shape:
            return (
                f"tensor {name!r} has shape {list(state[name].shape)} in the checkpoint "
                f"but {list(tensor.shape)} in the model"
            )
    unexpected = next((name for name in state if name not in expected), None)
    if unexpected is not None:
        return f"tensor {unexpected!r} in the checkpoint is not in the model"
    return None


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local checkpoint into `model`; it must fit exactly (names and shapes)."""
    state = load_checkpoint(path)
    mismatch = first_mismatch(model, state)
    if mismatch is not None:
        raise EdgesegError(
            f"weights file {path} does not fit the model: {mismatch}.",
            "Pass the checkpoint made for this model name, class count and pruning "
            "(or drop --weights to start from random weights).",
        )
    model.load_state_dict(state)
    log.info("loaded %d tensors from %s", len(state), path)


def save_weights(model: nn.Module, path: str | Path) -> Path:
    """Write `model`'s state_dict as `.safetensors` or a torch file, chosen by the suffix."""
    path = Path(path)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == SAFETENSORS_SUFFIX:
        from safetensors.torch import save_file

        save_file(state, str(path))
    elif path.suffix in TORCH_SUFFIXES:
        torch.save(state, path)
    else:
        raise EdgesegError(
            f"cannot save weights to {path}: unknown suffix {path.suffix!r}.",
            f"Use a {SAFETENSORS_SUFFIX} or {TORCH_SUFFIXES[0]} file name.",
        )
    return path


def cached_backbone_file(backbone: str, cache_dir: str | Path | None = None) -> Path:
    """The file of timm's pretrained weights for `backbone` in the local Hugging Face cache.

    Only looks in the cache (`HF_HUB_CACHE`, or `cache_dir`); raises when they are not there,
    because edgeseg never downloads at run time.
    """
    import timm
    from huggingface_hub import try_to_load_from_cache

    hub_id = timm.models.get_pretrained_cfg(backbone).hf_hub_id
    if not hub_id:
        raise EdgesegError(
            f"timm has no Hugging Face hub weights for {backbone}.", "Pass --weights with a local checkpoint file."
        )
    repo, _, revision = hub_id.partition("@")
    for filename in HF_WEIGHT_FILES:
        found = try_to_load_from_cache(repo, filename, cache_dir=cache_dir, revision=revision or None)
        if isinstance(found, str):
            return Path(found)
    where = cache_dir or "the Hugging Face cache (HF_HUB_CACHE)"
    raise EdgesegError(
        f"timm's pretrained weights for {backbone} ({hub_id}) are not in {where}, and edgeseg never downloads.",
        "Pass --weights with a local checkpoint file, or copy the hub repository into the cache "
        "on a machine with network access.",
    )
