#!/usr/bin/env python3
"""The interim ``make demo``: the quick solver benchmark (every method, rank selection on and off, at
2x/3x/4x on a small VGG-16 trained here on a generated task) and the solver's speed figures (one
512-channel layer from 30,000 samples; compressing all of VGG-16 against plain forward passes).
A few minutes on 2 CPU cores; the first run also trains the network (cached in ``--output``).

    python tools/demo_solver.py [--output output/demo_solver] [--sections sweep speed latency]

It is ``tools/benchmark_solver.py --quick`` with these defaults; any other option of that tool
(``--threads``, ``--methods``, ``--speedups``, ``--sections``, ...) can be added.
"""

from __future__ import annotations

import importlib.util
import os
import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location("benchmark_solver", os.path.join(here, "benchmark_solver.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
    defaults = ["--quick"] + ([] if any(a.startswith("--output") for a in argv) else ["--output", "output/demo_solver"])
    return tool.run_tool(tool.main, tool.build_parser(), defaults + argv)


if __name__ == "__main__":
    sys.exit(main())
