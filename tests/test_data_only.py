"""No code runs from a data file, read from the source: every route by which accel-det or the
libraries it calls could unpickle a file goes through the restricted unpickler or
``torch.load(weights_only=True)`` (and no OpenVINO converter, which sends telemetry). Each rule
names the first call that breaks it (a new tool that builds its own Detectron2 data loader, a
plain ``pickle.load``, ...)."""

import ast

import pytest

from tests.helpers import REPO

SOURCES = sorted([*(REPO / "accel_det").rglob("*.py"), *(REPO / "tools").glob("*.py")])
SAFE_PICKLE = REPO / "accel_det" / "utils" / "safe_pickle.py"
LOADERS = REPO / "accel_det" / "detection" / "loaders.py"
CHECKPOINT = REPO / "accel_det" / "detection" / "checkpoint.py"
TRAINER = REPO / "accel_det" / "detection" / "trainer.py"

# name -> (why it can run code or skip the gate, the files allowed to use it)
RULES = {
    # unpicklers
    "pickle.load": ("plain pickle runs any code", ()),
    "pickle.loads": ("plain pickle runs any code", ()),
    "pickle.Unpickler": ("plain pickle runs any code", ()),
    "pickle._Unpickler": ("the base of the restricted unpickler", (SAFE_PICKLE,)),
    "_pickle": ("plain pickle runs any code", ()),
    "dill": ("unpickles code", ()),
    "joblib": ("unpickles code", ()),
    "marshal": ("loads code objects", ()),
    "shelve": ("unpickles", ()),
    "read_pickle": ("pandas unpickles", ()),
    "jit.load": ("TorchScript archives run code", ()),
    "yaml.load": ("can construct objects (use safe_load)", ()),
    "yaml.unsafe_load": ("constructs objects", ()),
    "yaml.full_load": ("constructs objects", ()),
    # Detectron2's routes to plain pickle.load
    "get_detection_dataset_dicts": (
        "reads proposal files with pickle.load: use accel_det.detection.loaders",
        (),
    ),
    "load_proposals_into_dataset": ("pickle.load: use load_proposals_into_dicts", ()),
    "build_detection_train_loader": (
        "with a cfg, reads proposal files with pickle.load: use loaders.build_train_loader",
        (LOADERS,),
    ),
    "build_detection_test_loader": (
        "with a cfg, reads proposal files with pickle.load: use loaders.build_test_loader",
        (LOADERS,),
    ),
    "DetectionCheckpointer": (
        "its _load_file unpickles .pkl with pickle.load: use AtomicCheckpointer",
        (CHECKPOINT,),
    ),
    "DefaultPredictor": ("loads weights with a plain DetectionCheckpointer", ()),
    "DefaultTrainer": (
        "subclassed once, with safe loaders and checkpointer: use Trainer",
        (TRAINER,),
    ),
    # not code from data but data to others: OpenVINO's converter sends usage telemetry (Google
    # Analytics 4) unless the user opted out
    "convert_model": ("sends telemetry: use openvino.Core().read_model", ()),
    "openvino.tools": ("its converter sends telemetry: use openvino.Core().read_model", ()),
}
# builtins that run a string (a bare name; ``model.eval()`` is another thing)
BUILTINS = ("eval", "exec")
# calls that must pass weights_only=True
WEIGHTS_ONLY = ("torch.load", "load_state_dict_from_url")


def dotted(node) -> str:
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    return ""


def uses(tree):
    """(line, dotted name) of every name, attribute, call and import in a module."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Name, ast.Attribute)):
            yield node.lineno, dotted(node)
        elif isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield node.lineno, node.module or ""
            yield from ((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)


def matches(name: str, rule: str) -> bool:
    if rule in BUILTINS:
        return name == rule
    return name == rule or name.endswith("." + rule) or name.startswith(rule + ".")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_route_to_code_from_a_data_file(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for line, name in uses(tree):
        for rule, (why, allowed) in {
            **RULES,
            **{b: ("runs a string", ()) for b in BUILTINS},
        }.items():
            if matches(name, rule) and path not in allowed:
                pytest.fail(f"{path.relative_to(REPO)}:{line} uses {name}: {why}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and dotted(node.func).endswith(WEIGHTS_ONLY):
            flags = {k.arg: k.value for k in node.keywords}
            value = flags.get("weights_only")
            assert isinstance(value, ast.Constant) and value.value is True, (
                f"{path.relative_to(REPO)}:{node.lineno}: {dotted(node.func)} without "
                "weights_only=True"
            )


def test_the_rules_see_what_they_forbid():
    source = (
        "import pickle\nfrom detectron2.data import get_detection_dataset_dicts\n"
        "pickle.load(f)\ntorch.load(p)\n"
    )
    names = {name for _, name in uses(ast.parse(source))}
    assert any(matches(n, "pickle.load") for n in names)
    assert any(matches(n, "get_detection_dataset_dicts") for n in names)
    assert not any(matches(n, "pickle.load") for n in {"pickle.dump", "load_pickle"})
    assert matches("eval", "eval") and not matches("model.eval", "eval")
    assert any(matches(n, "pickle.load") for _, n in uses(ast.parse("from pickle import load")))
