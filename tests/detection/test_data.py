"""Synthetic VOC generator, VOC registration and layout checks, proposal files, VOC evaluation."""

import os
import pickle
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

pytest.importorskip("detectron2")

from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.data.build import load_proposals_into_dataset  # noqa: E402

import accel_det.detection  # noqa: E402,F401
from accel_det.data.synthetic.voc import DEFAULT_CLASSES, make_synthetic_voc  # noqa: E402
from accel_det.detection import proposals as proposals_module  # noqa: E402
from accel_det.detection.datasets import (  # noqa: E402
    load_voc_instances,
    register_synthetic_voc,
    register_voc_dataset,
)
from accel_det.detection.proposals import (  # noqa: E402
    check_proposal_file,
    convert_mat,
    make_proposals,
    read_proposal_file,
    write_proposal_file,
)
from accel_det.errors import AccelDetError  # noqa: E402
from tests.helpers import REPO  # noqa: E402

TINY = dict(num_trainval=8, num_test=4, image_size=64, seed=3, progress=False)


@pytest.fixture(scope="module")
def tiny_voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "synthetic_voc"
    make_synthetic_voc(str(root), **TINY)
    register_synthetic_voc(str(root), prefix="tiny_voc")
    return root


def test_synthetic_set_has_voc_layout_and_valid_boxes(tiny_voc):
    for part in (
        "Annotations",
        "JPEGImages",
        "ImageSets/Main/trainval.txt",
        "ImageSets/Main/test.txt",
        "ImageSets/Main/train.txt",
        "ImageSets/Main/val.txt",
        "synthetic_voc.json",
    ):
        assert (tiny_voc / part).exists(), part
    ids = (tiny_voc / "ImageSets/Main/trainval.txt").read_text().split()
    assert len(ids) == 8 and len((tiny_voc / "ImageSets/Main/test.txt").read_text().split()) == 4
    names, flags = set(), set()
    for image_id in ids:
        tree = ET.parse(tiny_voc / "Annotations" / f"{image_id}.xml")
        width, height = int(tree.find("size/width").text), int(tree.find("size/height").text)
        assert height == 64 and 64 <= width <= 86
        for obj in tree.findall("object"):
            names.add(obj.find("name").text)
            flags.add((obj.find("truncated").text, obj.find("difficult").text))
            box = [int(obj.find(f"bndbox/{k}").text) for k in ("xmin", "ymin", "xmax", "ymax")]
            assert 1 <= box[0] <= box[2] <= width and 1 <= box[1] <= box[3] <= height
    assert names <= set(DEFAULT_CLASSES) and len(names) >= 3


def test_synthetic_set_is_deterministic_and_reused(tiny_voc, tmp_path):
    again = tmp_path / "again"
    make_synthetic_voc(str(again), **TINY, workers=2)  # workers do not change the files
    for sub in ("Annotations/000001.xml", "JPEGImages/000003.jpg", "Annotations/000012.xml"):
        assert (again / sub).read_bytes() == (tiny_voc / sub).read_bytes()
    mtime = os.path.getmtime(again / "JPEGImages/000001.jpg")
    make_synthetic_voc(str(again), **TINY)  # same parameters: kept
    assert os.path.getmtime(again / "JPEGImages/000001.jpg") == mtime
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_text("not ours")
    with pytest.raises(AccelDetError, match="not a synthetic VOC set"):
        make_synthetic_voc(str(other), **TINY)
    assert (other / "precious.txt").exists()


def test_voc_loader_leaves_difficult_boxes_out_of_training(tiny_voc):
    keep = load_voc_instances(str(tiny_voc), "trainval", DEFAULT_CLASSES, keep_difficult=True)
    drop = load_voc_instances(str(tiny_voc), "trainval", DEFAULT_CLASSES, keep_difficult=False)
    n_difficult = sum(
        int(o.find("difficult").text)
        for i in range(1, 9)
        for o in ET.parse(tiny_voc / "Annotations" / f"{i:06d}.xml").findall("object")
    )
    assert (
        sum(len(d["annotations"]) for d in keep) - sum(len(d["annotations"]) for d in drop)
        == n_difficult
    )
    assert len(DatasetCatalog.get("tiny_voc_trainval")) == 8
    meta = MetadataCatalog.get("tiny_voc_test")
    assert meta.year == 2007 and meta.split == "test" and meta.evaluator_type == "pascal_voc"
    assert list(meta.thing_classes) == list(DEFAULT_CLASSES)


def test_dataset_root_without_layout_prints_the_expected_layout(tmp_path):
    register_voc_dataset("broken_voc_test", str(tmp_path / "VOC2007"), "test", replace=True)
    with pytest.raises(AccelDetError) as error:
        DatasetCatalog.get("broken_voc_test")
    message = str(error.value)
    assert "Annotations and JPEGImages and ImageSets/Main/test.txt are missing" in message
    assert (
        "Expected layout" in message
        and "$DETECTRON2_DATASETS" in message
        and "prepare_voc.sh" in message
    )


