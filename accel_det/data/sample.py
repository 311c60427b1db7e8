"""The solver's sample of an image folder: images drawn with a seed, decoded once and kept as
uint8, with a record of which files (and which bytes) were used; batches over them."""

from __future__ import annotations

import hashlib
import io
import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..errors import AccelDetError
from ..utils.dist import all_gather_objects
from ..utils.files import not_found
from .images import list_images, try_read

logger = logging.getLogger(__name__)


def files_digest(files: Sequence[str]) -> str:
    """sha256 of a list of relative paths (one per line), to record which images were used."""
    digest = hashlib.sha256()
    for name in files:
        digest.update(name.encode("utf-8") + b"\n")
    return digest.hexdigest()


def contents_digest(files: Sequence[str], contents: Sequence[Tuple[int, str]]) -> str:
    """sha256 of ``<path> <size> <sha256 of the bytes>`` lines: which images were used, by
    content (another folder with the same names, or regenerated images, give another digest)."""
    digest = hashlib.sha256()
    for name, (size, sha) in zip(files, contents):
        digest.update(f"{name}\t{size}\t{sha}\n".encode("utf-8"))
    return digest.hexdigest()


# --------------------------------------------------------------------------- the solver's sample


@dataclass
class ImageSample:
    """Images drawn for the solver, preprocessed once and kept as uint8 (3×crop×crop each)."""

    root: str
    files: List[str]  # relative paths, in drawing order; image i of the batches is files[i]
    images: torch.Tensor  # N×3×H×W uint8
    found: int  # image files found below root
    skipped: List[str] = field(
        default_factory=list
    )  # unreadable files that were drawn and replaced
    # A shard (sample_images(shard=...)): the global index of each image held, into ``files``;
    # None: this process holds all images, in order.
    indices: Optional[torch.Tensor] = None
    contents: List[Tuple[int, str]] = field(default_factory=list)  # (size, sha256) per file
    image_list: Optional[str] = None  # the file that listed the images to draw from, if any

    def batches(
        self, batch_size: int, normalize: Callable[[torch.Tensor], torch.Tensor]
    ) -> "ImageBatches":
        return ImageBatches(self.images, batch_size, normalize, self.indices)

    def record(self) -> dict:
        return {
            "folder": os.path.abspath(self.root),
            "image_list": os.path.abspath(self.image_list) if self.image_list else None,
            "found": self.found,
            "used": len(self.files),
            "skipped_unreadable": len(self.skipped),
            "skipped_files": self.skipped[:100],
            "files_sha256": files_digest(self.files),
            "contents_sha256": contents_digest(self.files, self.contents),
        }


