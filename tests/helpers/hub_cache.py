"""A local Hugging Face cache holding one repository, as timm's pretrained weights would sit there."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch


def fake_hub_cache(cache: Path, repo: str, state: Mapping[str, torch.Tensor]) -> None:
    """The Hugging Face cache layout under `cache` for `repo` holding `state` as model.safetensors."""
    from safetensors.torch import save_file

    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0123abcd")
    (folder / "snapshots" / "0123abcd").mkdir(parents=True)
    save_file(dict(state), str(folder / "snapshots" / "0123abcd" / "model.safetensors"))
