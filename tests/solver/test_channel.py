"""Channel decomposition: closed forms against brute force and known optima (eqs. 4, 8–12)."""

import pytest
import torch
from torch import nn

from accel_det.nn import FactorizedConv2d
from accel_det.solver.channel import (
    _z_step_statistics,
    covariance,
    nonlinear_reconstruction,
    pca_reconstruction,
    reduced_rank_regression,
    relu_z_step,
)
from accel_det.solver.factorize import set_low_rank_weights
from accel_det.solver.responses import gather_responses, sample_positions


def _rrr_objective(z, y, m):
    return float((z - y @ m.T).square().sum())


def _centered(rows):
    return rows - rows.mean(0)


def _gsvd_solution(z, y, rank):
    """The paper's literal GSVD recipe (§3.2, eq. 8): M̂ = Z Yᵀ(YYᵀ)⁻¹ = U S Vᵀ with
    Vᵀ YYᵀ V = I, through a Cholesky factor L of YYᵀ; samples are columns here."""
    Z, Y = z.T.double(), y.T.double()
    m_hat = Z @ Y.T @ torch.linalg.inv(Y @ Y.T)
    chol = torch.linalg.cholesky(Y @ Y.T)
    u, s, vt = torch.linalg.svd(m_hat @ chol)
    v = torch.linalg.solve(chol.T, vt.T)
    assert torch.allclose(v.T @ (Y @ Y.T) @ v, torch.eye(len(s), dtype=v.dtype), atol=1e-8)
    return u[:, :rank] @ torch.diag(s[:rank]) @ v[:, :rank].T


