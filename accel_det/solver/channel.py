"""Channel decomposition from sampled responses: PCA (eq. 4), reduced-rank regression (eq. 8),
the ReLU z-step (eqs. 9–11) and the alternating nonlinear / asymmetric solver (eqs. 5–7, 12).

Responses are matrices with one sample per row: ``n × d``. The solution is a rank-d' matrix
``M = P Qᵀ`` and a bias ``b``; the approximated response is ``M ŷ + b`` (eq. 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch

DEFAULT_SCHEDULE: Tuple[Tuple[float, int], ...] = ((0.01, 25), (1.0, 25))
# Relative ridge added to YYᵀ: dead channels and constant maps make it singular in trained networks.
RIDGE = 1e-6


@dataclass
class LowRankResponse:
    """``M = P Qᵀ`` (P: d × d', Q: d × d') and bias b: the approximated response is ``M ŷ + b``."""

    P: torch.Tensor
    Q: torch.Tensor
    b: torch.Tensor

    @property
    def rank(self) -> int:
        return self.P.shape[1]

    def matrix(self) -> torch.Tensor:
        return self.P @ self.Q.T

    def apply(self, y: torch.Tensor) -> torch.Tensor:
        """``M y + b`` for rows ``y`` (n × d)."""
        return (y @ self.Q.to(y.dtype)) @ self.P.T.to(y.dtype) + self.b.to(y.dtype)


def covariance(y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean (d) and scatter matrix Σ (y − ȳ)(y − ȳ)ᵀ (d × d) of rows ``y``, both in float64."""
    y = y.double()
    mean = y.mean(0)
    centered = y - mean
    return mean, centered.T @ centered


