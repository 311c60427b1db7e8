"""One conv applied to several feature maps of an image with the same weights (an FPN's RPN head:
its 3×3 conv runs on every pyramid level). The solver sees it as one layer over all the maps'
positions: its multiply-adds are the sum over the maps (:func:`shared_conv_spec`), and its
responses (eqs. 5, 12) are sampled uniformly over those positions (:class:`SharedConvSampler`),
so that each map weighs in as it weighs in the cost.
"""

from __future__ import annotations

from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import AccelDetError
from ..utils.dist import gather_samples
from .complexity import ConvSpec
from .responses import gather_patches, iterate_batches, patch_responses

Maps = Callable[[nn.Module, torch.Tensor], Sequence[torch.Tensor]]  # network, images -> conv inputs


def shared_conv_spec(
    name: str, conv: nn.Conv2d, map_hws: Sequence[Tuple[int, int]], after: str = "relu"
) -> ConvSpec:
    """``conv`` run once on each map of ``map_hws`` (its input sizes), as one layer: the maps'
    output positions laid side by side in one row (``out_hw`` = (1, Σ H'W')), which
    :mod:`.complexity` counts as it counts any layer. Only stride 1 keeps that count exact for
    the spatial structures (their k×1 layer runs on the output's rows)."""
    if tuple(conv.stride) != (1, 1):
        raise AccelDetError(
            f"{name} runs on {len(map_hws)} maps with stride {tuple(conv.stride)}: a conv shared "
            "over several maps is factorized at stride 1 only"
        )
    positions = sum(out_hw(conv, hw)[0] * out_hw(conv, hw)[1] for hw in map_hws)
    return ConvSpec(
        name=name,
        in_channels=conv.in_channels,
        out_channels=conv.out_channels,
        kernel_size=tuple(conv.kernel_size),
        stride=(1, 1),
        padding=tuple(conv.padding),
        out_hw=(1, positions),
        relu=after == "relu",
        in_hw=(1, positions),
        module=name,
        after=after,
    )


def out_hw(conv: nn.Conv2d, in_hw: Tuple[int, int]) -> Tuple[int, int]:
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    return ((in_hw[0] + 2 * ph - kh) // sh + 1, (in_hw[1] + 2 * pw - kw) // sw + 1)


def map_positions(
    seed: int, image_index: int, sizes: Sequence[Tuple[int, int]], count: int
) -> List[torch.Tensor]:
    """``count`` distinct positions drawn uniformly over all the output maps ``sizes`` of one
    image (fixed by (seed, image)), as flat positions per map."""
    areas = np.array([h * w for h, w in sizes])
    rng = np.random.default_rng([seed, image_index])
    drawn = np.sort(rng.choice(int(areas.sum()), size=min(count, int(areas.sum())), replace=False))
    starts = np.concatenate([[0], np.cumsum(areas)])
    return [
        torch.from_numpy(drawn[(drawn >= lo) & (drawn < hi)] - lo)
        for lo, hi in zip(starts[:-1], starts[1:])
    ]


class SharedConvSampler:
    """Responses of ``conv`` on the maps ``maps(network, images)`` gives, at ``samples_per_image``
    positions per image spread over the maps (:func:`map_positions`). :meth:`original` samples
    the original network; :meth:`regressed` any conv chain on the inputs the (approximated)
    network gives there, as :class:`~.responses.ResponseSampler` does for a layer run once."""

    def __init__(
        self,
        conv: nn.Conv2d,
        maps: Maps,
        batches: Iterable,
        samples_per_image: int,
        seed: int = 0,
        device: Optional[torch.device] = None,
        progress: bool = True,
    ):
        self.conv = conv
        self.maps = maps
        self.batches = batches
        self.samples_per_image = samples_per_image
        self.seed = seed
        self.device = device
        self.progress = progress

    def original(self, network: nn.Module) -> Tuple[torch.Tensor, torch.Tensor]:
        """Pre-activation responses W x + b of the conv at the sampled positions (n × d) and the
        image of every row."""
        return self.sample(network, [self.conv], "responses")

    def regressed(self, network: nn.Module, name: str, regressor: Sequence[nn.Conv2d], inputs=None):
        """Responses of the chain ``regressor`` on ``network``'s maps at the sampled positions,
        in :meth:`original`'s row order; the second value (a later pass's start) is always None."""
        return self.sample(network, regressor, "approximated inputs")[0], None

    def sample(self, network, chain, what: str) -> Tuple[torch.Tensor, torch.Tensor]:
        rows, owners = [], []
        stream = iterate_batches(self.batches, self.device)
        with torch.inference_mode():
            for images, indices in tqdm(stream, desc=what, disable=not self.progress, leave=False):
                maps = self.maps(network, images)
                for number, index in enumerate(indices.tolist()):
                    sizes = [out_hw(self.conv, m.shape[2:]) for m in maps]
                    positions = map_positions(self.seed, index, sizes, self.samples_per_image)
                    for x, where, size in zip(maps, positions, sizes):
                        patches = gather_patches(x[number : number + 1], [where], self.conv, size)
                        rows.append(patch_responses(chain, patches).cpu())
                        owners.append(torch.full((len(where),), index, dtype=torch.long))
        if not rows:
            return torch.zeros(0, self.conv.out_channels), torch.zeros(0, dtype=torch.long)
        return gather_samples(torch.cat(rows), torch.cat(owners))
