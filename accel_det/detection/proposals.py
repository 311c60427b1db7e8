"""Precomputed object proposals for Fast R-CNN: selective search, Detectron2's proposal file.

Detectron2's proposal file (``DATASETS.PROPOSAL_FILES_TRAIN/TEST`` with ``MODEL.LOAD_PROPOSALS``)
is a pickled dict ``{"ids": [...], "boxes": [N×4 float32 XYXY_ABS], "objectness_logits": [N],
"bbox_mode": BoxMode.XYXY_ABS}``. Selective search gives no score, so the logits are
``-rank`` (0, -1, -2, ...): Detectron2 sorts by them, which keeps selective search's order, and
``PRECOMPUTED_PROPOSAL_TOPK_*`` keeps the first boxes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import AccelDetError
from ..utils.files import not_found
from ..utils.io import atomic_path, atomic_write_json, sha256_file
from ..utils.safe_pickle import load_pickle

logger = logging.getLogger(__name__)

XYXY_ABS = 0  # detectron2.structures.BoxMode.XYXY_ABS


def _box_mode(value):
    try:
        from detectron2.structures import BoxMode
    except ImportError:  # an IntEnum: its int is equal to it
        return int(value)
    return BoxMode(value)


# proposal files written with detectron2's BoxMode (an IntEnum) name it: allowed, and only it
PROPOSAL_GLOBALS = {("detectron2.structures.boxes", "BoxMode"): _box_mode}
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
    dataset_name: str = "",
    overwrite: bool = False,
) -> dict:
    """Selective search over ``images`` (``(image_id, file_name)`` pairs), written as Detectron2's
    proposal file ``out_file``. Parts of ``CHUNK`` images are kept in ``<out_file>.parts/`` as they
    finish, so a stopped run continues where it was (``resume``: for the same settings and the same
    list of images, files unchanged; otherwise it starts over); the parts are removed at the end.
    Returns a summary (images, mean boxes per image, settings), also written to
    ``<out_file>.json``. The file records which images it was made for (:func:`dataset_record`,
    under ``dataset_name``). An existing ``out_file`` made with the same settings for the same
    images is kept and its summary returned; another one is refused unless ``overwrite``
    (:func:`existing_proposals`)."""
    if not images:
        raise AccelDetError("no images to run selective search on")
    parts_dir = out_file + ".parts"
    settings = {
        "mode": mode,
        "min_size": min_size,
        "max_boxes": max_boxes,
        "num_images": len(images),
        "images_sha256": image_list_digest(images),  # parts are reused for the same list only
    }
    kept = existing_proposals(out_file, settings, overwrite)
    if kept is not None:
        return kept
    os.makedirs(os.path.dirname(os.path.abspath(out_file)), exist_ok=True)
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
        part = load_pickle(_part_path(parts_dir, i), "selective search part")
        ids += part["ids"]
        boxes += part["boxes"]
    write_proposal_file(out_file, ids, boxes, dataset=dataset_record(dataset_name, images))
    shutil.rmtree(parts_dir, ignore_errors=True)
    summary = dict(
        settings,
        method="selective search (OpenCV ximgproc)",
        mean_boxes=float(np.mean([len(b) for b in boxes])),
        file=os.path.abspath(out_file),
    )
    return write_summary(out_file, summary)


def write_summary(out_file: str, summary: dict) -> dict:
    """``<out_file>.json``: ``summary`` (settings and counts) with the sha256 of the proposal file,
    so that it is never taken for another file's. Returns it."""
    summary = dict(summary, file_sha256=sha256_file(out_file))
    atomic_write_json(summary, out_file + ".json")
    return summary


def existing_proposals(out_file: str, settings: dict, overwrite: bool) -> Optional[dict]:
    """The summary of ``out_file`` when it exists and was made with ``settings`` (its
    ``<out_file>.json`` records them and the file's sha256): it is kept (logged). None when there is
    no such file, or when ``overwrite`` lets another be replaced; else one
    :class:`AccelDetError` that says why it is not reused."""
    if not os.path.exists(out_file):
        return None
    summary_file = out_file + ".json"
    try:
        with open(summary_file, encoding="utf-8") as f:
            summary = json.load(f)
        summary = summary if isinstance(summary, dict) else {}
    except (OSError, ValueError):
        summary = {}
    other = [k for k in settings if summary.get(k) != settings[k]]
    if not summary:
        why = f"it has no summary {summary_file} to compare settings with"
    elif summary.get("file_sha256") != sha256_file(out_file):
        why = f"{summary_file} was written for another file"
    elif other:
        why = "it was made with " + ", ".join(
            f"{k}={_short(summary.get(k))} (this run: {_short(settings[k])})" for k in other
        )
    else:
        logger.info("%s was made with these settings for these images: kept", out_file)
        return summary
    if overwrite:
        return None
    raise AccelDetError(
        f"proposal file {out_file} already exists and is not reused ({why}); pass --overwrite to "
        "replace it"
    )


