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
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from latency_model.budget import LatencyBudget, LatencyTableSource
from prune.checkpoint import load_checkpoint, save_checkpoint
from prune.data import build_dataset, inner_outer_split
from prune.describe import build_priced_groups, check_describable, describe_network, prunable_groups
from prune.export import export_onnx
from prune.flops_cost import FlopsCost
from prune.groups import GroupSet, Plan, PruneGroup
from prune.metrics import ConfusionMatrix
from prune.models import create_model, save_weights
from prune.plots import plot_curves
from prune.search import BilevelSearch
from prune.selection import full_plan, kept_counts, magnitude_plan, predicted_ms, uniform_plan
from prune.settings import DENSE, FLOPS, PruneSettings, as_they_ran
from prune.shared_training import SharedTraining
from prune.shrink import shrink
from prune.steps import plain_step, sgd
from runner.errors import EdgesegError

log = logging.getLogger(__name__)

CHECKPOINT, REPORT, ONNX, CURVES = "checkpoint.pt", "pruning.json", "model.onnx", "curves.png"
WEIGHTS = "weights.safetensors"
EpochHook = Callable[[str, int], None]


def _rank_and_world() -> tuple[int, int]:
    """(rank, world size) under torch.distributed (torchrun), else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@dataclass(frozen=True)
class PruneResult:
    """Where the run wrote its files and what `pruning.json` says."""

    output_dir: Path
    report: dict[str, Any]

    @property
    def onnx(self) -> Path:
        return self.output_dir / ONNX


def load_cost(settings: PruneSettings) -> LatencyTableSource:
    """The FLOPs table, or the predictor folder's predictor (it must fit the model and size)."""
    if settings.predictor == FLOPS:
        return FlopsCost()
    from latency_model.predictor import Predictor

    predictor = Predictor.load(settings.predictor)
    check_predictor_fits(predictor.manifest, settings)
    if settings.device is not None or settings.target is not None:
        predictor.check_compatible(settings.device or predictor.device_key, settings.target or predictor.target_preset)
    return predictor


def build_budget(settings: PruneSettings, model: nn.Module,
                 cost: LatencyTableSource | None = None) -> tuple[GroupSet, LatencyBudget]:
    """`model`'s traced groups and its latency budget under `cost` (default: the settings' predictor
    or FLOPs table). Its groups to gate: `prunable_groups(group_set, budget.description)`."""
    check_describable(model, settings.model)
    group_set = build_priced_groups(model, settings.input_size, settings.unit)
    return group_set, LatencyBudget(describe_network(model, group_set, settings.input_size), cost or load_cost(settings))


def deployment(settings: PruneSettings, cost: LatencyTableSource) -> dict[str, str | None]:
    """The device key and target preset the budget's latencies are for (a device predictor's own,
    or the ones the settings name), recorded in pruning.json for `python -m compile` to check."""
    return {"device": settings.device or getattr(cost, "device_key", None),
            "target": settings.target or getattr(cost, "target_preset", None)}


def check_predictor_fits(manifest: Mapping[str, Any], settings: PruneSettings) -> None:
    """Refuse a predictor whose manifest names another model or input size (manifests that name
    neither are accepted: the predictor knows layers, and the budget asks it only about layers)."""
    for key, ours in (("model", settings.model), ("input_size", settings.input_size)):
        theirs = manifest.get(key)
        if theirs is not None and theirs != ours:
            raise EdgesegError(f"The predictor in {settings.predictor} was made for {key} {theirs!r}, not {ours!r}.",
                               f"Use a predictor collected for {settings.model} at {settings.input_size} px, "
                               "or collect and train one for it.")


def check_feasible(budget: LatencyBudget, budget_ms: float) -> None:
    smallest = budget.min_latency_ms()
    if budget_ms < smallest:
        raise EdgesegError(
            f"The budget {budget_ms:.4g} ms is below the smallest reachable latency {smallest:.4g} ms "
            f"(every group at its smallest width; unpruned: {budget.full_latency_ms():.4g} ms).",
            f"Pass a budget of at least {smallest:.4g} ms (or a lower --fps).")


