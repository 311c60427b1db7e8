"""A Faster R-CNN's RPN head and box head in the plan: full ranks reproduce the detector, the
accelerated heads build from the plan with Detectron2's names, plans that do not fit are one line,
and compress_detector on the whole ResNet-FPN detector resumes bit-identical."""

import dataclasses
import os
import subprocess
import sys

import pytest
import torch
from detectron2.modeling import build_model

from accel_det.detection.accel_backbone import accelerate_backbone
from accel_det.detection.accel_heads import accelerate_head, check_plan_parts
from accel_det.detection.datasets import register_synthetic_voc
from accel_det.errors import AccelDetError
from accel_det.nn import FactorizedConv2d, FactorizedLinear
from accel_det.nn.factorized import CHANNEL, SPATIAL_CHANNEL
from accel_det.plan import Plan
from accel_det.solver import SolverOptions
from accel_det.workflows.detector_compression import DetectorCompressOptions, compress_detector
from accel_det.workflows.detector_compression.heads import (
    find_heads,
    mark_head_parts,
    sample_heads,
    solve_heads,
)
from accel_det.workflows.detector_compression.images import DetectorImages
from tests.detection.test_accel_backbone import (  # noqa: F401  (fixture)
    PLAIN,
    TINY_R50_FPN,
    plain_model,
    tiny_cfg,
    tiny_voc,
    write_plan,
)
from tests.helpers import REPO

pytestmark = pytest.mark.usefixtures("one_thread")

RPN = "proposal_generator.rpn_head.conv"
FC1, FC2 = "roi_heads.box_head.fc1", "roi_heads.box_head.fc2"
HEADS = [
    "MODEL.RPN.HEAD_NAME", "build_accel_rpn_head",
    "MODEL.ROI_BOX_HEAD.NAME", "build_accel_box_head",
]  # fmt: skip


