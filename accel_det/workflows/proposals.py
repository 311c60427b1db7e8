"""The proposal run of ``tools/make_proposals.py``: selective search over a registered data set,
or the conversion of a Fast R-CNN selective-search ``.mat``, checked to cover the data set."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from detectron2.data import DatasetCatalog

from ..detection.datasets import check_dataset_layout, dataset_images
from ..detection.proposals import (
    check_proposal_file,
    convert_mat,
    dataset_record,
    existing_proposals,
    image_list_digest,
    make_proposals,
    write_summary,
)
from ..errors import AccelDetError
from ..utils.files import not_found
from ..utils.io import sha256_file, sweep_temporaries


@dataclass
class ProposalOptions:
    """What ``tools/make_proposals.py`` makes proposals for, and how (its options)."""

    output: str
    dataset: Optional[str] = None
    from_mat: Optional[str] = None
    mode: str = "fast"
    min_size: int = 16
    max_boxes: int = 2000
    workers: int = 1
    resume: bool = True
    overwrite: bool = False


def convert(options: ProposalOptions):
    """The ``.mat`` converted (or a finished identical OUTPUT kept); the summary and the data
    set's images (None without a data set)."""
    images = ids = record = None
    if options.dataset:
        check_dataset_layout(options.dataset)
        images = dataset_images(options.dataset)
        ids = [i for i, _ in images]
        record = dataset_record(options.dataset, images)
    if not os.path.isfile(options.from_mat):
        raise not_found("selective search .mat file", options.from_mat)
    settings = {
        "source": os.path.abspath(options.from_mat),
        "source_sha256": sha256_file(options.from_mat),
        "dataset": options.dataset,
        "images_sha256": image_list_digest(images) if images else None,
    }
    summary = existing_proposals(options.output, settings, options.overwrite)
    if summary is None:
        summary = convert_mat(
            options.from_mat,
            options.output,
            image_ids=ids,
            dataset_name=options.dataset or "",
            dataset=record,
        )
        summary = write_summary(options.output, {**settings, **summary})
    return summary, images


def search(options: ProposalOptions) -> dict:
    """Selective search over every image of the registered data set; the summary."""
    if not options.dataset:
        raise AccelDetError("give --dataset (a registered data set) or --from-mat")
    check_dataset_layout(options.dataset)
    catalog = [(str(d["image_id"]), d["file_name"]) for d in DatasetCatalog.get(options.dataset)]
    return make_proposals(
        catalog,
        options.output,
        mode=options.mode,
        min_size=options.min_size,
        max_boxes=options.max_boxes,
        workers=options.workers,
        resume=options.resume,
        dataset_name=options.dataset,
        overwrite=options.overwrite,
    )


def run(options: ProposalOptions) -> dict:
    """Write the proposal file (and its ``.json`` record) at ``options.output``, checked to cover
    the data set's images; returns the summary."""
    for folder in (os.path.dirname(os.path.abspath(options.output)), options.output + ".parts"):
        sweep_temporaries(folder)  # what a killed run left
    images = None
    if options.from_mat:
        summary, images = convert(options)
    else:
        summary = search(options)
    if options.dataset:
        images = images or dataset_images(options.dataset)
        check_proposal_file(options.output, [i for i, _ in images], options.dataset, images)
    return summary
