"""The pickles Detectron2 opens (proposal files, ``.pkl`` weights) are read by accel-det first,
with the allow-list unpickler: genuine ones load, one that would run code is refused unrun."""

import json
import os
import pickle

import numpy as np
import pytest
import torch

pytest.importorskip("detectron2")

from detectron2.modeling import build_model  # noqa: E402
from detectron2.structures import BoxMode  # noqa: E402

import accel_det.detection  # noqa: E402,F401
from accel_det.detection.checkpoint import (  # noqa: E402
    check_weights_fit,
    load_detector_weights,
    read_checkpoint_state,
)
from accel_det.detection.proposals import (  # noqa: E402
    image_list_digest,
    make_proposals,
    read_proposal_file,
)
from accel_det.errors import AccelDetError  # noqa: E402
from tests.detection.test_model import tiny_cfg  # noqa: E402
from tests.test_safe_pickle import RunsCode  # noqa: E402


def test_detectron2_style_pkl_weights_load(tmp_path):
    """A ``.pkl`` as Detectron2 writes and reads them (numpy arrays under "model", an author)."""
    torch.manual_seed(0)
    source = build_model(tiny_cfg())
    path = str(tmp_path / "weights.pkl")
    state = {k: v.numpy() for k, v in source.state_dict().items()}
    with open(path, "wb") as f:
        pickle.dump({"model": state, "__author__": "accel-det test"}, f)
    shapes = read_checkpoint_state(path)
    assert shapes["backbone.features.0.weight"] == tuple(state["backbone.features.0.weight"].shape)
    model = build_model(tiny_cfg())
    check_weights_fit(model, path)
    load_detector_weights(model, path)  # Detectron2's checkpointer
    assert torch.equal(model.backbone.features[28].weight, source.backbone.features[28].weight)


def test_pkl_weights_that_would_run_code_are_refused_unrun(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "weights.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"backbone.features.0.weight": RunsCode(marker)}}, f)
    with pytest.raises(
        AccelDetError, match=r"^refusing MODEL.WEIGHTS file .*: it names the global"
    ):
        check_weights_fit(build_model(tiny_cfg()), str(path))
    assert not marker.exists()


def test_proposal_file_with_detectron2_box_mode_loads(tmp_path):
    path = tmp_path / "proposals.pkl"
    boxes = [np.array([[0, 0, 5, 5]], dtype=np.float32)]
    data = {"ids": ["a"], "boxes": boxes, "objectness_logits": [np.zeros(1, np.float32)]}
    with open(path, "wb") as f:
        pickle.dump(dict(data, bbox_mode=BoxMode.XYXY_ABS), f)
    loaded = read_proposal_file(str(path))
    assert loaded["bbox_mode"] is BoxMode.XYXY_ABS and np.array_equal(loaded["boxes"][0], boxes[0])
    with open(path, "wb") as f:  # another detectron2 global is refused
        pickle.dump(dict(data, bbox_mode=BoxMode.XYXY_ABS, extra=BoxMode.convert), f)
    with pytest.raises(AccelDetError, match="names the global detectron2.structures.boxes"):
        read_proposal_file(str(path))


def test_selective_search_part_that_would_run_code_is_refused_unrun(tmp_path):
    """A resumable part of make_proposals is a pickle too: a planted one is refused unrun."""
    out = str(tmp_path / "proposals.pkl")
    images = [("a", str(tmp_path / "a.jpg"))]
    settings = {"mode": "fast", "min_size": 16, "max_boxes": 2000, "num_images": 1,
                "images_sha256": image_list_digest(images)}  # fmt: skip
    parts = tmp_path / "proposals.pkl.parts"
    parts.mkdir()
    (parts / "settings.json").write_text(json.dumps(settings))
    marker = tmp_path / "pwned"
    with open(parts / "part000000.pkl", "wb") as f:
        pickle.dump({"ids": ["a"], "boxes": [RunsCode(marker)]}, f)
    with pytest.raises(AccelDetError, match=r"^refusing selective search part .*names the global"):
        make_proposals(images, out, progress=False)
    assert not marker.exists() and not os.path.exists(out)
