"""The whole detector accelerated: a factorized box head, tools/compress_detector.py end to end on
a tiny synthetic set, then tools/train_net.py on its output; resume; bad input."""

import errno
import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("detectron2")

from detectron2.modeling import build_model

import accel_det.detection  # noqa: F401
from accel_det.detection.config import load_config
from accel_det.nn import FactorizedLinear
from accel_det.utils.io import sha256_file
from tests.detection.test_train import SMALL, data_opts, one_error, tiny_root, train_net  # noqa: F401
from tests.helpers import REPO

CONFIG = "demo/vgg16_synthetic.yaml"


def tiny_opts(root):
    return [*SMALL, *data_opts(root)]


@pytest.fixture(scope="module")
def detector(tiny_root, tmp_path_factory):  # noqa: F811
    """A tiny Fast R-CNN's checkpoint (random weights: compression does not need a trained one)."""
    folder = tmp_path_factory.mktemp("detector")
    os.environ["DETECTRON2_DATASETS"] = str(tiny_root)
    torch.manual_seed(0)
    model = build_model(load_config(CONFIG, tiny_opts(tiny_root)))
    torch.save({"model": model.state_dict()}, folder / "model.pth")
    return folder / "model.pth"


def compress(root, weights, output, *extra, timeout=600, failing=None):
    """tools/compress_detector.py on the tiny set; ``failing``: writes to this file name fail
    (disk full, tests/write_fault.py)."""
    env = dict(os.environ, DETECTRON2_DATASETS=str(root), OMP_NUM_THREADS="1")
    fault = ["tests/write_fault.py", failing, str(errno.ENOSPC)] if failing else []
    command = [
        sys.executable,
        *fault,
        "tools/compress_detector.py",
        "--config-file",
        CONFIG,
        "--output",
        str(output),
    ]
    command += [
        "--num-images",
        "8",
        "--samples-per-image",
        "8",
        "--fc-samples-per-image",
        "16",
        "--no-progress",
    ]
    command += ["--iterations", "2", *extra, *tiny_opts(root), "MODEL.WEIGHTS", str(weights)]
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_full_rank_factorized_box_head_equals_the_plain_one(tiny_root, tmp_path):  # noqa: F811
    torch.manual_seed(0)
    plain = build_model(load_config(CONFIG, tiny_opts(tiny_root))).eval()
    head = plain.roi_heads.box_head
    entries = {
        n: {"in_features": getattr(head, n).in_features, "out_features": 32, "structure": "channel",
            "rank": 32}
        for n in ("fc6", "fc7")
    }  # fmt: skip
    plan = {"layers": entries}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    opts = tiny_opts(tiny_root) + ["MODEL.ACCEL.PLAN", str(tmp_path / "plan.json")]
    accelerated = build_model(load_config(CONFIG, opts)).eval()
    assert isinstance(accelerated.roi_heads.box_head.fc6, FactorizedLinear)
    state = plain.state_dict()
    for name in ("fc6", "fc7"):  # the exact factorization W = I · W
        prefix = f"roi_heads.box_head.{name}."
        weight, bias = state.pop(prefix + "weight"), state.pop(prefix + "bias")
        state.update({prefix + "reduce.weight": weight, prefix + "expand.weight": torch.eye(32),
                      prefix + "expand.bias": bias})  # fmt: skip
    accelerated.load_state_dict(state)
    x = torch.randn(5, head.fc6.in_features)
    with torch.no_grad():
        assert torch.equal(accelerated.roi_heads.box_head(x), head(x))


