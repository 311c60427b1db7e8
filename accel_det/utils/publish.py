"""Finished files given their names: renamed over what is there, or published only if nothing
is (two runs writing one new output: the second is refused, not the first one's file lost); sets
of files (weights and record, OpenVINO's .xml and .bin) published with the file that marks them
complete last; files and folders flushed to disk."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from typing import List, Sequence, Tuple

from ..errors import AccelDetError


def publish_set(moves: Sequence[Tuple[str, str]], replace: bool = True) -> None:
    """Move finished, flushed temporaries to their paths (``(temporary, path)`` pairs), the last
    one last: it marks the set complete (a record, OpenVINO's ``.xml``). With ``replace``, the
    existing paths of all but the first are removed first (the last first), so an interrupted set
    leaves them missing, never next to files of another set (an export's ``X.bin``, ``X.xml`` and
    record: neither the old ``X.xml`` beside the new ``X.bin`` nor the old record beside the new
    model). Without, each is published only if its path does not exist at that moment
    (:func:`publish`); if one does, those already published are taken back and nothing of the set
    stays. The folders are flushed after."""
    folders = {os.path.dirname(os.path.abspath(path)) for _, path in moves}
    if replace:
        stale = [path for _, path in moves[1:][::-1] if os.path.lexists(path)]
        for path in stale:
            os.remove(path)
        if stale:
            for folder in folders:
                fsync_folder(folder)
        for temporary, path in moves:
            os.replace(temporary, path)
    else:
        published: List[Tuple[str, int]] = []
        try:
            for temporary, path in moves:
                inode = os.stat(temporary).st_ino
                publish(temporary, path, replace=False)
                published.append((path, inode))
        except BaseException:
            for path, inode in published:  # ours only: another run may have replaced it
                with contextlib.suppress(OSError):
                    if os.stat(path).st_ino == inode:
                        os.remove(path)
            raise
        for temporary, _ in moves:
            with contextlib.suppress(FileNotFoundError):
                os.remove(temporary)
    for folder in folders:
        fsync_folder(folder)


def publish(temporary: str, path: str, replace: bool = True) -> None:
    """Give the finished file ``temporary`` the name ``path``. With ``replace``, a rename over what
    is there; without, a hard link that fails if ``path`` exists (atomic: of two runs writing one
    new output, the second is refused with one line instead of replacing the first one's), then
    renameat2's ``RENAME_NOREPLACE`` where links are not supported, then, on file systems with
    neither, a check just before the rename."""
    if replace:
        os.replace(temporary, path)
        return
    try:
        os.link(temporary, path)
        return
    except FileExistsError:
        raise exists_error(path) from None
    except OSError as error:
        if error.errno not in NO_LINKS:
            raise
    if rename_noreplace(temporary, path):
        return
    if os.path.lexists(path):
        raise exists_error(path)
    os.replace(temporary, path)


# errors of os.link on file systems without hard links
NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}
RENAME_NOREPLACE = 1  # linux/fs.h
AT_FDCWD = -100


def exists_error(path: str) -> AccelDetError:
    return AccelDetError(
        f"output {path} already exists (another run wrote it meanwhile); pass --overwrite to "
        "replace it"
    )


def rename_noreplace(source: str, target: str) -> bool:
    """``renameat2(source, target, RENAME_NOREPLACE)``; False where the system has no such call."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(
        AT_FDCWD, os.fsencode(source), AT_FDCWD, os.fsencode(target), RENAME_NOREPLACE
    )
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code == errno.EEXIST:
        raise exists_error(target)
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), target)


def fsync_path(path: str) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def fsync_folder(folder: str) -> None:
    """Make the renames durable (not every system can open or sync a folder: then skip it)."""
    try:
        fsync_path(folder)
    except OSError:
        pass
