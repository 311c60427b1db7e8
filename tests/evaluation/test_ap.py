"""AP50 from per-image records against Detectron2's ``PascalVOCDetectionEvaluator`` / ``voc_eval``
(to 1e-9), and the paired bootstrap over test images against resampled sets written out image by
image."""

import os

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import PascalVOCDetectionEvaluator
from detectron2.evaluation.pascal_voc_evaluation import voc_eval
from detectron2.structures import Boxes, Instances

from accel_det.detection.evaluator import VOCDetectionEvaluator
from accel_det.errors import AccelDetError
from accel_det.evaluation import (
    INTERVAL_KEY,
    DetectionRecords,
    ap50,
    ap50_with_interval,
    bootstrap_ap50,
    paired_delta,
    read_records,
    resample_counts,
    results_interval,
    write_records,
)

CLASSES = ("circle", "square", "triangle")
XML = """<annotation><filename>{id}.jpg</filename>{objects}</annotation>"""
OBJECT = (
    "<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
    "<difficult>{difficult}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
    "<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
)


def make_case(images: int, seed: int = 0, distinct_scores: bool = False):
    """Random ground truth (some difficult) and detections (jittered hits, misses, duplicates and
    false positives) of ``images`` images: per image, (objects, detections)."""
    rng = np.random.default_rng(seed)
    scores = iter(rng.permutation(np.arange(1, 1000)) / 1000.0)  # distinct at 3 decimals
    case = []
    for i in range(images):
        objects, detections = [], []
        for _ in range(rng.integers(0, 4)):
            x, y = rng.integers(1, 60, size=2)
            w, h = rng.integers(10, 40, size=2)
            box = [int(x), int(y), int(x + w), int(y + h)]
            cls = int(rng.integers(len(CLASSES)))
            difficult = int(rng.random() < 0.1)
            objects.append({"name": CLASSES[cls], "bbox": box, "difficult": difficult})
            for _ in range(rng.integers(0, 3)):  # hits and duplicates, some of the wrong class
                jitter = rng.normal(0, 4, size=4)
                c = cls if rng.random() < 0.8 else int(rng.integers(len(CLASSES)))
                detections.append((c, np.array(box, float) - 1 + jitter))
        for _ in range(rng.integers(0, 3)):  # false positives
            x, y = rng.uniform(0, 80, size=2)
            detections.append((int(rng.integers(len(CLASSES))), np.array([x, y, x + 20, y + 15])))
        detections = [
            (c, box, next(scores) if distinct_scores else float(rng.uniform(0.05, 1)))
            for c, box in detections
        ]
        case.append((objects, detections))
    return case


def write_voc(folder, case, ids):
    """A VOC folder (annotations and image set) of ``case``'s images named ``ids``."""
    os.makedirs(os.path.join(folder, "Annotations"), exist_ok=True)
    os.makedirs(os.path.join(folder, "ImageSets", "Main"), exist_ok=True)
    for image_id, (objects, _) in zip(ids, case):
        text = "".join(OBJECT.format(b=o["bbox"], **o) for o in objects)
        with open(os.path.join(folder, "Annotations", f"{image_id}.xml"), "w") as f:
            f.write(XML.format(id=image_id, objects=text))
    with open(os.path.join(folder, "ImageSets", "Main", "test.txt"), "w") as f:
        f.write("\n".join(ids) + "\n")


def register(folder, name, year=2007):
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    MetadataCatalog.get(name).set(
        dirname=str(folder), split="test", year=year, thing_classes=list(CLASSES)
    )


def run(evaluator, case, ids):
    evaluator.reset()
    for image_id, (_, detections) in zip(ids, case):
        instances = Instances((100, 100))
        instances.pred_boxes = Boxes(torch.tensor(np.array([d[1] for d in detections])).float())
        instances.scores = torch.tensor([d[2] for d in detections], dtype=torch.float32)
        instances.pred_classes = torch.tensor([d[0] for d in detections], dtype=torch.int64)
        if not detections:
            instances.pred_boxes = Boxes(torch.zeros(0, 4))
        evaluator.process([{"image_id": image_id}], [{"instances": instances}])
    return evaluator.evaluate()


@pytest.mark.parametrize("year", [2007, 2012])
def test_ap_equals_detectron2s_evaluator(tmp_path, year):
    case = make_case(40, seed=year)
    ids = [f"{i:06d}" for i in range(len(case))]
    write_voc(tmp_path, case, ids)
    register(tmp_path, f"ap_case_{year}", year)
    theirs = run(PascalVOCDetectionEvaluator(f"ap_case_{year}"), case, ids)["bbox"]
    results = run(VOCDetectionEvaluator(f"ap_case_{year}"), case, ids)
    for key in ("AP", "AP50", "AP75"):
        assert results["bbox"][key] == pytest.approx(theirs[key], abs=1e-9)
    assert 10 < theirs["AP50"] < 95  # a case with hits and misses
    records = results.records
    assert records.num_images == 40 and ap50(records) == pytest.approx(theirs["AP50"], abs=1e-9)
    interval = results[INTERVAL_KEY]
    assert results_interval(results).value == results["bbox"]["AP50"]
    assert interval["low"] < theirs["AP50"] < interval["high"] and interval["resamples"] >= 1000
    # written and read back without pickles
    write_records(records, str(tmp_path / "r.detections.npz"))
    again = read_records(str(tmp_path / "r.detections.npz"))
    assert ap50(again) == ap50(records) and again.class_names == CLASSES


