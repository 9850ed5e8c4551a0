"""efficientvit-seg-b0 end to end through the pruner: groups, description, masked == shrunk, a tiny run."""

from __future__ import annotations

import torch

from latency_model.features import feature_dict
from latency_model.layers import LiteMLA, MBConv
from prune.describe import build_priced_groups, describe_network, prunable_groups
from prune.models import create_model
from prune.selection import kept_counts
from prune.settings import PruneSettings
from prune.shrink import shrink
from prune.train import run_pruning
from helpers.random_gates import masked_output_and_plan, randomise_norms

SIZE = 64


def _params(configs) -> int:
    return sum(feature_dict(c)["params"] for c in configs)


def test_efficientvit_seg_b0_masked_shrunk_and_described():
    torch.manual_seed(0)
    model = randomise_norms(create_model("efficientvit-seg-b0", num_classes=5)).eval()
    groups = build_priced_groups(model, SIZE, unit=8)
    description = describe_network(model, groups, SIZE)
    # Every traced group is priced: 6 stage widths/hiddens x 2 conv stages, 4 ViT-stage widths and hiddens,
    # 4 LiteMLA head groups, 6 ViT MBConv hiddens, the tied decoder width and the fuse width.
    assert [g.name for g in description.groups] == list(groups.names) and len(groups.names) == 20
    assert groups.fixed == {"decoder.classifier": "reaches the model output",
                            "backbone.stem_in_conv.conv": "a single unit (width 8, unit 8)"}
    configs = {slot.label: cfg for slot, cfg in zip(description.slots, description.full())}
    assert configs["backbone.stages_3.blocks.1.context_module"] == LiteMLA(2, 2, 128, 128, 8, 16)
    assert configs["backbone.stages_2.blocks.0"] == MBConv(8, 8, 32, 128, 64, stride=2, fewer_norm=True,
                                                           residual=False)
    assert _params(description.full()) == sum(p.numel() for p in model.parameters())

    image = torch.randn(2, 3, SIZE, SIZE)
    masked, plan = masked_output_and_plan(model, groups, description, image)
    shrunk = shrink(groups, plan)
    with torch.no_grad():
        assert torch.allclose(shrunk(image), masked, atol=1e-5)
    kept = kept_counts(prunable_groups(groups, description), plan)
    assert kept != description.full_kept()
    assert _params(description.config_at(kept)) == sum(p.numel() for p in shrunk.parameters())
    again = describe_network(shrunk, build_priced_groups(shrunk, SIZE, unit=8), SIZE)
    assert again.full() == description.config_at(kept)


def test_a_tiny_efficientvit_run_meets_its_budget(tmp_path):
    settings = PruneSettings(model="efficientvit-seg-b0", budget_ms=0.03, input_size=SIZE, epochs=1, search_steps=3,
                             finetune_steps=1, batch_size=2, train_scenes=4, val_scenes=2, num_classes=4)
    result = run_pruning(settings, tmp_path / "run", progress=False)
    report = result.report
    assert report["predicted_ms"] <= report["budget_ms"] < report["unpruned_predicted_ms"]
    assert any(name.endswith("context_module.main") for name in report["kept_counts"])