@pytest.mark.parametrize("seed", range(4))
def test_reduced_rank_regression_matches_gsvd_and_beats_gradient_descent(seed):
    g = torch.Generator().manual_seed(seed)
    n, d, rank = 200, 8, 3
    y = _centered(
        torch.randn(n, d, generator=g, dtype=torch.float64)
        @ torch.randn(d, d, generator=g, dtype=torch.float64)
    )
    z = _centered(
        y @ torch.randn(d, d, generator=g, dtype=torch.float64)
        + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)
    )
    basis, coefficients = reduced_rank_regression(z.T @ y, y.T @ y, rank, ridge=0.0)
    closed = basis @ coefficients
    assert torch.linalg.matrix_rank(closed) == rank
    assert torch.allclose(closed, _gsvd_solution(z, y, rank), atol=1e-8)

    # Brute force: minimise ‖Z − M Y‖ over M = A Bᵀ from several random starts.
    best = float("inf")
    for start in range(3):
        gen = torch.Generator().manual_seed(100 + start)
        a = torch.randn(d, rank, generator=gen, dtype=torch.float64, requires_grad=True)
        b = torch.randn(d, rank, generator=gen, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS(
            [a, b],
            max_iter=500,
            tolerance_grad=1e-12,
            tolerance_change=1e-15,
            line_search_fn="strong_wolfe",
        )

        def loss():
            optimizer.zero_grad()
            value = (z - y @ (a @ b.T).T).square().sum()
            value.backward()
            return value

        optimizer.step(loss)
        best = min(best, _rrr_objective(z, y, (a @ b.T).detach()))
    closed_value = _rrr_objective(z, y, closed)
    assert closed_value <= best * (1 + 1e-9)
    assert closed_value == pytest.approx(best, rel=1e-6)


def test_reduced_rank_regression_with_z_equal_y_is_pca():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(300, 6, generator=g, dtype=torch.float64) @ torch.randn(
        6, 6, generator=g, dtype=torch.float64
    )
    pca = pca_reconstruction(y, 2)
    _, scatter = covariance(y)
    basis, coefficients = reduced_rank_regression(scatter, scatter, 2, ridge=0.0)
    assert torch.allclose(basis @ coefficients, pca.matrix(), atol=1e-8)


def test_pca_recovers_exact_low_rank_responses():
    g = torch.Generator().manual_seed(0)
    n, d, rank = 500, 12, 4
    y = torch.randn(n, rank, generator=g) @ torch.randn(rank, d, generator=g) + torch.randn(
        d, generator=g
    )
    solution = pca_reconstruction(y, rank)
    assert solution.rank == rank
    assert torch.allclose(solution.apply(y), y, atol=1e-4)
    assert not torch.allclose(pca_reconstruction(y, rank - 1).apply(y), y, atol=1e-2)


def test_reduced_rank_regression_recovers_a_low_rank_map():
    g = torch.Generator().manual_seed(1)
    n, d, rank = 400, 10, 3
    y = _centered(torch.randn(n, d, generator=g, dtype=torch.float64))
    truth = torch.randn(d, rank, generator=g, dtype=torch.float64) @ torch.randn(
        rank, d, generator=g, dtype=torch.float64
    )
    basis, coefficients = reduced_rank_regression((y @ truth.T).T @ y, y.T @ y, rank, ridge=0.0)
    assert torch.allclose(basis @ coefficients, truth, atol=1e-8)


def test_z_step_is_the_minimum_of_a_fine_grid():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(400, generator=g, dtype=torch.float64).clamp(min=0) * 2
    y_prime = torch.randn(400, generator=g, dtype=torch.float64) * 2
    grid = torch.linspace(-8, 8, 160001, dtype=torch.float64)
    for lam in (0.01, 1.0, 10.0):
        z = relu_z_step(target, y_prime, lam)
        cost = (target[:, None] - grid.clamp(min=0)).square() + lam * (
            grid - y_prime[:, None]
        ).square()
        ours = (target - z.clamp(min=0)).square() + lam * (z - y_prime).square()
        assert torch.all(ours <= cost.min(1).values + 1e-9)
        assert torch.allclose(ours, cost.min(1).values, atol=1e-6)


def _z_statistics_by_reference(centered, rectified, basis, coefficients, offset, lam):
    """What step (i) needs from step (ii), from relu_z_step in float64: Σ z (ŷ − mean ŷ)ᵀ and z̄,
    with y' = M (ŷ − mean ŷ) + offset; also z where every element takes z0 = y' or z1."""
    wide = centered.double()
    y_prime = wide @ (basis @ coefficients).T.double() + offset.double()
    target = rectified.double()
    z = relu_z_step(target, y_prime, lam)
    z1 = (lam * y_prime + target) / (lam + 1)
    return (z.T @ wide, z.mean(0)), {"z0": y_prime, "z1": z1}


@pytest.mark.parametrize(
    "n, chunk",
    [(1, 2048), (2047, 2048), (2048, 2048), (2049, 2048), (5000, 2048), (1000, 96), (7, 3)],
)
def test_production_z_step_statistics_equal_the_reference_z_step(n, chunk):
    """_z_step_statistics (the solver's fused, chunked z-step) against relu_z_step, with n a
    multiple of the chunk size, one more or less, smaller than a chunk, and a last partial chunk.

    The data make both candidates matter: the responses y' of a random rank-4 M are negative for
    about half of the elements, and r(y) > 0 for a third of those, where z0 = y' and z1 differ and
    the cost comparison decides. Tolerance 1e-5 relative: the production step multiplies in
    float32 (measured 0.6-1e-7 off the float64 reference here; 4e-5 on a 30,000-sample layer);
    taking z0 everywhere, z1 everywhere, or z1 wherever r(y) > 0 moves Σ z (ŷ − mean ŷ)ᵀ by 3e-2
    (λ = 10, where z1 is closest to y') to 2 (λ = 0.01), asserted > 1e-2 below. (With n = 1 the
    centred regressor is zero: only z̄ is checked there.)"""
    g = torch.Generator().manual_seed(n + chunk)
    d, rank = 12, 4
    regressor = torch.randn(n, d, generator=g) * 2 + torch.linspace(-1, 1, d)
    centered = regressor - regressor.mean(0)
    rectified = (torch.randn(n, d, generator=g) * 1.5 + 0.2).clamp(min=0)
    basis = torch.randn(d, rank, generator=g, dtype=torch.float64)
    coefficients = torch.randn(rank, d, generator=g, dtype=torch.float64) / 3
    offset = torch.randn(d, generator=g, dtype=torch.float64) * 0.3
    for lam in (0.01, 0.3, 1.0, 10.0):
        cross, z_mean = _z_step_statistics(
            centered, rectified, basis, coefficients, offset, lam, chunk=chunk
        )
        (ref_cross, ref_mean), candidates = _z_statistics_by_reference(
            centered, rectified, basis, coefficients, offset, lam
        )
        assert cross.dtype == z_mean.dtype == torch.float64
        scale = float(ref_cross.norm())
        assert float((cross - ref_cross).norm()) <= 1e-5 * scale, lam
        assert float((z_mean - ref_mean).norm()) <= 1e-5 * float(ref_mean.norm()), lam
        if n == 1:
            continue
        y_prime, z1 = candidates["z0"], candidates["z1"]
        target = rectified.double()
        contested = (y_prime < 0) & (target > 0)
        assert contested.double().mean() > 0.1
        wrong = {
            "z0 everywhere": y_prime,
            "z1 everywhere": z1,
            "z1 where r(y) > 0": torch.where(target > 0, z1, relu_z_step(target, y_prime, lam)),
        }
        for name, z in wrong.items():
            moved = float((z.T @ centered.double() - ref_cross).norm())
            assert moved > 1e-2 * scale, (lam, name)


def test_nonlinear_solution_beats_linear_on_rectified_responses():
    g = torch.Generator().manual_seed(0)
    n, d, rank = 3000, 16, 4
    y = torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g) * 0.5 - 0.3
    linear = pca_reconstruction(y, rank)
    nonlinear = nonlinear_reconstruction(y, y, rank)

    def relu_error(solution):
        return float((y.clamp(min=0) - solution.apply(y).clamp(min=0)).norm())

    assert relu_error(nonlinear) < 0.97 * relu_error(linear)
    without_relu = nonlinear_reconstruction(y, y, rank, relu=False)
    assert torch.allclose(without_relu.matrix(), linear.matrix(), atol=1e-4)


