"""Training and evaluation through tools/train_net.py and the demo pipeline, on a tiny synthetic
set; bad input to tools/train_net.py gives one clear error and exit code 2."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("detectron2")

import accel_det.detection  # noqa: E402,F401
from accel_det.data.synthetic.voc import make_synthetic_voc  # noqa: E402
from accel_det.detection.proposals import make_proposals, write_proposal_file  # noqa: E402
from tests.helpers import REPO  # noqa: E402

SMALL = [
    "MODEL.VGG.WIDTH",
    "0.0625",
    "MODEL.ROI_BOX_HEAD.FC_DIM",
    "32",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "32",
    "INPUT.MIN_SIZE_TRAIN",
    "(64,)",
    "INPUT.MAX_SIZE_TRAIN",
    "86",
    "INPUT.MIN_SIZE_TEST",
    "64",
    "INPUT.MAX_SIZE_TEST",
    "86",
    "DATALOADER.NUM_WORKERS",
    "0",
    "MODEL.DEVICE",
    "cpu",
    "MODEL.WEIGHTS",
    "",
]  # the demo config's weights are written by tools/demo.py


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """$DETECTRON2_DATASETS with synthetic_voc/ (10 trainval, 5 test images of 64 px) and
    proposals."""
    root = tmp_path_factory.mktemp("datasets")
    data = root / "synthetic_voc"
    make_synthetic_voc(
        str(data), num_trainval=10, num_test=5, image_size=64, seed=1, progress=False
    )
    for split in ("trainval", "test"):
        ids = (data / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
        images = [(i, str(data / "JPEGImages" / f"{i}.jpg")) for i in ids]
        make_proposals(
            images,
            str(data / "proposals" / f"selective_search_{split}.pkl"),
            min_size=4,
            progress=False,
        )
    return root


def train_net(root, *args, timeout=600):
    env = dict(os.environ, DETECTRON2_DATASETS=str(root), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "tools/train_net.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def data_opts(root):
    proposals = root / "synthetic_voc" / "proposals"
    return [
        "DATASETS.PROPOSAL_FILES_TRAIN",
        f"('{proposals / 'selective_search_trainval.pkl'}',)",
        "DATASETS.PROPOSAL_FILES_TEST",
        f"('{proposals / 'selective_search_test.pkl'}',)",
    ]


def test_short_training_then_evaluation_returns_ap50(tiny_root, tmp_path):
    out = tmp_path / "run"
    result = train_net(
        tiny_root,
        "--config",
        "demo/vgg16_synthetic.yaml",
        *SMALL,
        *data_opts(tiny_root),
        "MODEL.WEIGHTS",
        "",
        "SOLVER.MAX_ITER",
        "20",
        "SOLVER.STEPS",
        "(15,)",
        "SOLVER.WARMUP_ITERS",
        "5",
        "OUTPUT_DIR",
        str(out),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "model_final.pth").is_file() and (out / "config.yaml").is_file()
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert (
        any("loss_cls" in m for m in metrics) and max(m.get("iteration", 0) for m in metrics) >= 19
    )
    results = json.loads((out / "eval_results.json").read_text())
    assert 0.0 <= results["synthetic_voc_test"]["bbox"]["AP50"] <= 100.0

    # --eval-only with the trained weights gives the same AP50; "--config" is "--config-file"
    again = train_net(
        tiny_root,
        "--config",
        "demo/vgg16_synthetic.yaml",
        "--eval-only",
        *SMALL,
        *data_opts(tiny_root),
        "MODEL.WEIGHTS",
        str(out / "model_final.pth"),
        "OUTPUT_DIR",
        str(tmp_path / "eval"),
    )
    assert again.returncode == 0, again.stderr[-3000:]
    evaluated = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert evaluated["synthetic_voc_test"]["bbox"]["AP50"] == pytest.approx(
        results["synthetic_voc_test"]["bbox"]["AP50"]
    )


def one_error(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    message = result.stderr[result.stderr.index("error:") :]
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_missing_plan_is_one_clear_error(tiny_root, tmp_path):
    result = train_net(
        tiny_root,
        "--config",
        "demo/accel_vgg16_synthetic.yaml",
        "--eval-only",
        *SMALL,
        *data_opts(tiny_root),
        "MODEL.ACCEL.PLAN",
        str(tmp_path / "nope.json"),
        "OUTPUT_DIR",
        str(tmp_path),
    )
    one_error(result, "plan (MODEL.ACCEL.PLAN) file not found", "nope.json")


def test_missing_weights_is_one_clear_error(tiny_root, tmp_path):
    result = train_net(
        tiny_root,
        "--config",
        "demo/vgg16_synthetic.yaml",
        *SMALL,
        *data_opts(tiny_root),
        "MODEL.WEIGHTS",
        str(tmp_path / "missing.pth"),
        "OUTPUT_DIR",
        str(tmp_path),
    )
    one_error(result, "MODEL.WEIGHTS file not found", "missing.pth")


def test_dataset_root_without_layout_prints_expected_layout(tmp_path):
    result = train_net(
        tmp_path, "--config", "demo/vgg16_synthetic.yaml", *SMALL, "OUTPUT_DIR", str(tmp_path / "o")
    )
    one_error(
        result,
        "data set 'synthetic_voc_trainval' expects a VOC-format folder",
        "Expected layout",
        "ImageSets/Main/trainval.txt",
        "make_synthetic_voc.py",
    )


def test_proposal_file_missing_images_names_how_many(tiny_root, tmp_path):
    partial = tmp_path / "partial.pkl"
    ids = (tiny_root / "synthetic_voc" / "ImageSets" / "Main" / "trainval.txt").read_text().split()
    write_proposal_file(str(partial), ids[:7], [[[0, 0, 10, 10]]] * 7)
    opts = data_opts(tiny_root)
    opts[1] = f"('{partial}',)"
    result = train_net(
        tiny_root,
        "--config",
        "demo/vgg16_synthetic.yaml",
        *SMALL,
        *opts,
        "OUTPUT_DIR",
        str(tmp_path),
    )
    one_error(result, "misses 3 of the 10 images of data set 'synthetic_voc_trainval'")


def test_demo_pipeline_end_to_end_on_tiny_data(tmp_path):
    """tools/demo.py's pipeline at toy scale: every stage runs and the report is written."""
    from accel_det.workflows.demo import DemoOptions, run_demo

    options = DemoOptions(
        output=str(tmp_path / "demo"),
        data_root=str(tmp_path / "data" / "synthetic_voc"),
        speedups=(2.0,),
        num_trainval=10,
        num_test=5,
        proposal_min_size=4,
        pretrain_iterations=5,
        compress_images=8,
        samples_per_image=4,
        latency_warmup=1,
        latency_repeats=2,
        full_width_repeats=1,
        workers=1,
        progress=False,
        opts=SMALL + ["SOLVER.MAX_ITER", "10", "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", "2"],
        finetune_opts=["SOLVER.MAX_ITER", "5"],
    )
    summary = run_demo(options)
    out = tmp_path / "demo"
    report = (out / "report.md").read_text()
    assert "synthetic" in report.lower() and "not PASCAL VOC" in report and "| baseline |" in report
    assert (out / "mAP_vs_speedup.png").stat().st_size > 1000
    rows = {r["name"]: r for r in summary["rows"]}
    assert set(rows) == {"baseline", "asym3d_2x"}
    accel = rows["asym3d_2x"]
    assert accel["theoretical_speedup"] == pytest.approx(2.0, rel=0.05)
    assert (
        accel["backbone_speedup"] > 0
        and accel["detector_speedup"] > 0
        and accel["backbone_full_width_speedup"] > 0
    )
    assert accel["delta_ap50"] == pytest.approx(accel["ap50"] - rows["baseline"]["ap50"])
    plan = json.loads((out / "asym3d_2x" / "plan.json").read_text())
    assert plan["method"] == "asym3d" and plan["layers"]["conv1_1"]["structure"] == "original"
    saved = json.loads((out / "results.json").read_text())
    assert (
        saved["synthetic_data"] is True
        and saved["records"][1]["latency"]["backbone"]["threads"] == 1
    )
    # a second run reuses every finished stage
    again = run_demo(options)
    assert [r["ap50"] for r in again["rows"]] == [r["ap50"] for r in summary["rows"]]
