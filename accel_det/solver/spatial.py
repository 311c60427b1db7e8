"""Jaderberg et al.'s scheme 2 spatial decomposition with "filter reconstruction", in closed form
(§3.5)."""

from __future__ import annotations

from typing import Tuple

import torch


def filter_reconstruction(
    weight: torch.Tensor, spatial_rank: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Best rank-d'' split of a ``d × c × kh × kw`` kernel into ``vertical`` (d'' × c × kh × 1) and
    ``horizontal`` (d × d'' × 1 × kw) filters, minimising the filter error ‖W − W̃‖_F.

    W̃[o, i, y, x] = Σ_t horizontal[o, t, x] · vertical[t, i, y], so W reshaped to the
    (c·kh) × (d·kw) matrix A[(i, y), (o, x)] is approximated by a rank-d'' matrix, and the truncated
    SVD of A is the optimum (Eckart–Young); Jaderberg et al. reached it by conjugate gradients.
    """
    d, c, kh, kw = weight.shape
    u, s, vh = torch.linalg.svd(kernel_matrix(weight), full_matrices=False)
    root = s[:spatial_rank].sqrt()
    vertical = (u[:, :spatial_rank] * root).T.reshape(spatial_rank, c, kh, 1)
    horizontal = (
        (vh[:spatial_rank].T * root).reshape(d, kw, spatial_rank).permute(0, 2, 1).unsqueeze(2)
    )
    return vertical.to(weight.dtype).contiguous(), horizontal.to(weight.dtype).contiguous()


def kernel_matrix(weight: torch.Tensor) -> torch.Tensor:
    """A ``d × c × kh × kw`` kernel as the (c·kh) × (d·kw) matrix A[(i, y), (o, x)] whose rank-d''
    approximation is the k×1 + 1×k split (float64)."""
    d, c, kh, kw = weight.shape
    return weight.detach().double().permute(1, 2, 0, 3).reshape(c * kh, d * kw)


def kernel_energies(weight: torch.Tensor) -> torch.Tensor:
    """The squared singular values of :func:`kernel_matrix`, largest first: the filter energy a
    split keeps at each d'' (‖W − W̃‖²_F is the sum of those past d''), which prices d'' in rank
    selection as the eigenvalues of the responses price d' (eqs. 13–14)."""
    return torch.linalg.svdvals(kernel_matrix(weight).cpu()).square()
