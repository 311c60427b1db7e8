"""Export of a tiny accelerated Fast R-CNN (random weights) to ONNX and OpenVINO, and evaluation of
what was exported on a tiny synthetic VOC set: the same detections and AP as PyTorch."""

import copy
import json
from collections import OrderedDict

import numpy as np
import onnx
import pytest
import torch

pytest.importorskip("detectron2")

import accel_det.detection  # noqa: F401
from accel_det.data.synthetic.voc import make_synthetic_voc
from accel_det.deploy.detector import DetectorGraph, build_detector, detector_graph
from accel_det.deploy.evaluate import ExportedDetector, evaluate_exported
from accel_det.deploy.export import export_graph
from accel_det.detection.config import load_config
from accel_det.detection.datasets import load_voc_instances, register_synthetic_voc
from accel_det.detection.proposals import write_proposal_file
from accel_det.detection.trainer import Trainer, by_dataset
from accel_det.plan import plan_fingerprint
from accel_det.utils.cli import run_tool
from accel_det.utils.io import sha256_file
from tests.deploy.plans import mixed_plan
from tests.helpers import load_tool

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # a class without objects in the 4 test images: Detectron2's VOC evaluator divides by zero
    pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning"),
]
WIDTH = 0.0625
TOLERANCE = 1e-4
PREFIX = "deploy_voc"  # registered in this process; the tools' processes use synthetic_voc_*


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 4-image synthetic test set with proposals around its objects, and a random accelerated
    detector whose scores are spread out (so that detections pass a low threshold and no two
    tie)."""
    root = tmp_path_factory.mktemp("deploy_det")
    data = root / "datasets" / "synthetic_voc"
    make_synthetic_voc(str(data), num_trainval=2, num_test=4, image_size=64, seed=1, progress=False)
    register_synthetic_voc(str(data), prefix=PREFIX)
    generator = np.random.default_rng(0)
    ids, boxes = [], []
    for record in load_voc_instances(str(data), "test", _classes(data)):
        around = [a["bbox"] for a in record["annotations"] for _ in range(6)]
        jitter = generator.normal(0, 3, (len(around), 4))
        noise = generator.uniform(0, 60, (20, 2))
        boxes.append(np.concatenate([np.array(around) + jitter, np.hstack([noise, noise + 16])]))
        ids.append(record["image_id"])
    write_proposal_file(str(root / "proposals.pkl"), ids, boxes)
    (root / "plan.json").write_text(json.dumps(mixed_plan(WIDTH)))
    cfg = load_config("demo/accel_vgg16_synthetic", small_opts(root, ""))
    torch.manual_seed(0)
    model = build_detector(cfg)
    # fc7 features of random convs are large: scale the predictor to logits of about 2 and
    # box deltas of about 0.5 (no saturated softmax, and boxes that move)
    graph = detector_graph(cfg, model)
    with torch.no_grad():
        image, proposals = graph.samples[0]
        x = ((image - graph.module.pixel_mean) / graph.module.pixel_std)[None]
        rois = torch.cat([torch.zeros(len(proposals), 1), proposals], dim=1)
        pooled = graph.module.pooler(model.backbone(x)["conv5_3"], rois)
        norm = model.roi_heads.box_head(pooled).norm(dim=1).mean().item()
    predictor = model.roi_heads.box_predictor
    torch.nn.init.normal_(predictor.cls_score.weight, std=2.0 / norm)
    torch.nn.init.normal_(predictor.bbox_pred.weight, std=0.5 / norm)
    torch.save({"model": model.state_dict()}, root / "model.pth")
    cfg = load_config("demo/accel_vgg16_synthetic", small_opts(root, root / "model.pth", PREFIX))
    cfg.freeze()
    return {"root": root, "cfg": cfg, "model": build_detector(cfg)}


def _classes(data):
    return json.loads((data / "synthetic_voc.json").read_text())["classes"]


def small_opts(root, weights, prefix="synthetic_voc"):
    return [
        "MODEL.DEVICE",
        "cpu",
        "MODEL.VGG.WIDTH",
        str(WIDTH),
        "MODEL.ROI_BOX_HEAD.FC_DIM",
        "32",
        "INPUT.MIN_SIZE_TEST",
        "64",
        "INPUT.MAX_SIZE_TEST",
        "86",
        "DATALOADER.NUM_WORKERS",
        "0",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        "0.01",
        "MODEL.ACCEL.PLAN",
        str(root / "plan.json"),
        "MODEL.WEIGHTS",
        str(weights),
        "DATASETS.TEST",
        f"('{prefix}_test',)",
        "DATASETS.PROPOSAL_FILES_TEST",
        f"('{root / 'proposals.pkl'}',)",
    ]


@pytest.fixture(scope="module")
def pytorch_results(setup):
    return by_dataset(setup["cfg"], Trainer.test(setup["cfg"], setup["model"]))


@pytest.fixture(scope="module")
def exported(setup):
    """The detector exported to ONNX and to OpenVINO IR, with the export results."""
    graph = detector_graph(setup["cfg"], setup["model"])
    results = {}
    for fmt, name in (("onnx", "detector.onnx"), ("openvino", "detector.xml")):
        path = setup["root"] / name
        results[fmt] = (path, export_graph(graph, str(path), fmt, tolerance=TOLERANCE))
    return results


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_detector_export_round_trip_equals_pytorch(exported, fmt):
    path, result = exported[fmt]
    assert path.is_file() and result.max_difference <= TOLERANCE
    # a landscape image with 300 proposals and a portrait one with a single proposal
    assert [set(d) for d in result.differences] == [{"scores", "boxes"}] * 2


def test_a_factorized_box_head_exports(setup, tmp_path):
    """fc6 / fc7 as reduce (no bias) → expand linear pairs, as a factorized box head has them."""
    model = copy.deepcopy(setup["model"])
    head = model.roi_heads.box_head
    for name in ("fc6", "fc7"):
        fc = getattr(head, name)
        pair = torch.nn.Sequential(
            OrderedDict(
                reduce=torch.nn.Linear(fc.in_features, 8, bias=False),
                expand=torch.nn.Linear(8, fc.out_features),
            )
        )
        setattr(head, name, pair)
    result = export_graph(
        detector_graph(setup["cfg"], model), str(tmp_path / "f.onnx"), tolerance=TOLERANCE
    )
    assert result.max_difference <= TOLERANCE
    graph = onnx.load(str(tmp_path / "f.onnx")).graph
    assert sum(node.op_type in ("Gemm", "MatMul") for node in graph.node) >= 5  # 4 fc + predictor


def test_postprocessing_in_python_gives_detectron2s_detections(setup):
    """ExportedDetector on the graph run in PyTorch: exactly the model's own detections."""
    cfg, model = setup["cfg"], setup["model"]
    graph = DetectorGraph(model).eval()

    class TorchRuntime:
        path, input_names, output_names = "torch", ["image", "proposals"], ["scores", "boxes"]

        def __call__(self, image, proposals):
            return [t.numpy() for t in graph(image, proposals)]

    detector = ExportedDetector(TorchRuntime(), cfg)
    loader = Trainer.build_test_loader(cfg, cfg.DATASETS.TEST[0])
    detections = 0
    with torch.no_grad():
        for inputs in loader:
            expected = model(inputs)[0]["instances"]
            got = detector(inputs)[0]["instances"]
            assert got.image_size == expected.image_size
            torch.testing.assert_close(got.pred_boxes.tensor, expected.pred_boxes.tensor)
            torch.testing.assert_close(got.scores, expected.scores)
            assert torch.equal(got.pred_classes, expected.pred_classes)
            detections += len(got)
    assert detections > 0


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_evaluation_of_the_exported_detector_gives_pytorchs_ap(
    setup, exported, pytorch_results, fmt
):
    name = setup["cfg"].DATASETS.TEST[0]
    expected = pytorch_results[name]["bbox"]
    assert expected["AP50"] > 1.0  # a meaningful comparison: detections that hit objects
    results = evaluate_exported(setup["cfg"], str(exported[fmt][0]), threads=1)
    assert abs(results[name]["bbox"]["AP50"] - expected["AP50"]) <= 0.1
    assert abs(results[name]["bbox"]["AP"] - expected["AP"]) <= 0.1


