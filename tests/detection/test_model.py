"""Detectron2 parts of accel-det: backbones, box head, configs, weights conversion and checks."""

import glob
import importlib
import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("detectron2")

from detectron2.layers import ShapeSpec
from detectron2.modeling import (
    BACKBONE_REGISTRY,
    ROI_BOX_HEAD_REGISTRY,
    build_backbone,
    build_model,
)

import accel_det.detection
from accel_det.detection import backbone as backbone_module
from accel_det.detection.checkpoint import check_weights_fit
from accel_det.detection.config import CONFIGS_DIR, load_config, resolve_config_file
from accel_det.errors import AccelDetError
from accel_det.models.vgg import vgg16, vgg16_features
from accel_det.nn import CHANNEL, SPATIAL_CHANNEL
from accel_det.solver import (
    conv_names,
    conv_specs,
    filter_reconstruction,
)
from tests.helpers import REPO

WIDTH = 0.0625  # conv1_1: 4 filters, conv5_3: 32


def tiny_cfg(config="Base-FastRCNN-VGG16.yaml", *opts):
    cfg = load_config(
        config,
        [
            "MODEL.DEVICE",
            "cpu",
            "MODEL.VGG.WIDTH",
            WIDTH,
            "MODEL.ROI_BOX_HEAD.FC_DIM",
            32,
            "MODEL.WEIGHTS",
            "",
            *opts,
        ],
    )
    return cfg


def full_rank_plan(width=WIDTH, structure=CHANNEL):
    """A plan that factorizes conv1_2 … conv5_3 at full rank (an exact factorization exists)."""
    layers = {}
    for spec in conv_specs(vgg16_features(width), (32, 32)):
        entry = {
            "structure": "original",
            "rank": None,
            "spatial_rank": None,
            "in_channels": spec.in_channels,
            "out_channels": spec.out_channels,
        }
        if spec.name != "conv1_1":
            entry.update(
                structure=structure,
                rank=spec.out_channels,
                spatial_rank=spec.in_channels * 3 if structure == SPATIAL_CHANNEL else None,
            )
        layers[spec.name] = entry
    return {"format": "accel-det-plan/1", "method": "test", "layers": layers}


def write_plan(tmp_path, plan, name="plan.json"):
    path = tmp_path / name
    path.write_text(json.dumps(plan))
    return str(path)


def exact_factorized_state(plain_features, accel_features):
    """Weights for ``accel_features`` that make every factorized layer equal its plain conv."""
    state = {}
    names = conv_names(plain_features)
    for name, index in names.items():
        conv, layer = plain_features[index], accel_features[index]
        prefix = f"{index}."
        if layer is conv or isinstance(layer, torch.nn.Conv2d):
            state[prefix + "weight"], state[prefix + "bias"] = conv.weight, conv.bias
            continue
        d = conv.out_channels
        eye = torch.eye(d)[:, :, None, None]
        if layer.structure == CHANNEL:
            state[prefix + "reduce.weight"], state[prefix + "reduce.bias"] = conv.weight, conv.bias
        else:
            vertical, horizontal = filter_reconstruction(conv.weight.double(), layer.spatial_rank)
            state[prefix + "vertical.weight"] = vertical.float()
            state[prefix + "horizontal.weight"] = horizontal.float()
            state[prefix + "horizontal.bias"] = conv.bias
        state[prefix + "expand.weight"], state[prefix + "expand.bias"] = eye, torch.zeros(d)
    return state


