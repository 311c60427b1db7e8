"""A torchvision ResNet through the tools as VGG-16 goes: tools/compress_backbone.py (progress,
record, plot, resume bit-identical), tools/eval_imagenet.py against the plain model, and
tools/export_model.py; bad input refused in one line with nothing written."""

import json
from pathlib import Path

import pytest
import torch
import torchvision

from accel_det.data import make_image_folder
from accel_det.models.classifier import load_classifier
from tests.workflows.test_imagenet_tools import THREADS, run, run_in_process

# layer4 has 2x2 maps at a 64 crop: 20 images give too few samples for its 512 filters, so the
# tests keep it (the tool refuses such a layer, see test_bad_input)
LAYER4 = ["layer4.0.conv1", "layer4.0.conv2", "layer4.0.downsample.0", "layer4.1.conv1",
          "layer4.1.conv2"]  # fmt: skip
SMALL = ["--resize", "64", "--crop", "64", "--workers", "0", "--no-progress"]
COMPRESS = ["--num-images", "20", "--samples-per-image", "16", "--speedup", "1.6", "--method",
            "asym", "--iterations", "2", "--skip", "conv1", *LAYER4, *SMALL]  # fmt: skip


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("resnet")
    make_image_folder(str(root / "images"), num_classes=10, images_per_class=2, size=72)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), root / "r18.pth")
    common = ["--weights", root / "r18.pth", "--images", root / "images"]
    result = run("compress_backbone.py", *common, "--output", root / "r18_2x", *COMPRESS)
    assert result.returncode == 0, result.stderr
    return {"root": root, "common": common, "out": root / "r18_2x", "compress": result}


def test_a_resnet_compresses_with_its_layers_named_by_module(work):
    record = json.loads(Path(f"{work['out']}.json").read_text())
    assert record["arch"] == "resnet18" and record["source_weights"]["arch"] == "resnet18"
    assert record["format"] == "accel-det-plan/2" and record["skip"][0] == "conv1"
    assert 1.5 < record["theoretical_speedup"] < 1.7
    layers = record["layers"]
    assert (
        len(layers) == 20 and layers["layer2.0.downsample.0"]["module"] == "layer2.0.downsample.0"
    )
    assert layers["layer1.0.conv1"]["relu"] and not layers["layer1.0.conv2"]["relu"]
    assert layers["layer1.0.conv2"]["after"] == "add" and layers["layer1.0.conv1"]["rank"] < 64
    state = torch.load(f"{work['out']}.pth", weights_only=True)
    assert "bn1.weight" not in state and "conv1.bias" in state  # batch norms folded
    assert any(k.endswith(".expand.weight") for k in state) and "fc.weight" in state
    assert Path(f"{work['out']}.png").read_bytes()[:4] == b"\x89PNG"
    stderr, stdout = work["compress"].stderr, work["compress"].stdout
    assert sum("PCA energy=" in line for line in stderr.splitlines()) == 20
    assert "layer3.1.conv2" in stdout and "total" in stdout  # the table
    assert "held-out error of the output" in stderr


def test_resume_after_an_interruption_is_bit_identical(work, tmp_path, capsys, caplog):
    out = tmp_path / "resumed"
    argv = [*work["common"], "--output", out, *COMPRESS]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code, err = run_in_process("compress_backbone", [*argv, "--stop-after", "layer2.0.conv1"],
                                   capsys)  # fmt: skip
        assert code == 1 and "interrupted" in err and Path(f"{out}.checkpoint.pth").exists()
        with caplog.at_level("INFO", logger="accel_det.solver.pipeline"):
            code, err = run_in_process("compress_backbone", [*argv, "--resume"], capsys)
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err
    assert "resuming after conv1, layer1.0.conv1, layer1.0.conv2" in caplog.text
    reference = torch.load(f"{work['out']}.pth", weights_only=True)
    state = torch.load(f"{out}.pth", weights_only=True)
    assert state.keys() == reference.keys()
    assert all(torch.equal(state[k], reference[k]) for k in reference)


def test_evaluate_and_export_the_accelerated_resnet(work, tmp_path, capsys):
    record = tmp_path / "eval.json"
    argv = ["--weights", f"{work['out']}.pth", "--baseline", work["root"] / "r18.pth", "--val",
            work["root"] / "images", "--output", record, *SMALL]  # fmt: skip
    code, err = run_in_process("eval_imagenet", argv, capsys)
    assert code == 0, err
    models = json.loads(record.read_text())["models"]
    assert models["r18_2x.pth"]["arch"] == "resnet18" and models["r18_2x.pth"]["images"] == 20
    assert models["r18_2x.pth"]["theoretical_speedup"] == pytest.approx(1.6, abs=0.1)
    onnx = tmp_path / "r18_2x.onnx"
    argv = ["--weights", f"{work['out']}.pth", "--output", onnx, "--input-size", "64", "64"]
    code, err = run_in_process("export_model", argv, capsys)
    assert code == 0 and onnx.stat().st_size > 0, err
    model, plan, _, arch = load_classifier(f"{work['out']}.pth")  # the plan found next to it
    assert arch == "resnet18" and plan["arch"] == "resnet18"
    assert isinstance(model.layer1[0].bn1, torch.nn.Identity)


def test_bad_input_is_refused_in_one_line_before_anything_is_written(work, tmp_path, capsys):
    out = tmp_path / "o"
    base = [*work["common"], "--output", out, *COMPRESS]
    cases = [
        (["--arch", "resnet50"], "hold a resnet18, not the resnet50 asked for"),
        (["--fc"], "--fc factors VGG-16's fc6 and fc7; resnet18 has one fc layer"),
        (["--skip", "conv1_1"], "skip names layers the network does not have: conv1_1"),
        (["--stop-after", "layer9.0.conv1"], "--stop-after layer9.0.conv1: no such layer"),
        (["--skip", "conv1"], "give 80 responses of layer4.0.conv1, fewer than its 512 filters"),
        (["--weights", f"{work['out']}.pth"], "is already an accelerated resnet18"),
    ]
    for extra, message in cases:
        code, err = run_in_process("compress_backbone", [*base, *extra], capsys)
        assert code == 2 and message in err, (extra, err)
        assert len(err.strip().splitlines()) == 1, err
        assert not list(tmp_path.iterdir()), list(tmp_path.iterdir())
    assert THREADS  # the subprocess runs above use one thread each
