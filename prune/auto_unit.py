"""`--unit auto` (and `python -m latency_model alignment`): the channel unit of a model's groups, from
the device's latency predictor.

The model is traced once with one-channel units, so that its description prices every width;
its channel groups (not attention heads, whose unit is one head) are swept by
`latency_model.alignment.choose_alignment`. The predictor can only tell steps it has seen:
collect its layers off the usual grid (`python -m latency_model collect --unit 1`).
"""

from __future__ import annotations

from latency_model.alignment import AlignmentChoice, choose_alignment
from latency_model.budget import LatencyTableSource
from prune.describe import build_priced_groups, check_describable, describe_network, prunable_groups
from prune.models import create_model


def model_alignment(model_name: str, input_size: int, predictor: LatencyTableSource,
                    num_classes: int = 8) -> AlignmentChoice:
    """The channel step that pays off for `model_name` at `input_size` under `predictor`."""
    model = create_model(model_name, num_classes=num_classes)
    check_describable(model, model_name)
    group_set = build_priced_groups(model, input_size, unit=1)
    description = describe_network(model, group_set, input_size)
    channel_groups = [g.name for g in prunable_groups(group_set, description) if g.kind != "heads"]
    return choose_alignment(description, predictor, channel_groups)