def test_backbone_shapes_strides_and_freezing():
    cfg = tiny_cfg()
    backbone = build_backbone(cfg)
    shape = backbone.output_shape()
    assert list(shape) == ["conv5_3"]
    assert shape["conv5_3"].channels == 32 and shape["conv5_3"].stride == 16
    assert not any(
        isinstance(m, torch.nn.MaxPool2d) for m in list(backbone.features)[-1:]
    )  # no pool5
    out = backbone(torch.randn(2, 3, 64, 96))
    assert out["conv5_3"].shape == (2, 32, 4, 6)
    # FREEZE_AT 2 (Fast R-CNN): conv1_x and conv2_x frozen, conv3_1 and up train
    for name, index in backbone.conv_index.items():
        grads = {p.requires_grad for p in backbone.features[index].parameters()}
        assert grads == {not name.startswith(("conv1_", "conv2_"))}, name
    assert backbone.layer_of_key("features.28.weight") == "conv5_3"


@pytest.mark.parametrize("structure", [CHANNEL, SPATIAL_CHANNEL])
def test_accelerated_backbone_at_full_rank_equals_plain(tmp_path, structure):
    plain = build_backbone(tiny_cfg()).eval()
    plan_path = write_plan(tmp_path, full_rank_plan(structure=structure))
    accel = build_backbone(
        tiny_cfg(
            "Base-FastRCNN-VGG16.yaml",
            "MODEL.BACKBONE.NAME",
            "build_accel_vgg16_backbone",
            "MODEL.ACCEL.PLAN",
            plan_path,
        )
    ).eval()
    assert accel.output_shape() == plain.output_shape()
    accel.features.load_state_dict(exact_factorized_state(plain.features, accel.features))
    x = torch.randn(2, 3, 48, 80)
    with torch.no_grad():
        expected, got = plain(x)["conv5_3"], accel(x)["conv5_3"]
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())
    # a plan whose every layer is "original" is the plain network itself
    original = full_rank_plan()
    for entry in original["layers"].values():
        entry.update(structure="original", rank=None, spatial_rank=None)
    same = build_backbone(
        tiny_cfg(
            "Base-FastRCNN-VGG16.yaml",
            "MODEL.BACKBONE.NAME",
            "build_accel_vgg16_backbone",
            "MODEL.ACCEL.PLAN",
            write_plan(tmp_path, original, "original.json"),
        )
    ).eval()
    same.load_state_dict(plain.state_dict())
    with torch.no_grad():
        assert torch.equal(same(x)["conv5_3"], expected)


def test_batch_norms_fold_into_the_convs():
    torch.manual_seed(0)
    backbone = build_backbone(
        tiny_cfg(
            "Base-FastRCNN-VGG16.yaml", "MODEL.VGG.NORM", "BN", "MODEL.BACKBONE.FREEZE_AT", "0"
        )
    )
    assert {k.split(".")[1] for k in backbone.state_dict() if k.startswith("norms.")} >= {
        "conv1_1",
        "conv5_3",
    }
    backbone.train()
    for _ in range(3):  # running statistics away from their initial values
        backbone(torch.randn(2, 3, 48, 64) * 3 + 1)
    for norm in backbone.norms.values():
        torch.nn.init.uniform_(norm.weight, 0.5, 1.5)
        torch.nn.init.uniform_(norm.bias, -0.2, 0.2)
    backbone.eval()
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        expected = backbone(x)["conv5_3"]
        backbone.fold_norms()
        got = backbone(x)["conv5_3"]
    assert not any(k.startswith("norms.") for k in backbone.state_dict())
    assert set(backbone.state_dict()) == set(build_backbone(tiny_cfg()).state_dict())
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())


def test_box_head_is_fc6_fc7_with_dropout():
    cfg = tiny_cfg()
    head = ROI_BOX_HEAD_REGISTRY.get("VGG16BoxHead")(cfg, ShapeSpec(channels=32, height=7, width=7))
    assert (
        head.fc6.in_features == 32 * 7 * 7
        and head.fc6.out_features == 32
        and head.fc7.out_features == 32
    )
    assert head.output_shape.channels == 32
    assert [type(m).__name__ for m in head] == [
        "Flatten",
        "Linear",
        "ReLU",
        "Dropout",
        "Linear",
        "ReLU",
        "Dropout",
    ]
    assert head(torch.randn(5, 32, 7, 7)).shape == (5, 32)


