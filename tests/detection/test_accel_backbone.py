"""build_accel_backbone: a Detectron2 ResNet-FPN (a narrow R50) accelerated by a plan, its weights
converted from the plain model and the solver, its freezing, a plan made for another backbone, and
a short training and evaluation through tools/train_net.py."""

import json
import os
import pickle
import subprocess
import sys

import pytest
import torch

pytest.importorskip("detectron2")

from detectron2 import model_zoo
from detectron2.modeling import build_model

import accel_det.detection  # noqa: F401
from accel_det.data.synthetic.voc import make_synthetic_voc
from accel_det.detection import accelerated_weights
from accel_det.detection.checkpoint import check_weights_fit
from accel_det.detection.config import load_config
from accel_det.errors import AccelDetError
from accel_det.nn import CHANNEL, FactorizedConv2d
from accel_det.solver import compress, find_targets, plan_from_structures
from tests.detection.test_model import all_configs, vgg16_configs
from tests.helpers import REPO, full_rank_planner

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = "faster_rcnn_accel_R_50_FPN.yaml"
# a narrow R50-FPN (53 + 8 convs of 4-64 channels) on 64 px images: a forward pass takes ms
TINY_R50_FPN = [
    "MODEL.DEVICE", "cpu",
    "MODEL.WEIGHTS", "",
    "MODEL.RESNETS.STEM_OUT_CHANNELS", "8",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "16",
    "MODEL.RESNETS.WIDTH_PER_GROUP", "4",
    "MODEL.FPN.OUT_CHANNELS", "16",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "32",
    "MODEL.ROI_HEADS.NUM_CLASSES", "5",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "32",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "200",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "100",
    "INPUT.MIN_SIZE_TRAIN", "(64,)",
    "INPUT.MAX_SIZE_TRAIN", "86",
    "INPUT.MIN_SIZE_TEST", "64",
    "INPUT.MAX_SIZE_TEST", "86",
]  # fmt: skip


# the plain detector the accelerated config wraps
PLAIN = [
    "MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone",
    "MODEL.RPN.HEAD_NAME", "StandardRPNHead",
    "MODEL.ROI_BOX_HEAD.NAME", "FastRCNNConvFCHead",
]  # fmt: skip


def tiny_cfg(*opts):
    return load_config(CONFIG, [*TINY_R50_FPN, *opts])


def plain_model(seed=0):
    """The plain narrow R50-FPN detector with random weights and random frozen batch-norm
    statistics and FPN biases (folding the default γ = 1, β = 0, μ = 0, σ² = 1 would hide
    mistakes)."""
    torch.manual_seed(seed)
    model = build_model(tiny_cfg(*PLAIN)).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.backbone.named_modules():
            if type(module).__name__ == "FrozenBatchNorm2d":
                size = module.weight.shape
                module.weight.copy_(0.5 + torch.rand(size, generator=g))
                module.bias.copy_(0.4 * torch.rand(size, generator=g) - 0.2)
                module.running_mean.copy_(0.4 * torch.rand(size, generator=g) - 0.2)
                module.running_var.copy_(0.5 + 1.5 * torch.rand(size, generator=g))
            elif name.startswith("fpn_") and module.bias is not None:
                module.bias.copy_(0.2 * torch.rand(module.bias.shape, generator=g) - 0.1)
    return model


def images(count=2, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(2, 3, size, size, generator=g) * 100 for _ in range(count)]


def write_plan(tmp_path, plan, name="plan.json"):
    path = tmp_path / name
    path.write_text(json.dumps(plan))
    return str(path)


def original_plan(backbone):
    """Every conv kept as it is: only the batch norms are folded."""
    return plan_from_structures(find_targets(backbone, (64, 64)).specs, {}, method="test")


def features(model, x):
    with torch.no_grad():
        return model.backbone(x)


def assert_close(expected, actual, tolerance=1e-4):
    assert expected.keys() == actual.keys()
    for key in expected:
        error = float((actual[key] - expected[key]).norm() / expected[key].norm())
        assert error < tolerance, (key, error)