def test_tools_export_then_evaluate(setup, pytorch_results, tmp_path, capsys):
    """tools/export_model.py --config-file, then tools/evaluate_exported.py, through run_tool (the
    errors matrix runs them as processes)."""
    root = setup["root"]
    opts = small_opts(root, root / "model.pth", PREFIX)

    def tool(name, *args, code=0):
        module = load_tool(name)
        returned = run_tool(module.main, module.build_parser(), [str(a) for a in args])
        printed = capsys.readouterr()
        assert returned == code, printed.err[-3000:]
        return printed.out if code == 0 else printed.err

    model = tmp_path / "detector.onnx"
    config = ["--config-file", "demo/accel_vgg16_synthetic"]
    out = tool("export_model", "--output", model, *config, *opts)
    assert "inputs image [3, 64, 85], proposals [300, 4], outputs scores, boxes" in out, out
    assert "largest relative difference to PyTorch in ONNX Runtime: " in out
    # what the model was made from and expects, next to it
    record = json.loads((tmp_path / "detector.onnx.json").read_text())
    assert record["precision"] == "fp32" and record["model"] == "detector"
    assert record["image"]["min_size_test"] == 64 and record["image"]["format"] == "RGB"
    assert record["normalization"]["pixel_mean"] == list(setup["cfg"].MODEL.PIXEL_MEAN)
    assert record["classes"]["num_classes"] == 5 and len(record["classes"]["names"]) == 5
    assert record["plan"]["fingerprint"] == plan_fingerprint(mixed_plan(WIDTH))
    assert record["config"]["MODEL.VGG.WIDTH"] == WIDTH and record["files"]["detector.onnx"]
    assert record["weights"]["sha256"] == sha256_file(str(root / "model.pth"))
    # a config with another test size: refused, not evaluated into a wrong AP
    err = tool("evaluate_exported", *config, "--model", model, *opts, "INPUT.MIN_SIZE_TEST", "48",
               code=2)  # fmt: skip
    assert "was exported for INPUT.MIN_SIZE_TEST 64 (its record " in err, err
    out = tool("evaluate_exported", *config, "--model", model, *opts)
    results = json.loads((tmp_path / "detector.onnx.onnxruntime.eval_results.json").read_text())
    expected = pytorch_results[f"{PREFIX}_test"]["bbox"]["AP50"]
    assert abs(results[f"{PREFIX}_test"]["bbox"]["AP50"] - expected) <= 0.1
    assert results["evaluated"]["runtime"] == "onnxruntime"
    assert f"{PREFIX}_test: AP " in out and f"results written to {tmp_path}" in out
    # AP50 with its interval; paired against another evaluation of the same images
    npz = tmp_path / "detector.onnx.onnxruntime.eval_results.detections.npz"
    assert npz.is_file() and "] (95 % bootstrap interval over test images)" in out, out
    paired = ["--output", tmp_path / "paired.json", "--baseline", npz]
    out = tool("evaluate_exported", *config, "--model", model, *paired, *opts)
    assert "Δ +0.0 [+0.0, +0.0] (paired)" in out, out
    (tmp_path / "detector.onnx").write_bytes(model.read_bytes() + b" ")  # not the recorded one
    again = ["--output", tmp_path / "again.json"]
    err = tool("evaluate_exported", *config, "--model", model, *again, *opts, code=2)
    assert "detector.onnx.json was written for another model than " in err, err