class _Data:
    """Training (inner/outer) and validation sets, and seeded loaders per phase and epoch."""

    def __init__(self, settings: PruneSettings) -> None:
        size, seed = settings.input_size, settings.seed
        common = {"num_classes": settings.num_classes, "seed": seed}
        self.train = build_dataset(settings.data, "train", size, length=settings.train_scenes, **common)
        self.val = build_dataset(settings.data, "val", size, length=settings.val_scenes, **common)
        self.inner, self.outer = inner_outer_split(self.train, seed=seed)
        self.num_classes = getattr(self.train, "num_classes", settings.num_classes)
        self.settings = settings

    def batches(self, dataset: Dataset, tag: int, epoch: int, batch_size: int | None = None) -> Iterator[Any]:
        """Endless shuffled batches (of `batch_size`, default the settings' batch size), the same
        for the same (seed, tag, epoch): resumable."""
        rank = _rank_and_world()[0]  # data parallel: each process its own batches
        generator = torch.Generator().manual_seed(self.settings.seed * 1_000_003 + tag * 1009 + epoch + rank * 65_537)
        loader = DataLoader(dataset, batch_size=batch_size or self.settings.batch_size, shuffle=True,
                            generator=generator)
        return itertools.chain.from_iterable(itertools.repeat(loader))


