"""Imported first by every tool: accel_det from this checkout, run by the checkout's Python.

* ``accel_det`` is imported from this checkout (its root goes first on ``sys.path``), so a tool
  runs the code next to it even where another copy is installed.
* A tool started by a Python without the project's packages (``tools/train_net.py ...`` on a
  fresh machine, where ``#!/usr/bin/env python3`` is the system Python) is started again with
  ``.venv/bin/python`` when ``make venv`` has made it; otherwise it says so in one line.
"""

import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".venv")


def use_checkout_python() -> None:
    """Re-run this process with the checkout's ``.venv`` Python when torch is not importable."""
    if importlib.util.find_spec("torch") is not None:
        return
    python = os.path.join(VENV, "bin", "python")
    if os.path.isfile(python) and os.path.abspath(sys.prefix) != os.path.abspath(VENV):
        os.execv(python, [python] + sys.argv)
    print(
        f"error: {sys.executable} has no torch: run `make venv` in {ROOT}, then the tool again "
        "(or with .venv/bin/python)",
        file=sys.stderr,
    )
    raise SystemExit(2)


use_checkout_python()
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import accel_det  # noqa: E402,F401  (its warning filters apply before a tool imports detectron2)