def calibration_opts(root):
    """DATASETS.TRAIN for an int8 export's calibration: the 4 test images and their proposals
    (the tiny set has no training proposals)."""
    return [
        "DATASETS.TRAIN",
        f"('{PREFIX}_test',)",
        "DATASETS.PROPOSAL_FILES_TRAIN",
        f"('{root / 'proposals.pkl'}',)",
    ]


# a width-1/16 random detector (4-channel convs, 32-wide fc layers) is far harder to quantize than
# a trained VGG-16: looser bounds than the tool's defaults
INT8_BOUNDS = ["--max-score-difference", "0.15", "--min-top-class", "0.9"]


@pytest.mark.parametrize(
    "precision, fmt, name", [("int8", "openvino", "q.xml"), ("bf16", "onnx", "b.onnx")]
)
def test_reduced_precision_detector_exports_agree_and_evaluate(
    setup, pytorch_results, tmp_path, capsys, precision, fmt, name
):
    """tools/export_model.py --precision int8 (calibrated on a seeded draw of DATASETS.TRAIN) or
    bf16, then tools/evaluate_exported.py in the recorded precision and its runtime (a bf16 .onnx
    in OpenVINO): detections of about PyTorch's float32 AP."""
    root = setup["root"]
    opts = small_opts(root, root / "model.pth", PREFIX) + calibration_opts(root)
    config = ["--config-file", "demo/accel_vgg16_synthetic"]
    model = tmp_path / name
    extra = ["--calibration", "3", "--seed", "5", *INT8_BOUNDS] if precision == "int8" else []
    argv = ["--output", model, "--format", fmt, "--precision", precision, *extra, *config, *opts]
    export = load_tool("export_model")
    code = run_tool(export.main, export.build_parser(), [str(a) for a in argv])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-3000:]
    assert f"{precision} against float32 in OpenVINO on the sample inputs: top-class" in printed.out
    record = json.loads((tmp_path / f"{name}.json").read_text())
    assert record["precision"] == precision
    reduced = record["reduced_precision"]
    measures = reduced["agreement"]["measures"]
    assert set(measures) == {"top_class", "score_difference", "box_difference"}
    assert measures["top_class"] >= 0.9 and measures["box_difference"] <= 2.0
    if precision == "int8":
        assert reduced["quantizer"] == "onnxruntime.quantization.quantize_static"
        drawn = reduced["calibration"]
        assert (drawn["source"], drawn["seed"], drawn["images"]) == ("DATASETS.TRAIN", 5, 3)
        assert len(drawn["files_sha256"]) == 64
        assert "FakeQuantize" in model.read_text()  # OpenVINO's form of the QDQ pairs
    else:  # the float32 file, run in bfloat16 by OpenVINO
        assert reduced["applied"].startswith("at run time: OpenVINO INFERENCE_PRECISION_HINT=bf16")
        assert "QuantizeLinear" not in {n.op_type for n in onnx.load(str(model)).graph.node}
    evaluate = load_tool("evaluate_exported")
    code = run_tool(evaluate.main, evaluate.build_parser(), [*config, "--model", str(model), *opts])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-3000:]
    results = json.loads((tmp_path / f"{name}.openvino.eval_results.json").read_text())
    assert results["evaluated"]["precision"] == precision
    assert f"openvino, {precision})" in printed.out
    expected = pytorch_results[f"{PREFIX}_test"]["bbox"]["AP50"]
    # 4 test images: one detection moves AP50 by points
    assert abs(results[f"{PREFIX}_test"]["bbox"]["AP50"] - expected) <= 6.0