def all_configs():
    return sorted(
        os.path.relpath(p, CONFIGS_DIR)
        for p in glob.glob(str(CONFIGS_DIR / "**" / "*.yaml"), recursive=True)
    )


def vgg16_configs():
    """The VGG-16 detectors' configs (the ResNet-FPN ones: test_accel_backbone.py)."""
    return [c for c in all_configs() if "vgg16" in c.lower()]


@pytest.mark.parametrize("config", vgg16_configs())
def test_configs_load_and_build(tmp_path, config):
    opts = []
    if "accel" in config:
        opts = ["MODEL.ACCEL.PLAN", write_plan(tmp_path, full_rank_plan())]
    cfg = tiny_cfg(config, *opts)
    model = build_model(cfg).eval()
    assert model.backbone.output_shape()["conv5_3"].stride == 16
    assert type(model.roi_heads.box_head).__name__ == "VGG16BoxHead"
    assert cfg.INPUT.FORMAT == "RGB" and list(cfg.MODEL.PIXEL_STD) == [58.395, 57.12, 57.375]
    if not cfg.MODEL.LOAD_PROPOSALS:  # Faster R-CNN: the RPN runs on conv5_3
        with torch.no_grad():
            (out,) = model(
                [
                    {
                        "image": torch.randint(0, 255, (3, 64, 80), dtype=torch.uint8),
                        "height": 64,
                        "width": 80,
                    }
                ]
            )
        assert out["instances"].image_size == (64, 80)


def test_fast_rcnn_recipe_in_base_config():
    cfg = load_config("vgg16_voc.yaml")
    assert (
        cfg.MODEL.BACKBONE.FREEZE_AT == 2
        and cfg.MODEL.PROPOSAL_GENERATOR.NAME == "PrecomputedProposals"
    )
    assert (
        cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE == "ROIPool"
        and cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION == 7
    )
    assert cfg.MODEL.ROI_BOX_HEAD.FC_DIM == 4096 and cfg.MODEL.ROI_BOX_HEAD.DROPOUT == 0.5
    assert (
        cfg.SOLVER.MAX_ITER == 40000
        and cfg.SOLVER.STEPS == (30000,)
        and cfg.SOLVER.BASE_LR == 0.001
    )
    assert cfg.SOLVER.IMS_PER_BATCH * cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE == 128
    assert (
        cfg.MODEL.ROI_HEADS.POSITIVE_FRACTION == 0.25 and cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST == 0.3
    )
    assert cfg.INPUT.MIN_SIZE_TRAIN == (600,) and cfg.INPUT.MAX_SIZE_TEST == 1000
    assert cfg.DATASETS.TRAIN == ("accel_voc_2007_trainval",)


def test_config_names_resolve_in_configs_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config_file("accel_vgg16_voc.yaml") == str(CONFIGS_DIR / "accel_vgg16_voc.yaml")
    assert resolve_config_file("demo/vgg16_synthetic") == str(
        CONFIGS_DIR / "demo" / "vgg16_synthetic.yaml"
    )
    assert resolve_config_file("accel_vgg16_synthetic.yaml").endswith(
        "demo/accel_vgg16_synthetic.yaml"
    )
    with pytest.raises(AccelDetError, match="not found"):
        resolve_config_file("no_such_config.yaml")
    from detectron2.engine import default_argument_parser

    args = default_argument_parser().parse_args(["--config", "accel_vgg16_voc.yaml", "--eval-only"])
    assert args.config_file == "accel_vgg16_voc.yaml"


