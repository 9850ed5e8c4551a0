"""Pruned variants of a named model: random ones for `python -m latency_model validate`, and the
kept counts of a finished pruning run for `python -m latency_model collect --pruned`.

A composition of both packages, so it lives in `prune` (the top of the dependency chain, which
may import `latency_model` freely); `latency_model`'s command line imports it inside its
`validate` command only, and `latency_model`'s library knows layers, not models (ARCHITECTURE).

Each variant is a kept-count configuration drawn uniformly on the pruning grid
(`latency_model.sampling.sample_kept`, the unpruned model not included), made real by keeping
the FIRST k units of every described group (channels 0..k-1 of a channel group, heads 0..k-1 of
an attention), shrunk to a dense model and exported to ONNX. Which units are kept does not change
the latency, only how many (the weights are random anyway), so the first k make a variant
reproducible from its kept counts alone. Groups the description does not price keep all units,
as in `python -m prune`. The variant's layer configs are `description.config_at(kept)`, what the
pruner's budget asks the predictor about (`tests/test_prune_describe.py` checks that the shrunk
model describes to exactly these).

Files: `variants/vNN-HASH.onnx` in the output folder, HASH naming the layer configs, written
atomically, and reused by a rerun (an interrupted run re-exports only what is missing).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from tqdm import tqdm

import torch

from latency_model.description import ModelDescription
from latency_model.sampling import sample_kept
from latency_model.validate import Variant
from prune.describe import build_priced_groups, describe_model, prunable_groups
from prune.export import export_onnx
from prune.models import create_model
from prune.shrink import shrink
from runner.errors import EdgesegError

log = logging.getLogger(__name__)

VARIANTS_DIR = "variants"


def first_units_plan(groups: Sequence[Any], kept: Mapping[str, int]) -> dict[str, list[int]]:
    """The pruning plan keeping the first units of each prune group: `kept[name]` heads of a
    heads group, `kept[name] / unit` units of a channel group (counts are on the unit grid)."""
    plan = {}
    for group in groups:
        count = kept[group.name]
        units = count if group.kind == "heads" else count // group.unit
        off_grid = group.kind != "heads" and count % group.unit != 0
        if off_grid or not 1 <= units <= group.num_units:
            raise EdgesegError(
                f"Group {group.name} cannot keep {count} of its {group.width} channels in units "
                f"of {group.unit}.", "Draw kept counts on the description's grid.")
        plan[group.name] = list(range(units))
    return plan


def variant_file(out_dir: Path, name: str, description: ModelDescription,
                 kept: Mapping[str, int]) -> Path:
    """Where a variant's ONNX lives: its name and a hash of its layer configs."""
    keys = "\n".join(c.key for c in description.config_at(kept))
    digest = hashlib.sha256(keys.encode()).hexdigest()[:10]
    return Path(out_dir) / VARIANTS_DIR / f"{name}-{digest}.onnx"


def build_variants(model: str, input_size: int, count: int, seed: int, out_dir: Path,
                   unit: int = 8, num_classes: int = 150, progress: bool = True) -> list[Variant]:
    """`count` random pruned variants of registry model `model` at `input_size` px, exported to
    ONNX under `out_dir/variants` (existing files are reused)."""
    description = describe_model(model, input_size, unit=unit, num_classes=num_classes)
    variants = []
    kept_list = sample_kept(description, count, seed, include_ends=False)
    for index, kept in enumerate(tqdm(kept_list, desc="variants", unit="model",
                                      disable=not progress)):
        name = f"v{index:02d}"
        path = variant_file(out_dir, name, description, kept)
        if not path.exists():
            torch.manual_seed(seed + index)  # the weights do not change the latency; fixed anyway
            network = create_model(model, num_classes=num_classes)
            group_set = build_priced_groups(network, input_size, unit)
            shrink(group_set, first_units_plan(prunable_groups(group_set, description), kept))
            staging = path.with_name(path.name + ".tmp")
            export_onnx(network, input_size, staging)
            os.replace(staging, path)
            log.info("%s: exported %s", name, path)
        variants.append(Variant(name, tuple(description.config_at(kept)), path, dict(kept)))
    return variants


def pruned_kept(folder: Path, description: ModelDescription, model: str, input_size: int,
                num_classes: int) -> dict[str, int]:
    """The kept counts of the network `python -m prune` wrote to `folder` (its pruning.json),
    checked against the model, input size and class count being measured and against the
    description's groups and grid: the layers a collection measures for it are those its budget
    priced."""
    path = Path(folder) / "pruning.json"
    try:
        report = json.loads(path.read_text())
        kept = {str(k): int(v) for k, v in report["kept_counts"].items()}
    except FileNotFoundError:
        raise EdgesegError(f"{path} does not exist.", "Pass the output folder of a finished `python -m prune` "
                           "run to --pruned.") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise EdgesegError(f"{path} is not a pruning report ({err}).",
                           "Pass the output folder of a finished `python -m prune` run to --pruned.") from None
    ours = {"model": model, "input_size": input_size, "num_classes": num_classes}
    differ = {k: report.get(k) for k, v in ours.items() if report.get(k) is not None and report.get(k) != v}
    if differ:
        raise EdgesegError(f"{path} is a run of {differ}, not of {ours}.",
                           "Collect with that run's --model, --input-size and --classes.")
    described = {g.name for g in description.groups}
    return description.resolve({k: v for k, v in kept.items() if k in described})
