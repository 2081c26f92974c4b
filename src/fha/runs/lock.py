"""One writer per run folder: ``RUN_DIR/.fha-lock``, held with an advisory ``flock`` while a run writes.

The lock file records its owner (pid, host, start time) so that a refused second writer can
say who holds the folder. The operating system releases a ``flock`` when its process dies,
so a lock file left by a killed run is stale by construction and the next writer takes it
over. Where the filesystem does not support ``flock`` (some network mounts), the recorded
owner decides: a live process of the same host keeps the folder, anything else is stale.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from fha.errors import FhaError

log = logging.getLogger(__name__)

LOCK_FILE = ".fha-lock"
_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


class RunFolderInUse(FhaError):
    """Another live process is writing the run folder."""


def _owner_record() -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


def _read_owner(fd: int) -> dict[str, object]:
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        owner = json.loads(os.read(fd, 4096).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return {}
    return owner if isinstance(owner, dict) else {}


def describe_owner(owner: dict[str, object]) -> str:
    if not owner:
        return "another process"
    return f"pid {owner.get('pid')} on host {owner.get('host')} (since {owner.get('started')})"


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _refuse(folder: Path, owner: dict[str, object]) -> RunFolderInUse:
    return RunFolderInUse(
        f"{folder}: in use by {describe_owner(owner)}; wait for that run to finish or stop "
        "it first (one process writes a run folder at a time)"
    )


def _acquire(folder: Path) -> int:
    """An open descriptor of the lock file, locked by this process; RunFolderInUse if another holds it."""
    path = folder / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(fd)
            os.close(fd)
            raise _refuse(folder, owner) from None
        except OSError as err:
            if err.errno not in _UNSUPPORTED:
                os.close(fd)
                raise
            owner = _read_owner(fd)
            if (
                owner.get("host") == socket.gethostname()
                and owner.get("pid") != os.getpid()
                and _pid_alive(owner.get("pid"))
            ):
                os.close(fd)
                raise _refuse(folder, owner) from None
        try:
            same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        os.close(fd)  # the previous owner removed the file between our open and our lock: try again
    previous = _read_owner(fd)
    if previous:
        log.info("%s: took over the lock of %s, which has ended", folder, describe_owner(previous))
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(_owner_record()) + "\n").encode("utf-8"))
    return fd


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold the run folder's lock (the folder must exist) for the duration of the block."""
    fd = _acquire(folder)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            (folder / LOCK_FILE).unlink()
        os.close(fd)