def test_registration_is_idempotent():
    accel_det.detection.register_all()
    importlib.reload(backbone_module)
    backbone_module.register()
    assert (
        "build_accel_vgg16_backbone" in BACKBONE_REGISTRY
        and "VGG16BoxHead" in ROI_BOX_HEAD_REGISTRY
    )
    code = (
        "import importlib, accel_det.detection as d; importlib.reload(d); d.register_all(); "
        "import accel_det.detection.box_head as b; importlib.reload(b); b.register(); print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]


def test_missing_or_unfitting_plan_is_one_clear_error(tmp_path):
    accel = ("Base-FastRCNN-VGG16.yaml", "MODEL.BACKBONE.NAME", "build_accel_vgg16_backbone")
    with pytest.raises(AccelDetError, match="plan .*not found"):
        build_backbone(tiny_cfg(*accel, "MODEL.ACCEL.PLAN", str(tmp_path / "missing.json")))
    with pytest.raises(AccelDetError, match="MODEL.ACCEL.PLAN is empty"):
        build_backbone(tiny_cfg(*accel))
    plan = write_plan(tmp_path, full_rank_plan(width=0.125))
    with pytest.raises(AccelDetError, match=r"conv1_1: out_channels=8 but the network has 4"):
        build_backbone(tiny_cfg(*accel, "MODEL.ACCEL.PLAN", plan))


def test_weights_that_do_not_fit_name_the_layer(tmp_path):
    plain = build_model(tiny_cfg())
    path = str(tmp_path / "plain.pth")
    torch.save({"model": plain.state_dict()}, path)
    check_weights_fit(plain, path)  # fits
    accel = build_model(
        tiny_cfg(
            "Base-FastRCNN-VGG16.yaml",
            "MODEL.BACKBONE.NAME",
            "build_accel_vgg16_backbone",
            "MODEL.ACCEL.PLAN",
            write_plan(tmp_path, full_rank_plan()),
        )
    )
    with pytest.raises(
        AccelDetError,
        match=r"backbone layer conv1_2 .*channel.*expects backbone\.features\.2\.reduce\.weight "
        r"\[4, 4, 3, 3\].*features\.2\.weight \[4, 4, 3, 3\]",
    ):
        check_weights_fit(accel, path)
    torch.save(vgg16(width=WIDTH).state_dict(), tmp_path / "tv.pth")
    with pytest.raises(AccelDetError, match="torchvision VGG-16 state dict.*convert_vgg16"):
        check_weights_fit(plain, str(tmp_path / "tv.pth"))
    with pytest.raises(AccelDetError, match="MODEL.WEIGHTS file not found"):
        check_weights_fit(plain, str(tmp_path / "nothing.pth"))
    # Detectron2 reads ~/w.pth as a relative path: the message says so, not "$HOME/w.pth"
    with pytest.raises(
        AccelDetError,
        match=r"not found: ~/nothing\.pth \(relative to the working folder .*does not expand ~\)",
    ):
        check_weights_fit(plain, "~/nothing.pth")


def test_weights_that_the_box_head_would_not_fully_consume_are_refused(tmp_path):
    """fc6/fc7 as the plan makes them, none missing, none left over: a factorized head with a
    plan that has no (or a misspelled) fc entry, a plain head with factorized weights, an unknown
    fc entry. A file without any box head only warns when training (a backbone-only checkpoint),
    and is refused, as a missing box predictor is, for a model to evaluate or export."""
    fc = {"out_features": 32, "structure": "channel", "rank": 4}
    plain = build_model(tiny_cfg())
    head = plain.roi_heads.box_head
    layers = {n: {**fc, "in_features": getattr(head, n).in_features} for n in ("fc6", "fc7")}

    def with_plan(plan):
        path = write_plan(tmp_path, plan)
        return build_model(tiny_cfg("Base-FastRCNN-VGG16.yaml", "MODEL.ACCEL.PLAN", path))

    factorized = with_plan({"layers": layers})
    path = str(tmp_path / "factorized.pth")
    torch.save({"model": factorized.state_dict()}, path)
    check_weights_fit(factorized, path, complete=True)  # fits
    with pytest.raises(
        AccelDetError,
        match=r"box head at fc6 \(no plan: the model's fc layers "
        r"are plain\): the model expects roi_heads.box_head.fc6.weight",
    ):
        check_weights_fit(plain, path)  # fmt: skip
    misspelled = {"layers": {"fc6": layers["fc6"], "fc_7": layers["fc7"]}}
    with pytest.raises(AccelDetError, match="has fc entries the box head does not have: fc_7"):
        with_plan(misspelled)
    with pytest.raises(AccelDetError, match=r"box head at fc7 \(the plan has no fc7 entry"):
        check_weights_fit(with_plan({"layers": {"fc6": layers["fc6"]}}), path)
    state = {k: v for k, v in plain.state_dict().items() if ".box_head." not in k}
    torch.save({"model": state}, tmp_path / "no_head.pth")
    check_weights_fit(plain, str(tmp_path / "no_head.pth"))  # training: warns
    with pytest.raises(AccelDetError, match=r"box head at fc6 .*the file has nothing"):
        check_weights_fit(plain, str(tmp_path / "no_head.pth"), complete=True)
    state = {k: v for k, v in plain.state_dict().items() if "box_predictor" not in k}
    torch.save({"model": state}, tmp_path / "no_predictor.pth")
    check_weights_fit(plain, str(tmp_path / "no_predictor.pth"))  # training: a new data set
    with pytest.raises(AccelDetError, match=r"do not hold the whole model: roi_heads.box_pred"):
        check_weights_fit(plain, str(tmp_path / "no_predictor.pth"), complete=True)


def run_tool(*args):
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_convert_vgg16_plain_and_accelerated(tmp_path):
    torch.manual_seed(0)
    source = vgg16(width=WIDTH)
    torch.save(source.state_dict(), tmp_path / "vgg.pth")
    out = tmp_path / "d2.pth"
    result = run_tool(
        "tools/convert_vgg16.py", "--source", str(tmp_path / "vgg.pth"), "--output", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert "INPUT.FORMAT RGB" in result.stdout and "[123.675, 116.28, 103.53]" in result.stdout
    meta = json.loads((tmp_path / "d2.pth.json").read_text())
    assert meta["input_format"] == "RGB" and meta["pixel_std"] == [58.395, 57.12, 57.375]
    fc_dim = source.classifier[0].out_features
    model = build_model(tiny_cfg("Base-FastRCNN-VGG16.yaml", "MODEL.ROI_BOX_HEAD.FC_DIM", fc_dim))
    check_weights_fit(model, str(out))
    accel_det.detection.load_detector_weights(model, str(out))
    assert torch.equal(model.backbone.features[28].weight, source.features[28].weight)
    assert torch.equal(model.roi_heads.box_head.fc6.weight, source.classifier[0].weight)
    assert torch.equal(model.roi_heads.box_head.fc7.bias, source.classifier[3].bias)

    # the accelerated VGG-16 of the backbone tool (state dict + plan) converts with --plan ...
    plan = full_rank_plan()
    plan_path = write_plan(tmp_path, plan)
    accel = accel_det.models.vgg.vgg16(width=WIDTH, plan=plan)
    torch.save(accel.state_dict(), tmp_path / "accel.pth")
    result = run_tool(
        "tools/convert_vgg16.py",
        "--source",
        str(tmp_path / "accel.pth"),
        "--plan",
        plan_path,
        "--output",
        str(tmp_path / "accel_d2.pth"),
    )
    assert result.returncode == 0, result.stderr
    assert "MODEL.ACCEL.PLAN" in result.stdout
    # ... and a plain state dict with that plan is refused, naming the layer and the shapes
    result = run_tool(
        "tools/convert_vgg16.py",
        "--source",
        str(tmp_path / "vgg.pth"),
        "--plan",
        plan_path,
        "--output",
        str(tmp_path / "bad.pth"),
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1
    assert "conv1_2" in result.stderr and "features.2.reduce.weight [4, 4, 3, 3]" in result.stderr
    assert not (tmp_path / "bad.pth").exists()
