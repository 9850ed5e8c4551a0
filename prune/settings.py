"""The settings of one `python -m prune` run: a frozen dataclass saved in its checkpoint and
`pruning.json` (a resumed run must repeat them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from compile.targets import check_target_name
from runner.errors import EdgesegError

METHODS = ("bilevel", "uniform", "magnitude", "dense")
BUDGET_SIGNALS = ("hard", "expected")
HARD_MASKS = ("projection", "threshold")
IMPLICIT_GRADIENTS = ("first_order", "neumann")  # prune.bilevel.METHODS, not imported: it brings torch into --help
DENSE = "dense"
FLOPS = "flops"


@dataclass(frozen=True)
class PruneSettings:
    """What to prune, against what, and how long.

    `predictor` is a latency predictor folder (`latency_model train`) or "flops" (nominal ms
    proportional to FLOPs, `prune.flops_cost`). Give exactly one of `budget_ms`, `fps` and
    `budget_fraction` (of the unpruned network's predicted latency), except for the `dense`
    method: the unpruned network trained with the same schedule, the reference a pruned network
    is compared with, which takes no budget.
    Every method runs `epochs` epochs of `search_steps` steps on the unpruned network (the
    bi-level search, or plain training for the baselines), then `epochs` epochs of
    `finetune_steps` steps on the shrunk one. Zero steps mean none: a baseline with
    `search_steps=0` makes its plan from the start weights, `finetune_steps=0` keeps the shrunk
    network as the search left it; a bi-level run needs search steps (an error otherwise).
    `train_scenes`/`val_scenes`/`num_classes` size the
    synthetic data set (real data sets bring their own). Gate scores start at `gate_init` (every
    unit kept, p = sigmoid(gate_init)) and learn at `outer_lr` (Adam). `implicit_scale` multiplies
    BiP's first-order implicit gradient: its default 1/lambda (1000 with lambda = 1e-3) makes that
    term three orders larger than the budget term, which the budget weight (at most 100) then
    cannot balance; 1.0 keeps the two comparable. `implicit_gradient` is BiP's "first_order"
    implicit gradient (one backward per split) or "neumann": the inverse Hessian-vector product
    by `neumann_steps` Hessian-vector products of step `neumann_alpha` (converges for alpha
    below 2 / the Hessian's largest eigenvalue), each a double backward through the network.

    `weight_decay` is the decay of every SGD step of every method: the baselines' and `dense`'s
    plain training, the bi-level search's inner step and the fine-tuning. The same value for all
    methods by default, so that "the same training" holds; `search_weight_decay`, when given,
    replaces it in the search phase alone (the bi-level inner step, or the baselines' plain
    training), e.g. 1e-3 for BiP's lambda. In the bi-level search that decay is lambda, the
    inner objective's ridge term (`prune.bilevel`): the inner SGD's weight decay is the gradient
    of lambda/2 ||theta||^2 and the Neumann series inverts (H + lambda I) with the same lambda,
    so the two cannot differ. Runs checkpointed before these settings existed used 1e-3 in the
    bi-level search and 1e-4 in every plain step (`BEFORE_THEY_EXISTED`).

    The network starts from `weights` (a local checkpoint of the whole model), or with
    `pretrained_backbone` from timm's ImageNet weights of the backbone if they are already in
    the local Hugging Face cache (never downloaded), or from random weights.

    `reuse_search` (bi-level only) is the folder of an earlier bi-level run with these settings but
    another budget or latency scale: its search's end state (weights and gate scores) is projected
    onto this budget instead of searching again (`prune.reuse_search`), so that budgets near each
    other get networks near each other.

    `latency_scale` multiplies every latency the cost table gives: a predictor prices layers
    timed alone, and a whole network on a device also pays for what lies between them (kernel
    launches, thread-pool wake-ups, copies); `python -m prune.pipeline` measures that factor on
    the device from whole networks (measured ms / predicted ms) so that a budget is one of
    measured ms. Predicted latencies in the run's report are the scaled ones.

    `device` (a device key) and `target` (a target preset) name where the pruned network will
    run: a device predictor made for another device or target is refused, since its latencies
    say nothing about that one. Left out, they are taken from the predictor (none for flops).

    The bi-level search updates the weights on a `batch_size` batch of the inner split every
    step, and the gate scores on an `outer_batch_size` batch of the held-out split every
    `outer_every` steps (the other steps move the weights of the masked network alone). The
    scores are few parameters and Adam normalises their step, so a small held-out batch
    suffices, and it is what keeps a bi-level step near the cost of a plain training step
    (`bench/bilevel_step_cost.py`); a held-out batch as large as the training batch made it
    about two training passes. With the defaults, 2 against 8, both splits (held-out: 20% of the
    training set) are read at the same pace. The budget weight moves after every outer step,
    by dual ascent on `budget_signal`: "hard", the predicted latency of the network the gates
    describe now (what would be deployed), or "expected", the expected latency under the keep
    probabilities, which moves with every score step instead of only when scores cross zero
    (`bench/budget_controller.py` compares them). `hard_mask` is how the gates decide the
    network the search trains and measures: "projection", the highest-scoring units that fit
    the budget (`prune.projection`: narrowed from the unpruned latency over the first half of
    the search), or "threshold", every unit whose score is above zero, which leaves landing on
    the budget to the weight alone.
    """

    model: str = "segformer-b0"
    data: str = "synthetic"
    predictor: str = FLOPS
    budget_ms: float | None = None
    fps: float | None = None
    budget_fraction: float | None = None
    input_size: int = 128
    method: str = "bilevel"
    epochs: int = 3
    search_steps: int = 100
    finetune_steps: int = 100
    batch_size: int = 8
    outer_batch_size: int = 2
    outer_every: int = 1
    unit: int = 8
    lr: float = 0.01
    outer_lr: float = 0.1
    gate_init: float = 1.0
    implicit_scale: float = 1.0
    weight_decay: float = 1e-4
    search_weight_decay: float | None = None
    implicit_gradient: str = "first_order"
    neumann_steps: int = 5
    neumann_alpha: float = 0.01
    budget_signal: str = "expected"
    hard_mask: str = "projection"
    weights: str | None = None
    pretrained_backbone: bool = False
    reuse_search: str | None = None
    latency_scale: float = 1.0
    device: str | None = None
    target: str | None = None
    seed: int = 0
    num_classes: int = 8
    train_scenes: int | None = None
    val_scenes: int | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise EdgesegError(f"Unknown pruning method {self.method!r}.", f"Use one of: {', '.join(METHODS)}.")
        budgets = {"--budget-ms": self.budget_ms, "--fps": self.fps, "--budget-fraction": self.budget_fraction}
        given = {flag: value for flag, value in budgets.items() if value is not None}
        if self.method == DENSE and given:
            raise EdgesegError(f"The dense method trains the unpruned network; it takes no budget ({', '.join(given)}).",
                               "Drop the budget, or choose a pruning --method.")
        if self.method != DENSE and len(given) != 1:
            raise EdgesegError("Give the latency budget exactly once.",
                               "Pass one of --budget-ms, --fps or --budget-fraction.")
        if any(not value > 0 for value in given.values()):
            raise EdgesegError(f"The budget must be positive, got {given}.", "Pass a positive budget.")
        if self.budget_fraction is not None and self.budget_fraction > 1:
            raise EdgesegError(f"--budget-fraction {self.budget_fraction} is above 1 (the unpruned network).",
                               "Pass a fraction in (0, 1], e.g. 0.5 for half the unpruned predicted latency.")
        counts = {"epochs": self.epochs, "batch_size": self.batch_size, "outer_batch_size": self.outer_batch_size,
                  "outer_every": self.outer_every, "unit": self.unit, "input_size": self.input_size}
        for name, value in counts.items():
            if value < 1:
                raise EdgesegError(f"{name} must be >= 1, got {value}.", f"Pass a positive {name}.")
        if self.search_steps < 0 or self.finetune_steps < 0:
            raise EdgesegError("Step counts must be >= 0.", "Pass non-negative --search-steps/--finetune-steps.")
        if self.method == "bilevel" and self.search_steps == 0:
            raise EdgesegError("The bilevel method searches the gate scores during --search-steps, and it is 0: "
                               "there would be no search.",
                               "Pass --search-steps >= 1, or --method uniform/magnitude to prune without a search "
                               "(their --search-steps 0 means: no plain training before the plan).")
        decays = {"weight_decay": self.weight_decay, "search_weight_decay": self.search_weight_decay}
        for name, value in decays.items():
            if value is not None and not value >= 0:
                raise EdgesegError(f"{name} must be >= 0, got {value}.", f"Pass a non-negative --{name.replace('_', '-')}.")
        if self.method == "bilevel" and not self.decay("search") > 0:
            raise EdgesegError("The bi-level search's weight decay is lambda, the inner objective's ridge term, and "
                               "it is 0 (the implicit gradient assumes lambda > 0).",
                               "Pass a positive --weight-decay (or --search-weight-decay).")
        if not self.latency_scale > 0:
            raise EdgesegError(f"--latency-scale must be > 0, got {self.latency_scale}.",
                               "Pass measured network ms / predicted ms of the same network, e.g. 1.2.")
        if self.target is not None:
            check_target_name(self.target)
        if self.weights is not None and self.pretrained_backbone:
            raise EdgesegError("--weights and --pretrained-backbone both say where the network starts.",
                               "Pass one: --weights for a whole checkpoint, --pretrained-backbone for timm's backbone.")
        if self.reuse_search is not None and self.method != "bilevel":
            raise EdgesegError(f"--reuse-search reuses a bi-level search, and the method is {self.method}.",
                               "Drop --reuse-search, or pass --method bilevel.")
        if self.budget_signal not in BUDGET_SIGNALS:
            raise EdgesegError(f"Unknown budget signal {self.budget_signal!r}.", f"Use one of: {', '.join(BUDGET_SIGNALS)}.")
        if self.implicit_gradient not in IMPLICIT_GRADIENTS:
            raise EdgesegError(f"Unknown implicit gradient {self.implicit_gradient!r}.",
                               f"Use one of: {', '.join(IMPLICIT_GRADIENTS)}.")
        if self.neumann_steps < 0 or not self.neumann_alpha > 0:
            raise EdgesegError(f"The Neumann series needs steps >= 0 and alpha > 0, got {self.neumann_steps} and "
                               f"{self.neumann_alpha}.", "Pass e.g. --neumann-steps 5 --neumann-alpha 0.01.")
        if self.hard_mask not in HARD_MASKS:
            raise EdgesegError(f"Unknown hard mask {self.hard_mask!r}.", f"Use one of: {', '.join(HARD_MASKS)}.")
        if self.input_size % 32:
            raise EdgesegError(f"The input size {self.input_size} is not a multiple of 32 (the backbone's stride).",
                               "Pass an input size such as 64, 256 or 512.")

    def target_ms(self, unpruned_ms: float) -> float | None:
        """The budget in ms, given the unpruned network's predicted latency (None: dense)."""
        if self.budget_ms is not None:
            return float(self.budget_ms)
        if self.fps is not None:
            return 1000.0 / float(self.fps)
        if self.budget_fraction is not None:
            return float(self.budget_fraction) * unpruned_ms
        return None

    def decay(self, phase: str) -> float:
        """The SGD weight decay of `phase` ("search" or "finetune"); in a bi-level search, lambda."""
        if phase == "search" and self.search_weight_decay is not None:
            return float(self.search_weight_decay)
        return float(self.weight_decay)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default(name: str) -> Any:
    """The default of setting `name`. The one place a default of the pruning run lives: the
    optimiser's and the gates' configs (`BilevelConfig`, `GateConfig`) and the command line read
    theirs from here."""
    field = PruneSettings.__dataclass_fields__[name]
    if field.default is dataclasses.MISSING:
        raise KeyError(f"setting {name} has no default")
    return field.default


# Settings added after runs were first checkpointed, with what runs did before each existed: a
# checkpoint (or bench settings file) that does not name one ran with this value, whatever the
# default is today. (Settings whose absence means None need no entry.) A value that depended on
# other settings is a function of the saved settings: before the weight decay was a setting, the
# bi-level search's inner SGD used BiP's lambda 1e-3 and every plain step (baselines, dense,
# fine-tuning) 1e-4.
BEFORE_THEY_EXISTED: dict[str, Any] = {"budget_signal": "hard", "hard_mask": "threshold",
                                        "implicit_gradient": "first_order", "neumann_steps": 5, "neumann_alpha": 0.01,
                                        "pretrained_backbone": False, "weight_decay": 1e-4, "latency_scale": 1.0,
                                        "search_weight_decay": lambda saved: 1e-3 if saved.get("method") == "bilevel"
                                        else None}


def as_they_ran(saved: Mapping[str, Any], keys: Iterable[str] | None = None) -> dict[str, Any]:
    """Saved settings (a checkpoint's, a bench settings file's) with every setting of `keys`
    (default: all of `BEFORE_THEY_EXISTED`) that they do not name filled in as runs did then."""
    filled = {}
    for key, then in BEFORE_THEY_EXISTED.items():
        if (keys is None or key in keys) and key not in saved:
            filled[key] = then(saved) if callable(then) else then
    return {**filled, **saved}