def eigen_descending(symmetric: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (largest first, clipped at 0) and matching eigenvectors of a symmetric matrix."""
    values, vectors = torch.linalg.eigh(symmetric.double())
    return values.flip(0).clamp_min(0), vectors.flip(1)


def pca_energy(eigenvalues: torch.Tensor, rank: int) -> float:
    """Fraction of the PCA energy kept by the first ``rank`` eigenvalues (Fig. 2)."""
    total = float(eigenvalues.sum())
    return float(eigenvalues[:rank].sum()) / total if total > 0 else 1.0


def pca_reconstruction(y: torch.Tensor, rank: int) -> LowRankResponse:
    """Eq. (4): min_M Σ‖(y − ȳ) − M(y − ȳ)‖² s.t. rank M ≤ d'; M = U_d' U_d'ᵀ, b = ȳ − M ȳ."""
    mean, scatter = covariance(y)
    _, vectors = eigen_descending(scatter)
    basis = vectors[:, :rank]
    return LowRankResponse(P=basis, Q=basis, b=mean - basis @ (basis.T @ mean))


def reduced_rank_regression(
    cross: torch.Tensor,
    scatter: torch.Tensor,
    rank: int,
    ridge: float = RIDGE,
    chol: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Eq. (8): min_M ‖Z − M Y‖_F s.t. rank M ≤ d', from ``cross`` = Z Yᵀ and ``scatter`` = Y Yᵀ.

    With M̂ = Z Yᵀ (Y Yᵀ)⁻¹ the solution is M = U_d' U_d'ᵀ M̂, U_d' the top eigenvectors of
    M̂ Y Yᵀ M̂ᵀ: the paper's GSVD solution U_d' S_d' V_d'ᵀ in another form (§3.2, eq. 8).
    Returns ``(U_d', U_d'ᵀ M̂)`` so that M is their product. ``chol``, if given, is
    :func:`scatter_cholesky` of ``scatter`` (the solver's iterations share one Y).
    """
    cross = cross.double()
    if chol is None:
        chol = scatter_cholesky(scatter, ridge)
    m_hat = torch.cholesky_solve(cross.T.contiguous(), chol).T  # Z Yᵀ (Y Yᵀ)⁻¹
    _, vectors = eigen_descending(m_hat @ cross.T)  # M̂ Y Yᵀ M̂ᵀ = M̂ (Z Yᵀ)ᵀ
    basis = vectors[:, :rank]
    return basis, basis.T @ m_hat


def scatter_cholesky(scatter: torch.Tensor, ridge: float = RIDGE) -> torch.Tensor:
    """Cholesky factor of Y Yᵀ + ridge·mean(diag)·I (float64), as :func:`reduced_rank_regression`
    uses it.

    Y Yᵀ is singular by construction in the 3d step (ŷ passes through d'' < d channels) and when
    there are fewer samples than filters; rounding can leave it a little indefinite, so the ridge
    grows tenfold until the factorisation succeeds.
    """
    scatter = scatter.double()
    eye = torch.eye(scatter.shape[0], dtype=scatter.dtype, device=scatter.device)
    scale = float(scatter.diagonal().mean().clamp_min(1e-30))
    for attempt in range(12):
        chol, info = torch.linalg.cholesky_ex(scatter + ridge * 10**attempt * scale * eye)
        if int(info) == 0:
            return chol
    raise ArithmeticError(
        "the response scatter matrix cannot be factorised: the responses are not finite"
    )


def relu_z_step(target: torch.Tensor, y_prime: torch.Tensor, lam: float) -> torch.Tensor:
    """Eqs. (9)–(11): per element, argmin_z (r(y) − r(z))² + λ(z − y')² over z0 = min(0, y') and
    z1 = max(0, (λy' + r(y)) / (λ + 1)). ``target`` is r(y), already rectified.

    The comparison of the two costs reduces to: z1 wins when y' ≥ 0 (z = 0 is feasible for it), or
    when λ(r(y) − y')² ≤ (λ + 1) r(y)², which also implies z1 > 0; otherwise z0 = y'. This form
    needs a third of the memory traffic of evaluating both costs.
    """
    z1 = (lam * y_prime + target) / (lam + 1)
    z1_wins = (y_prime >= 0) | (lam * (target - y_prime).square() <= (lam + 1) * target.square())
    return torch.where(z1_wins, z1, y_prime)


def balanced_factors(
    basis: torch.Tensor, coefficients: torch.Tensor, bias: torch.Tensor
) -> LowRankResponse:
    """Factor M = basis · coefficients as P Qᵀ with P = U S^½, Q = V S^½ from the SVD of M
    (§3.1)."""
    u, s, vh = torch.linalg.svd(coefficients, full_matrices=False)
    root = s.sqrt()
    return LowRankResponse(P=(basis @ u) * root, Q=vh.T * root, b=bias)


def nonlinear_reconstruction(
    target: torch.Tensor,
    regressor: torch.Tensor,
    rank: int,
    *,
    relu: bool = True,
    schedule: Sequence[Tuple[float, int]] = DEFAULT_SCHEDULE,
) -> LowRankResponse:
    """Eqs. (5)–(7) and (12): min Σ‖r(y_i) − r(M ŷ_i + b)‖² s.t. rank M ≤ d'.

    ``target`` holds the original responses y_i (n × d, before the ReLU), ``regressor`` the
    responses ŷ_i of the layer being decomposed to its (possibly approximated) input; passing the
    same matrix twice gives the symmetric problem (5). Initialised with the linear solution, then
    alternates the z-step (ii) and the GSVD step (i) with λ following ``schedule`` ((λ, iterations)
    pairs). With ``relu=False`` or an empty schedule it returns the linear solution.
    """
    target = target.float()
    regressor = regressor.float()
    mean_hat = regressor.mean(0, dtype=torch.float64)
    centered = regressor - mean_hat.float()
    wide = centered.double()  # float64: float32 sums can go indefinite
    scatter = wide.T @ wide
    del wide
    chol = scatter_cholesky(scatter)  # Y is the same in every iteration: factor it once

    def solve(cross: torch.Tensor, z_mean: torch.Tensor):
        """Step (i): M from Σ (z − z̄)(ŷ − mean ŷ)ᵀ, then b = z̄ − M mean(ŷ)."""
        basis, coefficients = reduced_rank_regression(cross, scatter, rank, chol=chol)
        return basis, coefficients, z_mean - basis @ (coefficients @ mean_hat)

    # Σ (z − z̄)(ŷ − mean ŷ)ᵀ = Σ z (ŷ − mean ŷ)ᵀ because the regressor is centred.
    basis, coefficients, bias = solve(
        (target.T @ centered).double(), target.mean(0, dtype=torch.float64)
    )
    if relu:
        rectified = target.clamp(min=0)
        for lam, iterations in schedule:
            for _ in range(int(iterations)):
                cross, z_mean = _z_step_statistics(
                    centered,
                    rectified,
                    basis,
                    coefficients,
                    bias + basis @ (coefficients @ mean_hat),
                    lam,
                )
                basis, coefficients, bias = solve(cross, z_mean)
    return balanced_factors(basis, coefficients, bias)


def _z_step_statistics(centered, rectified, basis, coefficients, offset, lam, chunk: int = 2048):
    """Step (ii) for all samples, reduced on the fly to what step (i) needs: Σ z (ŷ − mean ŷ)ᵀ and
    z̄.

    Row chunks keep the n × d temporaries of y' = M ŷ + b and z in cache and out of memory. This is
    :func:`relu_z_step` written into preallocated buffers (fresh multi-MB tensors cost page faults
    on every op) with the choice made by ``lerp`` with 0/1 weights instead of ``torch.where``
    (several times slower on CPU); the result is bit-identical to it.
    """
    n, d = centered.shape
    cross = torch.zeros(d, d, dtype=torch.float64, device=centered.device)
    total = torch.zeros(d, dtype=torch.float64, device=centered.device)
    down, up, offset = coefficients.T.float(), basis.T.float(), offset.float()
    rows_max = min(chunk, n)
    buffers = [torch.empty(rows_max, d, device=centered.device) for _ in range(4)]
    low_buffer = torch.empty(rows_max, down.shape[1], device=centered.device)
    part = torch.empty(d, d, device=centered.device)
    for start in range(0, n, chunk):
        rows = centered[start : start + chunk]
        target = rectified[start : start + chunk]
        m = rows.shape[0]
        y_prime, z1, a, w = (b[:m] for b in buffers)
        torch.addmm(offset, torch.mm(rows, down, out=low_buffer[:m]), up, out=y_prime)
        torch.mul(y_prime, lam, out=z1).add_(target).div_(lam + 1)  # z1 = (λy' + r(y)) / (λ + 1)
        torch.sub(target, y_prime, out=a).square_().mul_(lam)  # λ(r(y) − y')²
        torch.square(target, out=w).mul_(lam + 1)  # (λ + 1) r(y)²
        torch.le(a, w, out=w)  # 1.0 where z1 costs no more than z0 = y'
        torch.maximum(w, torch.ge(y_prime, 0, out=a), out=w)  # ... or where y' ≥ 0
        z = torch.lerp(y_prime, z1, w, out=a)  # weight 0 gives y', 1 gives z1 exactly
        cross += torch.mm(z.T, rows, out=part)
        total += z.sum(0, dtype=torch.float64)
    return cross, total / n


def truncated_svd_solution(
    weight: torch.Tensor, bias: Optional[torch.Tensor], rank: int
) -> LowRankResponse:
    """Girshick's truncated SVD of the weights (Fast R-CNN, §3.1), the data-free baseline: W ≈
    U_d' U_d'ᵀ W with U_d' the top left singular vectors of W (d × fan-in); the original bias is
    kept, so M = U_d' U_d'ᵀ and b = b₀ − M b₀ (the response is M (W x + b₀) + b)."""
    matrix = weight.detach().double().flatten(1)
    _, vectors = eigen_descending(matrix @ matrix.T)
    basis = vectors[:, :rank]
    b0 = (
        bias.detach().double()
        if bias is not None
        else torch.zeros(matrix.shape[0], dtype=torch.float64)
    )
    return LowRankResponse(P=basis, Q=basis, b=b0 - basis @ (basis.T @ b0))


def relative_error(target: torch.Tensor, approximation: torch.Tensor, relu: bool = True) -> float:
    """‖r(y) − r(ŷ)‖_F / ‖r(y)‖_F, or without r(·) when the layer has no ReLU."""
    if relu:
        target, approximation = target.clamp(min=0), approximation.clamp(min=0)
    norm = float(target.float().norm())
    return float((target.float() - approximation.float()).norm()) / norm if norm > 0 else 0.0
