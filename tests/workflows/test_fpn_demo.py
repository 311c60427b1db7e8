"""tools/demo.py --model r18-fpn: the ResNet-18-FPN demo end to end at toy scale (every stage, the
report with intervals before and after fine-tuning, the targets), its options and target rule."""

import json

import pytest

pytest.importorskip("detectron2")

from accel_det.workflows.demo import DemoOptions, run_fpn_demo
from accel_det.workflows.demo.fpn_report import target_checks
from tests.helpers import load_tool

# the demo's R18-FPN on 64-px images with a narrow FPN and head: an iteration takes a fraction of a
# second; the compression rounds no ranks (the FPN has 16 channels)
TINY = [
    "MODEL.DEVICE", "cpu",
    "MODEL.FPN.OUT_CHANNELS", "16",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "32",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "32",
    "MODEL.ANCHOR_GENERATOR.SIZES", "[[16], [32], [64], [128]]",
    "INPUT.MIN_SIZE_TRAIN", "(64,)",
    "INPUT.MAX_SIZE_TRAIN", "86",
    "INPUT.MIN_SIZE_TEST", "64",
    "INPUT.MAX_SIZE_TEST", "86",
    "DATALOADER.NUM_WORKERS", "0",
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.MAX_ITER", "6",
    "SOLVER.STEPS", "()",
    "SOLVER.WARMUP_ITERS", "2",
]  # fmt: skip


def test_fpn_demo_end_to_end_on_tiny_data(tmp_path):
    options = DemoOptions.for_model(
        "r18-fpn",
        output=str(tmp_path / "demo"),
        data_root=str(tmp_path / "data" / "synthetic_voc"),
        detector_speedups=(2.0,),
        num_trainval=10,
        num_test=5,
        pretrain_iterations=5,
        compress_images=4,
        samples_per_image=4,
        round_ranks_to=1,
        latency_warmup=1,
        latency_repeats=2,
        workers=1,
        progress=False,
        opts=TINY,
        finetune_opts=["SOLVER.MAX_ITER", "2"],
    )
    summary = run_fpn_demo(options)
    out = tmp_path / "demo"
    report = (out / "report.md").read_text()
    assert "not PASCAL VOC" in report and "| baseline |" in report
    assert "### Comparisons (paired on the same test images)" in report
    assert "### Targets at 2× (printed, not asserted)" in report
    rows = {r["name"]: r for r in summary["rows"]}
    assert set(rows) == {"baseline", "detector_2x", "detector_before_ft_2x"}
    for row in rows.values():  # every AP50 with its interval, on the 5 test images
        bounds = row["ap50_interval"]
        assert bounds["low"] <= row["ap50"] <= bounds["high"] and bounds["images"] == 5
        assert row["detector_speedup"] > 0 and row["backbone_speedup"] > 0
    before, after = rows["detector_before_ft_2x"], rows["detector_2x"]
    assert before["ap50"] == after["ap50_before_ft"]
    for row in (before, after):  # paired against the baseline
        delta = row["delta_ap50_interval"]
        assert delta["low"] <= row["ap50"] - rows["baseline"]["ap50"] <= delta["high"]
    found = {(c["model"], c["against"]) for c in summary["comparisons"]}
    assert {
        ("detector_before_ft_2x", "baseline"),
        ("detector_2x", "baseline"),
        ("detector_2x", "detector_before_ft_2x"),
    } == found
    plan = json.loads((out / "detector_2x" / "compressed" / "plan.json").read_text())
    budget = plan.get("theoretical_speedup_detector") or plan["theoretical_speedup"]
    assert budget == pytest.approx(2.0, rel=0.05)
    assert [c["when"] for c in summary["targets"]] == ["before fine-tuning", "after fine-tuning"]
    # the timed baseline is the trained one with its batch norms folded: the same detections
    baseline = summary["records"][0]
    assert 0 <= baseline["folded_max_difference"] < 1e-4
    assert baseline["latency"]["detector"]["threads"] == 1
    assert 0 <= baseline["pretrain"]["held_out_accuracy"] <= 1
    saved = json.loads((out / "results.json").read_text())
    assert saved["options"]["model"] == "r18-fpn" and saved["synthetic_data"] is True
    # a second run reuses every finished stage
    again = run_fpn_demo(options)
    assert [r["ap50"] for r in again["rows"]] == [r["ap50"] for r in summary["rows"]]


def record(name, low, high, target="network"):
    delta = {"value": (low + high) / 2, "low": low, "high": high}
    return {"name": name, "stage": {"target": target, "speedup": 2.0}, "delta_ap50_interval": delta}


@pytest.mark.parametrize(
    "before, after, met",
    [
        ((-3.0, 0.5), (-0.9, 0.4), [True, True]),  # before: holds 0; after: above -1
        ((-1.4, -0.2), (-1.2, -0.1), [True, False]),  # before: above -1.5; after: below -1
        ((-2.0, -0.1), (0.5, 2.0), [False, True]),  # before: below -1.5 and excludes 0
    ],
)
def test_targets_read_the_paired_intervals(before, after, met):
    records = [{"name": "baseline"}, record("detector_2x", *after)]
    records.append(record("detector_before_ft_2x", *before))
    assert [c["met"] for c in target_checks(records)] == met


def test_model_picks_its_defaults_and_given_arguments_win():
    tool = load_tool("demo")
    parser = tool.build_parser()
    vgg = tool.demo_options(parser.parse_args([]))
    assert vgg == DemoOptions(opts=[], finetune_opts=[])  # make demo: as before
    fpn = tool.demo_options(parser.parse_args(["--model", "r18-fpn", "--detector-speedups", "2"]))
    assert fpn.output == "output/demo_r18fpn" and fpn.config.endswith("R_18_FPN_synthetic.yaml")
    assert fpn.detector_speedups == (2.0,) and fpn.speedups == () and fpn.method == "asym"