def test_compress_detector_then_evaluate_and_fine_tune(tiny_root, detector, tmp_path):  # noqa: F811
    out = tmp_path / "3x"
    result = compress(tiny_root, detector, out, "--speedup", "3", "--rois-per-image", "100")
    assert result.returncode == 0, result.stderr[-3000:]
    plan = json.loads((out / "plan.json").read_text())
    assert plan["rois_per_image"] == 100 and plan["input_hw"] == [64, 86]
    assert 3.0 <= plan["theoretical_speedup_detector"] <= 3.06
    assert plan["theoretical_speedup"] < plan["theoretical_speedup_detector"]
    for name in ("fc6", "fc7"):
        entry = plan["layers"][name]
        assert entry["in_features"] > 0 and entry["rank"] >= 1
        assert entry["error"] is not None
    # written as a pair: the plan records the sha256 of the weights next to it
    assert plan["outputs"]["weights_sha256"] == sha256_file(str(out / "model_final.pth"))
    state = torch.load(out / "model_final.pth", weights_only=True)["model"]
    assert (
        any(k.startswith("roi_heads.box_head.fc6.") for k in state) and (out / "plan.png").is_file()
    )
    assert "fc6" in result.stdout and "network" in result.stdout  # the per-layer table

    accel = [
        "MODEL.ACCEL.PLAN",
        str(out / "plan.json"),
        "MODEL.WEIGHTS",
        str(out / "model_final.pth"),
    ]
    for mode in (["--eval-only"], ["SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "0"]):
        run = train_net(
            tiny_root, "--config", "demo/accel_vgg16_synthetic.yaml", *mode, *tiny_opts(tiny_root),
            *accel, "OUTPUT_DIR", str(tmp_path / mode[0].strip("-")),
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        results = json.loads((tmp_path / mode[0].strip("-") / "eval_results.json").read_text())
        assert "AP50" in results["synthetic_voc_test"]["bbox"]


def test_resume_after_an_interruption_is_bit_identical(tiny_root, detector, tmp_path):  # noqa: F811
    """Stopped after conv3_1, then resumed into a full disk (plan.json cannot be written: neither
    output is, the checkpoint stays and the line says that --resume finishes), then resumed: the
    same weights as an uninterrupted run."""
    args = ["--speedup", "2.5", "--method", "asym"]
    whole = compress(tiny_root, detector, tmp_path / "whole", *args)
    assert whole.returncode == 0, whole.stderr[-3000:]
    out = tmp_path / "resumed"
    stopped = compress(tiny_root, detector, out, *args, "--stop-after", "conv3_1")
    assert stopped.returncode == 1 and (out / "compression.checkpoint.pth").is_file()
    full = compress(tiny_root, detector, out, *args, "--resume", failing="plan.json")
    one_error(full, "plan.json: no space left on device; the solved layers stay in ", "--resume")
    assert sorted(os.listdir(out)) == ["compression.checkpoint.pth"]  # no half pair, no temporary
    resumed = compress(tiny_root, detector, out, *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = torch.load(tmp_path / "whole" / "model_final.pth", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / "model_final.pth", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "resumed" / "compression.checkpoint.pth").exists()


def test_bad_input_is_one_line_and_loses_nothing(tiny_root, detector, tmp_path):  # noqa: F811
    one_error(
        compress(tiny_root, tmp_path / "nope.pth", tmp_path / "a"), "MODEL.WEIGHTS file not found"
    )
    other = tmp_path / "other.pth"
    torch.manual_seed(1)
    wide = build_model(
        load_config(CONFIG, tiny_opts(tiny_root) + ["MODEL.ROI_BOX_HEAD.FC_DIM", "48"])
    )
    torch.save({"model": wide.state_dict()}, other)
    one_error(compress(tiny_root, other, tmp_path / "b"), "do not fit the box head")
    no_proposals = compress(tiny_root, detector, tmp_path / "c", "MODEL.LOAD_PROPOSALS", "False")
    one_error(no_proposals, "has no precomputed proposals")
    one_error(
        compress(tiny_root, detector, tmp_path / "d", "--speedup", "500"), "impossible", "at most"
    )
    done = tmp_path / "done"
    assert compress(tiny_root, detector, done, "--speedup", "2").returncode == 0
    before = {p.name: p.read_bytes() for p in done.iterdir()}
    one_error(
        compress(tiny_root, detector, done, "--speedup", "3"), "already exists; pass --overwrite"
    )
    assert {p.name: p.read_bytes() for p in done.iterdir()} == before


def test_outputs_another_run_wrote_meanwhile_are_kept(tmp_path):
    """Checked at the start, the outputs are published without replacing (unless --overwrite or
    --resume): a second run that finishes later is refused and the first run's pair stays."""
    from accel_det.errors import AccelDetError
    from accel_det.plan import Plan
    from accel_det.workflows.detector_compression.compress import output_paths, write_outputs

    paths = output_paths(str(tmp_path))
    (tmp_path / "plan.json").write_text("the first run's")
    with pytest.raises(AccelDetError, match="plan.json already exists .*pass --overwrite"):
        write_outputs(torch.nn.Linear(2, 2), Plan(layers={}), paths, plot=False, replace=False)
    assert os.listdir(tmp_path) == ["plan.json"]
    assert (tmp_path / "plan.json").read_text() == "the first run's"


def test_fixed_fc_ranks_that_would_not_pay_are_refused():
    """fc6 of the demo (3136→256): its two factors cost less than the layer up to rank 236."""
    from types import SimpleNamespace

    from accel_det.errors import AccelDetError
    from accel_det.workflows.detector_compression.compress import check_fc_ranks

    head = SimpleNamespace(fc6=torch.nn.Linear(3136, 256), fc7=torch.nn.Linear(256, 256))
    model = SimpleNamespace(roi_heads=SimpleNamespace(box_head=head))
    check_fc_ranks(model, {"fc6": 236, "fc7": 127})
    check_fc_ranks(model, {"fc6": 256, "fc7": 256})  # kept whole (solved at full rank)
    with pytest.raises(AccelDetError, match="fc6 at rank 237 costs more .* at most 236, or 256"):
        check_fc_ranks(model, {"fc6": 237})
    with pytest.raises(AccelDetError, match="fc7 at rank 128 costs more"):
        check_fc_ranks(model, {"fc7": 128})
    with pytest.raises(AccelDetError, match="larger than its full rank 256"):
        check_fc_ranks(model, {"fc6": 257})
