"""Bi-level optimisation of gate scores s and weights θ through the implicit gradient.

    inner:  θ*(s) = argmin_θ  L_tr(θ, m(s)) + λ/2 ||θ||²          (weights, training split)
    outer:  min_s  F(s) = L_val(θ*(s), m(s)) + P(s)                (scores, held-out split)

    dF/ds = ∂_s L_val  -  ∂²_{sθ} L_tr · (∇²_θθ L_tr + λI)⁻¹ ∇_θ L_val  +  ∂_s P

The last product is the implicit gradient (IG). Two ways to approximate it:

* `first_order` (BiP: Zhang et al., "Advancing Model Pruning via Bi-level Optimization",
  NeurIPS 2022; OPTML-Group/BiP `trainer/bilevel.py`). BiP's masks multiply weights, z = m ⊙ θ;
  here a unit's mask is read as multiplying every weight entry that cutting the unit removes
  (its producers' output rows and its consumers' input columns). With BiP's assumptions,
  (∇²_θθ L + λI)⁻¹ ≈ I/λ and ∇²_z L ≈ 0, the mixed derivative is diagonal,
  ∂_m ∇_θ L_tr ≈ diag(∂_z L_tr), and
      IG_k = -(1/λ) Σ_{entries j of unit k} ∂_{z_j} L_tr · ∂_{θ_j} L_val,  ∂_z L = ∂_θ L / m_k.
  Only first-order gradients are needed: one backward per split, as in plain training. BiP's
  code scales the product by a tuned constant (`lr2`) instead of 1/λ; `implicit_scale` allows
  the same.
* `neumann`: (∇²_θθ L_tr + λI)⁻¹ v ≈ α Σ_{k=0..K} (I - α(∇²_θθ L_tr + λI))^k v with K
  Hessian-vector products (double backward), then the exact mixed product
  ∂_s(∇_θ L_tr · q) by one more backward. Converges when α < 2 / λ_max(∇²L_tr + λI).

`step` evaluates both splits at the same θ_t and masks, updates the scores with the
hypergradient (Adam), then the weights with the training gradient (SGD with weight decay λ,
the inner objective's own gradient). λ is one number, `BilevelConfig.weight_decay_lambda`,
used three ways: as the inner SGD's weight decay (the gradient of λ/2 ||θ||²), in the Neumann
series' (∇²_θθ L_tr + λI), and as the first-order IG's 1/λ when `implicit_scale` is None. A
decay of the inner step that differed from the λ of the implicit gradient would differentiate
another inner problem than the one solved, so a run sets it once (`PruneSettings.decay`, the
same decay every method's plain steps use) and this optimiser derives the rest from it. The penalty (the latency budget) enters only the outer
level: `penalty_fn(gates) -> scalar`, differentiable in `gates.probabilities()`. Without a
held-out batch, `step` is an inner step alone (one pass, the cost of a plain training step):
the caller picks the held-out batch size and how often the scores move, which is what sets
the cost of the search (`bench/bilevel_step_cost.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from prune.gates import Gates
from prune.settings import PruneSettings, default
from runner.errors import EdgesegError

LossFn = Callable[[nn.Module, Any], torch.Tensor]
PenaltyFn = Callable[[Gates], torch.Tensor]
METHODS = ("first_order", "neumann")


@dataclass(frozen=True)
class BilevelConfig:
    """Settings of the bi-level optimiser (see the module docstring for the symbols). A run
    makes it with `from_settings`; the defaults are the run's (`prune.settings.default`), so a
    config made by hand differs from a run's only where it says so."""

    method: str = default("implicit_gradient")
    inner_lr: float = default("lr")
    inner_momentum: float = 0.9  # not a run setting
    weight_decay_lambda: float = default("weight_decay")  # λ: the inner objective's ridge term
    outer_lr: float = default("outer_lr")  # Adam on the scores
    neumann_steps: int = default("neumann_steps")  # K
    neumann_alpha: float = default("neumann_alpha")  # α
    implicit_scale: float | None = default("implicit_scale")  # first_order: factor of the IG product; None = 1/λ

    @classmethod
    def from_settings(cls, settings: PruneSettings) -> BilevelConfig:
        """The optimiser of a run's search: λ is the search phase's weight decay."""
        return cls(method=settings.implicit_gradient, inner_lr=settings.lr, outer_lr=settings.outer_lr,
                   weight_decay_lambda=settings.decay("search"), implicit_scale=settings.implicit_scale,
                   neumann_steps=settings.neumann_steps, neumann_alpha=settings.neumann_alpha)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise EdgesegError(f"Unknown bi-level method {self.method!r}.", f"Use one of {', '.join(METHODS)}.")
        positive = {
            "inner_lr": self.inner_lr,
            "outer_lr": self.outer_lr,
            "weight_decay_lambda": self.weight_decay_lambda,
            "neumann_alpha": self.neumann_alpha,
        }
        for key, value in positive.items():
            if not value > 0:
                raise EdgesegError(f"Bi-level setting {key} must be > 0, got {value}.", f"Pass a positive {key}.")
        if self.neumann_steps < 0:
            raise EdgesegError(f"neumann_steps must be >= 0, got {self.neumann_steps}.", "Pass K >= 0.")


