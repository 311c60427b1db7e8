"""The backbone export of a Detectron2 R-CNN (ResNet-FPN): ONNX and OpenVINO IR equal PyTorch."""

import numpy as np
import pytest
import torch

from accel_det.deploy import load_runtime
from accel_det.deploy.backbone import backbone_samples, export_backbone
from accel_det.errors import AccelDetError

pytest.importorskip("detectron2")
pytest.importorskip("onnxruntime")

from accel_det.benchmarks.rcnn_models import random_detector

pytestmark = pytest.mark.usefixtures("one_thread")

# a narrow R18-FPN: 21 + 8 convs, exported in seconds
TINY_R18_FPN = [
    "MODEL.RESNETS.DEPTH", "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.RESNETS.STEM_OUT_CHANNELS", "16",
    "MODEL.FPN.OUT_CHANNELS", "16",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "32",
    "MODEL.ROI_HEADS.NUM_CLASSES", "5",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "200",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
]  # fmt: skip
HW = (64, 96)


@pytest.fixture(scope="module")
def backbone():
    return random_detector("faster_rcnn_R_50_FPN.yaml", TINY_R18_FPN)[1].backbone


@pytest.mark.parametrize("fmt,suffix", [("onnx", ".onnx"), ("openvino", ".xml")])
def test_backbone_round_trip_equals_pytorch(backbone, tmp_path, fmt, suffix):
    path = str(tmp_path / f"backbone{suffix}")
    result = export_backbone(backbone, path, fmt, input_hw=HW)
    assert result.max_difference <= 1e-3
    # checked again here, on an image the export never saw, feature map by feature map
    (image,) = backbone_samples(HW, count=1, seed=7)[0]
    with torch.no_grad():
        expected = backbone(image)
    runtime = load_runtime(path)
    assert runtime.output_names == ["p2", "p3", "p4", "p5", "p6"]
    for name, got in zip(runtime.output_names, runtime(image)):
        want = expected[name].numpy()
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_backbone_export_refuses_unpadded_size(backbone, tmp_path):
    with pytest.raises(AccelDetError, match="multiples of 32"):
        export_backbone(backbone, str(tmp_path / "b.onnx"), input_hw=(64, 90))
    assert not list(tmp_path.iterdir())
