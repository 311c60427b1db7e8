"""Export of a tiny plain and accelerated VGG-16 to ONNX and OpenVINO: the runtimes' outputs equal
PyTorch's; tools/export_model.py; refusals leave the output as it was."""

import json
import os
import resource

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import accel_det.deploy.export as export_module
from accel_det.deploy.export import check_output, export_graph, relative_difference
from accel_det.deploy.record import read_export_record
from accel_det.deploy.runtime import load_runtime
from accel_det.deploy.vgg import vgg16_graph
from accel_det.errors import AccelDetError
from accel_det.models.vgg import vgg16
from accel_det.utils.cli import run_tool
from accel_det.utils.io import sha256_file
from tests.deploy.plans import mixed_plan
from tests.helpers import load_tool

pytestmark = pytest.mark.usefixtures("one_thread")
WIDTH = 0.125
SIZE = (64, 64)
TOLERANCE = 1e-4  # tighter than the tools' default: float32 in every runtime


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A plain and an accelerated width-1/8 VGG-16 (10 classes, random weights) in files."""
    root = tmp_path_factory.mktemp("vgg")
    plan = mixed_plan(WIDTH)
    (root / "accel.json").write_text(json.dumps(plan))
    for name, model_plan in (("plain", None), ("accel", plan)):
        torch.manual_seed(1)
        torch.save(
            vgg16(num_classes=10, width=WIDTH, plan=model_plan).state_dict(), root / f"{name}.pth"
        )
    return root


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
@pytest.mark.parametrize(
    "kind, backbone, dynamic",
    [("plain", False, False), ("accel", False, True), ("accel", True, True)],
    ids=["plain-classifier", "accel-classifier-dynamic-batch", "accel-backbone-dynamic"],
)
def test_export_round_trip_equals_pytorch(weights, tmp_path, fmt, kind, backbone, dynamic):
    graph = vgg16_graph(
        str(weights / f"{kind}.pth"), backbone=backbone, input_size=SIZE, dynamic=dynamic
    )
    if kind == "accel":  # the plan next to the weights was found and applied
        module = graph.module if backbone else graph.module.features
        assert {type(m).__name__ for m in module} >= {"FactorizedConv2d"}
    path = tmp_path / ("model.onnx" if fmt == "onnx" else "model.xml")
    result = export_graph(graph, str(path), fmt, tolerance=TOLERANCE)
    assert result.max_difference <= TOLERANCE and len(result.differences) == 1 + dynamic
    files = ["model.onnx"] if fmt == "onnx" else ["model.xml", "model.bin"]
    record = f"{files[0]}.json"  # what the model was made from and expects
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*files, record])
    record = json.loads((tmp_path / record).read_text())
    assert record["precision"] == "fp32" and record["image"]["input_size"] == list(SIZE)
    assert record["model"] == ("vgg16_backbone" if backbone else "vgg16")
    assert record["normalization"]["mean"] == [0.485, 0.456, 0.406]
    assert list(record["files"]) == files and (record["plan"] is not None) == (kind == "accel")
    assert record["input_shapes"]["images"][0] == ("batch" if dynamic else 1)
    # the file runs again in both runtimes where they read it, on a new input
    runtimes = ["onnxruntime", "openvino"] if fmt == "onnx" else ["openvino"]
    shape = (2, 3, 48, 80) if backbone else (2 if dynamic else 1, 3, *SIZE)
    x = torch.randn(*shape)
    with torch.no_grad():
        expected = graph.module(x).numpy()
    for name in runtimes:
        run = load_runtime(str(path), name, threads=1)
        assert run.input_names == ["images"]
        assert run.output_names == ["features" if backbone else "logits"]
        (got,) = run(x)
        assert relative_difference(got, expected) <= TOLERANCE, name
        (again,) = run(images=x.numpy())
        np.testing.assert_array_equal(again, got)


def test_a_failed_check_writes_nothing_and_keeps_the_earlier_file(weights, tmp_path, monkeypatch):
    graph = vgg16_graph(str(weights / "plain.pth"), input_size=SIZE)
    path = tmp_path / "model.onnx"
    path.write_bytes(b"earlier export")
    real = export_module.load_runtime

    def off_by_one_percent(*args, **kwargs):
        run = real(*args, **kwargs)
        return lambda *inputs: [o * 1.01 for o in run(*inputs)]

    monkeypatch.setattr(export_module, "load_runtime", off_by_one_percent)
    with pytest.raises(AccelDetError, match=r"by 0\.01\d* .*above the tolerance 0\.001: nothing"):
        export_graph(graph, str(path), "onnx", overwrite=True)
    assert path.read_bytes() == b"earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temporary left


def test_outputs_are_checked_before_any_work(tmp_path):
    (tmp_path / "old.xml").write_text("x")
    (tmp_path / "only.bin").write_text("x")
    with pytest.raises(
        AccelDetError, match="unknown export format 'tflite': choose onnx or openvino"
    ):
        check_output(str(tmp_path / "m.tflite"), "tflite")
    with pytest.raises(AccelDetError, match="an openvino output must end with .xml"):
        check_output(str(tmp_path / "m.onnx"), "openvino")
    with pytest.raises(AccelDetError, match="old.xml already exists; pass --overwrite"):
        check_output(str(tmp_path / "old.xml"), "openvino")
    with pytest.raises(AccelDetError, match="only.bin already exists"):  # IR is two files
        check_output(str(tmp_path / "only.xml"), "openvino")
    assert check_output(str(tmp_path / "old.xml"), "openvino", overwrite=True)[1].endswith(
        "old.bin"
    )


def test_relative_difference():
    a = np.array([[1.0, -4.0], [0.0, 2.0]])
    assert relative_difference(a, a) == 0.0
    assert relative_difference(a + np.array([[0.0, 0.0], [0.04, 0.0]]), a) == pytest.approx(0.01)
    assert relative_difference(a[:1], a) == float("inf")
    assert relative_difference(a * np.nan, a) == float("inf")


def test_runtime_errors(tmp_path):
    with pytest.raises(AccelDetError, match="exported model file not found"):
        load_runtime(str(tmp_path / "none.onnx"))
    (tmp_path / "m.xml").write_text("<net/>")
    with pytest.raises(AccelDetError, match="is OpenVINO IR: run it with --runtime openvino"):
        load_runtime(str(tmp_path / "m.xml"), "onnxruntime")
    with pytest.raises(AccelDetError, match="unknown runtime 'tvm'"):
        load_runtime(str(tmp_path / "m.xml"), "tvm")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(AccelDetError, match="ONNX Runtime cannot load"):
        load_runtime(str(tmp_path / "bad.onnx"))
    value = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in "xy"]
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", value[:1], value[1:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.save(model, str(tmp_path / "relu.onnx"))
    for name in ("onnxruntime", "openvino"):
        run = load_runtime(str(tmp_path / "relu.onnx"), name)
        np.testing.assert_array_equal(run(np.array([-1.0, 2.0]))[0], [0.0, 2.0])  # float32 in
        with pytest.raises(AccelDetError, match=r"cannot run .*relu.onnx on x \[3\]: "):
            run(np.zeros(3, np.float32))
        with pytest.raises(AccelDetError, match="takes the inputs x, got z"):
            run(z=np.zeros(2, np.float32))
    # the precision the record names: bf16 runs in OpenVINO (its default), not in ONNX Runtime
    assert load_runtime(str(tmp_path / "relu.onnx")).precision == "fp32"  # no record
    (tmp_path / "relu.onnx.json").write_text(json.dumps({"precision": "bf16"}))
    run = load_runtime(str(tmp_path / "relu.onnx"))
    assert (run.name, run.precision) == ("openvino", "bf16")
    np.testing.assert_array_equal(run(np.array([-1.0, 2.0]))[0], [0.0, 2.0])
    with pytest.raises(AccelDetError, match="is a bf16 model: ONNX Runtime's CPU provider has no"):
        load_runtime(str(tmp_path / "relu.onnx"), "onnxruntime")
    (tmp_path / "relu.onnx.json").write_text(json.dumps({"precision": "fp8"}))
    with pytest.raises(AccelDetError, match="unknown precision 'fp8': choose fp32, bf16 or int8"):
        load_runtime(str(tmp_path / "relu.onnx"))


def test_slow_precision_notes_read_the_cpu_flags():
    from accel_det.deploy.precision import slow_precision_note

    assert "no VNNI" in slow_precision_note("int8", frozenset({"avx2", "avx512f"}))
    assert slow_precision_note("int8", frozenset({"avx2", "avx512_vnni"})) == ""
    assert slow_precision_note("int8", frozenset({"avx_vnni"})) == ""
    assert "no bfloat16 arithmetic" in slow_precision_note("bf16", frozenset({"avx512_vnni"}))
    assert slow_precision_note("bf16", frozenset({"amx_bf16"})) == ""
    assert slow_precision_note("fp32", frozenset({"avx2"})) == ""
    assert slow_precision_note("int8", frozenset()) == ""  # flags unknown: nothing said


def test_tool_exports_an_accelerated_backbone(weights, tmp_path, capsys):
    out = tmp_path / "features.xml"
    argv = ["--format", "openvino", "--weights", weights / "accel.pth", "--backbone"]
    argv += ["--input-size", "64", "96", "--dynamic", "--output", out]
    tool = load_tool("export_model")
    code = run_tool(tool.main, tool.build_parser(), [str(a) for a in argv])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "largest relative difference to PyTorch in OpenVINO: " in printed.out
    assert "inputs images [1, 3, 64, 96], outputs features" in printed.out
    assert out.is_file() and (tmp_path / "features.bin").is_file()
    run = load_runtime(str(out), threads=1)
    assert run.name == "openvino" and run(torch.randn(1, 3, 64, 96))[0].shape == (1, 64, 2, 3)


# --------------------------------------------------------------------------- writes
def small_graph():
    """Conv 3→64→64 (148 KB of float32 weights): larger than the file size limit below."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 64, 3), torch.nn.ReLU(), torch.nn.Conv2d(64, 64, 3)
    )
    return export_module.Graph(module.eval(), [(torch.rand(1, 3, 16, 16),)], ["x"], ["y"])


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_an_export_out_of_room_is_one_line_naming_the_file(tmp_path, fmt, monkeypatch):
    """OpenVINO's writer fails with "basic_ios::clear: iostream error", ONNX's with an OSError
    without a file name: both become one line naming the output, the earlier export stays, no
    temporary is left. (For IR the limit holds while OpenVINO writes: its ONNX source, about as
    large as X.bin, is written first.)"""
    path = tmp_path / ("model.onnx" if fmt == "onnx" else "model.xml")
    files = export_module.output_files(str(path), fmt)
    for f in files:
        with open(f, "wb") as handle:
            handle.write(b"earlier")
    failing = files[0] if fmt == "onnx" else files[1]  # OpenVINO's weights: X.bin
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    real = export_module.to_openvino

    def to_openvino_limited(*args):
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
        real(*args)

    monkeypatch.setattr(export_module, "to_openvino", to_openvino_limited)
    try:
        with pytest.raises(AccelDetError) as error:
            if fmt == "onnx":
                resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
            export_graph(small_graph(), str(path), fmt, overwrite=True)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert str(error.value) == f"cannot write {failing}: file too large"
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(f) for f in files)
    assert all(open(f, "rb").read() == b"earlier" for f in files)


