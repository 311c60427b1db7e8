"""The package's layering rules, read from the source: each test fails on the first file that
breaks its rule."""

import ast
import subprocess
import sys

import pytest

from tests.helpers import REPO

PACKAGE = REPO / "accel_det"
# areas bottom to top; an area may import only areas at or below it
LAYERS = [
    {"errors", "utils"},
    {"nn"},
    {"plan"},
    {"solver"},
    {"models", "data", "evaluation"},
    {"detection"},
    {"deploy"},
    {"workflows"},
]
RANK = {area: level for level, areas in enumerate(LAYERS) for area in areas}


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield path, name, path.name == "__init__.py"


def imported(path, name, is_package):
    """(module, imported name or None) of every import of a file, made absolute."""
    package = name if is_package else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            yield from ((base, alias.name) for alias in node.names)


def area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_layer_imports_a_layer_above_it_and_the_core_no_detectron2():
    for path, name, is_package in modules():
        here = area(name)
        for module, _ in imported(path, name, is_package):
            if module.split(".")[0] == "detectron2":
                assert RANK.get(here, 0) >= RANK["detection"], f"{path} ({here}) imports detectron2"
            if module.startswith("accel_det.") and here in RANK:
                there = area(module)
                assert RANK.get(there, 0) <= RANK[here], (
                    f"{path} ({here}) imports {module} ({there})"
                )


def test_no_private_name_is_imported_across_modules():
    for path, name, is_package in modules():
        for module, item in imported(path, name, is_package):
            if (
                module.startswith("accel_det")
                and item
                and item.startswith("_")
                and not item.startswith("__")
            ):
                assert module == name, f"{path} imports the private {item} from {module}"


def test_small_files_and_one_plan_format_string():
    holders = [p for p, _, _ in modules() if "accel-det-plan/" in p.read_text(encoding="utf-8")]
    assert [p.name for p in holders] == ["plan.py"]
    for path, _, _ in modules():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= 500, f"{path} has {lines} lines"


@pytest.mark.parametrize(
    "module", ["accel_det.solver", "accel_det.nn", "accel_det.plan", "accel_det.models"]
)
def test_the_core_imports_without_detectron2(module):
    code = (
        "import sys; import importlib; importlib.import_module(sys.argv[1]); "
        "assert not any(m.split('.')[0] == 'detectron2' for m in sys.modules), 'detectron2'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, module], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_configs_resolve_from_an_installed_copy(tmp_path):
    """configs/ is package data: a non-editable install finds them without the checkout."""
    target = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(install + ["--target", str(target), str(REPO)], check=True, capture_output=True)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from accel_det.detection.config import CONFIGS_DIR, resolve_config_file; "
        "assert str(CONFIGS_DIR).startswith(sys.argv[1]), CONFIGS_DIR; "
        "print(resolve_config_file('demo/accel_vgg16_synthetic'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(target)], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("configs/demo/accel_vgg16_synthetic.yaml")
