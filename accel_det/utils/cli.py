"""What every tool does around its ``main``: logging, and one clear line instead of a traceback."""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
from typing import Any, Callable, Optional, Sequence

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


def number(
    kind: type = int, minimum=None, maximum=None, above=None, below=None
) -> Callable[[str], Any]:
    """An argparse ``type``: a finite ``kind`` (int or float) at least ``minimum``, at most
    ``maximum``, greater than ``above`` and less than ``below``; anything else is argparse's error
    naming the option (one line, exit code 2, through :func:`run_tool`)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {text}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"must be greater than {above}, got {text}")
        if below is not None and value >= below:
            raise argparse.ArgumentTypeError(f"must be less than {below}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


# the numeric options of the tools
POSITIVE_INT = number(int, minimum=1)
NON_NEGATIVE_INT = number(int, minimum=0)  # e.g. worker processes, threads (0: all cores)
SEED = number(int, minimum=0, maximum=2**63 - 1)
POSITIVE_FLOAT = number(float, above=0)
NON_NEGATIVE_FLOAT = number(float, minimum=0)
FRACTION = number(float, minimum=0, maximum=1)
SPEEDUP = number(float, above=1)
IMAGE_SIDE = number(int, minimum=32)  # five 2x downsamplings (VGG-16, ResNets) need 32 pixels


def one_line_parser_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``parser`` raising a bad command line as an :class:`AccelDetError` (one line, exit code 2
    through :func:`run_tool`, like every other error of the tools; ``--help`` shows the usage)
    instead of printing its usage and exiting."""

    def error(message: str):
        raise AccelDetError(f"{message} (see --help)")

    parser.error = error
    return parser


def run_tool(
    main: Callable[[argparse.Namespace], Optional[int]],
    parser: argparse.ArgumentParser,
    argv: Optional[Sequence[str]] = None,
) -> int:
    """Parse ``argv``, run ``main(args)``; a bad command line, an :class:`AccelDetError`, a missing
    file, a full disk or a Ctrl-C becomes one line on stderr and exit code 2 (1 for Ctrl-C),
    unless ``--debug`` is given."""
    try:
        args = one_line_parser_errors(parser).parse_args(argv)
    except AccelDetError as error:
        print(f"error: {printable(str(error))}", file=sys.stderr)
        return 2
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
        print(f"error: {printable(str(error))}", file=sys.stderr)
        return 2
    except OSError as error:  # a write out of room that no accel-det writer saw (an append)
        failure = write_failure(error.filename, error)
        if failure is None or getattr(args, "debug", False):
            raise
        print(f"error: {printable(str(failure))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1


def printable(text: str) -> str:
    """``text`` with control characters (newlines, escape sequences, bidirectional overrides)
    written as escapes: a path with a newline stays on the one error line, and cannot draw a
    second line of its own."""
    return "".join(
        ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )


def ignore_file_size_signal() -> None:
    """Make a write past the file size limit (``ulimit -f``) fail with EFBIG, reported in one line,
    instead of SIGXFSZ killing the process (CPython ignores it at startup; a host may not)."""
    if hasattr(signal, "SIGXFSZ"):
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        except ValueError:  # not the main thread: leave it as it is
            pass