def evaluate_miou(model: nn.Module, dataset: Dataset, num_classes: int, batch_size: int) -> float:
    """mIoU over `dataset`."""
    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(num_classes)
    with torch.no_grad():
        for images, labels in DataLoader(dataset, batch_size=batch_size):
            matrix.update(model(images), labels)
    model.train(was_training)
    return matrix.scores().miou


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
    data = _Data(settings)
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
    """One run's loops and the history they record (steps and epoch summaries)."""

    def __init__(self, settings: PruneSettings, target_ms: float | None, out: Path, data: _Data, budget: LatencyBudget,
                 groups: list[PruneGroup], state: dict[str, Any] | None, progress: bool,
                 on_epoch_end: EpochHook | None, shared_training: SharedTraining | None = None) -> None:
        self.settings, self.out, self.data, self.budget, self.groups = settings, out, data, budget, groups
        self.target_ms = target_ms  # None: the dense reference, no budget
        self.state = state or {}
        self.steps: list[dict[str, Any]] = list(self.state.get("steps", []))
        self.epochs: list[dict[str, Any]] = list(self.state.get("epochs", []))
        self.dropped_to_fit = int(self.state.get("dropped_to_fit", 0))
        self.added_to_fit = int(self.state.get("added_to_fit", 0))
        self.searched_ms: float | None = self.state.get("searched_ms")  # bilevel: the search's own network
        self.progress, self.on_epoch_end = progress, on_epoch_end
        self.rank, self.world = _rank_and_world()
        self.shared_training = shared_training if self.world == 1 else None

    def _resume(self, phase: str, model: nn.Module, parts: dict[str, Any]) -> int:
        """Load the checkpoint's states if it is in `phase`; the epoch to start from."""
        if self.state.get("phase") != phase:
            return 0
        model.load_state_dict(self.state["model"])
        for key, part in parts.items():
            if key in self.state:  # the checkpoint written at the shrink has no fine-tuning optimizer yet
                part.load_state_dict(self.state[key])
        torch.set_rng_state(self.state["rng"])
        return int(self.state["epoch"])

    def _end_epoch(self, phase: str, epoch: int, model: nn.Module, parts: dict[str, Any], ms: float,
                   plan: Plan | None = None) -> None:
        """Evaluate, record, checkpoint. `ms`: the predicted latency of the network at the epoch's end."""
        if self.world > 1:  # BatchNorm statistics saw each process's own batches: keep rank 0's
            for buffer in model.buffers():
                dist.broadcast(buffer, 0)
        s, miou = self.settings, self._miou(model)
        losses = [r["loss"] for r in self.steps if (r["phase"], r["epoch"]) == (phase, epoch)]
        summary = {"phase": phase, "epoch": epoch, "miou": miou, "loss": losses[-1] if losses else None,
                   "predicted_ms": ms}
        self.epochs.append(summary)
        log.info("%s epoch %d/%d: loss %.4g, mIoU %.4f, predicted %.4g ms (budget %s ms)", phase, epoch + 1,
                 s.epochs, losses[-1] if losses else float("nan"), miou, ms, _ms(self.target_ms))
        self._save(phase, epoch + 1, model, parts, plan)
        if self.on_epoch_end is not None:
            self.on_epoch_end(phase, epoch)

    def _save(self, phase: str, epoch: int, model: nn.Module, parts: dict[str, Any], plan: Plan | None) -> None:
        if self.rank:
            return
        state = {"settings": self.settings.to_dict(), "phase": phase, "epoch": epoch, "model": model.state_dict(),
                 "rng": torch.get_rng_state(), "steps": self.steps, "epochs": self.epochs, "plan": plan,
                 "dropped_to_fit": self.dropped_to_fit, "added_to_fit": self.added_to_fit,
                 "searched_ms": self.searched_ms}
        state.update({key: part.state_dict() for key, part in parts.items()})
        save_checkpoint(self.out / CHECKPOINT, state)

    def _bar(self, phase: str, epoch: int, steps: int):
        return tqdm(range(steps), desc=f"{phase} {epoch + 1}/{self.settings.epochs}", disable=not self.progress or self.rank > 0,
                    leave=False)

    def _postfix(self, bar, loss: float, ms: float) -> None:
        miou = self.epochs[-1]["miou"] if self.epochs else float("nan")
        bar.set_postfix(loss=f"{loss:.3f}", mIoU=f"{miou:.3f}", ms=f"{ms:.4g}")

    def search(self, model: nn.Module, group_set: GroupSet) -> Plan:
        """The search phase; shrinks `model` in place and returns the plan."""
        s = self.settings
        bilevel = s.method == "bilevel"
        if bilevel:
            search = BilevelSearch(s, model, self.groups, self.budget, self.target_ms)
            parts, train, tag = search.parts, self.data.inner, 0
        else:
            optimizer = sgd(model, s.lr, s.decay("search"))
            parts, train, tag = {"optimizer": optimizer}, self.data.train, 2
        full_ms = self.budget.full_latency_ms()
        first_epoch = self._resume("search", model, parts)
        shared = not bilevel and self.shared_training is not None
        if shared and first_epoch == 0 and self._load_shared(model):
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
                self.steps.append({"phase": "search", "epoch": epoch, "loss": loss, "predicted_ms": ms})
                self._postfix(bar, loss, ms)
            self._end_epoch("search", epoch, model, parts, ms)
            if shared and epoch == s.epochs - 1:
                self.shared_training.save(s, {"model": model.state_dict(), "rng": torch.get_rng_state(),
                                              "steps": self.steps, "epochs": self.epochs})
        if bilevel:
            plan, self.searched_ms, self.dropped_to_fit, self.added_to_fit = search.finish()
        elif s.method == "uniform":
            plan = uniform_plan(self.groups, self.budget, self.target_ms)
        elif s.method == "magnitude":
            plan = magnitude_plan(model, self.groups, self.budget, self.target_ms)
        else:
            plan = full_plan(self.groups)
        if self.world > 1:
            plans: list[Any] = [None] * self.world
            dist.all_gather_object(plans, plan)
            if any(p != plan for p in plans):
                raise RuntimeError("data-parallel processes chose different plans: their gates diverged")
        shrink(group_set, plan)
        self._save("finetune", 0, model, {}, plan)
        return plan

    def _load_shared(self, model: nn.Module) -> bool:
        """Take the plain training another run stored, if there is one."""
        stored = self.shared_training.load(self.settings)
        if stored is None:
            return False
        log.info("plain training loaded from %s (trained by an earlier run)", self.shared_training.path(self.settings))
        model.load_state_dict(stored["model"])
        torch.set_rng_state(stored["rng"])
        self.steps, self.epochs = list(stored["steps"]), list(stored["epochs"])
        return True

    def finetune(self, model: nn.Module, plan: Plan) -> None:
        """Fine-tune the shrunk network with the learning rate decayed to zero (cosine): at a
        constant rate its last-epoch mIoU swung by 0.1 from epoch to epoch, more than the
        differences between methods that the figures compare."""
        s = self.settings
        optimizer = sgd(model, s.lr, s.decay("finetune"))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, s.epochs * s.finetune_steps))
        parts = {"optimizer": optimizer, "lr_schedule": schedule}
        ms = predicted_ms(self.budget, self.groups, plan)
        for epoch in range(self._resume("finetune", model, parts), s.epochs):
            batches = self.data.batches(self.data.train, 3, epoch)
            bar = self._bar("finetune", epoch, s.finetune_steps)
            for _ in bar:
                loss = plain_step(model, optimizer, next(batches))
                schedule.step()
                self.steps.append({"phase": "finetune", "epoch": epoch, "loss": loss, "predicted_ms": ms})
                self._postfix(bar, loss, ms)
            self._end_epoch("finetune", epoch, model, parts, ms, plan)

    def _miou(self, model: nn.Module) -> float:
        return evaluate_miou(model, self.data.val, self.data.num_classes, self.settings.batch_size)

    def finish(self, model: nn.Module, plan: Plan, deployed_on: Mapping[str, str | None]) -> PruneResult:
        s = self.settings
        counts = kept_counts(self.groups, plan)
        report = {
            "model": s.model, "input_size": s.input_size, "unit": s.unit, "method": s.method, "seed": s.seed,
            "data": s.data, "num_classes": self.data.num_classes, "predictor": s.predictor,
            "device": deployed_on["device"], "target": deployed_on["target"],
            "budget_ms": self.target_ms, "predicted_ms": self.budget.latency_ms(counts),
            "unpruned_predicted_ms": self.budget.full_latency_ms(),
            "min_predicted_ms": self.budget.min_latency_ms(),
            "miou": self.epochs[-1]["miou"],
            "kept_units": {name: sorted(int(u) for u in units) for name, units in plan.items()},
            "kept_counts": counts, "full_counts": {g.name: g.full for g in self.budget.description.groups},
            "searched_ms": self.searched_ms, "dropped_to_fit": self.dropped_to_fit, "added_to_fit": self.added_to_fit,
            "epochs": self.epochs, "settings": s.to_dict(),
        }
        if self.rank == 0:  # data parallel: one writer
            export_onnx(model, s.input_size, self.out / ONNX)
            if s.method == DENSE:
                save_weights(model, self.out / WEIGHTS)
            tmp = self.out / (REPORT + ".tmp")
            tmp.write_text(json.dumps(report, indent=2) + "\n")
            os.replace(tmp, self.out / REPORT)
            plot_curves(self.steps, self.target_ms, self.out / CURVES)
            save_checkpoint(self.out / CHECKPOINT, {"settings": s.to_dict(), "phase": "done"})
        if self.world > 1:
            dist.barrier()
        log.info("%s %s: predicted %.4g ms (budget %s ms, unpruned %.4g ms), mIoU %.4f -> %s", s.method, s.model,
                 report["predicted_ms"], _ms(self.target_ms), report["unpruned_predicted_ms"], report["miou"], self.out)
        return PruneResult(self.out, report)


def _ms(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"