def test_pascal_voc_evaluator_returns_ap50(tiny_voc):
    """Ground truth given as detections scores AP50 = 100; an empty answer scores 0."""
    import torch
    from detectron2.evaluation import PascalVOCDetectionEvaluator
    from detectron2.structures import Boxes, Instances

    dicts = load_voc_instances(str(tiny_voc), "test", DEFAULT_CLASSES, keep_difficult=True)
    evaluator = PascalVOCDetectionEvaluator("tiny_voc_test")
    evaluator.reset()
    for d in dicts:
        instances = Instances((d["height"], d["width"]))
        instances.pred_boxes = Boxes(
            torch.tensor([a["bbox"] for a in d["annotations"]], dtype=torch.float32).reshape(-1, 4)
        )
        instances.scores = torch.ones(len(d["annotations"]))
        instances.pred_classes = torch.tensor(
            [a["category_id"] for a in d["annotations"]], dtype=torch.int64
        )
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": instances}])
    results = evaluator.evaluate()
    present = {a["category_id"] for d in dicts for a in d["annotations"]}
    assert results["bbox"]["AP50"] == pytest.approx(100.0 * len(present) / len(DEFAULT_CLASSES))


def test_proposal_file_round_trip_through_detectron2(tiny_voc, tmp_path):
    dicts = load_voc_instances(str(tiny_voc), "test", DEFAULT_CLASSES)
    ids = [d["image_id"] for d in dicts]
    boxes = [
        np.array([[1, 2, 30, 40], [5, 5, 20, 20], [0, 0, 10, 10]], np.float32) + i
        for i in range(len(ids))
    ]
    path = str(tmp_path / "p.pkl")
    write_proposal_file(path, ids, boxes)
    loaded = load_proposals_into_dataset([dict(d) for d in dicts], path)
    for record, expected in zip(loaded, boxes):
        np.testing.assert_array_equal(
            record["proposal_boxes"], expected
        )  # order kept (logits = -rank)
        assert record["proposal_objectness_logits"].tolist() == [0.0, -1.0, -2.0]
    check_proposal_file(path, ids, "tiny_voc_test")
    write_proposal_file(path, ids[:1], boxes[:1])
    with pytest.raises(
        AccelDetError, match=r"misses 3 of the 4 images of data set 'tiny_voc_test'"
    ):
        check_proposal_file(path, ids, "tiny_voc_test")


def test_selective_search_is_resumable(tiny_voc, tmp_path, monkeypatch):
    images = [
        (d["image_id"], d["file_name"])
        for d in load_voc_instances(str(tiny_voc), "trainval", DEFAULT_CLASSES)
    ]
    whole = str(tmp_path / "whole.pkl")
    make_proposals(images, whole, min_size=4, progress=False)
    reference = read_proposal_file(whole)
    assert reference["ids"] == [i for i, _ in images] and all(
        len(b) > 0 for b in reference["boxes"]
    )
    assert all(np.all(b[:, 2:] - b[:, :2] >= 4) for b in reference["boxes"])

    monkeypatch.setattr(proposals_module, "CHUNK", 3)
    real, calls = proposals_module._search_file, []

    def failing(job):
        calls.append(job)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(proposals_module, "_search_file", failing)
    out = str(tmp_path / "resumed.pkl")
    with pytest.raises(KeyboardInterrupt):
        make_proposals(images, out, min_size=4, progress=False)
    assert sorted(os.listdir(out + ".parts")) == ["part000000.pkl", "settings.json"]
    monkeypatch.setattr(proposals_module, "_search_file", real)
    searched = []
    monkeypatch.setattr(
        proposals_module, "_search_file", lambda job: searched.append(job) or real(job)
    )
    make_proposals(images, out, min_size=4, progress=False)
    assert len(searched) == len(images) - 3 and not os.path.exists(out + ".parts")
    resumed = read_proposal_file(out)
    assert resumed["ids"] == reference["ids"]
    for a, b in zip(resumed["boxes"], reference["boxes"]):
        np.testing.assert_array_equal(a, b)


def test_convert_fast_rcnn_mat_file(tmp_path):
    from scipy.io import savemat

    boxes = np.empty((2,), dtype=object)
    boxes[0] = np.array(
        [[11, 21, 40, 60], [1, 1, 5, 5]], dtype=np.float64
    )  # [y1 x1 y2 x2], 1-based
    boxes[1] = np.array([[3, 4, 7, 8]], dtype=np.float64)
    images = np.array(["000005", "000007"], dtype=object)
    savemat(tmp_path / "ss.mat", {"boxes": boxes, "images": images})
    summary = convert_mat(str(tmp_path / "ss.mat"), str(tmp_path / "ss.pkl"))
    assert summary["images"] == 2
    data = read_proposal_file(str(tmp_path / "ss.pkl"))
    assert data["ids"] == ["000005", "000007"]
    np.testing.assert_array_equal(data["boxes"][0], [[20, 10, 60, 40], [0, 0, 5, 5]])
    np.testing.assert_array_equal(data["boxes"][1], [[3, 2, 8, 7]])
    with open(tmp_path / "ss.pkl", "rb") as f:
        assert pickle.load(f)["bbox_mode"] == 0


def test_make_proposals_tool_errors(tmp_path):
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path))
    result = subprocess.run(
        [
            sys.executable,
            "tools/make_proposals.py",
            "--dataset",
            "synthetic_voc_test",
            "--output",
            str(tmp_path / "p.pkl"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(
        "error: data set 'synthetic_voc_test' expects a VOC-format folder"
    )
    assert "make_synthetic_voc.py" in result.stderr