def test_folded_backbone_reproduces_the_plain_detector_and_keeps_its_names(tmp_path):
    plain = plain_model()
    plan = original_plan(plain.backbone)
    cfg = tiny_cfg("MODEL.ACCEL.PLAN", write_plan(tmp_path, plan))
    state = accelerated_weights(cfg, plain.state_dict())
    model = build_model(cfg).eval()
    model.load_state_dict(state)
    assert type(model.backbone) is type(plain.backbone)
    assert model.backbone.output_shape() == plain.backbone.output_shape()
    # Detectron2's names; the kept convs carry the folded bias and no norm
    keys = set(model.state_dict())
    assert "backbone.bottom_up.res3.0.conv2.weight" in keys
    assert "backbone.bottom_up.res3.0.conv2.bias" in keys
    assert not any(".norm." in k for k in keys)
    assert set(plain.state_dict()) - keys == {k for k in plain.state_dict() if ".norm." in k}
    x = images(1)[0]
    assert_close(features(plain, x), features(model, x))
    # the heads are the plain detector's
    for key, value in plain.state_dict().items():
        if not key.startswith("backbone."):
            assert torch.equal(state[key], value)


def test_full_ranks_from_the_solver_reproduce_the_plain_detector(tmp_path):
    plain = plain_model()
    result = compress(plain.backbone, images(), method="linear", planner=full_rank_planner,
                      progress=False, heldout_fraction=0, speedup=1.01)  # fmt: skip
    cfg = tiny_cfg("MODEL.ACCEL.PLAN", write_plan(tmp_path, result.plan))
    state = accelerated_weights(cfg, plain.state_dict(), result.model.state_dict())
    model = build_model(cfg).eval()
    model.load_state_dict(state)
    backbone = model.backbone
    factorized = [n for n, m in backbone.named_modules() if isinstance(m, FactorizedConv2d)]
    assert len(factorized) == 53 + 8  # every conv of the R50 and the FPN
    assert "backbone.bottom_up.res3.0.conv2.reduce.weight" not in state  # 3×3: 3d structure
    assert "backbone.bottom_up.res3.0.conv2.vertical.weight" in state
    assert "backbone.bottom_up.res3.0.conv1.reduce.weight" in state  # 1×1: channel
    assert "backbone.fpn_lateral2.expand.weight" in state
    # the FPN's forward runs its convs from lists: the factorized ones must be there
    assert all(isinstance(m, FactorizedConv2d) for m in backbone.lateral_convs)
    x = images(1, seed=1)[0]
    assert_close(features(plain, x), features(model, x))
    with torch.no_grad():  # the whole detector: the same proposals and detections
        batch = [{"image": (x[0] * 2.55).to(torch.uint8), "height": 64, "width": 64}]
        (expected,), (actual,) = plain(batch), model(batch)
    expected, actual = expected["instances"], actual["instances"]
    assert len(expected) == len(actual)
    assert torch.allclose(expected.pred_boxes.tensor, actual.pred_boxes.tensor, atol=1e-3)


@pytest.mark.parametrize(
    "config",
    # the VGG ones: test_model; the demo's R18-FPN ones (p3-p6, ResNet-18): test_fpn_demo
    [c for c in all_configs() if c not in vgg16_configs() and not c.startswith("demo/")],
)
def test_resnet_fpn_configs_load_build_and_detect(tmp_path, config):
    plan = write_plan(tmp_path, original_plan(plain_model().backbone))
    cfg = load_config(config, [*TINY_R50_FPN, "MODEL.ACCEL.PLAN", plan])
    model = build_model(cfg).eval()
    assert sorted(model.backbone.output_shape()) == ["p2", "p3", "p4", "p5", "p6"]
    image = torch.randint(0, 255, (3, 64, 80), dtype=torch.uint8)
    with torch.no_grad():
        (out,) = model([{"image": image, "height": 64, "width": 80}])
    assert out["instances"].image_size == (64, 80)


