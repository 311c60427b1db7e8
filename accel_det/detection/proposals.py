"""Precomputed object proposals for Fast R-CNN: selective search, Detectron2's proposal file.

Detectron2's proposal file (``DATASETS.PROPOSAL_FILES_TRAIN/TEST`` with ``MODEL.LOAD_PROPOSALS``)
is a pickled dict ``{"ids": [...], "boxes": [N×4 float32 XYXY_ABS], "objectness_logits": [N],
"bbox_mode": BoxMode.XYXY_ABS}``. Selective search gives no score, so the logits are
``-rank`` (0, -1, -2, ...): Detectron2 sorts by them, which keeps selective search's order, and
``PRECOMPUTED_PROPOSAL_TOPK_*`` keeps the first boxes.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import AccelDetError
from ..utils.io import atomic_path, atomic_write_json

logger = logging.getLogger(__name__)

XYXY_ABS = 0  # detectron2.structures.BoxMode.XYXY_ABS
CHUNK = 64  # images per resumable part


def selective_search(
    image_bgr: np.ndarray,
    mode: str = "fast",
    min_size: int = 16,
    max_boxes: int = 2000,
    seed: int = 0,
) -> np.ndarray:
    """Selective search (Uijlings et al.; OpenCV contrib ``ximgproc``) boxes of one BGR image,
    as an N×4 float32 XYXY array in pixels: duplicates and boxes with a side under ``min_size``
    removed, at most ``max_boxes``, in selective search's order."""
    import cv2

    if mode not in ("fast", "quality", "single"):
        raise AccelDetError(f"selective search mode must be fast, quality or single, got {mode!r}")
    cv2.setNumThreads(1)
    cv2.setRNGSeed(seed)
    _seed_c_rand(seed)  # OpenCV's selective search ranks its boxes with C's rand()
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(image_bgr)
    {
        "fast": search.switchToSelectiveSearchFast,
        "quality": search.switchToSelectiveSearchQuality,
        "single": search.switchToSingleStrategy,
    }[mode]()
    rects = np.asarray(search.process(), dtype=np.float32).reshape(-1, 4)
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
    boxes = boxes[(rects[:, 2] >= min_size) & (rects[:, 3] >= min_size)]
    _, first = np.unique(boxes, axis=0, return_index=True)
    return boxes[np.sort(first)][:max_boxes]


def _seed_c_rand(seed: int) -> None:
    """``srand(seed)`` of the C library, so that selective search returns its boxes in the same
    order in every process (the set of boxes does not depend on it)."""
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            _LIBC = ctypes.CDLL(None)
            _LIBC.srand.argtypes = [ctypes.c_uint]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.srand(seed)


_LIBC = None


def _search_file(job) -> np.ndarray:
    import cv2

    file_name, mode, min_size, max_boxes = job
    image = cv2.imread(file_name, cv2.IMREAD_COLOR)
    if image is None:
        raise AccelDetError(f"cannot read image {file_name}")
    return selective_search(image, mode, min_size, max_boxes)


