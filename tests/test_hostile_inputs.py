"""Hostile or malformed inputs other than pickles: plans bounded before anything is built, JSON
nesting and size, numeric options, config files, corrupt compression checkpoints, sparse weights,
control characters in printed paths, ONNX Runtime's telemetry. (Tool by tool, as one error line:
tests/test_errors.py.)"""

import json
import os
import subprocess
import sys

import pytest
import torch

from accel_det.errors import AccelDetError
from accel_det.models.vgg import vgg16
from accel_det.plan import Plan, check_plan
from accel_det.utils import io
from accel_det.utils.cli import SEED, number, printable, run_tool
from tests.helpers import REPO, SHORT, image_batches, small_net

CONV = {"in_channels": 64, "out_channels": 128, "kernel_size": [3, 3]}


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"structure": "channel", "rank": True}, "rank=True, expected a positive integer"),
        ({"structure": "channel", "rank": 0}, "rank=0, expected a positive integer"),
        ({"structure": "channel", "rank": 2.0}, "rank=2.0, expected a positive integer"),
        ({**CONV, "structure": "channel", "rank": 10**12}, "larger than the full rank 128"),
        ({**CONV, "structure": "channel", "rank": 129}, "larger than the full rank 128"),
        ({**CONV, "structure": "spatial", "spatial_rank": 193}, "full rank 192 of its 3×3"),
        ({**CONV, "in_channels": True, "structure": "original"}, "in_channels=True, expected"),
        ({**CONV, "kernel_size": [3, -1], "structure": "original"}, "kernel_size=[3, -1]"),
        (
            {"in_features": 8, "out_features": 4, "structure": "channel", "rank": 5},
            "full rank 4 of its 1×1, 8→4",
        ),
    ],
)
def test_plan_entries_are_bounded(entry, message):
    with pytest.raises(AccelDetError, match="^p.json has a malformed layer entry: x") as error:
        check_plan({"layers": {"x": entry}}, "p.json")
    assert message in str(error.value)


def test_full_ranks_are_accepted():
    check_plan({"layers": {"x": {**CONV, "structure": "spatial_channel", "rank": 128,
                                 "spatial_rank": 192}}})  # fmt: skip


@pytest.mark.parametrize("layer", ["conv2_1", "fc6"])
def test_a_rank_beyond_the_layer_is_refused_before_it_is_built(layer, monkeypatch):
    """A plan that records no shape: the network's layer bounds it, before any factorized layer
    is made (25,000,000 × 3,136 floats of fc6 would be 314 GB)."""
    from accel_det.nn import factorized, linear

    def never(*args, **kwargs):
        raise AssertionError("a factorized layer was built")

    monkeypatch.setattr(factorized.FactorizedConv2d, "__init__", never)
    monkeypatch.setattr(linear.FactorizedLinear, "__init__", never)
    entry = {"structure": "channel", "rank": 25_000_000}
    if layer == "fc6":
        entry["in_features"] = 64 * 7 * 7  # fc entries are told apart by it
    plan = Plan.from_dict({"layers": {layer: entry}})
    with pytest.raises(AccelDetError, match=f"plan layer {layer}: rank=25000000 is larger than"):
        vgg16(num_classes=10, width=0.125, init_weights=False, plan=plan)


def test_json_nesting_and_size_are_bounded(tmp_path, monkeypatch):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(AccelDetError, match="^cannot read plan file .*nested more than 64 levels"):
        Plan.read(str(deep))
    shallow = tmp_path / "shallow.json"
    shallow.write_text(json.dumps({"layers": {}, "note": [[[[1]]]]}))
    assert Plan.read(str(shallow))["note"] == [[[[1]]]]
    monkeypatch.setattr("accel_det.plan.MAX_PLAN_BYTES", 10)
    with pytest.raises(AccelDetError, match="bytes, more than the 10 such a file may have"):
        Plan.read(str(shallow))


def test_numeric_options_are_checked_by_the_parser(capsys):
    assert SEED("0") == 0 and number(float, above=1)("1.5") == 1.5
    for parse, text, message in (
        (SEED, "-1", "must be at least 0, got -1"),
        (SEED, "x", "expected an integer, got 'x'"),
        (number(float, minimum=0), "nan", "expected a finite number"),
        (number(float, minimum=0, below=1), "1", "must be less than 1, got 1"),
    ):
        with pytest.raises(Exception, match=message):
            parse(text)
    from tests.helpers import load_tool

    tool = load_tool("compress_detector")
    code = run_tool(tool.main, tool.build_parser(), ["--config-file", "x", "--output", "y",
                                                     "--fc-ranks", "-5", "3"])  # fmt: skip
    assert code == 2 and capsys.readouterr().err == (
        "error: argument --fc-ranks: must be at least 1, got -5 (see --help)\n"
    )