def test_retinanet_p6_p7_are_targets_and_their_backbone_accelerates(tmp_path):
    from detectron2.layers import ShapeSpec
    from detectron2.modeling import BACKBONE_REGISTRY

    levels = "['res3', 'res4', 'res5']"
    opts = ["MODEL.RESNETS.OUT_FEATURES", levels, "MODEL.FPN.IN_FEATURES", levels]
    cfg = tiny_cfg(*opts)
    torch.manual_seed(0)
    plain = BACKBONE_REGISTRY.get("build_retinanet_resnet_fpn_backbone")(cfg, ShapeSpec(channels=3))
    specs = {s.name: s for s in find_targets(plain, (64, 64)).specs}
    assert specs["top_block.p6"].after == "output" and specs["top_block.p7"].after == "output"
    plan = plan_from_structures(specs.values(), {"top_block.p6": dict(structure=CHANNEL, rank=4)})
    cfg = tiny_cfg(*opts, "MODEL.ACCEL.PLAN", write_plan(tmp_path, plan),
                   "MODEL.ACCEL.BACKBONE_NAME", "build_retinanet_resnet_fpn_backbone")  # fmt: skip
    accelerated = BACKBONE_REGISTRY.get("build_accel_backbone")(cfg, ShapeSpec(channels=3))
    assert isinstance(accelerated.top_block.p6, FactorizedConv2d)
    assert sorted(accelerated.output_shape()) == ["p3", "p4", "p5", "p6", "p7"]


def test_frozen_stages_stay_frozen_factorized_or_not(tmp_path):
    plain = plain_model()
    specs = find_targets(plain.backbone, (64, 64)).specs
    layers = {
        "bottom_up.res2.0.conv2": dict(structure=CHANNEL, rank=2),  # FREEZE_AT 2: frozen
        "bottom_up.res3.0.conv2": dict(structure=CHANNEL, rank=4),  # trained
    }
    cfg = tiny_cfg("MODEL.ACCEL.PLAN", write_plan(tmp_path, plan_from_structures(specs, layers)))
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 2
    model = build_model(cfg)
    trainable = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("bottom_up.stem.", "bottom_up.res2.")) for n in trainable)
    for name in ("res3.0.conv2.reduce.weight", "res3.0.conv1.weight", "res3.0.conv1.bias"):
        assert f"bottom_up.{name}" in trainable
    assert "bottom_up.res2.0.conv2.reduce.weight" in dict(model.backbone.named_parameters())
    assert "fpn_output2.weight" in trainable


def test_a_plan_made_for_another_backbone_is_one_line_naming_its_first_missing_layer(tmp_path):
    fpn_plan = original_plan(plain_model().backbone)
    cfg = tiny_cfg(
        "MODEL.ACCEL.PLAN",
        write_plan(tmp_path, fpn_plan),
        "MODEL.ACCEL.BACKBONE_NAME",
        "build_resnet_backbone",  # C4: no bottom_up, no FPN
        "MODEL.RESNETS.OUT_FEATURES",
        "['res4']",
    )
    with pytest.raises(AccelDetError) as error:
        build_model(cfg)
    message = str(error.value)
    assert "\n" not in message
    assert "layer bottom_up.stem.conv1," in message and "build_resnet_backbone" in message
    # a VGG-16 plan on the ResNet-FPN: its first layer named
    vgg = {"layers": {"conv1_1": {"structure": "original"}, "conv1_2": {"structure": "original"}}}
    cfg = tiny_cfg("MODEL.ACCEL.PLAN", write_plan(tmp_path, vgg, "vgg.json"))
    with pytest.raises(AccelDetError, match=r"names layer conv1_1, which build_resnet_fpn"):
        build_model(cfg)


