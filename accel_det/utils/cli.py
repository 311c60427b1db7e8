"""What every tool does around its ``main``: logging, and one clear line instead of a traceback."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Callable, Optional, Sequence

from ..errors import AccelDetError
from .io import write_failure

logger = logging.getLogger("accel_det")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="[%(asctime)s %(name)s] %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )


def add_common_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return parser


def run_tool(
    main: Callable[[argparse.Namespace], Optional[int]],
    parser: argparse.ArgumentParser,
    argv: Optional[Sequence[str]] = None,
) -> int:
    """Parse ``argv``, run ``main(args)``; an :class:`AccelDetError`, a missing file, a full disk
    or a Ctrl-C becomes one line on stderr and exit code 2 (1 for Ctrl-C), unless ``--debug`` is
    given."""
    args = parser.parse_args(argv)
    setup_logging(getattr(args, "verbose", False))
    return run_main(main, args)


def run_main(main: Callable[[argparse.Namespace], Optional[int]], args: argparse.Namespace) -> int:
    """``main(args)`` with :func:`run_tool`'s error handling (also what a spawned process of a
    multi-process tool runs). An error marked ``quiet`` (reported by another process) prints nothing
    and exits with its ``exit_code``."""
    ignore_file_size_signal()
    try:
        return int(main(args) or 0)
    except (AccelDetError, FileNotFoundError, PermissionError, IsADirectoryError) as error:
        if getattr(args, "debug", False):
            raise
        if getattr(error, "quiet", False):
            return int(getattr(error, "exit_code", 2))
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a write out of room that no accel-det writer saw (an append)
        failure = write_failure(error.filename, error)
        if failure is None or getattr(args, "debug", False):
            raise
        print(f"error: {failure}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1


def ignore_file_size_signal() -> None:
    """Make a write past the file size limit (``ulimit -f``) fail with EFBIG, reported in one line,
    instead of SIGXFSZ killing the process (CPython ignores it at startup; a host may not)."""
    if hasattr(signal, "SIGXFSZ"):
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        except ValueError:  # not the main thread: leave it as it is
            pass
