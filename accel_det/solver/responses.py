"""Sampling layer responses at random positions of any iterable of image batches: the samples
eqs. (5) and (12) are solved from.

Positions depend only on (seed, layer, image index), so the original network and the network
approximated so far are sampled at the same places in every pass, and memory grows with the number
of samples, not of images.
"""

from __future__ import annotations

import hashlib
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..errors import AccelDetError
from ..nn.graph import trace
from ..utils.dist import all_gather_objects, gather_samples, sum_over_processes
from .runner import GraphRunner, LayerInputs, make_runner

Batch = Tuple[torch.Tensor, torch.Tensor]  # images N×3×H×W, their global indices (N,)


def sample_positions(
    seed: int, layer: int, image_index: int, out_hw: Tuple[int, int], count: int
) -> torch.Tensor:
    """``count`` distinct flat positions in an ``out_hw`` map, fixed by (seed, layer, image)."""
    size = out_hw[0] * out_hw[1]
    rng = np.random.default_rng([seed, layer, image_index])
    return torch.from_numpy(rng.choice(size, size=min(count, size), replace=False))


def iterate_batches(batches: Iterable, device: Optional[torch.device] = None) -> Iterator[Batch]:
    """Images and global indices from batches that are tensors, ``(images, ...)`` tuples such as a
    DataLoader over an ImageFolder gives, or ``{"images": ..., "indices": ...}`` mappings."""
    seen = 0
    for number, batch in enumerate(batches):
        indices = None
        if isinstance(batch, Mapping):
            images, indices = batch["images"], batch.get("indices")
        elif isinstance(batch, (tuple, list)):
            images = batch[0]
        else:
            images = batch
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            raise AccelDetError(f"batch {number} is not an N×C×H×W image tensor")
        if not torch.isfinite(images).all():
            raise AccelDetError(f"batch {number} contains NaN or Inf values")
        if indices is None:
            indices = torch.arange(seen, seen + images.shape[0])
        seen += images.shape[0]
        yield images.to(device, torch.float32, non_blocking=True), torch.as_tensor(indices).cpu()


