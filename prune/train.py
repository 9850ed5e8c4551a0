"""The whole pruning run: search (or plain training), shrink, fine-tune, evaluate, export.

    result = run_pruning(PruneSettings(model="segformer-b0", budget_ms=0.1), "out/")

1. Build the model, trace its groups (`prune.groups`), describe it for the latency model
   (`prune.describe`) and fill the budget's tables from the predictor (or the FLOPs table). A
   budget under the smallest network the grid allows is an error naming that latency.
2. Search, `epochs` x `search_steps` steps. bilevel: `prune.search.BilevelSearch` steps
   (weights on the inner split every step, gate scores on an `outer_batch_size` batch of the
   outer split every `outer_every` steps, under the latency penalty; see there). Baselines and
   `dense`: plain training of the unpruned network, the same steps, which a `SharedTraining`
   folder lets runs of other baselines and budgets share.
   With `reuse_search`, no search: an earlier search's end state (`search.pt`, which every
   bi-level run writes) is projected onto this budget (`prune.reuse_search`).
3. Choose the plan: the gates' hard decision, then `fit_to_budget` by gate score if it is still
   over (counted in `pruning.json` as `dropped_to_fit`), or `fill_to_budget` by gate score when
   it fell under (`added_to_fit`); uniform scaling or L1 magnitude for the
   baselines; every unit for `dense`. Shrink to a dense network.
4. Fine-tune it `epochs` x `finetune_steps` steps on the whole training split, the learning rate
   decayed to zero (cosine); mIoU on val.
5. Write `model.onnx`, `pruning.json` and `curves.png` (and, for `dense`, `weights.safetensors`:
   the trained unpruned network, a `--weights` start for pruning it).

A checkpoint is written after every epoch; a rerun with the same settings and output folder
resumes from it (other settings: an error, nothing overwritten).

This file is the orchestration; each job has its own module: the budget and its predictor
checks (`prune.run_budget`), the data (`prune.run_data`), evaluation (`prune.evaluation`), the
history and checkpoints (`prune.run_state`), progress and output files (`prune.run_report`), and
data parallelism (`prune.parallel`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from latency_model.budget import LatencyBudget
from prune.checkpoint import load_checkpoint
from prune.describe import prunable_groups
from prune.evaluation import evaluate_miou
from prune.groups import GroupSet, Plan, PruneGroup
from prune.models import create_model
from prune.parallel import barrier, check_same_plan, keep_rank0_buffers, rank_and_world
from prune.projection import project
from prune.reuse_search import load_search, save_search
from prune.run_budget import build_budget, check_feasible, check_predictor_fits, deployment, load_cost
from prune.run_data import RunData
from prune.run_report import ONNX, REPORT, build_report, format_ms, progress_bar, show_step, write_outputs
from prune.run_state import CHECKPOINT, RunState
from prune.search import BilevelSearch
from prune.selection import full_plan, magnitude_plan, predicted_ms, uniform_plan
from prune.settings import PruneSettings, as_they_ran
from prune.shared_training import SharedTraining
from prune.shrink import shrink
from prune.steps import plain_step, sgd
from runner.errors import EdgesegError

# what other modules and benches import from here
__all__ = ["PruneResult", "run_pruning", "build_budget", "check_feasible", "check_predictor_fits", "deployment",
           "load_cost", "prunable_groups", "evaluate_miou"]

log = logging.getLogger(__name__)

EpochHook = Callable[[str, int], None]


@dataclass(frozen=True)
class PruneResult:
    """Where the run wrote its files and what `pruning.json` says."""

    output_dir: Path
    report: dict[str, Any]

    @property
    def onnx(self) -> Path:
        return self.output_dir / ONNX


def run_pruning(settings: PruneSettings, output_dir: str | os.PathLike, *, progress: bool = True,
                on_epoch_end: EpochHook | None = None, shared_training: SharedTraining | None = None) -> PruneResult:
    """Run (or resume, or return the finished) pruning run of `settings` in `output_dir`.

    `on_epoch_end(phase, epoch)` is called after each epoch's checkpoint is written. With
    `shared_training`, a baseline or dense run loads its plain training from there when another
    run stored it, and stores it otherwise (one process only: data-parallel runs train their own)."""
    out = Path(output_dir)
    state = load_checkpoint(out / CHECKPOINT, settings.to_dict(), as_they_ran)
    if state is None and (out / REPORT).exists():
        raise EdgesegError(f"{out} holds a pruning result but no checkpoint of it.", "Choose another output folder.")
    if state is not None and state["phase"] == "done":
        return PruneResult(out, json.loads((out / REPORT).read_text()))
    if state is not None:
        log.info("resuming from %s: %s epoch %d", out / CHECKPOINT, state["phase"], state["epoch"] + 1)
    torch.manual_seed(settings.seed)
    data = RunData(settings)
    model = create_model(settings.model, num_classes=data.num_classes, weights=settings.weights,
                         pretrained_backbone=settings.pretrained_backbone)
    cost = load_cost(settings)
    group_set, budget = build_budget(settings, model, cost)
    target_ms = settings.target_ms(budget.full_latency_ms())
    if target_ms is not None:
        check_feasible(budget, target_ms)
    run = _Run(settings, target_ms, out, data, budget, prunable_groups(group_set, budget.description), state,
               progress, on_epoch_end, shared_training)
    if run.world > 1:
        log.info("data parallel over %d processes", run.world)
    if state is None or state["phase"] == "search":
        plan = run.search(model, group_set)
    else:
        plan = state["plan"]  # replayed on the traced, unpruned model
        model = shrink(group_set, plan)
    run.finetune(model, plan)
    return run.finish(model, plan, deployment(settings, cost))


class _Run:
    """One run's loops: search, fine-tuning and the end of each epoch; what they record is in
    `self.record` (`prune.run_state.RunState`)."""

    def __init__(self, settings: PruneSettings, target_ms: float | None, out: Path, data: RunData,
                 budget: LatencyBudget, groups: list[PruneGroup], state: dict[str, Any] | None, progress: bool,
                 on_epoch_end: EpochHook | None, shared_training: SharedTraining | None = None) -> None:
        self.settings, self.out, self.data, self.budget, self.groups = settings, out, data, budget, groups
        self.target_ms = target_ms  # None: the dense reference, no budget
        self.record = RunState(settings, out, state)
        self.progress, self.on_epoch_end = progress, on_epoch_end
        self.rank, self.world = rank_and_world()
        self.shared_training = shared_training if self.world == 1 else None

    def _end_epoch(self, phase: str, epoch: int, model: nn.Module, parts: dict[str, Any], ms: float,
                   plan: Plan | None = None) -> None:
        """Evaluate, record, checkpoint. `ms`: the predicted latency of the network at the epoch's end."""
        keep_rank0_buffers(model)
        s, miou = self.settings, self._miou(model)
        losses = [r["loss"] for r in self.record.steps if (r["phase"], r["epoch"]) == (phase, epoch)]
        summary = {"phase": phase, "epoch": epoch, "miou": miou, "loss": losses[-1] if losses else None,
                   "predicted_ms": ms}
        self.record.epochs.append(summary)
        log.info("%s epoch %d/%d: loss %.4g, mIoU %.4f, predicted %.4g ms (budget %s ms)", phase, epoch + 1,
                 s.epochs, losses[-1] if losses else float("nan"), miou, ms, format_ms(self.target_ms))
        self.record.save(phase, epoch + 1, model, parts, plan)
        if self.on_epoch_end is not None:
            self.on_epoch_end(phase, epoch)

    def _bar(self, phase: str, epoch: int, steps: int):
        return progress_bar(self.settings, phase, epoch, steps, self.progress and self.rank == 0)

    def _step_done(self, bar, phase: str, epoch: int, loss: float, ms: float) -> None:
        self.record.steps.append({"phase": phase, "epoch": epoch, "loss": loss, "predicted_ms": ms})
        show_step(bar, loss, ms, self.record.epochs)

    def search(self, model: nn.Module, group_set: GroupSet) -> Plan:
        """The search phase; shrinks `model` in place and returns the plan."""
        s, record = self.settings, self.record
        bilevel = s.method == "bilevel"
        if bilevel and s.reuse_search:
            return self._reuse_search(model, group_set)
        if bilevel:
            search = BilevelSearch(s, model, self.groups, self.budget, self.target_ms)
            parts, train, tag = search.parts, self.data.inner, 0
        else:
            optimizer = sgd(model, s.lr, s.decay("search"))
            parts, train, tag = {"optimizer": optimizer}, self.data.train, 2
        full_ms = self.budget.full_latency_ms()
        first_epoch = record.resume("search", model, parts)
        shared = not bilevel and self.shared_training is not None
        if shared and first_epoch == 0 and record.load_shared(self.shared_training, model):
            log.info("plain training loaded from %s (trained by an earlier run)", self.shared_training.path(s))
            first_epoch = s.epochs
        for epoch in range(first_epoch, s.epochs):
            batches = self.data.batches(train, tag, epoch)
            outer = self.data.batches(self.data.outer, 1, epoch, s.outer_batch_size) if bilevel else None
            bar = self._bar("search", epoch, s.search_steps)
            ms = search.hard_ms(epoch * s.search_steps) if bilevel else full_ms
            for step in bar:
                if bilevel:
                    loss, after = search.step(epoch * s.search_steps + step, next(batches), outer)
                    ms = ms if after is None else after
                else:
                    loss = plain_step(model, optimizer, next(batches))
                self._step_done(bar, "search", epoch, loss, ms)
            self._end_epoch("search", epoch, model, parts, ms)
            if shared and epoch == s.epochs - 1:
                record.save_shared(self.shared_training, model)
        if bilevel:
            plan, record.searched_ms, record.dropped_to_fit, record.added_to_fit = search.finish()
            if self.rank == 0:
                save_search(self.out, s.to_dict(), self.target_ms, model.state_dict(), search.scores(), record.steps,
                            record.epochs)
        elif s.method == "uniform":
            plan = uniform_plan(self.groups, self.budget, self.target_ms)
        elif s.method == "magnitude":
            plan = magnitude_plan(model, self.groups, self.budget, self.target_ms)
        else:
            plan = full_plan(self.groups)
        return self._shrink(group_set, model, plan)

    def _shrink(self, group_set: GroupSet, model: nn.Module, plan: Plan) -> Plan:
        check_same_plan(plan)
        shrink(group_set, plan)
        self.record.save("finetune", 0, model, {}, plan)
        return plan

    def _reuse_search(self, model: nn.Module, group_set: GroupSet) -> Plan:
        """An earlier search's weights and gate scores, projected onto this run's budget
        (`prune.reuse_search`); its steps are this run's search history."""
        s, record = self.settings, self.record
        state = load_search(s.reuse_search, s.to_dict())
        model.load_state_dict(state["model"])
        record.steps, record.epochs = list(state["steps"]), list(state["epochs"])
        plan = project(self.groups, state["scores"], self.budget, self.target_ms)
        log.info("the search of %s (budget %s ms) projected onto %s ms: predicted %.4g ms", s.reuse_search,
                 format_ms(state["target_ms"]), format_ms(self.target_ms), predicted_ms(self.budget, self.groups, plan))
        return self._shrink(group_set, model, plan)

    def finetune(self, model: nn.Module, plan: Plan) -> None:
        """Fine-tune the shrunk network with the learning rate decayed to zero (cosine): at a
        constant rate its last-epoch mIoU swung by 0.1 from epoch to epoch, more than the
        differences between methods that the figures compare."""
        s = self.settings
        optimizer = sgd(model, s.lr, s.decay("finetune"))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, s.epochs * s.finetune_steps))
        parts = {"optimizer": optimizer, "lr_schedule": schedule}
        ms = predicted_ms(self.budget, self.groups, plan)
        for epoch in range(self.record.resume("finetune", model, parts), s.epochs):
            batches = self.data.batches(self.data.train, 3, epoch)
            bar = self._bar("finetune", epoch, s.finetune_steps)
            for _ in bar:
                loss = plain_step(model, optimizer, next(batches))
                schedule.step()
                self._step_done(bar, "finetune", epoch, loss, ms)
            self._end_epoch("finetune", epoch, model, parts, ms, plan)

    def _miou(self, model: nn.Module) -> float:
        return evaluate_miou(model, self.data.val, self.data.num_classes, self.settings.batch_size)

    def finish(self, model: nn.Module, plan: Plan, deployed_on: Mapping[str, str | None]) -> PruneResult:
        s = self.settings
        report = build_report(s, self.record, self.budget, self.groups, plan, self.target_ms, self.data.num_classes,
                              deployed_on)
        if self.rank == 0:  # data parallel: one writer
            write_outputs(self.out, model, s, report, self.record.steps, self.target_ms)
            self.record.save_done()
        barrier()
        log.info("%s %s: predicted %.4g ms (budget %s ms, unpruned %.4g ms), mIoU %.4f -> %s", s.method, s.model,
                 report["predicted_ms"], format_ms(self.target_ms), report["unpruned_predicted_ms"], report["miou"],
                 self.out)
        return PruneResult(self.out, report)
