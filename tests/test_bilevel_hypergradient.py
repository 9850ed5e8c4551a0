"""The hypergradient against a closed form: a masked ridge-regression inner problem.

Model: pred = R · diag(m) · W x, with W (the inner weights) learned and R a frozen read-out;
the gate masks m = sigmoid(s) (soft masks, so the exact hypergradient exists). The inner
problem is ridge regression in vec(W), solved exactly; the outer loss is the squared error on a
held-out split whose targets are shifted away from the training map (so the implicit part of
the hypergradient is comparable to the direct part). Autograd through the solve gives dF/ds.

Two regimes: "curved" (the data Hessian dominates λ: what the Neumann series is for) and
"ridge" (λ dominates the data Hessian: where BiP's first-order approximation is exact in the
limit, which checks its sign and scale).
"""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from prune.bilevel import BilevelConfig, BilevelOptimizer
from prune.gates import GateConfig, Gates
from prune.groups import build_groups

log = logging.getLogger(__name__)
N_IN, N_HIDDEN, N_OUT, N_SAMPLES = 6, 5, 3, 40
REGIMES = {"curved": {"lam": 0.05, "readout_scale": 1.0}, "ridge": {"lam": 2.0, "readout_scale": 0.1}}


def squared_error(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return 0.5 * ((model(x) - y) ** 2).sum(1).mean()


def design(x: torch.Tensor, readout: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """J with pred_i = J_i · vec(W): J_i[a, c*N_IN + j] = R[a, c] m[c] x_i[j]."""
    return torch.einsum("ac,c,ij->iacj", readout, mask, x).reshape(len(x), N_OUT, N_HIDDEN * N_IN)


def make_problem(lam: float, readout_scale: float, val_shift: float = 1.0) -> dict:
    """A seeded problem with the weights set to the exact inner solution."""
    torch.manual_seed(3)
    dtype = torch.float64
    x_tr, x_val = torch.randn(N_SAMPLES, N_IN, dtype=dtype), torch.randn(N_SAMPLES, N_IN, dtype=dtype)
    w_true = torch.randn(N_OUT, N_IN, dtype=dtype)
    w_val = w_true + val_shift * torch.randn(N_OUT, N_IN, dtype=dtype)
    y_tr = x_tr @ w_true.T + 0.3 * torch.randn(N_SAMPLES, N_OUT, dtype=dtype)
    y_val = x_val @ w_val.T + 0.3 * torch.randn(N_SAMPLES, N_OUT, dtype=dtype)
    model = nn.Sequential(nn.Linear(N_IN, N_HIDDEN, bias=False), nn.Linear(N_HIDDEN, N_OUT, bias=False)).double()
    with torch.no_grad():
        model[1].weight.copy_(readout_scale * torch.randn(N_OUT, N_HIDDEN, dtype=dtype))
    model[1].weight.requires_grad_(False)
    groups = build_groups(model, x_tr, unit=1)
    assert groups.names == ("0",)
    gates = Gates(groups.groups, GateConfig(straight_through=False)).double()
    with torch.no_grad():
        gates.scores[0].copy_(torch.randn(N_HIDDEN, dtype=dtype))
    gates.attach(model)

    readout = model[1].weight.detach()
    scores = gates.scores[0].detach().clone().requires_grad_(True)
    mask = torch.sigmoid(scores)
    jac = design(x_tr, readout, mask)
    hessian = torch.einsum("iak,ial->kl", jac, jac) / N_SAMPLES + lam * torch.eye(N_HIDDEN * N_IN, dtype=dtype)
    w_star = torch.linalg.solve(hessian, torch.einsum("iak,ia->k", jac, y_tr) / N_SAMPLES)
    pred_val = torch.einsum("iak,k->ia", design(x_val, readout, mask), w_star)
    (exact,) = torch.autograd.grad(0.5 * ((pred_val - y_val) ** 2).sum(1).mean(), scores)
    with torch.no_grad():
        model[0].weight.copy_(w_star.view(N_HIDDEN, N_IN))
    (direct,) = torch.autograd.grad(squared_error(model, (x_val, y_val)), gates.scores[0])
    return {
        "model": model, "gates": gates, "train": (x_tr, y_tr), "val": (x_val, y_val), "lam": lam,
        "exact": exact, "direct": direct, "hessian": hessian.detach(),
    }


@pytest.fixture(scope="module", params=sorted(REGIMES))
def problem(request) -> dict:
    return {"regime": request.param, **make_problem(**REGIMES[request.param])}


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def hypergradient(problem: dict, **settings) -> torch.Tensor:
    config = BilevelConfig(weight_decay_lambda=problem["lam"], **settings)
    optimizer = BilevelOptimizer(problem["model"], problem["gates"], squared_error, config)
    return optimizer.hypergradient(problem["train"], problem["val"])[0]


def cosines(problem: dict, approx: torch.Tensor) -> tuple[float, float]:
    """Cosine to the exact hypergradient, and of the implicit parts (minus the shared direct term)."""
    direct = problem["direct"]
    return cosine(approx, problem["exact"]), cosine(approx - direct, problem["exact"] - direct)


def test_weights_are_the_inner_solution(problem):
    """The closed form really is the inner optimum: the regularised training gradient vanishes."""
    model = problem["model"]
    loss = squared_error(model, problem["train"]) + problem["lam"] / 2 * model[0].weight.pow(2).sum()
    (grad,) = torch.autograd.grad(loss, model[0].weight)
    assert grad.abs().max() < 1e-10


def test_neumann_matches_the_exact_hypergradient(problem):
    alpha = 1.0 / float(torch.linalg.eigvalsh(problem["hessian"]).max())
    by_steps = {k: cosines(problem, hypergradient(problem, method="neumann", neumann_steps=k, neumann_alpha=alpha))
                for k in (0, 5, 100)}
    log.info("%s: Neumann (full, implicit-part) cosines by K: %s", problem["regime"], by_steps)
    assert min(by_steps[100]) >= 0.99
    assert by_steps[100][1] >= by_steps[0][1]


def test_first_order_points_downhill(problem):
    full, implicit = cosines(problem, hypergradient(problem, method="first_order"))
    log.info("%s: first-order cosine %.4f (implicit part %.4f)", problem["regime"], full, implicit)
    assert full > 0
    if problem["regime"] == "ridge":  # BiP's assumptions hold: the implicit part itself must agree
        assert implicit > 0.9