def make_proposals(
    images: Sequence[Tuple[str, str]],
    out_file: str,
    *,
    mode: str = "fast",
    min_size: int = 16,
    max_boxes: int = 2000,
    workers: int = 1,
    resume: bool = True,
    progress: bool = True,
) -> dict:
    """Selective search over ``images`` (``(image_id, file_name)`` pairs), written as Detectron2's
    proposal file ``out_file``. Parts of ``CHUNK`` images are kept in ``<out_file>.parts/`` as they
    finish, so a stopped run continues where it was (``resume``); the parts are removed at the end.
    Returns a summary (images, mean boxes per image, settings), also written to
    ``<out_file>.json``."""
    if not images:
        raise AccelDetError("no images to run selective search on")
    parts_dir = out_file + ".parts"
    os.makedirs(os.path.dirname(os.path.abspath(out_file)), exist_ok=True)
    settings = {
        "mode": mode,
        "min_size": min_size,
        "max_boxes": max_boxes,
        "num_images": len(images),
    }
    settings_file = os.path.join(parts_dir, "settings.json")
    if os.path.isdir(parts_dir):
        try:
            with open(settings_file, encoding="utf-8") as f:
                same = json.load(f) == settings
        except (OSError, ValueError):
            same = False
        if not (resume and same):
            shutil.rmtree(parts_dir)
    os.makedirs(parts_dir, exist_ok=True)
    atomic_write_json(settings, settings_file)

    chunks = [
        list(range(start, min(start + CHUNK, len(images))))
        for start in range(0, len(images), CHUNK)
    ]
    todo = [i for i, _ in enumerate(chunks) if not os.path.isfile(_part_path(parts_dir, i))]
    if len(todo) < len(chunks):
        logger.info(
            "resuming selective search: %d of %d parts already done",
            len(chunks) - len(todo),
            len(chunks),
        )
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(images),
            initial=sum(len(chunks[i]) for i in range(len(chunks)) if i not in todo),
            desc=f"selective search ({mode})",
        )
    executor = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        for i in todo:
            jobs = [(images[k][1], mode, min_size, max_boxes) for k in chunks[i]]
            results = (
                list(executor.map(_search_file, jobs))
                if executor
                else [_search_file(j) for j in jobs]
            )
            with atomic_path(_part_path(parts_dir, i)) as temporary:
                with open(temporary, "wb") as f:
                    pickle.dump({"ids": [images[k][0] for k in chunks[i]], "boxes": results}, f)
            if bar is not None:
                bar.update(len(jobs))
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
        if bar is not None:
            bar.close()

    ids: List[str] = []
    boxes: List[np.ndarray] = []
    for i in range(len(chunks)):
        with open(_part_path(parts_dir, i), "rb") as f:
            part = pickle.load(f)
        ids += part["ids"]
        boxes += part["boxes"]
    write_proposal_file(out_file, ids, boxes)
    shutil.rmtree(parts_dir, ignore_errors=True)
    summary = dict(
        settings,
        method="selective search (OpenCV ximgproc)",
        mean_boxes=float(np.mean([len(b) for b in boxes])),
        file=os.path.abspath(out_file),
    )
    atomic_write_json(summary, out_file + ".json")
    return summary


def _part_path(parts_dir: str, index: int) -> str:
    return os.path.join(parts_dir, f"part{index:06d}.pkl")


def write_proposal_file(
    path: str,
    ids: Sequence,
    boxes: Sequence[np.ndarray],
    logits: Optional[Sequence[np.ndarray]] = None,
) -> None:
    """Write Detectron2's proposal pickle (``logits`` default: ``-rank``, keeping the given
    order)."""
    if len(ids) != len(boxes) or (logits is not None and len(logits) != len(ids)):
        raise AccelDetError("proposal ids, boxes and logits must have the same length")
    boxes = [np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in boxes]
    if logits is None:
        logits = [-np.arange(len(b), dtype=np.float32) for b in boxes]
    data = {
        "ids": [str(i) for i in ids],
        "boxes": boxes,
        "objectness_logits": [np.asarray(s, dtype=np.float32) for s in logits],
        "bbox_mode": XYXY_ABS,
    }
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as f:
            pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)


def read_proposal_file(path: str) -> dict:
    """Load a proposal pickle (Detectron2's format, or Detectron1's ``indexes``/``scores`` keys)."""
    if not os.path.isfile(path):
        raise AccelDetError(f"proposal file not found: {path}")
    try:
        with open(path, "rb") as f:
            data = pickle.load(f, encoding="latin1")
    except Exception as error:  # corrupt pickles raise many types
        raise AccelDetError(f"cannot read proposal file {path}: {error}") from None
    if isinstance(data, dict):
        data = dict(data)
        for old, new in (("indexes", "ids"), ("scores", "objectness_logits")):
            if old in data and new not in data:
                data[new] = data.pop(old)
    if not isinstance(data, dict) or not {"ids", "boxes"} <= set(data):
        raise AccelDetError(
            f"{path} is not a Detectron2 proposal file (a dict with 'ids' and 'boxes')"
        )
    return data