def _short(value) -> str:
    """A digest cut to 12 characters, anything else as it is."""
    return f"{value[:12]}..." if isinstance(value, str) and len(value) == 64 else repr(value)


def image_list_digest(images: Sequence[Tuple[str, str]]) -> str:
    """sha256 of ``(image_id, file_name)`` pairs in order, with each file's size and modification
    time: another list, or a file changed since, gives another digest."""
    digest = hashlib.sha256()
    for image_id, file_name in images:
        try:
            stat = os.stat(file_name)
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:
            size, mtime = -1, -1  # reported when it is read
        digest.update(f"{image_id}\t{os.path.abspath(file_name)}\t{size}\t{mtime}\n".encode())
    return digest.hexdigest()


def _part_path(parts_dir: str, index: int) -> str:
    return os.path.join(parts_dir, f"part{index:06d}.pkl")


def dataset_record(name: str, images: Sequence[Tuple[str, str]]) -> dict:
    """What a proposal file records of the images it was made for (Detectron2 ignores the extra
    key): the data set's name and, per image id, the file's name (without its folder) and size."""
    return {
        "name": name,
        "files": {str(i): [os.path.basename(f), _size(f)] for i, f in images},
    }


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return -1


def write_proposal_file(
    path: str,
    ids: Sequence,
    boxes: Sequence[np.ndarray],
    logits: Optional[Sequence[np.ndarray]] = None,
    dataset: Optional[dict] = None,
) -> None:
    """Write Detectron2's proposal pickle (``logits`` default: ``-rank``, keeping the given
    order); ``dataset``: :func:`dataset_record` of the images, kept as an extra key."""
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
    if dataset is not None:
        data["dataset"] = dataset
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as f:
            pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)


def read_proposal_file(path: str) -> dict:
    """Load a proposal pickle (Detectron2's format, or Detectron1's ``indexes``/``scores`` keys)
    as plain data: a file that names any other global (code) is refused unrun."""
    data = load_pickle(path, "proposal file", PROPOSAL_GLOBALS)
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


def check_proposal_file(
    path: str,
    image_ids: Iterable,
    dataset_name: str = "",
    images: Optional[Sequence[Tuple[str, str]]] = None,
) -> None:
    """Raise :class:`AccelDetError` unless the proposal file has boxes for every image id and,
    given the data set's ``images`` (``(id, file name)`` pairs), was made for these files: the
    names and sizes it records per id (:func:`dataset_record`) must match. A file without that
    record (older, or made elsewhere) is taken by ids alone, with a warning."""
    data = read_proposal_file(path)
    _check_covers(f"proposal file {path}", data["ids"], image_ids, dataset_name)
    if images is None:
        return
    record = data.get("dataset")
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
        logger.warning(
            "proposal file %s does not record which images it was made for (made elsewhere or "
            "by an older tools/make_proposals.py): its boxes are matched to %s by image id alone",
            path,
            f"data set {dataset_name!r}" if dataset_name else "the data set",
        )
        return
    current = dataset_record(dataset_name, images)["files"]
    recorded = record["files"]
    other = [i for i, f in current.items() if i in recorded and list(recorded[i]) != f]
    if other:
        first = other[0]
        raise AccelDetError(
            f"proposal file {path} was made for other images than those of data set "
            f"{dataset_name!r} (it records data set {record.get('name')!r}; image {first} was "
            f"{recorded[first][0]} of {recorded[first][1]} bytes, it is {current[first][0]} of "
            f"{current[first][1]} bytes; {len(other)} of {len(current)} images differ): make it "
            f"with tools/make_proposals.py --dataset {dataset_name or 'NAME'}"
        )


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
    mat_file: str,
    out_file: str,
    image_ids: Optional[Sequence[str]] = None,
    dataset_name: str = "",
    dataset: Optional[dict] = None,
) -> dict:
    """Convert a classic Fast R-CNN selective-search ``.mat`` (``boxes``: per image N×4
    ``[y1 x1 y2 x2]``, 1-based inclusive; ``images``: the ids) to Detectron2's proposal file.

    Boxes become ``[x1 - 1, y1 - 1, x2, y2]`` in continuous pixel coordinates, the convention of
    Detectron2's VOC loader. ``image_ids`` (the data set's) are the ids when the file has no
    ``images``; otherwise the file must cover them all, checked before anything is written.
    ``dataset``: :func:`dataset_record` of the data set's images, recorded in the file.
    """
    from scipy.io import loadmat

    if not os.path.isfile(mat_file):
        raise not_found("selective search .mat file", mat_file)
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
    write_proposal_file(out_file, ids, boxes, dataset=dataset)
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
