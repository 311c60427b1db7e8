"""Synthetic VOC generator, VOC registration and layout checks, proposal files, VOC evaluation."""

import json
import os
import pickle
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

pytest.importorskip("detectron2")

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.build import load_proposals_into_dataset

import accel_det.detection  # noqa: F401
from accel_det.data.synthetic.voc import DEFAULT_CLASSES, make_synthetic_voc
from accel_det.detection import proposals as proposals_module
from accel_det.detection.checks import check_dataset_files
from accel_det.detection.datasets import (
    dataset_image_ids,
    dataset_images,
    load_voc_instances,
    register_synthetic_voc,
    register_voc_dataset,
)
from accel_det.detection.proposals import (
    check_proposal_file,
    convert_mat,
    dataset_record,
    make_proposals,
    read_proposal_file,
    write_proposal_file,
)
from accel_det.errors import AccelDetError
from tests.helpers import REPO

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


# A hand-made VOC test set for the evaluator: 100 x 100 images, boxes of 20 x 20 pixels in VOC's
# 1-based inclusive coordinates, (class, box, difficult) per image
HAND_VOC = {
    "000001": [
        ("cat", (11, 11, 30, 30), 0),  # A
        ("cat", (61, 11, 80, 30), 1),  # B, difficult
        ("dog", (11, 61, 30, 80), 0),  # C
    ],
    "000002": [
        ("cat", (11, 11, 30, 30), 0),  # D
        ("dog", (61, 61, 80, 80), 0),  # E
        ("dog", (11, 61, 30, 80), 0),  # H
    ],
    "000003": [
        ("cat", (41, 41, 60, 60), 0),  # F
        ("dog", (11, 11, 30, 30), 1),  # G, difficult
    ],
}


def write_hand_voc(root):
    from PIL import Image

    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    (root / "ImageSets/Main/test.txt").write_text("\n".join(HAND_VOC) + "\n")
    for image_id, objects in HAND_VOC.items():
        Image.new("RGB", (100, 100)).save(root / "JPEGImages" / f"{image_id}.jpg")
        parts = [
            f"<annotation><filename>{image_id}.jpg</filename>",
            "<size><width>100</width><height>100</height><depth>3</depth></size>",
        ]
        for name, (x0, y0, x1, y1), difficult in objects:
            parts.append(
                f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
                f"<difficult>{difficult}</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
                f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
            )
        parts.append("</annotation>")
        (root / "Annotations" / f"{image_id}.xml").write_text("".join(parts))


