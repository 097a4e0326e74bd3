"""Publishing a local output directory: one lock per name, an atomic swap, stale temp sweeping.

A job writes ``<prefix>/.<name>.incomplete-XXXXXXXX/`` and, from prepare to commit, holds an
exclusive ``flock`` on ``<prefix>/.<name>.lock``: a second job for the same prefix and name fails
at once, naming the conflict. At commit the directory is moved into place in one step:

- no ``<name>`` yet: ``renameat2(RENAME_NOREPLACE)`` (a plain ``rename`` where that is missing);
- ``<name>`` exists (a fixed ``output_directory_name``): ``renameat2(RENAME_EXCHANGE)`` swaps the
  new set and the old one atomically, and the old one, now under the hidden temporary name, is
  deleted. A reader sees the old complete set or the new one at every instant, whatever is killed
  when. Where the exchange is not supported (non-Linux, some filesystems), the old set is moved
  aside under a hidden name first: a short window without a set, never a mixed one.

Hidden temporary directories whose job is gone (its lock is free) are swept by the next job that
writes under the same prefix.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import shutil
import time

from batchpredict.errors import UserError

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
_AT_FDCWD = -100
TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(incomplete|replaced)-[0-9a-f]{8}$")
# A temporary directory without a lock file (written by an older version) is swept after this.
LEGACY_TEMP_AGE_SECONDS = 3600.0

_renameat2_fn = None


def _libc_renameat2():
    global _renameat2_fn
    if _renameat2_fn is None:
        try:
            _renameat2_fn = ctypes.CDLL(None, use_errno=True).renameat2
        except (AttributeError, OSError):
            _renameat2_fn = False
    return _renameat2_fn


def renameat2(src: str, dst: str, flags: int) -> bool:
    """``renameat2(src, dst, flags)``; False where the call or the flag is not supported.

    Raises:
        OSError: any other failure (e.g. EEXIST for RENAME_NOREPLACE).
    """
    fn = _libc_renameat2()
    if not fn:
        return False
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), src, None, dst)


def lock_path(prefix: str, name: str) -> str:
    """The lock file of ``<prefix>/<name>``."""
    return os.path.join(prefix, f".{name}.lock")


def try_lock(path: str) -> int | None:
    """An fd holding an exclusive flock on ``path`` (created if missing), or None if held."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:  # the holder may have unlinked it between our open and flock: retry on the new one
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def release(path: str, fd: int | None) -> None:
    """Removes the lock file and releases the lock."""
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.unlink(path)
    with contextlib.suppress(OSError):
        os.close(fd)


def acquire(prefix: str, name: str) -> int:
    """Locks ``<prefix>/<name>`` for this job.

    Raises:
        UserError: another job holds it.
    """
    path = lock_path(prefix, name)
    fd = try_lock(path)
    if fd is None:
        raise UserError(
            f"Another batch prediction job is writing {os.path.join(prefix, name)!r} right now "
            f"(its lock {path!r} is held). Wait for it to finish, or give this job another "
            "output_directory_name."
        )
    return fd


def sweep(prefix: str, own_name: str, own_tmp: str) -> list[str]:
    """Deletes hidden temporary directories under ``prefix`` whose job is gone.

    The caller holds the lock of ``own_name``: every temporary directory of that name but its
    own is stale. For other names, a free lock means their job is gone.

    Returns:
        The directories removed.
    """
    removed = []
    try:
        entries = os.listdir(prefix)
    except OSError:
        return removed
    for entry in entries:
        m = TEMP_RE.match(entry)
        path = os.path.join(prefix, entry)
        if not m or path == own_tmp or not os.path.isdir(path) or os.path.islink(path):
            continue
        name = m.group("name")
        if name == own_name:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
            continue
        lock = lock_path(prefix, name)
        if not os.path.exists(lock):
            with contextlib.suppress(OSError):
                if time.time() - os.stat(path).st_mtime < LEGACY_TEMP_AGE_SECONDS:
                    continue
        fd = try_lock(lock)
        if fd is None:
            continue  # its job is running
        try:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            release(lock, fd)
    return removed


def publish(tmp: str, final: str) -> None:
    """Moves the complete directory ``tmp`` to ``final``, replacing a previous set atomically."""
    try:
        if renameat2(tmp, final, RENAME_NOREPLACE):
            return
        if not os.path.exists(final):
            os.rename(tmp, final)
            return
    except OSError as err:
        if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
    if os.path.islink(final) or not os.path.isdir(final):
        raise UserError(
            f"{final!r} exists and is not a directory; batch prediction will not replace it. "
            "Remove it or choose another output_directory_name."
        )
    if renameat2(tmp, final, RENAME_EXCHANGE):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous set
        return
    # Hidden, and swept if this process dies before deleting it.
    aside = os.path.join(os.path.dirname(tmp), _aside_name(os.path.basename(tmp)))
    os.rename(final, aside)
    os.rename(tmp, final)
    shutil.rmtree(aside, ignore_errors=True)


def _aside_name(tmp_name: str) -> str:
    return tmp_name.replace(".incomplete-", ".replaced-", 1)
