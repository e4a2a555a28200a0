"""The wheelhouse lock: one placement at a time into one wheelhouse (two users, Slurm array
tasks, two terminals), held only while placement scans, decides and renames.

POSIX record locks (`fcntl.lockf`) on `<wheelhouse>/.cbuild.lock`, not `flock`: record locks go
through the NFS lock protocol (NLM, or NFSv4's own), which is where shared wheelhouses live, and
Lustre/GPFS honour them too; `flock` is local to one client on several of those. A record lock
belongs to the process, so a thread lock per lock file serializes the threads of one process as
well. The kernel drops the lock when its holder dies: a stale file never blocks anyone, and the
holder written into it (pid, host, when, what) is only for the message of whoever waits.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from builder.errors import PlacementError

LOCK_NAME = ".cbuild.lock"
# Placing copies whole wheels under the lock (a CUDA wheel is GBs over NFS): minutes, not seconds.
DEFAULT_TIMEOUT = float(os.environ.get("CBUILD_LOCK_TIMEOUT", "600"))
_POLL = 0.1  # seconds between tries, doubling up to _POLL_MAX
_POLL_MAX = 2.0

_threads: dict[str, threading.Lock] = {}
_threads_guard = threading.Lock()


def lock_path(wheelhouse: Path) -> Path:
    return Path(wheelhouse) / LOCK_NAME


def holder(wheelhouse: Path) -> str:
    """Who holds (or last held) the lock, as its holder wrote it; "" when unknown."""
    try:
        return lock_path(wheelhouse).read_text(errors="replace").strip()
    except OSError:
        return ""


@contextlib.contextmanager
def wheelhouse_lock(
    wheelhouse: Path, what: str = "cbuild place", timeout: float | None = None
) -> Iterator[Path]:
    """Hold the wheelhouse's lock for the block; wait up to `timeout` seconds (default
    $CBUILD_LOCK_TIMEOUT or 600), then raise a PlacementError that names the holder."""
    wheelhouse = Path(wheelhouse)
    wheelhouse.mkdir(parents=True, exist_ok=True)
    path = lock_path(wheelhouse)
    limit = DEFAULT_TIMEOUT if timeout is None else timeout
    deadline = time.monotonic() + limit
    in_process = _thread_lock(path)
    if not in_process.acquire(timeout=max(limit, 0)):
        raise _busy(wheelhouse, limit, "another thread of this process")
    try:
        fd = _open(path, wheelhouse)
        try:
            _acquire(fd, wheelhouse, deadline, limit)
            os.ftruncate(fd, 0)
            when = time.strftime("%Y-%m-%d %H:%M:%S %z")
            os.pwrite(
                fd,
                f"pid {os.getpid()} on {socket.gethostname()} since {when}: {what}\n".encode(),
                0,
            )
            try:
                yield path
            finally:
                os.ftruncate(fd, 0)  # released: nobody holds it now
                fcntl.lockf(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    finally:
        in_process.release()


def _thread_lock(path: Path) -> threading.Lock:
    key = os.path.realpath(path)
    with _threads_guard:
        return _threads.setdefault(key, threading.Lock())


def _open(path: Path, wheelhouse: Path) -> int:
    # 0o666 less the umask: on a group-shared wheelhouse (umask 002) every member can lock.
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except PermissionError as exc:
        raise PlacementError(
            f"cannot open the wheelhouse lock {path} for writing: {exc.strerror}",
            fix=f"ask its owner to make it writable for you (chmod g+w {path}), or place "
            f"into a wheelhouse you can write to",
        ) from exc
    except OSError as exc:
        raise PlacementError(
            f"cannot create the wheelhouse lock {path}: {exc.strerror}",
            fix=f"check that {wheelhouse} is a folder you can write to",
        ) from exc


def _acquire(fd: int, wheelhouse: Path, deadline: float, limit: float) -> None:
    pause = _POLL
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise PlacementError(
                    f"cannot lock the wheelhouse {wheelhouse}: {exc.strerror} (errno "
                    f"{errno.errorcode.get(exc.errno, exc.errno)})",
                    fix="the file system refuses POSIX locks (an NFS mount with nolock, or "
                    "no lock daemon): mount it with locking, or place from one process only",
                ) from exc
        if time.monotonic() >= deadline:
            raise _busy(wheelhouse, limit, holder(wheelhouse) or "a holder that wrote nothing")
        time.sleep(pause)
        pause = min(pause * 2, _POLL_MAX)


def _busy(wheelhouse: Path, limit: float, who: str) -> PlacementError:
    return PlacementError(
        f"the wheelhouse {wheelhouse} is being placed into by {who}; waited {limit:g} s",
        fix="wait for that placement to finish and run again, or raise CBUILD_LOCK_TIMEOUT "
        "(seconds); a holder that died has released the lock already",
    )


__all__ = ["DEFAULT_TIMEOUT", "LOCK_NAME", "holder", "lock_path", "wheelhouse_lock"]
