"""The pickles Detectron2 opens (proposal files, ``.pkl`` weights) are read by accel-det first,
with the allow-list unpickler: genuine ones load, one that would run code is refused unrun."""

import json
import logging
import os
import pickle

import numpy as np
import pytest
import torch

pytest.importorskip("detectron2")

from detectron2.modeling import build_model
from detectron2.structures import BoxMode

import accel_det.detection  # noqa: F401
from accel_det.detection.checkpoint import (
    check_weights_fit,
    load_detector_weights,
    read_checkpoint_state,
)
from accel_det.detection.config import load_config
from accel_det.detection.proposals import (
    image_list_digest,
    make_proposals,
    read_proposal_file,
    write_proposal_file,
)
from accel_det.errors import AccelDetError
from tests.detection.test_model import tiny_cfg
from tests.helpers import TINY_DETECTOR
from tests.test_safe_pickle import RunsCode


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


# --------------------------------------------------------------------------- every route
# A proposal file or .pkl weights reach Detectron2 by several routes; each one reads them as data.
# "DIR/w.pkl?x=1" (a harmless torch file of that literal name) is what Detectron2's checkpointer
# reads as DIR/w.pkl (it strips a URL query): a gate that checks the literal name checks the wrong
# file.


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A tiny synthetic VOC set with proposal files, a tiny detector's weights, and beside them
    pickles whose loading would create a marker file."""
    import shutil

    from accel_det.data.synthetic.voc import make_synthetic_voc
    from accel_det.detection.proposals import write_proposal_file

    root = tmp_path_factory.mktemp("hostile")
    voc = root / "datasets" / "synthetic_voc"
    make_synthetic_voc(str(voc), num_trainval=3, num_test=2, image_size=64, progress=False)
    ids = {"trainval": ["000001", "000002", "000003"], "test": ["000004", "000005"]}
    box = np.array([[0, 0, 20, 20], [4, 4, 30, 40]], dtype=np.float32)
    p = {"root": root, "datasets": root / "datasets", "marker": root / "pwned"}
    for split, names in ids.items():
        p[split] = root / f"{split}.pkl"
        write_proposal_file(str(p[split]), names, [box] * len(names))
        p[f"evil_{split}"] = root / f"evil_{split}.pkl"
        with open(p[f"evil_{split}"], "wb") as f:
            pickle.dump({"ids": names, "boxes": RunsCode(p["marker"])}, f)
    p["opts"] = [
        *HOSTILE_SMALL,
        "DATASETS.PROPOSAL_FILES_TRAIN",
        f"('{p['trainval']}',)",
        "DATASETS.PROPOSAL_FILES_TEST",
        f"('{p['test']}',)",
    ]
    from detectron2.data import MetadataCatalog

    from accel_det.detection.datasets import register_synthetic_voc

    before = MetadataCatalog.get("synthetic_voc_test").dirname
    register_synthetic_voc(str(voc))
    torch.manual_seed(0)
    model = build_model(load_config(CONFIG, [*p["opts"], "MODEL.WEIGHTS", ""]))
    p["weights"] = root / "model.pth"
    torch.save({"model": model.state_dict()}, p["weights"])
    # w.pkl runs code; "w.pkl?x=1" is a harmless torch file; the same pair in an OUTPUT_DIR that
    # --resume continues from
    for folder in ("w", "resume"):
        (root / folder).mkdir()
        with open(root / folder / "w.pkl", "wb") as f:
            pickle.dump({"model": RunsCode(p["marker"]), "__author__": "x"}, f)
        shutil.copy(p["weights"], root / folder / "w.pkl?x=1")
    (root / "resume" / "last_checkpoint").write_text("w.pkl?x=1")
    p["query"] = f"{root / 'w' / 'w.pkl'}?x=1"
    yield p
    register_synthetic_voc(before)


CONFIG = "demo/vgg16_synthetic"
HOSTILE_SMALL = [*TINY_DETECTOR, "DATALOADER.NUM_WORKERS", "0", "MODEL.DEVICE", "cpu"]


def hostile_argv(p, tool, *opts, weights=None):
    weights = ["MODEL.WEIGHTS", str(weights or p["weights"])]
    out = p["root"] / f"out_{tool}"
    if tool == "compress_detector":
        return ["--config-file", CONFIG, "--output", out, "--overwrite", "--num-images", "2",
                "--no-progress", *p["opts"], *weights, *opts]  # fmt: skip
    if tool == "export_model":
        return ["--output", f"{out}.onnx", "--overwrite", "--config-file", CONFIG, *p["opts"],
                *weights, *opts]  # fmt: skip
    return ["--config-file", CONFIG, *p["opts"], "OUTPUT_DIR", out, *weights, *opts]


def run_hostile(tool, argv, capsys, monkeypatch, skip_checks=False):
    from accel_det.utils.cli import run_tool
    from tests.helpers import load_tool

    module = load_tool(tool)
    argv = [str(a) for a in argv]
    loggers = [logging.getLogger(n) for n in ("detectron2", "fvcore", "d2", "accel_det")]
    handlers = [list(log.handlers) for log in loggers]
    try:
        if tool == "train_net":
            if skip_checks:  # the mechanism alone, without the early check of the inputs
                monkeypatch.setattr(module, "check_inputs", lambda *a, **k: None)
            code = module.run(argv=argv)
        else:
            code = run_tool(module.main, module.build_parser(), argv)
    finally:  # Detectron2's setup_logger adds handlers on this test's captured output
        for log, kept in zip(loggers, handlers):
            log.handlers[:] = kept
    return code, capsys.readouterr().err


ROUTES = {
    # the training proposal files of tools/compress_detector.py were never checked
    "compress_detector-proposals": (
        "compress_detector",
        lambda p: hostile_argv(
            p, "compress_detector", "DATASETS.PROPOSAL_FILES_TRAIN", f"('{p['evil_trainval']}',)"
        ),
        "refusing proposal file ",
    ),
    "compress_detector-weights": (
        "compress_detector",
        lambda p: hostile_argv(p, "compress_detector", weights=p["query"]),
        "is a file, but Detectron2 reads it as the URL ",
    ),
    "export_model-weights": (
        "export_model",
        lambda p: hostile_argv(p, "export_model", weights=p["query"]),
        "is a file, but Detectron2 reads it as the URL ",
    ),
    "train_net-weights": (
        "train_net",
        lambda p: hostile_argv(p, "train_net", "SOLVER.MAX_ITER", "1", weights=p["query"]),
        "is a file, but Detectron2 reads it as the URL ",
    ),
    "train_net-eval-only-weights": (
        "train_net",
        lambda p: ["--eval-only", *hostile_argv(p, "train_net", weights=p["query"])],
        "is a file, but Detectron2 reads it as the URL ",
    ),
    "train_net-resume": (
        "train_net",
        lambda p: ["--resume", *hostile_argv(p, "train_net", "OUTPUT_DIR", p["root"] / "resume")],
        "is a file, but Detectron2 reads it as the URL ",
    ),
}


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_no_route_runs_code_from_a_pickle(hostile, route, capsys, monkeypatch):
    tool, argv, message = ROUTES[route]
    code, err = run_hostile(tool, argv(hostile), capsys, monkeypatch)
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert not hostile["marker"].exists(), "the pickle ran code"


@pytest.mark.parametrize("split", ["trainval", "test"])
def test_train_net_data_loaders_read_proposals_as_data_without_the_early_check(
    hostile, split, capsys, monkeypatch
):
    """The inputs check reads the proposal files first; the data loaders hold on their own (a
    file replaced after the check)."""
    key = "TRAIN" if split == "trainval" else "TEST"
    argv = hostile_argv(hostile, "train_net", f"DATASETS.PROPOSAL_FILES_{key}",
                        f"('{hostile[f'evil_{split}']}',)")  # fmt: skip
    if split == "test":
        argv = ["--eval-only", *argv]
    code, err = run_hostile("train_net", argv, capsys, monkeypatch, skip_checks=True)
    assert code == 2 and "error: refusing proposal file " in err, err
    assert not hostile["marker"].exists(), "the pickle ran code"


def test_checkpointer_reads_what_detectron2_resolves_as_data(hostile):
    """Detectron2's own load path (query stripped, then _load_file) with no check in front."""
    from accel_det.detection.checkpoint import AtomicCheckpointer

    model = build_model(load_config(CONFIG, [*hostile["opts"], "MODEL.WEIGHTS", ""]))
    for path, resume in ((hostile["query"], False), ("", True)):
        checkpointer = AtomicCheckpointer(model, save_dir=str(hostile["root"] / "resume"))
        with pytest.raises(AccelDetError, match="^refusing checkpoint file .*w.pkl: it names"):
            checkpointer.resume_or_load(path, resume=resume)
    assert not hostile["marker"].exists(), "the pickle ran code"
    AtomicCheckpointer(model).load(f"{hostile['weights']}?matching_heuristics=True")