def test_pascal_voc_evaluator_with_false_positives_misses_and_difficult_boxes(tmp_path):
    """AP50 of a constructed answer through accel-det's VOC registration and Detectron2's
    PascalVOCDetectionEvaluator equals the VOC07 11-point AP computed by hand.

    Detections, by score (exact = the ground-truth box as accel-det's loader gives it, IoU 1):

    cat (3 positives A, D, F; B difficult):
      0.9 A exact: TP; 0.8 B exact: difficult, neither TP nor FP; 0.7 image 2 at E's place (no
      cat there): FP; 0.6 A again: FP (duplicate); 0.5 F exact: TP; D missed.
      cumulative TP 1 1 1 1 2, FP 0 0 1 2 2: recall 1/3 1/3 1/3 1/3 2/3,
      precision 1 1 1/2 1/3 1/2.
      11-point: max precision at recall >= t is 1 for t = 0, .1, .2, .3; 1/2 for t = .4, .5, .6;
      0 for t >= .7: AP = (4 * 1 + 3 * 1/2) / 11 = 1/2.
    dog (3 positives C, E, H; G difficult):
      0.95 image 3 at (61, 61, 80, 80), no dog there: FP; 0.85 E exact: TP; 0.75 G exact:
      difficult, neither; 0.65 H exact: TP; 0.55 C shifted right by 10 pixels (IoU 200/600 = 1/3):
      FP; C missed.
      cumulative TP 0 1 1 2 2, FP 1 1 1 1 2: recall 0 1/3 1/3 2/3 2/3,
      precision 0 1/2 1/2 2/3 1/2.
      11-point: 2/3 for t = 0 ... .6 (the 2/3 at recall 2/3), 0 for t >= .7: AP = 7 * 2/3 / 11
      = 14/33.
    AP50 = 100 * (1/2 + 14/33) / 2 = 100 * 61/132 = 46.21. Every match has IoU 1 and every
    false positive IoU <= 1/3, so AP at each threshold 0.5 ... 0.95, hence AP and AP75, is the
    same (a loader off by a pixel would lower AP at 0.95).

    Counting difficult boxes as positives (4 per class, B and G true positives) would give
    100 * (7.2/11 + 6/11) / 2 = 60.0; counting a detected difficult box as a false positive,
    100 * (5.2/11 + 3.5/11) / 2 = 39.55; VOC 2012's AP (metadata year 2012) gives 47.22."""
    import torch
    from detectron2.evaluation import PascalVOCDetectionEvaluator
    from detectron2.structures import Boxes, Instances

    root = tmp_path / "VOC2007"
    write_hand_voc(root)
    register_voc_dataset(
        "hand_voc_test", str(root), "test", 2007, ("cat", "dog"), keep_difficult=True, replace=True
    )
    dicts = {d["image_id"]: d for d in DatasetCatalog.get("hand_voc_test")}
    assert [len(d["annotations"]) for d in dicts.values()] == [3, 3, 2]

    def exact(image_id, index):  # the loader's box of object ``index`` (0-based xmin, ymin)
        return dicts[image_id]["annotations"][index]["bbox"]

    def voc(x0, y0, x1, y1):  # a box in VOC coordinates as a Detectron2 box
        return [x0 - 1.0, y0 - 1.0, float(x1), float(y1)]

    cat, dog = 0, 1
    detections = {  # image -> (class, score, box)
        "000001": [
            (cat, 0.9, exact("000001", 0)),  # A
            (cat, 0.8, exact("000001", 1)),  # B, difficult
            (cat, 0.6, exact("000001", 0)),  # A again
            (dog, 0.55, voc(21, 61, 40, 80)),  # C shifted by 10 pixels
        ],
        "000002": [
            (cat, 0.7, voc(61, 61, 80, 80)),  # where E is, no cat
            (dog, 0.85, exact("000002", 1)),  # E
            (dog, 0.65, exact("000002", 2)),  # H
        ],
        "000003": [
            (cat, 0.5, exact("000003", 0)),  # F
            (dog, 0.95, voc(61, 61, 80, 80)),  # nothing there
            (dog, 0.75, exact("000003", 1)),  # G, difficult
        ],
    }
    evaluator = PascalVOCDetectionEvaluator("hand_voc_test")
    evaluator.reset()
    for image_id, found in detections.items():
        instances = Instances((100, 100))
        instances.pred_boxes = Boxes(torch.tensor([box for _, _, box in found]))
        instances.scores = torch.tensor([score for _, score, _ in found])
        instances.pred_classes = torch.tensor([cls for cls, _, _ in found])
        evaluator.process([{"image_id": image_id}], [{"instances": instances}])
    bbox = evaluator.evaluate()["bbox"]
    expected = 100.0 * 61.0 / 132.0
    assert bbox["AP50"] == pytest.approx(expected, abs=1e-9)
    assert bbox["AP75"] == pytest.approx(expected, abs=1e-9)
    assert bbox["AP"] == pytest.approx(expected, abs=1e-9)


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


def test_a_finished_proposal_file_is_reused_for_the_same_settings_only(
    tiny_voc, tmp_path, monkeypatch
):
    """Rerun with the same settings and images: the file is kept, nothing is searched again;
    with other settings or other images it is refused without overwrite; its summary records
    the file's sha256 (a summary of another file is never taken for it)."""
    images = [
        (d["image_id"], d["file_name"])
        for d in load_voc_instances(str(tiny_voc), "trainval", DEFAULT_CLASSES)
    ]
    out = str(tmp_path / "p.pkl")
    first = make_proposals(images, out, min_size=4, progress=False)
    data = open(out, "rb").read()
    searched = []
    monkeypatch.setattr(proposals_module, "_search_file", lambda job: searched.append(job))
    assert make_proposals(images, out, min_size=4, progress=False) == first and searched == []
    for settings in ({"min_size": 4, "mode": "quality"}, {"min_size": 8}):
        with pytest.raises(AccelDetError, match="already exists and is not reused .*--overwrite"):
            make_proposals(images, out, progress=False, **settings)
    with pytest.raises(AccelDetError, match=r"\(it was made with num_images=8 \(this run: 3\)"):
        make_proposals(images[:3], out, min_size=4, progress=False)
    assert open(out, "rb").read() == data and not searched
    summary = json.loads(open(out + ".json").read())  # the summary of another file: refused
    summary["file_sha256"] = "0" * 64
    open(out + ".json", "w").write(json.dumps(summary))
    with pytest.raises(AccelDetError, match=r"p.pkl.json was written for another file"):
        make_proposals(images, out, min_size=4, progress=False)