@dataclass(frozen=True)
class StepStats:
    """Losses at the start of one bi-level step (before either update); the held-out loss and
    the penalty are None for an inner step alone."""

    train_loss: float
    val_loss: float | None
    penalty: float | None


@dataclass(frozen=True)
class _Passes:
    train_loss: float
    val_loss: float
    train_grads: list[torch.Tensor]
    score_grads: list[torch.Tensor]


@dataclass(frozen=True)
class _Rows:
    """Slices of parameter `param` (index into θ) along `dim` that belong to `group`'s units."""

    param: int
    dim: int
    group: int
    channels: torch.Tensor
    units: torch.Tensor


class BilevelOptimizer:
    """One object per search: owns the inner (weights) and outer (scores) optimisers.

    `model` must have `gates` attached; `loss_fn(model, batch)` returns a scalar loss.
    """

    def __init__(
        self, model: nn.Module, gates: Gates, loss_fn: LossFn, config: BilevelConfig = BilevelConfig()
    ) -> None:
        self.model, self.gates, self.loss_fn, self.config = model, gates, loss_fn, config
        self.weights = [p for p in model.parameters() if p.requires_grad]
        self.scores = list(gates.scores)
        self.inner = torch.optim.SGD(
            self.weights, lr=config.inner_lr, momentum=config.inner_momentum, weight_decay=config.weight_decay_lambda
        )
        self.outer = torch.optim.Adam(self.scores, lr=config.outer_lr)
        self._rows = _unit_entries(model, gates, self.weights) if config.method == "first_order" else []

    def step(self, train_batch: Any, val_batch: Any | None = None, penalty_fn: PenaltyFn | None = None) -> StepStats:
        """One outer update of the scores (when `val_batch` is given), then one inner update of
        the weights. Without `val_batch` the scores stay as they are and the step costs one
        forward and backward pass of the masked network on `train_batch`."""
        self.model.train()
        if val_batch is None:
            train_loss = self.loss_fn(self.model, train_batch)
            self._inner_step(average_over_processes(_grads(train_loss, self.weights)))
            return StepStats(train_loss=float(train_loss.detach()), val_loss=None, penalty=None)
        pass_ = self._passes(train_batch, val_batch)
        score_grads = pass_.score_grads
        penalty = torch.zeros(())
        if penalty_fn is not None:
            penalty = penalty_fn(self.gates)
            if penalty.requires_grad:
                score_grads = [g + p for g, p in zip(score_grads, _grads(penalty, self.scores))]
        for param, grad in zip(self.scores, score_grads):
            param.grad = grad
        self.outer.step()
        self._inner_step(pass_.train_grads)
        return StepStats(train_loss=pass_.train_loss, val_loss=pass_.val_loss, penalty=float(penalty.detach()))

    def hypergradient(self, train_batch: Any, val_batch: Any) -> list[torch.Tensor]:
        """d L_val(θ*(s), s) / ds per group at the current weights (taken as θ*), no update."""
        return self._passes(train_batch, val_batch).score_grads

    def _inner_step(self, train_grads: list[torch.Tensor]) -> None:
        for param, grad in zip(self.weights, train_grads):
            param.grad = grad
        self.inner.step()

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict(), "outer": self.outer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state["inner"])
        self.outer.load_state_dict(state["outer"])

    def _passes(self, train_batch: Any, val_batch: Any) -> "_Passes":
        """Held-out and training passes at the same weights and masks, and the hypergradient.

        Under torch.distributed (torchrun, one batch per process) the gradients are averaged
        over processes before they are combined, so every process takes the same step. Do not
        wrap the model in DistributedDataParallel: this optimiser calls autograd.grad, which its
        gradient hooks do not see."""
        val_loss = self.loss_fn(self.model, val_batch)
        val_grads = average_over_processes(_grads(val_loss, self.weights + self.scores))
        v, direct = val_grads[: len(self.weights)], val_grads[len(self.weights) :]
        if self.config.method == "neumann":
            with sdpa_kernel(SDPBackend.MATH):  # fused attention kernels have no double backward
                train_loss = self.loss_fn(self.model, train_batch)
                train_grads = _grads(train_loss, self.weights, create_graph=True)
                implicit = average_over_processes(self._neumann(train_grads, v))
            train_grads = average_over_processes([g.detach() for g in train_grads])
        else:
            train_loss = self.loss_fn(self.model, train_batch)
            train_grads = average_over_processes(_grads(train_loss, self.weights))
            implicit = self._first_order(train_grads, v)
        return _Passes(
            train_loss=float(train_loss.detach()),
            val_loss=float(val_loss.detach()),
            train_grads=train_grads,
            score_grads=[d + i for d, i in zip(direct, implicit)],
        )

    def _first_order(self, train_grads: list[torch.Tensor], v: list[torch.Tensor]) -> list[torch.Tensor]:
        """BiP's IG: -(scale) Σ rows ∂_z L_tr · ∂_θ L_val, per unit, chained to the scores."""
        scale = self.config.implicit_scale
        scale = 1.0 / self.config.weight_decay_lambda if scale is None else scale
        with torch.no_grad():
            masks = [m.detach() for m in self.gates.masks()]
            per_unit = [torch.zeros_like(m) for m in masks]
            products: dict[int, torch.Tensor] = {}
            for rows in self._rows:
                if rows.param not in products:
                    products[rows.param] = train_grads[rows.param] * v[rows.param]
                product = products[rows.param]
                others = [d for d in range(product.dim()) if d != rows.dim]
                per_channel = product.sum(others) if others else product
                per_unit[rows.group].index_add_(0, rows.units, per_channel[rows.channels])
            ig_mask = [
                torch.where(m > 0, -scale * total / m.clamp_min(1e-12), torch.zeros_like(m))
                for m, total in zip(masks, per_unit)
            ]
        probs = list(self.gates.probabilities().values())
        return list(torch.autograd.grad(probs, self.scores, grad_outputs=ig_mask))

    def _neumann(self, train_grads: list[torch.Tensor], v: list[torch.Tensor]) -> list[torch.Tensor]:
        """-∂_s(∇_θ L_tr · q), q = α Σ_k (I - α(H + λI))^k v."""
        alpha, lam = self.config.neumann_alpha, self.config.weight_decay_lambda
        live = [i for i, g in enumerate(train_grads) if g.requires_grad]
        outputs = [train_grads[i] for i in live]
        term = [v[i] for i in live]
        total = [t.clone() for t in term]
        for _ in range(self.config.neumann_steps):
            hvp = torch.autograd.grad(outputs, [self.weights[i] for i in live], grad_outputs=term, retain_graph=True,
                                      allow_unused=True, materialize_grads=True)
            term = [t - alpha * (h + lam * t) for t, h in zip(term, hvp)]
            total = [acc + t for acc, t in zip(total, term)]
        q = [alpha * acc for acc in total]
        mixed = torch.autograd.grad(outputs, self.scores, grad_outputs=q, allow_unused=True, materialize_grads=True)
        return [-g for g in mixed]