def test_every_dataset_dicts_builder_reads_proposals_as_data(hostile):
    """The demo's timing input and compress_detector's sampled images, and Detectron2's test
    loader as tools/evaluate_exported.py builds it (Trainer.test)."""
    from accel_det.detection.loaders import build_test_loader, detection_dataset_dicts
    from accel_det.workflows.demo.latency import timing_input

    evil = ["DATASETS.PROPOSAL_FILES_TEST", f"('{hostile['evil_test']}',)"]
    cfg = load_config(CONFIG, [*hostile["opts"], *evil, "MODEL.WEIGHTS", ""])
    for build in (timing_input, lambda c: build_test_loader(c, "synthetic_voc_test")):
        with pytest.raises(AccelDetError, match="^refusing proposal file "):
            build(cfg)
    assert not hostile["marker"].exists(), "the pickle ran code"
    # as Detectron2 loads them: sorted by objectness
    box = np.array([[0, 0, 20, 20], [4, 4, 30, 40]], dtype=np.float32)
    path = str(hostile["root"] / "scored.pkl")
    write_proposal_file(path, ["000004", "000005"], [box] * 2, [np.array([-1.0, 2.0])] * 2)
    dicts = detection_dataset_dicts(["synthetic_voc_test"], proposal_files=[path])
    assert [d["proposal_boxes"].tolist() for d in dicts] == [[[4, 4, 30, 40], [0, 0, 20, 20]]] * 2
    assert [d["proposal_objectness_logits"].tolist() for d in dicts] == [[2, -1]] * 2