class ImageBatches:
    """Re-iterable batches ``{"images": N×3×H×W float, "indices": (N,)}`` over a uint8 tensor; the
    same images in the same order on every pass, as :func:`accel_det.solver.compress` requires.
    ``indices``: the global index of each image (default 0 … N-1)."""

    def __init__(
        self,
        images: torch.Tensor,
        batch_size: int,
        normalize: Callable[[torch.Tensor], torch.Tensor],
        indices: Optional[torch.Tensor] = None,
    ):
        if batch_size < 1:
            raise AccelDetError(f"batch size must be positive, got {batch_size}")
        self.images, self.batch_size, self.normalize = images, batch_size, normalize
        self.indices = (
            torch.arange(len(images))
            if indices is None
            else torch.as_tensor(indices, dtype=torch.long)
        )

    def __len__(self) -> int:
        return (len(self.images) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[dict]:
        for start in range(0, len(self.images), self.batch_size):
            stop = min(start + self.batch_size, len(self.images))
            yield {
                "images": self.normalize(self.images[start:stop]),
                "indices": self.indices[start:stop],
            }


class _Files(Dataset):
    def __init__(self, root: str, files: Sequence[str], transform: Callable):
        self.root, self.files, self.transform = root, list(files), transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        """``(index, image or None, (size, sha256 of the bytes decoded))``"""
        path = os.path.join(self.root, self.files[index])
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return index, try_read(path), None  # warns as for any unreadable file
        image = try_read(io.BytesIO(data), self.transform, name=path)
        return index, image, (len(data), hashlib.sha256(data).hexdigest())


def _keep_all(batch):
    return batch


def sample_images(
    root: str,
    num_images: int,
    seed: int,
    transform: Callable[[Image.Image], torch.Tensor],
    *,
    workers: int = 0,
    progress: bool = True,
    shard: Optional[Tuple[int, int]] = None,
    image_list: Optional[str] = None,
    option: str = "--num-images",
) -> ImageSample:
    """Draw ``num_images`` readable images below ``root`` with ``seed`` and preprocess them with
    ``transform`` (to uint8). The draw is the first readable images of a seeded permutation of all
    files, so an unreadable file is skipped (warning, counted) and replaced by the next one.

    ``shard=(rank, world_size)``, under torch.distributed: this process reads only every
    ``world_size``-th drawn file (from ``rank``); the processes tell each other which files were
    readable, so all agree on the draw a single process makes (``files``, ``skipped``), and the
    sample holds this process's images with their global ``indices``. Collective: every process
    of the group calls it.

    ``image_list``: draw only from the images it names (:func:`listed_images`). ``option``: the
    tool option that asked for ``num_images``, for the messages."""
    rank, world_size = shard or (0, 1)
    if num_images < 1:
        raise AccelDetError(f"the number of images must be positive, got {num_images}")
    files = list_images(root) if image_list is None else listed_images(root, image_list)
    where = root if image_list is None else f"{root} (listed in {image_list})"
    if not files:
        raise AccelDetError(f"no images (JPEG/PNG/...) found in {where}")
    if len(files) < num_images:
        raise AccelDetError(
            f"found {len(files)} images in {where}, fewer than the {num_images} asked for "
            f"({option})"
        )
    order = np.random.default_rng(seed).permutation(len(files))
    kept: Dict[int, torch.Tensor] = {}  # read here (all of them in a single process)
    contents: Dict[int, Tuple[int, str]] = {}  # (size, sha256) of the files read here
    readable: set = set()  # read by any process
    skipped: List[str] = []
    position = 0
    bar = tqdm(total=num_images, desc="reading images", unit="img", disable=not progress)
    while len(readable) < num_images:
        wanted = num_images - len(readable)
        if position >= len(order):
            raise AccelDetError(
                f"found {len(files)} images in {where} but only {len(readable)} are readable "
                f"({len(skipped)} unreadable), fewer than the {num_images} asked for ({option})"
            )
        chosen = [int(i) for i in order[position : position + wanted]]
        position += len(chosen)
        mine = chosen[rank::world_size]
        loader = DataLoader(
            _Files(root, [files[i] for i in mine], transform),
            batch_size=16,
            num_workers=workers,
            collate_fn=_keep_all,
        )
        unreadable = []
        for batch in loader:
            for local, tensor, content in batch:
                if tensor is None:
                    unreadable.append(mine[local])
                else:
                    kept[mine[local]] = tensor
                    contents[mine[local]] = content
                    if world_size == 1:
                        bar.update(1)
        unreadable = set(_everyone(unreadable, world_size))
        readable.update(i for i in chosen if i not in unreadable)
        if world_size > 1:
            bar.update(len(readable) - bar.n)  # all processes' images, once per round
        skipped += [
            files[i] for i in chosen if i in unreadable
        ]  # in drawing order, whoever read them
    bar.close()
    if skipped:
        logger.warning(
            "skipped %d unreadable image(s) of the %d drawn; drew replacements",
            len(skipped),
            len(readable) + len(skipped),
        )
    used = [int(i) for i in order[:position] if int(i) in readable]
    shapes = set(_everyone(sorted({tuple(t.shape) for t in kept.values()}), world_size))
    if len(shapes) != 1:
        raise AccelDetError(
            f"the preprocessed images have different shapes {sorted(shapes)}: use a crop"
        )
    contents.update(_everyone(list(contents.items()), world_size))
    held = [number for number, i in enumerate(used) if i in kept]
    images = (
        torch.stack([kept[used[n]] for n in held])
        if held
        else torch.zeros((0, *shapes.pop()), dtype=torch.uint8)
    )
    return ImageSample(
        root=root,
        files=[files[i] for i in used],
        images=images,
        found=len(files),
        skipped=skipped,
        indices=torch.tensor(held, dtype=torch.long) if world_size > 1 else None,
        contents=[contents[i] for i in used],
        image_list=image_list,
    )


def listed_images(root: str, list_file: str) -> List[str]:
    """The images below ``root`` named in ``list_file`` (sorted, as :func:`list_images`): the first
    word of each line is a path relative to ``root``, with or without its extension, so VOC's
    ``ImageSets/Main/trainval.txt`` (ids such as ``000005``) lists ``JPEGImages/000005.jpg``."""
    if not os.path.isfile(list_file):
        raise not_found("image list", list_file)
    by_name: Dict[str, str] = {}
    for relative in list_images(root):
        by_name.setdefault(relative, relative)
        by_name.setdefault(os.path.splitext(relative)[0], relative)
    with open(list_file, encoding="utf-8") as f:
        names = [line.split()[0] for line in f if line.strip() and not line.startswith("#")]
    missing = [name for name in names if os.path.normpath(name) not in by_name]
    if missing:
        raise AccelDetError(
            f"{len(missing)} of the {len(names)} images listed in {list_file} are not in {root} "
            f"(first: {missing[0]})"
        )
    return sorted({by_name[os.path.normpath(name)] for name in names})


def _everyone(items: list, world_size: int) -> list:
    """The concatenated ``items`` of every process (collective; ``items`` itself alone)."""
    if world_size == 1:
        return list(items)
    return [item for part in all_gather_objects(list(items)) for item in part]