def test_printed_paths_keep_to_one_line():
    assert printable("out/a\nerror: b\x1b[2J\u202ec.pth") == r"out/a\nerror: b\x1b[2J\u202ec.pth"
    assert printable("é 日本 ok") == "é 日本 ok"


@pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants")
def test_sparse_tensors_in_weights_are_one_line(tmp_path):
    path = tmp_path / "sparse.pth"
    torch.save({"features.0.weight": torch.eye(3).to_sparse()}, path)
    with pytest.raises(AccelDetError, match="features.0.weight is a sparse or otherwise non-dense"):
        io.load_torch_file(str(path), "VGG-16 weights")


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """A compression of a small network stopped after conv2_1, its checkpoint, and how to resume
    it."""
    from accel_det.solver import compress

    path = str(tmp_path_factory.mktemp("ckpt") / "ckpt.pth")
    options = dict(speedup=2.5, method="asym", schedule=SHORT, progress=False)

    def stop(name, entry):
        if name == "conv2_1":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compress(small_net(), image_batches(), checkpoint=path, on_layer_done=stop, **options)

    def resume():
        return compress(small_net(), image_batches(), checkpoint=path, resume=True, **options)

    return path, resume


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["done"].append("conv9_9"), "says layer 'conv9_9' is done, which this run"),
        (lambda c: c["done"].append(["x"]), "is not a compression checkpoint"),
        (
            lambda c: c["state_dict"].update({k: v[:1] for k, v in c["state_dict"].items()}),
            "does not hold the weights of the layers it names",
        ),
        (lambda c: c.update(plan=json.dumps({"layers": []})), "is not a compression checkpoint"),
    ],
    ids=["unknown-layer", "unhashable-layer", "mis-shaped-weights", "plan-without-layers"],
)
def test_a_corrupt_compression_checkpoint_is_one_line(stopped, tmp_path, change, message):
    """Valid fingerprints (the same images and weights), corrupt contents."""
    path, resume = stopped
    original = open(path, "rb").read()
    saved = torch.load(path, weights_only=True)
    change(saved)
    torch.save(saved, path)
    try:
        with pytest.raises(AccelDetError, match=message):
            resume()
    finally:
        with open(path, "wb") as f:
            f.write(original)


def test_config_files_of_the_wrong_shape_are_one_line(tmp_path):
    pytest.importorskip("detectron2")
    from accel_det.detection.config import load_config

    cases = {
        "empty.yaml": ("", "holds nothing, not a mapping of config keys"),
        "list.yaml": ("- 1\n- 2\n", "holds a list, not a mapping of config keys"),
        "lazy.py": ("model = None\n", "is not a YAML file (.yaml)"),
        "self.yaml": ("_BASE_: self.yaml\n", "includes itself through _BASE_"),
        "a.yaml": ("_BASE_: b.yaml\n", "includes itself through _BASE_ "),
        "b.yaml": ("_BASE_: a.yaml\n", "includes itself through _BASE_ "),
        "missing.yaml": ("_BASE_: nope.yaml\n", "its _BASE_ "),
        "scalar.yaml": ("MODEL: 3\n", "cannot load config "),
    }
    for name, (text, _) in cases.items():
        (tmp_path / name).write_text(text)
    for name, (_, message) in cases.items():
        with pytest.raises(AccelDetError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_config(str(tmp_path / name))


def test_onnx_runtime_telemetry_is_off(tmp_path):
    """ONNX Runtime 1.32 writes a device id and an event database under ~/.cache/Microsoft from
    its import on; accel-det sets ORT_DISABLE_TELEMETRY before it is imported. Where a bare import
    of onnxruntime writes nothing in this environment (telemetry turned off some other way), the
    test has nothing to compare with and is skipped."""
    pytest.importorskip("onnxruntime")

    def writes_cache(code, name):
        home = tmp_path / name
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
        env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), PYTHONPATH=str(REPO))
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
        assert result.returncode == 0, result.stderr
        return (home / ".cache" / "Microsoft").exists()

    if not writes_cache("import onnxruntime", "bare"):
        pytest.skip("onnxruntime writes no telemetry here even without accel-det")
    assert not writes_cache("import accel_det, onnxruntime", "accel_det")