def _stopped_search(images, out, monkeypatch):
    """make_proposals stopped after its first part of 3 images."""
    monkeypatch.setattr(proposals_module, "CHUNK", 3)
    real, calls = proposals_module._search_file, []

    def failing(job):
        calls.append(job)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(proposals_module, "_search_file", failing)
    with pytest.raises(KeyboardInterrupt):
        make_proposals(images, out, min_size=4, progress=False)
    assert sorted(os.listdir(out + ".parts")) == ["part000000.pkl", "settings.json"]
    searched = []
    monkeypatch.setattr(
        proposals_module, "_search_file", lambda job: searched.append(job[0]) or real(job)
    )
    return searched


@pytest.mark.parametrize("change", ["order", "ids", "file_names", "file_contents"])
def test_selective_search_redoes_the_parts_of_another_image_list(
    tiny_voc, tmp_path, monkeypatch, change
):
    """A stopped run resumed on another list of as many images starts over: the parts are reused
    only for the same ids, file names and files (size, modification time)."""
    import shutil

    folder = tmp_path / "voc"
    shutil.copytree(tiny_voc, folder)
    images = [
        (d["image_id"], d["file_name"])
        for d in load_voc_instances(str(folder), "trainval", DEFAULT_CLASSES)
    ]
    out = str(tmp_path / "p.pkl")
    searched = _stopped_search(images, out, monkeypatch)
    if change == "order":
        images = images[::-1]
    elif change == "ids":
        images = [(f"x{i}", f) for i, f in images]
    elif change == "file_names":
        test = load_voc_instances(str(folder), "test", DEFAULT_CLASSES)
        images = [(i, d["file_name"]) for (i, _), d in zip(images, test + test)]
    else:
        first = images[0][1]
        os.replace(images[3][1], first)  # another image under the first one's name
        shutil.copy(
            os.path.join(str(tiny_voc), "JPEGImages", os.path.basename(first)), images[3][1]
        )
    make_proposals(images, out, min_size=4, progress=False)
    assert searched == [f for _, f in images]  # every image searched again, none reused
    assert read_proposal_file(out)["ids"] == [i for i, _ in images]


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


# ----------------------------------------------------------------- checks before training


@pytest.fixture
def voc_copy(tiny_voc, tmp_path):
    """A copy of the tiny set, registered as ``copy_voc_*``: each test may break it."""
    import shutil

    folder = tmp_path / "synthetic_voc"
    shutil.copytree(tiny_voc, folder)
    register_synthetic_voc(str(folder), prefix="copy_voc")
    return folder


def test_images_are_decoded_once_and_a_truncated_jpeg_is_named(voc_copy, monkeypatch):
    from accel_det.detection import checks

    decoded = []
    real = checks.read_image
    monkeypatch.setattr(checks, "read_image", lambda f, **k: decoded.append(f) or real(f, **k))
    check_dataset_files("copy_voc_trainval", evaluated=False)
    assert len(decoded) == 8
    decoded.clear()
    check_dataset_files("copy_voc_trainval", evaluated=False)  # cached: nothing decoded again
    assert decoded == []
    victim = voc_copy / "JPEGImages" / "000003.jpg"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(AccelDetError) as error:
        check_dataset_files("copy_voc_trainval", evaluated=False)
    assert decoded == [str(victim)]  # only the changed file
    assert f"image {victim} of data set 'copy_voc_trainval' cannot be used: it does not decode" in (
        str(error.value)
    )
    victim.write_bytes(b"not a jpeg at all")
    with pytest.raises(AccelDetError, match="000003.jpg of data set 'copy_voc_trainval' cannot"):
        check_dataset_files("copy_voc_trainval", evaluated=False)


def test_an_image_of_another_size_than_its_annotation_is_named(voc_copy):
    anno = voc_copy / "Annotations" / "000002.xml"
    tree = ET.parse(anno)
    width = tree.find("size/width")
    width.text = str(int(width.text) + 1)
    tree.write(anno)
    with pytest.raises(AccelDetError, match=r"000002.jpg .* cannot be used: it is \d+x64 pixels"):
        check_dataset_files("copy_voc_trainval", evaluated=False)


