"""Checks of the installed environment (``make venv``): torch, torchvision, detectron2, the
deploy runtimes."""

import importlib
import importlib.util
import os
import site
import sysconfig

import pytest


def _site_dirs():
    dirs = set(getattr(site, "getsitepackages", lambda: [])())
    dirs.update({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    return sorted({os.path.realpath(d) for d in dirs if d})


def _inside(path, dirs):
    real = os.path.realpath(path)
    return any(real == d or real.startswith(d + os.sep) for d in dirs)


def test_torch_and_torchvision_nms_on_cpu():
    import torch
    import torchvision
    from torchvision.ops import nms

    assert torch.__version__ and torchvision.__version__
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]


@pytest.mark.parametrize(
    "module",
    ["detectron2.engine", "detectron2.modeling", "detectron2.evaluation", "detectron2.data"],
)
def test_detectron2_imports(module):
    importlib.import_module(module)


@pytest.mark.parametrize("module", ["onnx", "onnxscript", "onnxruntime", "openvino"])
def test_deploy_runtimes_import(module):
    """The deploy extra (setup.py), which make venv installs: export and runtimes."""
    importlib.import_module(module)


def test_no_stray_tools_package_in_site_packages():
    # sal-detectron2 ships a top-level `tools` package; it must not be installed. The repo's own
    # tools/ may be importable when pytest runs from the repository root: that is fine.
    dirs = _site_dirs()
    for d in dirs:
        assert not os.path.exists(os.path.join(d, "tools")), f"stray 'tools' in {d}"
    spec = importlib.util.find_spec("tools")
    if spec is not None:
        locations = list(spec.submodule_search_locations or [])
        if spec.origin:
            locations.append(spec.origin)
        for loc in locations:
            assert not _inside(loc, dirs), f"'tools' resolves into site-packages: {loc}"


def test_detectron2_model_zoo_config_is_shipped():
    from detectron2 import model_zoo

    path = model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml")
    assert os.path.isfile(path)
    assert os.path.isfile(os.path.join(os.path.dirname(path), "..", "Base-RCNN-FPN.yaml"))


def test_detectron2_faster_rcnn_forward_on_cpu():
    """Pure-Python detectron2 (no compiled _C) builds and runs a Faster R-CNN on the CPU."""
    import torch
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 100
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 20
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    image = torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8)
    with torch.no_grad():
        (out,) = model([{"image": image, "height": 64, "width": 80}])
    instances = out["instances"]
    assert instances.image_size == (64, 80)
    assert instances.pred_boxes.tensor.shape[1] == 4
    assert len(instances) == len(instances.scores) == len(instances.pred_classes)


def test_the_tools_start_from_a_fresh_shell():
    """``tools/X.py`` as the docs write it, without an activated venv: a python3 shebang (a
    fresh machine may have no ``python``), executable, and tools/bootstrap.py finds .venv."""
    import os
    import stat
    import subprocess

    from tests.helpers import REPO

    scripts = sorted((REPO / "tools").glob("*.py")) + [REPO / "datasets" / "make_synthetic_voc.py"]
    for script in scripts:
        if script.name == "bootstrap.py":
            continue
        assert script.read_text().startswith("#!/usr/bin/env python3\n"), script
        assert script.stat().st_mode & stat.S_IXUSR, f"{script} is not executable"
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/")}
    result = subprocess.run(
        ["tools/report.py", "--help"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.startswith("usage: report.py"), result.stderr
