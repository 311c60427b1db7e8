"""The tools/train_net.py commands of the README, of docs/ and of the tools' --help each write into
their own folder: an evaluation of another model never goes into the OUTPUT_DIR of a run (where it
would replace that run's config.yaml and results), and two training commands share an OUTPUT_DIR
only when they train the same model (alternatives, e.g. one GPU or eight)."""

import os
import re
import shlex
from collections import defaultdict

import pytest

from tests.helpers import REPO

pytest.importorskip("detectron2")

KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)*$")
VALUED_FLAGS = {"--config", "--config-file", "--num-gpus", "--num-machines", "--machine-rank"}


def documented_commands():
    """(where, tokens) of every ``tools/train_net.py`` command in the README, docs/ and the
    tools' docstrings (lines joined at a trailing backslash, comments dropped)."""
    sources = {"README.md": (REPO / "README.md").read_text(encoding="utf-8")}
    for path in sorted((REPO / "docs").glob("*.md")):
        sources[f"docs/{path.name}"] = path.read_text(encoding="utf-8")
    for path in sorted((REPO / "tools").glob("*.py")):
        sources[f"tools/{path.name}"] = path.read_text(encoding="utf-8")
    for where, text in sources.items():
        text = re.sub(r"\\{1,2}\n\s*", " ", text)  # a shell line continued
        for line in text.splitlines():
            at = line.find("tools/train_net.py ")
            if at < 0 or "<" in line:
                continue
            command = line[at:].split("  #")[0].split("`")[0].strip()
            yield where, shlex.split(command)[1:]


def parse(tokens):
    flags, opts, position = {}, {}, 0
    while position < len(tokens):
        token = tokens[position]
        if token in VALUED_FLAGS:
            flags[token.replace("--config-file", "--config")] = tokens[position + 1]
            position += 2
        elif token.startswith("--"):
            flags[token] = True
            position += 1
        elif KEY.match(token) and position + 1 < len(tokens):
            opts[token] = tokens[position + 1]
            position += 2
        else:
            position += 1
    return flags, opts


def test_documented_runs_write_into_their_own_folders():
    from accel_det.detection.config import load_config, resolve_config_file
    from accel_det.errors import AccelDetError

    folders = defaultdict(list)
    for where, tokens in documented_commands():
        flags, opts = parse(tokens)
        if "--config" not in flags:  # prose ("tools/train_net.py --eval-only evaluates ...")
            continue
        try:
            config = resolve_config_file(flags["--config"])
        except AccelDetError:  # a user's own config (my_config.yaml): nothing to check
            continue
        output = opts.get("OUTPUT_DIR") or load_config(config).OUTPUT_DIR
        model = (config, tuple(sorted((k, v) for k, v in opts.items() if k.startswith("MODEL."))))
        folders[os.path.normpath(output)].append((where, flags, opts, model))
    assert len(folders) >= 5, folders  # the documented runs were found
    for output, runs in folders.items():
        trained = {model for _, flags, _, model in runs if "--eval-only" not in flags}
        assert len(trained) <= 1, f"{output}: two different training runs ({runs})"
        for where, flags, opts, model in runs:
            weights = os.path.normpath(opts.get("MODEL.WEIGHTS", ""))
            own = os.path.dirname(weights) == output or "--resume" in flags
            if "--eval-only" in flags and not own:  # only evaluations of this model there
                assert all("--eval-only" in f and m == model for _, f, _, m in runs), (
                    f"{where}: --eval-only of {weights} writes into {output}, the OUTPUT_DIR of "
                    f"another run: give it its own OUTPUT_DIR ({runs})"
                )