def test_asymmetric_solution_corrects_a_perturbed_input():
    """Eq. (12): regressing the true responses on perturbed ones beats the symmetric solution."""
    g = torch.Generator().manual_seed(0)
    n, d, rank = 3000, 12, 6
    truth = torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g)
    drift = torch.eye(d) + 0.3 * torch.randn(d, d, generator=g)
    perturbed = truth @ drift.T + 0.5
    symmetric = nonlinear_reconstruction(truth, truth, rank)
    asymmetric = nonlinear_reconstruction(truth, perturbed, rank)

    def relu_error(solution):
        return float((truth.clamp(min=0) - solution.apply(perturbed).clamp(min=0)).norm())

    assert relu_error(asymmetric) < 0.5 * relu_error(symmetric)


def _responses(conv, inputs, per_image=30, seed=0):
    out = conv(inputs)
    positions = [sample_positions(seed, 0, i, out.shape[2:], per_image) for i in range(len(inputs))]
    return gather_responses(out, positions)


def test_full_rank_reproduces_the_layer():
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 7, 3, padding=1)
    x = torch.randn(6, 5, 9, 9)
    with torch.no_grad():
        solution = nonlinear_reconstruction(_responses(conv, x), _responses(conv, x), rank=7)
        layer = FactorizedConv2d(5, 7, 3, 1, 1, structure="channel", rank=7)
        set_low_rank_weights(layer.reduce, layer.expand, conv, solution)
        test = torch.randn(2, 5, 11, 8)
        assert torch.allclose(layer(test), conv(test), atol=1e-4)


def test_low_rank_filters_are_recovered_exactly():
    torch.manual_seed(0)
    c, d, rank = 6, 16, 5
    conv = nn.Conv2d(c, d, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_((torch.randn(d, rank) @ torch.randn(rank, c * 9)).reshape(d, c, 3, 3))
        x = torch.randn(8, c, 10, 10)
        solution = pca_reconstruction(_responses(conv, x), rank)
        layer = FactorizedConv2d(c, d, 3, 1, 1, structure="channel", rank=rank)
        set_low_rank_weights(layer.reduce, layer.expand, conv, solution)
        test = torch.randn(3, c, 12, 7)
        assert torch.allclose(layer(test), conv(test), atol=1e-4)


def test_dead_channels_and_constant_maps_do_not_break_the_solver():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(500, 8, generator=g)
    y[:, 2] = 0.0  # dead channel
    y[:, 5] = 3.0  # constant map
    regressor = y.clone()
    regressor[:, 3] = regressor[:, 4]  # duplicated channel: YYᵀ singular
    solution = nonlinear_reconstruction(y, regressor, 4)
    assert (
        torch.isfinite(solution.P).all()
        and torch.isfinite(solution.Q).all()
        and torch.isfinite(solution.b).all()
    )
    assert torch.allclose(solution.apply(regressor)[:, 5], torch.full((500,), 3.0), atol=1e-3)