def detector_images(model, count=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = [torch.randint(0, 256, (3, 64, 96), generator=generator, dtype=torch.uint8)]
    images += [torch.randint(0, 256, (3, 64, 80), generator=generator, dtype=torch.uint8)]
    images = (images * count)[:count]
    return DetectorImages(model, images=images, indices=list(range(count)))


def full_rank_head_plan(heads):
    """The heads at full rank: the RPN conv in the 3d structure, the fcs in the channel one."""
    s = heads.rpn
    layers = {
        RPN: {**s.to_dict(), "structure": SPATIAL_CHANNEL, "rank": s.out_channels,
              "spatial_rank": min(3 * s.in_channels, 3 * s.out_channels), "pca_energy": 1.0},
    }  # fmt: skip
    for spec in heads.linears:
        layers[spec.name] = {**spec.to_dict(), "structure": CHANNEL, "rank": spec.out_features,
                             "pca_energy": 1.0}  # fmt: skip
    return {"format": "accel-det-plan/2", "layers": layers}


def detections(model, image):
    with torch.no_grad():
        (result,) = model([{"image": image, "height": image.shape[1], "width": image.shape[2]}])
    return result["instances"]


def test_full_ranks_reproduce_the_detector_and_build_from_the_plan(tmp_path):
    plain = plain_model()
    model = plain_model()
    heads = find_heads(model, (64, 96), rois=100)
    assert heads.rpn.name == RPN and list(heads.fcs) == ["fc1", "fc2"]
    images = detector_images(model)
    options = DetectorCompressOptions(
        "unused", "unused", fc_method="linear", fc_samples_per_image=40,
        solver=SolverOptions(2.0, method="linear", heldout_fraction=0, samples_per_image=64),
    )  # fmt: skip
    samples = sample_heads(model, heads, images, options, torch.device("cpu"), False)
    assert samples.rpn_truth.shape == (3 * 64, 16) and samples.fc_truth[0].shape == (3 * 40, 32)
    plan = full_rank_head_plan(heads)
    mark_head_parts(plan, heads)
    solve_heads(model, heads, samples, plan, images, options, False)
    assert isinstance(model.proposal_generator.rpn_head.conv, FactorizedConv2d)
    assert isinstance(model.roi_heads.box_head.fc2, FactorizedLinear)
    image = detector_images(model, 1, seed=5).images[0]
    expected, actual = detections(plain, image), detections(model, image)
    assert len(expected) == len(actual) > 0
    assert torch.allclose(expected.pred_boxes.tensor, actual.pred_boxes.tensor, atol=1e-3)
    assert torch.allclose(expected.scores, actual.scores, atol=1e-4)
    # the config's accelerated heads build this structure, under Detectron2's names
    cfg = tiny_cfg("MODEL.ACCEL.PLAN", write_plan(tmp_path, plan), *HEADS)
    built = build_model(cfg).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    mine = {k: v for k, v in built.state_dict().items() if not k.startswith("backbone.")}
    assert mine.keys() == state.keys()
    assert "proposal_generator.rpn_head.conv.vertical.weight" in state
    assert "roi_heads.box_head.fc1.reduce.weight" in state
    built.load_state_dict({**built.state_dict(), **state})
    built.backbone = accelerate_backbone(plain.backbone, plan)  # folded, as built has it
    assert torch.allclose(detections(built, image).scores, actual.scores, atol=1e-3)


def test_plans_that_do_not_fit_the_heads_are_one_line(tmp_path):
    model = plain_model()
    plan = full_rank_head_plan(find_heads(model, (64, 96), rois=100))
    mark_head_parts(plan, find_heads(model, (64, 96), rois=100))
    wrong = {**plan["layers"][FC1], "module": "fc9"}
    with pytest.raises(AccelDetError, match=r"names layer roi_heads\.box_head\.fc9, which its"):
        accelerate_head(model.roi_heads.box_head, {"layers": {"x": wrong}}, "roi_heads.box_head")
    too_wide = {**plan["layers"][RPN], "rank": 17}
    with pytest.raises(AccelDetError, match=r"rpn_head\.conv.*larger than"):
        accelerate_head(model.proposal_generator.rpn_head, {"layers": {"x": too_wide}},
                        "proposal_generator.rpn_head")  # fmt: skip
    for key in ("MODEL.ACCEL.RPN_HEAD_NAME", "MODEL.ACCEL.BOX_HEAD_NAME"):  # a wrong config key
        cfg = tiny_cfg("MODEL.ACCEL.PLAN", write_plan(tmp_path, plan), *HEADS, key, "Nope")
        with pytest.raises(AccelDetError, match="'Nope' is not a head to accelerate"):
            build_model(cfg)
    cfg = tiny_cfg("MODEL.ACCEL.PLAN", write_plan(tmp_path, plan), *PLAIN)
    with pytest.raises(AccelDetError, match="only build_accel_rpn_head builds, but MODEL.RPN"):
        check_plan_parts(cfg, Plan(plan))


@pytest.fixture(scope="module")
def tiny_set(tiny_voc):  # noqa: F811
    """The tiny synthetic set registered in this process as ``heads_voc_*`` (the other names may
    already point elsewhere: Detectron2 registers data sets once per process)."""
    register_synthetic_voc(str(tiny_voc / "synthetic_voc"), prefix="heads_voc")
    return tiny_voc


def compress_options(out, weights, dataset="heads_voc_trainval", **changes):
    opts = [*TINY_R50_FPN, "DATASETS.TRAIN", f"('{dataset}',)",
            "DATALOADER.NUM_WORKERS", "0", "MODEL.WEIGHTS", str(weights)]  # fmt: skip
    solver = SolverOptions(speedup=2.0, samples_per_image=16, schedule=((0.01, 2), (1.0, 2)),
                           round_ranks_to=1)  # fmt: skip
    options = DetectorCompressOptions(
        "faster_rcnn_R_50_FPN.yaml", str(out), opts=opts, solver=solver, num_images=4,
        fc_samples_per_image=16, progress=False, plot=False, device="cpu",
    )  # fmt: skip
    return dataclasses.replace(options, **changes)


def test_resumed_or_two_processes_bit_identical(tiny_set, tmp_path):
    weights = tmp_path / "plain.pth"
    torch.save({"model": plain_model().state_dict()}, weights)
    whole = compress_detector(compress_options(tmp_path / "whole", weights))
    assert whole["theoretical_speedup_detector"] >= 2.0
    with pytest.raises(KeyboardInterrupt):
        compress_detector(
            compress_options(tmp_path / "resumed", weights, stop_after="bottom_up.res4.2.conv1")
        )
    resumed = compress_detector(compress_options(tmp_path / "resumed", weights, resume=True))
    assert resumed["layers"].keys() == whole["layers"].keys()
    for name in (RPN, FC1, FC2):
        assert resumed["layers"][name]["error"] == whole["layers"][name]["error"]
    a = torch.load(tmp_path / "whole" / "model_final.pth", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / "model_final.pth", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # two processes, each with its shard of the images, make the model of one
    options = compress_options(tmp_path / "two", weights, "synthetic_voc_trainval")
    run = subprocess.run(
        [sys.executable, "tools/compress_detector.py", "--config", options.config_file,
         "--output", str(options.output), "--num-gpus", "2", "--device", "cpu", "--speedup", "2",
         "--num-images", "4", "--samples-per-image", "16", "--fc-samples-per-image", "16",
         "--iterations", "2", "--round-ranks", "1", "--no-progress", "--no-plot", *options.opts],
        cwd=REPO, env=dict(os.environ, DETECTRON2_DATASETS=str(tiny_set), OMP_NUM_THREADS="1"),
        capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    c = torch.load(tmp_path / "two" / "model_final.pth", weights_only=True)["model"]
    assert a.keys() == c.keys() and all(torch.equal(a[k], c[k]) for k in a)


def test_a_c4_detector_takes_the_backbone_target_only(tiny_set, tmp_path):
    c4 = ["MODEL.BACKBONE.NAME", "build_resnet_backbone", "MODEL.ROI_HEADS.NAME", "Res5ROIHeads",
          "MODEL.RPN.IN_FEATURES", "['res4']", "MODEL.ROI_HEADS.IN_FEATURES", "['res4']",
          "MODEL.RESNETS.OUT_FEATURES", "['res4']",
          "MODEL.ANCHOR_GENERATOR.SIZES", "[[32, 64, 128, 256, 512]]"]  # fmt: skip
    weights = tmp_path / "plain.pth"
    cfg = tiny_cfg(*PLAIN, *c4)
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    options = compress_options(tmp_path / "c4", weights)
    options = dataclasses.replace(options, opts=[*options.opts, *c4])
    with pytest.raises(AccelDetError, match="Res5ROIHeads has no box head.*--speedup-of conv"):
        compress_detector(options)
    assert not (tmp_path / "c4").exists()
