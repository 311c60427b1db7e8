"""fc layers by the solver: full rank reproduces the layer, the data-driven solution against the
weight SVD on a problem with a known optimum, the chain fc6 → ReLU → fc7."""

import pytest
import torch
from torch import nn

from accel_det.nn import FactorizedLinear
from accel_det.solver import METHODS, SolverOptions
from accel_det.solver.channel import LowRankResponse, eigen_descending, relative_error
from accel_det.solver.linear import compress_linear_chain, set_linear_weights
from tests.helpers import SHORT


def test_full_rank_factorization_reproduces_the_layer():
    torch.manual_seed(0)
    linear = nn.Linear(20, 12)
    layer = FactorizedLinear(20, 12, rank=12)
    eye = torch.eye(12, dtype=torch.float64)
    set_linear_weights(
        layer, linear, LowRankResponse(P=eye, Q=eye, b=torch.zeros(12, dtype=torch.float64))
    )
    x = torch.randn(7, 20)
    assert torch.equal(layer(x), linear(x))


def anisotropic_problem(n=4000, c=24, d=16, seed=0):
    """Inputs whose covariance has a fast-decaying spectrum in a random basis, and a layer whose
    weights do not line up with it: the weights' largest directions are not the responses'."""
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(c, c, generator=g))
    scales = torch.logspace(0, -3, c)
    x = (torch.randn(n, c, generator=g) * scales) @ basis.T
    linear = nn.Linear(c, d)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(d, c, generator=g))
        linear.bias.copy_(torch.randn(d, generator=g))
    return x, linear


@pytest.mark.parametrize("rank", [2, 4, 8])
def test_data_driven_solution_is_the_optimum_and_beats_the_weight_svd(rank):
    x, linear = anisotropic_problem()
    with torch.no_grad():
        y = linear(x)
    options = SolverOptions(speedup=2, schedule=SHORT)
    layers = {"fc": {"structure": "channel", "rank": rank}}
    errors = {}
    for method in ("linear", "svd"):
        layer = compress_linear_chain({"fc": linear}, layers, y, y, METHODS[method], options)["fc"]
        with torch.no_grad():
            errors[method] = float((layer(x) - y).norm() / y.norm())
    # the known optimum of min ||Y - M Y|| (eq. 4): the energy of the discarded eigenvalues
    centered = (y - y.mean(0)).double()
    values, _ = eigen_descending(centered.T @ centered)
    optimum = float(values[rank:].sum().sqrt() / y.double().norm())
    assert errors["linear"] == pytest.approx(optimum, rel=1e-4)
    assert errors["svd"] > 1.5 * errors["linear"]


def test_asymmetric_chain_beats_the_weight_svd_on_held_out_responses():
    x, fc6 = anisotropic_problem(n=6000, c=32, d=24, seed=1)
    fc7 = nn.Linear(24, 24)
    noisy = x + 0.05 * torch.randn_like(x)  # an "approximated backbone" in front of fc6
    train, test = slice(0, 4000), slice(4000, None)
    with torch.no_grad():
        y6, y6_hat = fc6(x), fc6(noisy)
        truth = torch.relu(fc7(torch.relu(y6)))
    options = SolverOptions(speedup=2, schedule=SHORT)
    errors = {}
    for method in ("asym", "svd"):
        layers = {
            "fc6": {"structure": "channel", "rank": 6},
            "fc7": {"structure": "channel", "rank": 6},
        }
        new = compress_linear_chain(
            {"fc6": fc6, "fc7": fc7}, layers, y6[train], y6_hat[train], METHODS[method], options
        )
        assert isinstance(new["fc6"], FactorizedLinear) and new["fc6"].rank == 6
        assert layers["fc7"]["error"] is not None
        with torch.no_grad():
            out = torch.relu(new["fc7"](torch.relu(new["fc6"](noisy[test]))))
        errors[method] = relative_error(truth[test], out, relu=False)
    assert errors["asym"] < 0.8 * errors["svd"]