def hand_ap50(folder, case, draws):
    """AP50 of the resampled set written out image by image (image ``j`` drawn ``draws`` times
    becomes that many images), by Detectron2's ``voc_eval``."""
    resampled = [case[j] for j in draws]
    ids = [f"r{k:05d}" for k in range(len(draws))]
    write_voc(folder, resampled, ids)
    aps = []
    for c, name in enumerate(CLASSES):
        lines = [
            f"{i} {score:.3f} {b[0] + 1:.1f} {b[1] + 1:.1f} {b[2]:.1f} {b[3]:.1f}"
            for i, (_, detections) in zip(ids, resampled)
            for cls, b, score in detections
            if cls == c
        ]
        with open(os.path.join(folder, f"{name}.txt"), "w") as f:
            f.write("\n".join(lines))
        annotations = os.path.join(folder, "Annotations", "{}.xml")
        image_set = os.path.join(folder, "ImageSets", "Main", "test.txt")
        detpath = os.path.join(folder, "{}.txt")
        aps.append(voc_eval(detpath, annotations, image_set, name, 0.5, True)[2] * 100)
    return float(np.mean(aps))


def records_of(tmp_path, case, name):
    ids = [f"{i:06d}" for i in range(len(case))]
    write_voc(tmp_path / name, case, ids)
    register(tmp_path / name, name)
    return run(VOCDetectionEvaluator(name), case, ids).records


def test_bootstrap_resamples_equal_the_resampled_sets_written_out(tmp_path):
    case = make_case(15, seed=3, distinct_scores=True)
    records = records_of(tmp_path, case, "boot_case")
    resamples, seed = 25, 7
    values = bootstrap_ap50(records, resamples, seed)
    counts = resample_counts(len(case), resamples, seed)
    by_hand = []
    for k in range(resamples):
        draws = np.repeat(np.arange(len(case)), counts[k])
        by_hand.append(hand_ap50(tmp_path / f"resample{k}", case, draws))
    np.testing.assert_allclose(values, by_hand, atol=1e-9)
    assert np.ptp(by_hand) > 1  # the resamples differ
    interval = ap50_with_interval(records, resamples, seed)
    expected = tuple(np.percentile(by_hand, [2.5, 97.5]))
    assert (interval.low, interval.high) == pytest.approx(expected)
    assert interval.low <= ap50(records) <= interval.high


def test_resample_counts_draw_each_resample_with_replacement():
    counts = resample_counts(50, 400, seed=1)
    assert counts.shape == (400, 50) and (counts.sum(axis=1) == 50).all()
    assert counts.mean() == pytest.approx(1.0) and counts.var() == pytest.approx(1 - 1 / 50, 0.1)
    assert (resample_counts(50, 400, seed=1) == counts).all()
    assert not (resample_counts(50, 400, seed=2) == counts).all()


def synthetic_records(images: int, seed: int, skill: float = 0.7) -> DetectionRecords:
    """Records made directly (no files): one object per image, found with probability ``skill``
    at a random score, plus a false positive."""
    rng = np.random.default_rng(seed)
    box = np.array([[10.0, 10.0, 50.0, 50.0]])
    hit = rng.random(images) < skill
    det_image = np.concatenate([np.flatnonzero(hit), np.arange(images)])
    return DetectionRecords(
        image_ids=np.array([str(i) for i in range(images)]),
        class_names=("a",),
        gt_image=np.arange(images),
        gt_class=np.zeros(images, dtype=np.int64),
        gt_box=np.repeat(box, images, axis=0),
        gt_difficult=np.zeros(images, dtype=bool),
        det_image=det_image,
        det_class=np.zeros(len(det_image), dtype=np.int64),
        det_score=rng.random(len(det_image)),
        det_box=np.concatenate(
            [np.repeat(box, hit.sum(), axis=0), np.repeat(box + 60.0, images, axis=0)]
        ),
    )


def test_a_model_against_itself_is_zero_and_intervals_narrow_with_more_images():
    small = synthetic_records(100, seed=0)
    same = paired_delta(small, small)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0) and same.holds_zero
    widths = []
    for images in (100, 1600):
        interval = ap50_with_interval(synthetic_records(images, seed=1))
        assert interval.low < interval.value < interval.high
        widths.append(interval.high - interval.low)
    assert widths[1] < 0.4 * widths[0]  # ~1/sqrt(16) = 0.25 expected
    assert str(interval).count("[") == 1


def test_paired_delta_refuses_other_images_and_formats_signed():
    a, b = synthetic_records(100, seed=1), synthetic_records(101, seed=1)
    with pytest.raises(AccelDetError, match="same test images"):
        paired_delta(a, b)
    delta = paired_delta(synthetic_records(400, seed=1, skill=0.5), synthetic_records(400, seed=1))
    assert delta.value < 0 and delta.high < 0 and not delta.holds_zero
    assert delta.delta_text().startswith("Δ \u2212") and "[\u2212" in delta.delta_text()