def gather_responses(output: torch.Tensor, positions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Rows ``output[n, :, position]`` for every image n and each of its positions: (Σ counts) ×
    d."""
    flat = output.flatten(2)
    rows = [flat[n][:, p.to(flat.device)].T for n, p in enumerate(positions)]
    return torch.cat(rows).float()


def gather_patches(
    inputs: torch.Tensor, positions: Sequence[torch.Tensor], conv: nn.Module, out_hw
) -> torch.Tensor:
    """The k×k input patches (zero-padded like ``conv``) that produce the outputs at
    ``positions``."""
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    padded = F.pad(inputs, (pw, pw, ph, ph))
    image = torch.cat([torch.full_like(p, n) for n, p in enumerate(positions)]).to(inputs.device)
    flat = torch.cat(list(positions)).to(inputs.device)
    top = (flat // out_hw[1]) * sh
    left = (flat % out_hw[1]) * sw
    rows = top[:, None] + torch.arange(kh, device=inputs.device)
    cols = left[:, None] + torch.arange(kw, device=inputs.device)
    patches = padded.permute(0, 2, 3, 1)[image[:, None, None], rows[:, :, None], cols[:, None, :]]
    return patches.permute(0, 3, 1, 2)  # samples × c × kh × kw


def patch_responses(convs: Sequence[nn.Conv2d], patches: torch.Tensor) -> torch.Tensor:
    """Responses at the centre of each patch of a chain of convs (their padding is already in the
    patch)."""
    x = patches
    for conv in convs:
        x = F.conv2d(x, conv.weight, conv.bias)
    return x.flatten(1).float()


class ResponseSampler:
    """Responses of conv layers to one set of image batches, sampled at ``samples_per_image``
    positions per image and layer fixed by (``seed``, layer, image index).

    :meth:`original` makes the pass of the original network (and remembers a fingerprint of every
    batch); :meth:`regressed` the later passes of the network approximated so far, checked against
    those fingerprints. ``runner`` runs the network part of the way (:mod:`.runner`; by default
    from the network's ``fx`` graph, or its forward with hooks where it does not trace).
    ``memory`` bounds (in bytes) the approximated activations kept between passes. Under
    torch.distributed the samples of all processes are pooled, in image order.
    """

    def __init__(
        self,
        batches: Iterable,
        samples_per_image: int,
        seed: int = 0,
        device: Optional[torch.device] = None,
        progress: bool = True,
        memory: int = 0,
        runner=None,
    ):
        self.batches = batches
        self.samples_per_image = samples_per_image
        self.seed = seed
        self.device = device
        self.progress = progress
        self.memory = memory
        self.runner = runner
        self.fingerprints: List[torch.Tensor] = []
        self.digests: Dict[int, str] = {}  # sha256 of each image's values, by global index
        self.layers: Mapping[str, str] = {}
        self.row_images: Dict[str, torch.Tensor] = {}  # layer -> the image of every sample row

    @property
    def num_images(self) -> int:
        """Images of this process seen by the original pass."""
        return sum(len(f) for f in self.fingerprints)

    def original(self, model: nn.Module, layers: Mapping[str, str]) -> Dict[str, torch.Tensor]:
        """Pre-ReLU responses y of every conv in ``layers`` (name → qualified module name in
        ``model``, in the order they run), one pass: samples per layer (n × d, on the CPU; under
        torch.distributed those of all processes)."""
        if self.runner is None:
            self.runner = make_runner(trace(model)[0])
        self.layers = dict(layers)
        name_of = {path: name for name, path in layers.items()}
        layer_number = {name: number for number, name in enumerate(layers)}
        samples: Dict[str, List[torch.Tensor]] = {name: [] for name in layers}
        images_of: Dict[str, List[torch.Tensor]] = {name: [] for name in layers}
        self.fingerprints, self.digests = [], {}
        stream = iterate_batches(self.batches, self.device)
        with torch.inference_mode():
            for images, indices in tqdm(
                stream, desc="original responses", disable=not self.progress, leave=False
            ):
                self.fingerprints.append(_fingerprint(images))
                values = images.cpu().contiguous().numpy()
                self.digests.update(
                    (int(i), hashlib.sha256(v).hexdigest()) for i, v in zip(indices, values)
                )

                def visit(path: str, output: torch.Tensor) -> None:
                    name = name_of[path]
                    hw = (output.shape[2], output.shape[3])
                    positions = self.positions(layer_number[name], indices, hw)
                    samples[name].append(gather_responses(output, positions).cpu())
                    images_of[name].append(_row_images(indices, positions))

                self.runner.outputs(model, images, list(layers.values()), visit)
        if sum_over_processes(len(self.fingerprints)) == 0:
            raise AccelDetError("no image batches were given")
        result = {}
        for name, path in layers.items():
            width = model.get_submodule(path).out_channels
            rows, images = _stack(samples[name], images_of[name], width)
            rows, self.row_images[name] = gather_samples(rows, images)
            result[name] = _checked(name, rows)
        return result

    def images_digest(self) -> str:
        """sha256 of the values of every image of the original pass (float32, in image order; under
        torch.distributed those of all processes): which images the layers were solved for."""
        digests = dict(pair for part in all_gather_objects(self.digests) for pair in part.items())
        digest = hashlib.sha256()
        for index in sorted(digests):
            digest.update(f"{index}\t{digests[index]}\n".encode())
        return digest.hexdigest()

    def positions(self, layer_number: int, indices: torch.Tensor, out_hw) -> List[torch.Tensor]:
        return [
            sample_positions(self.seed, layer_number, int(i), out_hw, self.samples_per_image)
            for i in indices
        ]

    def regressed(
        self,
        model: nn.Module,
        name: str,
        regressor: Sequence[nn.Conv2d],
        inputs: Optional[LayerInputs] = None,
    ) -> Tuple[torch.Tensor, Optional[LayerInputs]]:
        """Responses ŷ = W̃ x̂ at the sampled positions of layer ``name``, x̂ being its input in the
        (partly approximated) ``model`` and W̃ the conv chain ``regressor``.

        The pass starts from ``inputs`` of an earlier layer when given, else from the images. It
        also returns what the next pass can start from when it fits in ``memory`` (besides
        ``inputs``), so that passes cost one approximated layer each instead of the whole
        approximated front (only where the network traces with ``torch.fx``).
        """
        path = self.layers[name]
        layer_number = list(self.layers).index(name)
        conv = model.get_submodule(path)
        rows, images_of = [], []
        budget = self.memory - (inputs.nbytes if inputs is not None else 0)
        keep = budget > 0 and isinstance(self.runner, GraphRunner)
        kept: Optional[LayerInputs] = LayerInputs(path, [], []) if keep else None
        if inputs is not None:
            stream = (
                ({k: _to(v, self.device) for k, v in values.items()}, i)
                for values, i in zip(inputs.values, inputs.indices)
            )
        else:
            stream = iterate_batches(self.batches, self.device)
        with torch.inference_mode():
            bar = tqdm(
                stream, desc=f"{name} approximated inputs", disable=not self.progress, leave=False
            )
            for number, (source, indices) in enumerate(bar):
                if inputs is None:
                    self.check_unchanged(number, source)
                    x, alive = self.runner.inputs(model, path, images=source, keep=kept is not None)
                else:
                    x, alive = self.runner.inputs(
                        model, path, start=(inputs.start, source), keep=kept is not None
                    )
                out_hw = _out_hw(conv, x.shape[2:])
                positions = self.positions(layer_number, indices, out_hw)
                rows.append(
                    patch_responses(regressor, gather_patches(x, positions, conv, out_hw)).cpu()
                )
                images_of.append(_row_images(indices, positions))
                if kept is not None:
                    kept.values.append({k: _to(v, "cpu") for k, v in alive.items()})
                    kept.indices.append(indices)
                    if kept.nbytes > budget:
                        kept = None
        stacked, images = _stack(rows, images_of, regressor[-1].out_channels)
        return _checked(name, gather_samples(stacked, images)[0]), kept

    def check_unchanged(self, number: int, images: torch.Tensor) -> None:
        """Refuse a batch that differs from the original pass's batch ``number``."""
        if number >= len(self.fingerprints) or not torch.allclose(
            _fingerprint(images), self.fingerprints[number], rtol=1e-5, atol=1e-6
        ):
            raise AccelDetError(
                "the batches changed between passes: give the same images in the same order every "
                "time (e.g. a DataLoader with shuffle=False and no random augmentation)"
            )


def _to(value, device):
    return value.to(device) if isinstance(value, torch.Tensor) else value


def _row_images(indices: torch.Tensor, positions: Sequence[torch.Tensor]) -> torch.Tensor:
    """The image index of every sample row of a batch."""
    return torch.repeat_interleave(
        indices.long(), torch.tensor([len(p) for p in positions], dtype=torch.long)
    )


def _stack(
    rows: List[torch.Tensor], images: List[torch.Tensor], width: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Concatenated rows and image indices; empty (0 × width) for a process that got no images."""
    if not rows:
        return torch.zeros(0, width), torch.zeros(0, dtype=torch.long)
    return torch.cat(rows), torch.cat(images)


def _out_hw(conv: nn.Module, in_hw) -> Tuple[int, int]:
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    return ((in_hw[0] + 2 * ph - kh) // sh + 1, (in_hw[1] + 2 * pw - kw) // sw + 1)


def _fingerprint(images: torch.Tensor) -> torch.Tensor:
    flat = images.detach().double().flatten(1)
    return torch.stack([flat.sum(1), flat.square().sum(1)], 1).cpu()


def _checked(name: str, responses: torch.Tensor) -> torch.Tensor:
    if not torch.isfinite(responses).all():
        raise AccelDetError(
            f"the responses of {name} contain NaN or Inf: check the weights and the images"
        )
    return responses
