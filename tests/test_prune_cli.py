"""`python -m prune`'s arguments are the run settings' fields: one default for each, the
dataclass's, and the call the command makes into the library is PruneSettings of the flags."""

from __future__ import annotations

import dataclasses

import pytest

import prune.train
from prune import cli
from prune.settings import PruneSettings, default

# Every flag the command had before its arguments were derived from the settings.
FLAGS_OF_BEFORE = [
    "--model", "--data", "--predictor", "--budget-ms", "--fps", "--budget-fraction", "--input-size", "--method",
    "--epochs", "--search-steps", "--finetune-steps", "--batch-size", "--outer-batch-size", "--outer-every",
    "--unit", "--lr", "--weight-decay", "--search-weight-decay", "--outer-lr", "--budget-signal", "--hard-mask",
    "--implicit-gradient", "--neumann-steps", "--neumann-alpha", "--weights", "--pretrained-backbone", "--device",
    "--target", "--seed", "--classes", "--train-scenes", "--val-scenes", "--shared-training", "--no-progress",
    "--output", "--verbose",
]


def test_every_setting_is_a_flag_or_left_out_on_purpose():
    fields = [f.name for f in dataclasses.fields(PruneSettings)]
    assert sorted(fields) == sorted([*cli.FLAGS, *cli.NOT_FLAGS])


def test_the_flags_of_before_are_all_there():
    options = {o for action in cli.build_parser()._actions for o in action.option_strings}
    assert set(FLAGS_OF_BEFORE) <= options


def test_the_command_line_defaults_are_the_settings_defaults():
    args = cli.build_parser().parse_args(["-o", "out"])
    assert {name: getattr(args, name) for name in cli.FLAGS} == {name: default(name) for name in cli.FLAGS}


def test_the_command_passes_its_flags_as_settings(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(prune.train, "run_pruning", lambda settings, output, **kw: calls.append((settings, output)))
    assert cli.main(["--budget-fraction", "0.5", "--classes", "5", "--outer-every", "2", "--pretrained-backbone",
                     "--search-weight-decay", "1e-3", "--unit", "16", "-o", str(tmp_path)]) == 0
    assert calls == [(PruneSettings(budget_fraction=0.5, num_classes=5, outer_every=2, pretrained_backbone=True,
                                    search_weight_decay=1e-3, unit=16), str(tmp_path))]


@pytest.mark.parametrize("argv", [["--budget-ms", "1", "--fps", "30"], ["--classes", "0"], ["--search-steps", "-1"]])
def test_bad_flags_are_refused_by_the_parser(argv):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args([*argv, "-o", "out"])
