"""An exported detector as a Detectron2 model: evaluated with the evaluator and data loader
``tools/train_net.py`` uses, its detections made by Detectron2's own post-processing.

The runtime returns per-proposal class scores and per-class boxes
(:class:`~accel_det.deploy.detector.DetectorGraph`); :class:`ExportedDetector` then does what
``FastRCNNOutputLayers.inference`` and ``GeneralizedRCNN`` do after the network: boxes clipped
to the image, ``MODEL.ROI_HEADS.SCORE_THRESH_TEST``, per-class NMS at ``NMS_THRESH_TEST``, the
``TEST.DETECTIONS_PER_IMAGE`` best, and the rescale to the original image size.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional

import torch
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference_single_image
from detectron2.structures import Boxes, Instances
from torch import nn

from ..detection.trainer import Trainer, by_dataset, check_data
from ..errors import AccelDetError
from .detector import EVALUATED_KEYS, INPUTS, OUTPUTS, config_value, test_classes
from .record import read_export_record, record_path
from .runtime import Runtime, load_runtime

logger = logging.getLogger(__name__)


class ExportedDetector(nn.Module):
    """A callable like Detectron2's ``GeneralizedRCNN`` in eval mode (a list of the
    ``DatasetMapper``'s dicts in, ``[{"instances": ...}]`` out) that runs an exported
    :class:`~accel_det.deploy.detector.DetectorGraph` in ``runtime``."""

    def __init__(self, runtime: Runtime, cfg):
        super().__init__()
        if list(runtime.input_names) != list(INPUTS) or list(runtime.output_names) != list(OUTPUTS):
            raise AccelDetError(
                f"{runtime.path} is not an exported detector: it takes "
                f"{', '.join(runtime.input_names)} and returns {', '.join(runtime.output_names)} "
                f"(a detector takes {', '.join(INPUTS)} and returns {', '.join(OUTPUTS)})"
            )
        self.runtime = runtime
        self.num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
        self.score_thresh = cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST
        self.nms_thresh = cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST
        self.topk = cfg.TEST.DETECTIONS_PER_IMAGE

    def forward(self, batched_inputs: List[Dict]) -> List[Dict[str, Instances]]:
        return [self.detect(x) for x in batched_inputs]

    def detect(self, item: Dict) -> Dict[str, Instances]:
        """Detections of one ``DatasetMapper`` dict (``image``: the resized 3×H×W image,
        ``proposals``: Instances with ``proposal_boxes``; ``height``/``width``: the original
        size to rescale to)."""
        image = item["image"]
        size = tuple(image.shape[-2:])
        proposals = item["proposals"].proposal_boxes.tensor
        if len(proposals):
            scores, boxes = (
                torch.from_numpy(a)
                for a in self.runtime(image.to(torch.float32), proposals.to(torch.float32))
            )
            self.check_classes(scores)
            instances, _ = fast_rcnn_inference_single_image(
                boxes, scores, size, self.score_thresh, self.nms_thresh, self.topk
            )
        else:
            instances = Instances(size, pred_boxes=Boxes(torch.zeros(0, 4)))
            instances.scores = torch.zeros(0)
            instances.pred_classes = torch.zeros(0, dtype=torch.int64)
        height, width = item.get("height", size[0]), item.get("width", size[1])
        return {"instances": detector_postprocess(instances, height, width)}

    def check_classes(self, scores: torch.Tensor) -> None:
        if scores.shape[1] != self.num_classes + 1:
            raise AccelDetError(
                f"{self.runtime.path} scores {scores.shape[1] - 1} classes, the config "
                f"{self.num_classes} (MODEL.ROI_HEADS.NUM_CLASSES)"
            )


def evaluate_exported(
    cfg, model_path: str, runtime: Optional[str] = None, threads: int = 1, check_record: bool = True
) -> Dict:
    """Evaluate the exported detector ``model_path`` in ``runtime`` on ``DATASETS.TEST`` of
    ``cfg`` exactly as ``tools/train_net.py --eval-only`` evaluates the PyTorch model
    (``Trainer.test``: Detectron2's test loader with the precomputed proposals, the data set's
    evaluator); returns the results keyed by data set. The model's export record is checked
    against ``cfg`` first (:func:`check_export_record`; ``check_record=False``: the caller did)."""
    if check_record:
        check_export_record(cfg, model_path)
    check_data(cfg, train=False)
    if not cfg.MODEL.LOAD_PROPOSALS:
        raise AccelDetError(
            "an exported detector takes precomputed proposals: MODEL.LOAD_PROPOSALS must be True"
        )
    detector = ExportedDetector(load_runtime(model_path, runtime, threads), cfg)
    logger.info("evaluating %s in %s on %s", model_path, detector.runtime.name, cfg.DATASETS.TEST)
    return by_dataset(cfg, Trainer.test(cfg, detector))


def check_export_record(cfg, model_path: str) -> Optional[dict]:
    """The record of the exported detector ``model_path`` (:mod:`.record`), checked against
    ``cfg``: the same test-time resize, pixel format and classes (:data:`EVALUATED_KEYS` and the
    test set's class names), else one :class:`AccelDetError`. A model without a record (exported
    elsewhere or by an older accel-det) is evaluated with a warning."""
    record = read_export_record(model_path)
    path = record_path(model_path)
    if record is None:
        logger.warning(
            "%s has no record of what it was exported from (%s): its input size, pixel format and "
            "classes are not checked against the config",
            model_path,
            path,
        )
        return None
    if record.get("model") != "detector":
        raise AccelDetError(
            f"{model_path} is not an exported detector: its record {path} says "
            f"{record.get('description') or record.get('model')!r}"
        )
    exported = record.get("config") or {}
    for key in EVALUATED_KEYS:
        if key in exported and exported[key] != config_value(cfg, key):
            raise AccelDetError(
                f"{model_path} was exported for {key} {_text(exported[key])} (its record {path}), "
                f"the config gives {_text(config_value(cfg, key))}: evaluate it with the config "
                f"it was exported with (or the override {key} {_text(exported[key])})"
            )
    classes = record.get("classes") or {}
    names, current = classes.get("names"), test_classes(cfg)
    if names and current and list(names) != list(current):
        raise AccelDetError(
            f"{model_path} was exported for the classes of {classes.get('dataset')} "
            f"({_few(names)}), the test set {cfg.DATASETS.TEST[0]} has other classes "
            f"({_few(current)}): its scores would be read as the wrong classes"
        )
    return record


def _text(value) -> str:
    return " ".join(str(value).split())


def _few(names, count: int = 4) -> str:
    return ", ".join(names[:count]) + (", ..." if len(names) > count else "")


def results_path(model_path: str, runtime: str) -> str:
    """Where the results of ``model_path`` in ``runtime`` go by default: next to the model, named
    after both (``X.onnx.onnxruntime.eval_results.json``)."""
    return f"{model_path}.{runtime}.eval_results.json"


def check_results_output(output: str, model_path: str, cfg, config_file: str) -> None:
    """Refuse a results file that is one of the evaluation's inputs: the model (and its ``.bin``),
    its record, the config file or a test proposal file."""
    inputs = {
        "the exported model (--model)": model_path,
        "the exported model's record": record_path(model_path),
        "the config file (--config-file)": config_file,
        **{
            f"a proposal file (DATASETS.PROPOSAL_FILES_TEST {path})": path
            for path in cfg.DATASETS.PROPOSAL_FILES_TEST
        },
    }
    if model_path.endswith(".xml"):
        inputs["the exported model's weights (.bin)"] = model_path[: -len(".xml")] + ".bin"
    target = os.path.realpath(os.path.expanduser(output))
    for what, path in inputs.items():
        if os.path.realpath(os.path.expanduser(path)) == target:
            raise AccelDetError(
                f"--output {output} is {what}, an input of this evaluation: write the results to "
                "another file"
            )