def check_proposal_file(path: str, image_ids: Iterable, dataset_name: str = "") -> None:
    """Raise :class:`AccelDetError` unless the proposal file has boxes for every image id."""
    _check_covers(f"proposal file {path}", read_proposal_file(path)["ids"], image_ids, dataset_name)


def _check_covers(what_file: str, ids: Iterable, image_ids: Iterable, dataset_name: str) -> None:
    have = {str(i) for i in ids}
    wanted = [str(i) for i in image_ids]
    missing = [i for i in wanted if i not in have]
    if missing:
        what = f"data set {dataset_name!r}" if dataset_name else "the data set"
        raise AccelDetError(
            f"{what_file} misses {len(missing)} of the {len(wanted)} images of {what} (first: "
            f"{', '.join(missing[:3])}); make it with tools/make_proposals.py --dataset "
            f"{dataset_name or 'NAME'}"
        )


def convert_mat(
    mat_file: str, out_file: str, image_ids: Optional[Sequence[str]] = None, dataset_name: str = ""
) -> dict:
    """Convert a classic Fast R-CNN selective-search ``.mat`` (``boxes``: per image N×4
    ``[y1 x1 y2 x2]``, 1-based inclusive; ``images``: the ids) to Detectron2's proposal file.

    Boxes become ``[x1 - 1, y1 - 1, x2, y2]`` in continuous pixel coordinates, the convention of
    Detectron2's VOC loader. ``image_ids`` (the data set's) are the ids when the file has no
    ``images``; otherwise the file must cover them all, checked before anything is written.
    """
    from scipy.io import loadmat

    if not os.path.isfile(mat_file):
        raise AccelDetError(f"selective search .mat file not found: {mat_file}")
    try:
        raw = loadmat(mat_file)
    except NotImplementedError:
        raise AccelDetError(
            f"{mat_file} is a MATLAB v7.3 (HDF5) file; save it as -v7 or convert it with h5py"
        ) from None
    except Exception as error:
        raise AccelDetError(f"cannot read {mat_file}: {error}") from None
    if "boxes" not in raw:
        raise AccelDetError(
            f"{mat_file} has no 'boxes' variable (keys: "
            f"{', '.join(k for k in raw if not k.startswith('__'))})"
        )
    cells = raw["boxes"].ravel()
    if "images" in raw:
        ids = [_mat_string(x) for x in raw["images"].ravel()]
        if image_ids is not None:
            _check_covers(mat_file, ids, image_ids, dataset_name)
    elif image_ids is not None:
        ids = [str(i) for i in image_ids]
    else:
        raise AccelDetError(f"{mat_file} has no 'images' variable: give the image ids (--dataset)")
    if len(ids) != len(cells):
        raise AccelDetError(f"{mat_file}: {len(cells)} box lists but {len(ids)} image ids")
    boxes = []
    for cell in cells:
        b = np.asarray(cell, dtype=np.float32).reshape(-1, 4)[:, (1, 0, 3, 2)]
        b[:, :2] -= 1.0
        boxes.append(b)
    write_proposal_file(out_file, ids, boxes)
    return {
        "images": len(ids),
        "mean_boxes": float(np.mean([len(b) for b in boxes])),
        "source": os.path.abspath(mat_file),
    }


def _mat_string(value) -> str:
    while isinstance(value, np.ndarray):
        value = value.ravel()[0] if value.size == 1 else "".join(str(v) for v in value.ravel())
    return str(value).strip()


def proposal_stats(path: str) -> Dict[str, float]:
    """Number of images and mean boxes per image of a proposal file."""
    data = read_proposal_file(path)
    return {
        "images": len(data["ids"]),
        "mean_boxes": float(np.mean([len(b) for b in data["boxes"]])),
    }