def test_the_demo_exports_and_evaluates_an_int8_detector(setup, pytorch_results, tmp_path):
    """The demo's int8 row: export_detector(..., "int8") calibrated on DATASETS.TRAIN, then
    exported_ap50 in the recorded precision."""
    from accel_det.deploy.agreement import Bounds
    from accel_det.workflows.demo.deployed import export_detector, exported_ap50

    root = setup["root"]
    cfg = load_config(
        "demo/accel_vgg16_synthetic",
        small_opts(root, root / "model.pth", PREFIX) + calibration_opts(root),
    )
    bounds = Bounds(max_score_difference=0.15)  # a random width-1/16 detector (INT8_BOUNDS)
    path = export_detector(cfg, setup["model"], str(tmp_path), "int8", calibration_images=2,
                           bounds=bounds)  # fmt: skip
    assert path == str(tmp_path / "exported" / "detector.int8.onnx")
    record = json.loads((tmp_path / "exported" / "detector.int8.onnx.json").read_text())
    assert (
        record["precision"] == "int8" and record["reduced_precision"]["calibration"]["images"] == 2
    )
    ap50 = exported_ap50(cfg, path, str(tmp_path))
    saved = json.loads((tmp_path / "exported" / "eval_results.int8.json").read_text())
    assert saved[f"{PREFIX}_test"]["bbox"]["AP50"] == ap50
    assert abs(ap50 - pytorch_results[f"{PREFIX}_test"]["bbox"]["AP50"]) <= 6.0
