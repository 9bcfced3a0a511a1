"""Locks on a folder shared by writers: a short exclusive section (`locked`: shards of one extraction, leaderboard
submissions), and run locks (`run_lock`) that say who is writing, so that a second run on the same output is refused
with the name of the first instead of both writing the same files."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TextIO

from .environment import utc_now
from .errors import BusyError

RUN_PREFIX = ".run-"


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold an flock on `folder/.lock` for the block."""
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _holder(path: Path) -> str | None:
    """Who holds the run lock at `path` (its record), or None when no living process does.

    Never for a lock of this process: a POSIX lock is dropped when its process closes any handle on the file."""
    try:
        with open(path, "r+") as handle:
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
                return handle.read().strip() or "a run that is starting"
            return None
    except FileNotFoundError:
        return None


def running(folder: Path) -> list[str]:
    """The records of the living runs that hold run locks in `folder` (call it holding none of them yourself)."""
    return [holder for path in sorted(folder.glob(RUN_PREFIX + "*")) if (holder := _holder(path)) is not None]


def _busy(folder: Path, holder: str) -> BusyError:
    return BusyError(f"{folder}: another run is writing here ({holder}); let it finish, or stop it and run again to "
                     "resume")


def _refuse_if_busy(folder: Path, name: str, beside: Callable[[str], bool]) -> None:
    """BusyError naming the first living run in `folder` that holds `name`, or a lock `beside` does not accept."""
    for path in sorted(folder.glob(RUN_PREFIX + "*")):
        other = path.name[len(RUN_PREFIX):]
        if other == name or not beside(other):
            holder = _holder(path)
            if holder is not None:
                raise _busy(folder, holder)


def _take(handle: TextIO, folder: Path, note: str) -> str:
    """Lock the open run-lock file and write our record in it; returns the record found there (a killed holder's)."""
    try:
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            handle.seek(0)
            raise _busy(folder, handle.read().strip() or "a run that is starting") from None
        raise
    handle.seek(0)
    killed = handle.read().strip()
    handle.truncate(0)
    handle.write(f"{note}, pid {os.getpid()} on {socket.gethostname()}, since {utc_now()}\n")
    handle.flush()
    return killed


@contextmanager
def run_lock(folder: Path, name: str, note: str, beside: Callable[[str], bool]) -> Iterator[str]:
    """Hold the run lock `name` in `folder` (created if missing) for the block, its record (`note`, pid, host, start)
    written in it for a refused run to name.

    Refuses with BusyError while a living run holds `name` or a lock whose name `beside` rejects. The lock is a
    POSIX record lock: it dies with its process (forked workers do not inherit it; on NFS the server releases it),
    so the lock of a killed run is free and is taken over. Yields the record of that killed run, or "" when the
    last holder let go (the record is cleared on the way out, however the block ends)."""
    folder.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        with locked(folder):  # made and locked under the folder's lock, so the last run out cannot remove it between
            _refuse_if_busy(folder, name, beside)
            handle = stack.enter_context(open(folder / f"{RUN_PREFIX}{name}", "a+"))
            killed = _take(handle, folder, note)
        try:
            yield killed
        finally:
            handle.truncate(0)
