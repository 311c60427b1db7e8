"""Writes that run out of room, injected: every file opened for writing whose name is ``NAME``
(or one of atomic_path's temporaries for it, ``.NAME.*.tmp``) takes a few bytes and then fails
with an OSError of the given errno, as a full disk (ENOSPC) or a file size limit (EFBIG) does.

In a test: ``failing_writes(monkeypatch, "out.pth", errno.ENOSPC)``. For a tool in its own process:

    python tests/write_fault.py NAME ERRNO tools/train_net.py ARGS...
"""

import builtins
import errno
import fnmatch
import os
import runpy
import sys

PARTIAL = 8  # bytes a failing file takes before the error (a half-written file)


class _FailingFile:
    def __init__(self, file, code):
        self._file, self._code, self._written = file, code, 0

    def write(self, data):
        room = PARTIAL - self._written
        if len(data) > room:
            if room > 0:
                self._file.write(data[:room])
                self._written = PARTIAL
            raise OSError(self._code, os.strerror(self._code))
        self._written += len(data)
        return self._file.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()

    def __iter__(self):
        return iter(self._file)

    def __getattr__(self, name):
        return getattr(self._file, name)


def matches(path, name) -> bool:
    base = os.path.basename(os.fspath(path))
    return base == name or fnmatch.fnmatchcase(base, f".{name}.*.tmp")


def failing_open(name, code, real_open=builtins.open):
    def patched(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if isinstance(file, (str, bytes, os.PathLike)) and any(m in mode for m in "wax+"):
            if matches(file, name):
                return _FailingFile(handle, code)
        return handle

    return patched


def failing_writes(monkeypatch, name, code=errno.ENOSPC) -> None:
    """Make writes to ``name`` fail with ``code`` for the rest of the test."""
    monkeypatch.setattr(builtins, "open", failing_open(name, code))


if __name__ == "__main__":
    name, code, tool, *argv = sys.argv[1:]
    builtins.open = failing_open(name, int(code))
    sys.argv = [tool, *argv]
    sys.path.insert(0, os.path.dirname(os.path.abspath(tool)))
    runpy.run_path(tool, run_name="__main__")
