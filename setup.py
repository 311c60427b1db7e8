"""Packaging for accel-det (import name: ``accel_det``).

Torch and torchvision are pinned by the Makefile (``make venv``), not here; detectron2 is
installed by ``tools/install_detectron2.py`` (it is not on PyPI under its own name).
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
CONFIG_PACKAGES = ["accel_det.configs", "accel_det.configs.demo"]


def read_version() -> str:
    init = HERE / "accel_det" / "__init__.py"
    match = re.search(
        r'^__version__\s*=\s*["\']([^"\']+)["\']', init.read_text(encoding="utf-8"), re.M
    )
    return match.group(1) if match else "0.0.0"


setup(
    name="accel-det",
    version=read_version(),
    description=(
        "Data-driven low-rank acceleration of VGG-16 conv layers "
        "(Zhang et al., TPAMI 2016) with Detectron2 integration"
    ),
    # configs/ is installed as the data package accel_det.configs (as detectron2's model_zoo
    # ships its configs), so config names resolve from an installed package too
    packages=find_packages(include=["accel_det", "accel_det.*"]) + CONFIG_PACKAGES,
    package_dir={"accel_det.configs": "configs"},
    package_data={"accel_det.configs": ["*.yaml"], "accel_det.configs.demo": ["*.yaml"]},
    python_requires=">=3.10",
    install_requires=[
        "numpy",
        "torch>=2.1",
        "torchvision>=0.16",
        "pycocotools",
        "fvcore",
        "iopath",
        "tqdm",
        "matplotlib",
        "pyyaml",
        "scipy",
        "tensorboard",
        # The only OpenCV wheel: never add opencv-python(-headless) or opencv-contrib-python
        # beside it.
        "opencv-contrib-python-headless",
        "Pillow",
        "psutil",
    ],
    extras_require={
        "test": ["pytest", "ruff==0.17.6"],
        # tools/export_model.py, tools/evaluate_exported.py, accel_det.deploy: torch's ONNX
        # exporter (onnxscript), ONNX Runtime and OpenVINO on the CPU
        "deploy": [
            "onnx==1.23.2",
            "onnxscript==0.7.2",
            "onnxruntime==1.32.0",
            "openvino==2026.4.1",
        ],
    },
)