def average_over_processes(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Mean over the processes of a torch.distributed group (one all-reduce); as is otherwise."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensors
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    return [chunk.view_as(t) for chunk, t in zip(flat.split([t.numel() for t in tensors]), tensors)]


def _grads(loss: torch.Tensor, params: list[torch.Tensor], create_graph: bool = False) -> list[torch.Tensor]:
    """Gradients of `loss`, zeros for parameters it does not reach."""
    grads = torch.autograd.grad(loss, params, create_graph=create_graph, retain_graph=create_graph, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def _unit_entries(model: nn.Module, gates: Gates, weights: list[torch.Tensor]) -> list[_Rows]:
    """The weight entries each unit owns, i.e. what cutting it removes: its producers' output
    rows (dim 0: convolution/linear rows, norm and depthwise per-channel parameters) and its
    consumers' input columns (dim 1 of their weights)."""
    index = {id(p): i for i, p in enumerate(weights)}
    modules = dict(model.named_modules())
    rows = []
    for g, group in enumerate(gates.groups):
        for member in group.members:
            module = modules[member.module]
            params = list(module.parameters(recurse=False)) if member.producer else [module.weight]
            for param in params:
                if id(param) in index:
                    rows.append(
                        _Rows(
                            param=index[id(param)],
                            dim=0 if member.producer else 1,
                            group=g,
                            channels=torch.tensor(member.channels, dtype=torch.long, device=param.device),
                            units=torch.tensor(member.units, dtype=torch.long, device=param.device),
                        )
                    )
    return rows