def test_missing_names_and_weights_are_refused(tmp_path):
    plain = plain_model()
    path = write_plan(tmp_path, original_plan(plain.backbone))
    with pytest.raises(AccelDetError, match="MODEL.ACCEL.BACKBONE_NAME is empty"):
        build_model(tiny_cfg("MODEL.ACCEL.PLAN", path, "MODEL.ACCEL.BACKBONE_NAME", ""))
    with pytest.raises(AccelDetError, match="not a registered backbone builder"):
        build_model(tiny_cfg("MODEL.ACCEL.PLAN", path, "MODEL.ACCEL.BACKBONE_NAME", "resnet"))
    with pytest.raises(AccelDetError, match="MODEL.ACCEL.PLAN is empty: build_accel_backbone"):
        build_model(tiny_cfg("MODEL.ACCEL.PLAN", ""))
    cfg = tiny_cfg("MODEL.ACCEL.PLAN", path)
    state = plain.state_dict()
    del state["backbone.bottom_up.res4.1.conv3.norm.running_var"]
    with pytest.raises(AccelDetError, match=r"res4\.1\.conv3\.norm\.running_var \[64\] is missing"):
        accelerated_weights(cfg, state)
    specs = find_targets(plain.backbone, (64, 64)).specs
    factorized = plan_from_structures(specs, {"fpn_output3": dict(structure=CHANNEL, rank=4)})
    with pytest.raises(AccelDetError, match="factorizes fpn_output3"):
        accelerated_weights(cfg, plain.state_dict(), plan=factorized)
    # a plain checkpoint given to the accelerated detector: refused before Detectron2 loads it
    torch.save({"model": plain.state_dict()}, tmp_path / "plain.pth")
    with pytest.raises(AccelDetError, match=r"hold the batch norm backbone\.bottom_up\.stem"):
        check_weights_fit(build_model(cfg), str(tmp_path / "plain.pth"))
    torch.save({"model": accelerated_weights(cfg, plain.state_dict())}, tmp_path / "accel.pth")
    check_weights_fit(build_model(cfg), str(tmp_path / "accel.pth"), complete=True)


@pytest.fixture(scope="module")
def tiny_voc(tmp_path_factory):
    """$DETECTRON2_DATASETS with synthetic_voc/ (4 trainval, 2 test images of 64 px)."""
    root = tmp_path_factory.mktemp("datasets")
    make_synthetic_voc(
        str(root / "synthetic_voc"), num_trainval=4, num_test=2, image_size=64, progress=False
    )
    return root


