"""accel-det's Detectron2 parts; importing this package registers them.

* ``BACKBONE_REGISTRY``: ``build_vgg16_backbone``, ``build_accel_vgg16_backbone`` (conv5_3,
  stride 16); ``build_accel_backbone`` (any registered backbone, ``MODEL.ACCEL.BACKBONE_NAME``,
  accelerated by a plan)
* ``ROI_BOX_HEAD_REGISTRY``: ``VGG16BoxHead`` (fc6, fc7, dropout); ``build_accel_box_head``
* ``RPN_HEAD_REGISTRY``: ``build_accel_rpn_head`` (the heads of any detector, accelerated by a
  plan: :mod:`.accel_heads`)
* data sets: ``accel_voc_2007_{trainval,test}``, ``accel_voc_2012_trainval`` (difficult boxes out
  of training), ``synthetic_voc_{trainval,train,val,test}``

Registering is idempotent: importing twice (or reloading) does not clash.
Use :func:`add_accel_config` on a ``get_cfg()`` before merging accel-det config files.
"""

from . import accel_backbone as _accel_backbone
from . import accel_heads as _accel_heads
from . import backbone as _backbone
from . import box_head as _box_head
from . import datasets as _datasets
from .accel_backbone import accelerate_backbone, accelerated_weights, build_accel_backbone
from .accel_heads import accelerate_head, build_accel_box_head, build_accel_rpn_head
from .backbone import VGG16Backbone, build_accel_vgg16_backbone, build_vgg16_backbone, load_plan
from .box_head import VGG16BoxHead
from .checkpoint import check_weights_fit, load_detector_weights
from .config import add_accel_config, get_accel_cfg, load_config, resolve_config_file
from .datasets import register_synthetic_voc, register_voc_dataset


def register_all() -> None:
    """Register the backbones, the box head and the data sets (safe to call again)."""
    _backbone.register()
    _accel_backbone.register()
    _accel_heads.register()
    _box_head.register()
    _datasets.register_all()


register_all()

__all__ = [
    "VGG16Backbone",
    "VGG16BoxHead",
    "accelerate_backbone",
    "accelerate_head",
    "accelerated_weights",
    "add_accel_config",
    "build_accel_backbone",
    "build_accel_box_head",
    "build_accel_rpn_head",
    "build_accel_vgg16_backbone",
    "build_vgg16_backbone",
    "check_weights_fit",
    "get_accel_cfg",
    "load_config",
    "load_detector_weights",
    "load_plan",
    "register_all",
    "register_synthetic_voc",
    "register_voc_dataset",
    "resolve_config_file",
]
