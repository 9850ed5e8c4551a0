"""The model factory: SegFormer-style segmentation networks by name, as timm names its models.

    model = create_model("segformer-b0", num_classes=150, weights="ckpt.safetensors")

Every model returns logits at 1/4 of the input resolution (see prune/models/segformer.py).
The registry is the literal dict below: adding a model is one line here, no import side effects.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.errors import EdgesegError

from prune.models.segformer import OUTPUT_STRIDE, SegmentationModel, build_segmentation_model
from prune.models.weights import cached_backbone_file, load_weights, save_weights


@dataclass(frozen=True)
class ModelSpec:
    """What a registry name means: a timm backbone and the decoder's default width."""

    backbone: str
    embed_dim: int


MODELS: dict[str, ModelSpec] = {
    # SegFormer-B0/B1: pvt_v2_b0/b1 are the MiT-B0/B1 design; decoder widths as in the paper.
    "segformer-b0": ModelSpec("pvt_v2_b0", 256),
    "segformer-b1": ModelSpec("pvt_v2_b1", 256),
    # EfficientViT (MIT) backbones with the same all-MLP decoder (not EfficientViT-Seg's own head);
    # the decoder width follows the backbone's last stage (128 for b0, 256 for b1).
    "efficientvit-seg-b0": ModelSpec("efficientvit_b0", 128),
    "efficientvit-seg-b1": ModelSpec("efficientvit_b1", 256),
}


def list_models() -> list[str]:
    """Names `create_model` accepts."""
    return sorted(MODELS)


def create_model(
    name: str, num_classes: int = 150, weights: str | Path | None = None, **kwargs: Any
) -> SegmentationModel:
    """Build a registry model, optionally loading a local checkpoint that must fit it exactly.

    kwargs with the value None are dropped (so command-line defaults of None keep the model's
    defaults). Decoder kwargs: `embed_dim`, `fuse_dim`, `dropout`. `pretrained_backbone=True`
    starts the backbone from timm's ImageNet weights, only if they are in the local Hugging Face
    cache. Any other kwarg goes to `timm.create_model` (e.g. `drop_path_rate`).
    """
    if name not in MODELS:
        raise EdgesegError(f"unknown model {name!r}.", f"Use one of: {', '.join(list_models())}.")
    if num_classes < 1:
        raise EdgesegError(
            f"a model needs at least one class, not {num_classes}.",
            "Pass num_classes >= 1 (it normally comes from the data set).",
        )
    spec = MODELS[name]
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    kwargs.setdefault("embed_dim", spec.embed_dim)
    pretrained_file = cached_backbone_file(spec.backbone) if kwargs.pop("pretrained_backbone", False) else None
    model = build_segmentation_model(spec.backbone, num_classes, pretrained_file=pretrained_file, **kwargs)
    if weights is not None:
        load_weights(model, weights)
    return model


__all__ = [
    "MODELS",
    "OUTPUT_STRIDE",
    "ModelSpec",
    "SegmentationModel",
    "create_model",
    "list_models",
    "load_weights",
    "save_weights",
]