def test_train_net_trains_and_evaluates_the_accelerated_r50_fpn(tiny_voc, tmp_path):
    plain = plain_model()
    options = dict(heldout_fraction=0, schedule=((0.01, 2), (1.0, 2)), round_ranks_to=1)
    result = compress(plain.backbone, images(), speedup=2.0, method="asym", progress=False,
                      **options)  # fmt: skip
    plan = write_plan(tmp_path, result.plan)
    cfg = tiny_cfg("MODEL.ACCEL.PLAN", plan)
    weights = tmp_path / "accel.pth"
    torch.save({"model": accelerated_weights(cfg, plain.state_dict(), result.model.state_dict())},
               weights)  # fmt: skip
    out = tmp_path / "run"
    env = dict(os.environ, DETECTRON2_DATASETS=str(tiny_voc), OMP_NUM_THREADS="1")
    run = subprocess.run(
        [sys.executable, "tools/train_net.py", "--config", CONFIG, *TINY_R50_FPN,
         "MODEL.ACCEL.PLAN", plan, "MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(out),
         "DATASETS.TRAIN", "('synthetic_voc_trainval',)",
         "DATASETS.TEST", "('synthetic_voc_test',)",
         "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.001",
         "SOLVER.MAX_ITER", "1", "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", "0"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    converted = torch.load(weights, weights_only=True)["model"]
    saved = torch.load(out / "model_final.pth", weights_only=True)["model"]
    assert saved.keys() == converted.keys()
    assert any(k.endswith((".reduce.weight", ".vertical.weight")) for k in saved)
    changed = {k for k in saved if not torch.equal(saved[k], converted[k])}
    assert not any(
        k.startswith(("backbone.bottom_up.stem.", "backbone.bottom_up.res2.")) for k in changed
    )  # frozen
    assert any(k.startswith("backbone.bottom_up.res4.") for k in changed)  # trained
    results = json.loads((out / "eval_results.json").read_text())
    assert "AP50" in results["synthetic_voc_test"]["bbox"]


def test_compress_detector_on_a_resnet_fpn_then_eval_only(tiny_voc, tmp_path):
    """tools/compress_detector.py on a plain R50-FPN Faster R-CNN given as Detectron2's model zoo
    gives one (its config file, .pkl weights; here narrow and random): every conv of the ResNet and
    the FPN, the RPN head's conv and the box head's fcs under one budget (the stem kept, as the
    paper keeps conv1_1), outputs that tools/train_net.py --eval-only takes with the overrides the
    plan records."""
    # Detectron2's model-zoo config and weights in the zoo's .pkl format (numpy arrays)
    zoo = model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml")
    weights = tmp_path / "model_final.pkl"
    state = {k: v.numpy() for k, v in plain_model().state_dict().items()}
    with open(weights, "wb") as f:
        pickle.dump({"model": state, "__author__": "Detectron2 Model Zoo"}, f)
    env = dict(os.environ, DETECTRON2_DATASETS=str(tiny_voc), OMP_NUM_THREADS="1")
    data = ["DATASETS.TRAIN", "('synthetic_voc_trainval',)",
            "DATASETS.TEST", "('synthetic_voc_test',)", "DATALOADER.NUM_WORKERS", "0"]  # fmt: skip
    out = tmp_path / "2x"
    run = subprocess.run(
        [sys.executable, "tools/compress_detector.py", "--config", zoo,
         "--output", str(out), "--speedup", "2", "--num-images", "4", "--samples-per-image", "16",
         "--iterations", "2", "--round-ranks", "1", "--no-progress", *TINY_R50_FPN, *data,
         "MODEL.WEIGHTS", str(weights)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    plan = json.loads((out / "plan.json").read_text())
    assert 2.0 <= plan["theoretical_speedup_detector"] <= 2.1
    assert plan["backbone_name"] == "build_resnet_fpn_backbone"
    layers = plan["layers"]
    heads = ["proposal_generator.rpn_head.conv", "roi_heads.box_head.fc1", "roi_heads.box_head.fc2"]
    assert list(layers)[53 + 8 :] == heads
    assert layers["bottom_up.stem.conv1"]["structure"] == "original"
    rpn = layers[heads[0]]
    assert rpn["part"] == "proposal_generator.rpn_head" and rpn["module"] == "conv"
    # the RPN conv runs on P2-P6 of the 64x96 input: 16*24 + 8*12 + 4*6 + 2*3 + 1*2 positions
    assert rpn["original_macs"] == 16 * 16 * 9 * (384 + 96 + 24 + 6 + 2)
    assert layers[heads[1]]["rois"] == 100  # MODEL.RPN.POST_NMS_TOPK_TEST
    assert all(layers[h]["structure"] != "original" and layers[h]["error"] < 1 for h in heads)
    assert layers["bottom_up.res3.0.conv2"]["relu"] and not layers["fpn_output2"]["relu"]
    assert "bottom_up.res5.2.conv3" in run.stdout and (out / "plan.png").is_file()  # the table
    state = torch.load(out / "model_final.pth", weights_only=True)["model"]
    for name, entry in layers.items():  # the checkpoint holds the structure the plan says
        key = name if entry.get("part") else f"backbone.{entry['module']}"
        last = {"original": "", "channel": ".expand", "spatial": ".horizontal"}
        assert f"{key}{last.get(entry['structure'], '.expand')}.weight" in state, name
    assert "proposal_generator.rpn_head.conv.expand.weight" in state
    assert "roi_heads.box_head.fc1.reduce.weight" in state
    overrides = plan["config_overrides"]
    assert "build_accel_rpn_head" in overrides and "build_accel_box_head" in overrides
    assert overrides[:4] == ["MODEL.BACKBONE.NAME", "build_accel_backbone",
                             "MODEL.ACCEL.BACKBONE_NAME", "build_resnet_fpn_backbone"]  # fmt: skip
    run = subprocess.run(
        [sys.executable, "tools/train_net.py", "--config", zoo,
         "--eval-only", *TINY_R50_FPN, *data, *overrides, "OUTPUT_DIR", str(tmp_path / "eval")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert "AP50" in results["synthetic_voc_test"]["bbox"]