def test_two_exports_to_one_new_output_keep_the_first(tmp_path, monkeypatch, capsys):
    """The output is checked when the tool starts and, without --overwrite, again when it is
    published (a hard link that fails if the file exists): another run that wrote it meanwhile
    keeps its file; this one exits with one line."""
    out = tmp_path / "model.xml"
    real = export_module.to_openvino

    def another_run_finishes_first(onnx_path, xml_path):
        real(onnx_path, xml_path)
        out.write_bytes(b"the other run's")

    monkeypatch.setattr(export_module, "to_openvino", another_run_finishes_first)
    tool = load_tool("export_model")
    argv = ["--format", "openvino", "--weights", str(weights_of(tmp_path)), "--output", str(out)]
    code = run_tool(tool.main, tool.build_parser(), argv + ["--input-size", "32", "32"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == (
        f"error: output {out} already exists (another run wrote it meanwhile); pass --overwrite "
        "to replace it"
    ), err
    assert out.read_bytes() == b"the other run's"
    assert sorted(os.listdir(tmp_path)) == ["model.xml", "vgg.pth"]


def weights_of(folder):
    torch.manual_seed(0)
    torch.save(vgg16(num_classes=10, width=WIDTH).state_dict(), folder / "vgg.pth")
    return folder / "vgg.pth"


def test_an_export_publishes_its_record_last_and_never_beside_another_model(tmp_path, monkeypatch):
    """X.bin, X.xml, then the record that names them; with --overwrite the old record and X.xml
    are removed first, so an export killed between its renames leaves neither the old X.xml beside
    the new X.bin nor the old record beside a new model."""
    path = tmp_path / "model.xml"
    files = export_module.output_files(str(path), "openvino")
    for f in files:
        with open(f, "wb") as handle:
            handle.write(b"earlier")
    real_replace, calls = os.replace, []

    def replace(source, target):
        if os.path.dirname(os.path.abspath(target)) == str(tmp_path):
            calls.append(os.path.basename(target))
            if len(calls) == 2:
                raise KeyboardInterrupt  # the process dies here
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        export_graph(small_graph(), str(path), "openvino", overwrite=True)
    assert calls == ["model.bin", "model.xml"]
    assert os.listdir(tmp_path) == ["model.bin"]
    monkeypatch.undo()
    export_graph(small_graph(), str(path), "openvino", overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["model.bin", "model.xml", "model.xml.json"]
    record = read_export_record(str(path))
    assert record["files"] == {os.path.basename(f): sha256_file(f) for f in files[:2]}


@pytest.fixture(scope="module")
def calibration_images(tmp_path_factory):
    """12 synthetic images, and 6 black ones (a broken calibration)."""
    from PIL import Image

    from accel_det.data.synthetic.folders import make_image_folder

    root = tmp_path_factory.mktemp("calibration")
    make_image_folder(str(root / "images"), num_classes=4, images_per_class=3, size=72)
    (root / "black").mkdir()
    for i in range(6):
        Image.new("RGB", (72, 72)).save(root / "black" / f"{i}.png")
    return root


def export_tool(argv, capsys):
    tool = load_tool("export_model")
    code = run_tool(tool.main, tool.build_parser(), [str(a) for a in argv])
    return code, capsys.readouterr()


@pytest.mark.parametrize("backbone", [False, True], ids=["classifier", "backbone"])
def test_int8_export_is_calibrated_on_a_recorded_seeded_draw(
    weights, calibration_images, tmp_path, capsys, backbone
):
    from accel_det.data.sample import files_digest, sample_images
    from accel_det.workflows.calibration import calibration_transform

    images = calibration_images / "images"
    common = ["--weights", weights / "accel.pth", "--input-size", *SIZE, "--precision", "int8"]
    common += ["--images", images, "--calibration", "5"] + (["--backbone"] if backbone else [])
    code, printed = export_tool([*common, "--seed", "3", "--output", tmp_path / "a.onnx"], capsys)
    assert code == 0, printed.err
    assert (
        "int8 against float32 in ONNX Runtime on the sample inputs: relative output" in printed.out
    )
    record = json.loads((tmp_path / "a.onnx.json").read_text())
    assert record["precision"] == "int8"
    ops = {node.op_type for node in onnx.load(str(tmp_path / "a.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    reduced = record["reduced_precision"]
    assert reduced["format"] == "QDQ" and reduced["weights"].endswith("per output channel")
    measures = reduced["agreement"]["measures"]
    assert 0 < measures["relative_error"] <= 0.1 and reduced["agreement"]["samples"] == 8
    assert ("top1" in measures) != backbone
    drawn = reduced["calibration"]
    # the draw of tools/compress_backbone.py with the same seed, by its list of files
    expected = sample_images(str(images), 5, 3, calibration_transform(SIZE), progress=False)
    assert drawn["files_sha256"] == files_digest(expected.files)
    assert (drawn["seed"], drawn["images"], drawn["found"]) == (3, 5, 12)
    if backbone:
        return
    code, _ = export_tool([*common, "--seed", "4", "--output", tmp_path / "b.onnx"], capsys)
    other = json.loads((tmp_path / "b.onnx.json").read_text())["reduced_precision"]
    assert code == 0 and other["calibration"]["files_sha256"] != drawn["files_sha256"]


def test_a_broken_quantization_is_refused_in_one_line_and_writes_nothing(
    weights, calibration_images, tmp_path, capsys
):
    """Calibrated on black images, the activation ranges are those of one constant input: real
    inputs saturate and the int8 model's logits are far from float32's."""
    argv = ["--weights", weights / "plain.pth", "--input-size", *SIZE, "--precision", "int8"]
    argv += ["--images", calibration_images / "black", "--calibration", "4"]
    code, printed = export_tool([*argv, "--output", tmp_path / "q.onnx"], capsys)
    lines = [line for line in printed.err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1, printed.err
    assert lines[0].startswith("error: the int8 model disagrees with the float32 model in ONNX ")
    assert "(--max-relative-error): nothing written to " in lines[0]
    assert list(tmp_path.iterdir()) == []
    # the same quantization within looser bounds is written
    code, printed = export_tool(
        [*argv, "--max-relative-error", "100", "--min-top1", "0", "--output", tmp_path / "q.onnx"],
        capsys,
    )
    assert code == 0, printed.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.onnx", "q.onnx.json"]