@pytest.mark.parametrize(
    "field, change, message, loads",
    [
        ("pose", "remove", "object 1 has no <pose>, which PascalVOCDetectionEvaluator reads", 1),
        ("truncated", "remove", "object 1 has no <truncated>", 1),
        ("difficult", "remove", "object 1 has no <difficult>", 1),
        ("bndbox", "remove", "object 1 has no <bndbox>", 0),
        ("bndbox/xmin", "12.5", "object 1 has <bndbox/xmin> '12.5', not the integer", 1),
        ("difficult", "yes", "object 1 has <difficult> 'yes', not the integer", 0),
    ],
)
def test_a_test_annotation_without_what_the_evaluator_reads_is_named(
    voc_copy, field, change, message, loads
):
    """Each case also breaks Detectron2's own evaluator (its parse_rec), which would fail only after
    training. ``loads``: the loader itself (for training) can read the file."""
    from detectron2.evaluation.pascal_voc_evaluation import parse_rec

    check_dataset_files("copy_voc_test", evaluated=True)
    anno = voc_copy / "Annotations" / "000009.xml"
    tree = ET.parse(anno)
    obj = tree.find("object")
    element = obj.find(field)
    if change == "remove":
        parent = obj if "/" not in field else obj.find(field.split("/")[0])
        parent.remove(element)
    else:
        element.text = change
    tree.write(anno)
    with pytest.raises((AttributeError, ValueError, TypeError)):
        parse_rec.__wrapped__(str(anno))
    with pytest.raises(AccelDetError) as error:
        check_dataset_files("copy_voc_test", evaluated=True)
    assert str(error.value).startswith(f"{anno}: ") and message in str(error.value)
    if loads:
        check_dataset_files("copy_voc_test", evaluated=False)  # only evaluated sets need it
    else:
        with pytest.raises(AccelDetError, match=f"{anno}: object 1 lacks a <name>, a <bndbox>"):
            check_dataset_files("copy_voc_test", evaluated=False)


def test_a_split_line_the_evaluator_cannot_read_is_named(voc_copy):
    split = voc_copy / "ImageSets" / "Main" / "test.txt"
    split.write_text(split.read_text() + "\n")  # a blank last line: Annotations/.xml
    with pytest.raises(AccelDetError, match=r"line 5 of .*test.txt \(''\) names no annotation"):
        check_dataset_files("copy_voc_test", evaluated=True)


def test_a_proposal_file_of_another_data_set_with_the_same_ids_is_refused(
    tiny_voc, tmp_path, caplog
):
    """Proposal files record the data set's file names and sizes per id: a set whose ids match
    but whose images differ is refused; the same files elsewhere are accepted; a file without the
    record is used by ids, with a warning."""
    import logging
    import shutil

    other = tmp_path / "other" / "synthetic_voc"
    make_synthetic_voc(str(other), **dict(TINY, seed=4))
    register_synthetic_voc(str(other), prefix="other_voc")
    moved = tmp_path / "moved" / "synthetic_voc"
    shutil.copytree(tiny_voc, moved)
    register_synthetic_voc(str(moved), prefix="moved_voc")
    images = dataset_images("tiny_voc_test")
    path = str(tmp_path / "p.pkl")
    write_proposal_file(
        path,
        [i for i, _ in images],
        [np.array([[0, 0, 9, 9]], np.float32)] * len(images),
        dataset=dataset_record("tiny_voc_test", images),
    )
    check_proposal_file(path, dataset_image_ids("tiny_voc_test"), "tiny_voc_test", images)
    check_proposal_file(
        path,
        dataset_image_ids("moved_voc_test"),
        "moved_voc_test",
        dataset_images("moved_voc_test"),
    )
    assert dataset_image_ids("other_voc_test") == dataset_image_ids("tiny_voc_test")
    with pytest.raises(
        AccelDetError,
        match=r"was made for other images than those of data set 'other_voc_test' \(it records "
        r"data set 'tiny_voc_test'; image 000009 was 000009.jpg of \d+ bytes, it is 000009.jpg of",
    ):
        check_proposal_file(
            path,
            dataset_image_ids("other_voc_test"),
            "other_voc_test",
            dataset_images("other_voc_test"),
        )
    write_proposal_file(path, [i for i, _ in images], [np.zeros((1, 4), np.float32)] * 4)
    with caplog.at_level(logging.WARNING):
        check_proposal_file(
            path,
            dataset_image_ids("other_voc_test"),
            "other_voc_test",
            dataset_images("other_voc_test"),
        )
    assert "does not record which images it was made for" in caplog.text
