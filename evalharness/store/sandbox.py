"""Work on files we did not write runs in a confined child process, so that nothing in them can hurt the caller.

HDF5 itself can crash on a crafted file (a corrupt variable-length type), loop forever
(a corrupt heap) or allocate without bound, and no check written in Python can run
before HDF5 parses what it checks. So `validate`, `probe` and `submit` first run the
checks in a child limited in address space, CPU and wall time, the size of the files
it writes, without core dumps, in its own process group, killed with its parent
(PR_SET_PDEATHSIG on Linux). The child prints one JSON line; a crash, a timeout or an
exhausted limit becomes one line naming the file. `python -m evalharness.store.sandbox
FILE LIMITS LAZY` is the check child itself. What a child writes goes to a `scratch`
folder, which a later caller sweeps away if its owner was killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import StoreError
from ..untrusted import one_line
from .limits import Limits, summary

PR_SET_PDEATHSIG = 1
CHECK_SECONDS = 30
BYTES_PER_SECOND = 10 << 20  # the slowest reading the time limit allows for, beyond CHECK_SECONDS
CRASHES = {signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL, signal.SIGFPE}
DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
CPU_GRACE = 5  # seconds between SIGXCPU (the soft limit: a one-line error) and SIGKILL (the hard limit)


@dataclass(frozen=True)
class Confinement:
    """What a confined child may use: address space, CPU and wall seconds, the largest file it may write."""

    memory: int = 8 << 30
    seconds: int = 600
    file_bytes: int = 0


def seconds_for(path: Path, base: int = CHECK_SECONDS) -> int:
    """Time to read a file of this size: `base` seconds plus one per BYTES_PER_SECOND."""
    return base + path.stat().st_size // BYTES_PER_SECOND


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's prctl, looked up before any fork (nothing may be loaded between fork and exec), or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _limit(kind: int, value: int, grace: int = 0) -> tuple[int, int]:
    """(soft, hard) for a resource: `value` and `value + grace`, or the current hard limit where that is lower."""
    hard = resource.getrlimit(kind)[1]
    return tuple(v if hard == resource.RLIM_INFINITY else min(v, hard) for v in (value, value + grace))


def _preexec(confinement: Confinement, parent: int) -> Callable[[], None]:
    """What the child runs between fork and exec: die with the parent (and at once if it is already gone), then
    take the limits (computed here, in the parent)."""
    prctl = _prctl()
    limits = [(resource.RLIMIT_AS, _limit(resource.RLIMIT_AS, confinement.memory)),
              (resource.RLIMIT_CPU, _limit(resource.RLIMIT_CPU, confinement.seconds, CPU_GRACE)),
              (resource.RLIMIT_FSIZE, _limit(resource.RLIMIT_FSIZE, confinement.file_bytes)),
              (resource.RLIMIT_CORE, (0, 0))]

    def apply() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:
                os._exit(1)
        for kind, pair in limits:
            resource.setrlimit(kind, pair)

    return apply


def _killed(where: Path, code: int, confinement: Confinement) -> StoreError:
    """The one-line error for a child that a signal ended."""
    try:
        sig = signal.Signals(-code)
    except ValueError:
        sig = None
    name = sig.name if sig else f"signal {-code}"
    if sig in CRASHES:
        return StoreError(f"{where}: reading it crashed HDF5 in the sandbox ({name}): the file is corrupt or hostile")
    if sig == signal.SIGXCPU:
        return StoreError(f"{where}: reading it used more than {confinement.seconds} s of CPU in the sandbox (stopped)")
    return StoreError(f"{where}: the sandbox reading it was killed ({name})")


def _kill_group(child: subprocess.Popen) -> None:
    """SIGKILL to a child not yet reaped and to every process it started (its process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)


def run_confined(argv: list[str], where: Path, confinement: Confinement) -> dict:
    """Run `python ARGV` confined and return the JSON object its last line of output holds.

    Raises StoreError, one line naming `where`, when the child crashes, is killed, runs past
    `confinement.seconds` of wall time or answers nothing; the child's whole process group is
    killed when the caller stops waiting for it (a timeout, Ctrl-C)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    with subprocess.Popen([sys.executable, *argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env, process_group=0,
                          preexec_fn=_preexec(confinement, os.getpid())) as child:
        try:
            out, err = child.communicate(timeout=confinement.seconds)
        except subprocess.TimeoutExpired:
            _kill_group(child)
            child.communicate()
            raise StoreError(f"{where}: reading it took longer than {confinement.seconds} s in the sandbox "
                             "(stopped)") from None
        except BaseException:
            _kill_group(child)
            raise
    if child.returncode < 0:
        raise _killed(where, child.returncode, confinement)
    lines = out.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if child.returncode == 0 and lines else None
    except json.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict):
        reason = (err.strip().splitlines() or [f"exit status {child.returncode}"])[-1]
        raise StoreError(f"{where}: the sandbox reading it failed ({one_line(reason, 200)})")
    return answer


def memory_problem(path: Path) -> str:
    """The one line for a MemoryError in a confined child: the file needs more than the child's address space."""
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    shown = "unlimited" if limit == resource.RLIM_INFINITY else f"{limit} bytes"
    return f"{path}: reading it needs more memory than the sandbox allows ({shown})"


def check_file(path: str | Path, limits: Limits = Limits(), lazy: bool = True,
               confinement: Confinement | None = None) -> list[str]:
    """Every problem of an embedding file (`checks.file_problems`), found in a confined child: one printable line
    each, or one line for a child that crashed, hung or ran out of memory. `lazy` also reads the token features and
    dense maps, which readers otherwise check as they read them."""
    path = Path(path)
    if not path.is_file():
        from .checks import file_problems

        return file_problems(path, limits)
    confinement = confinement or Confinement(seconds=seconds_for(path))
    argv = ["-m", "evalharness.store.sandbox", str(path), json.dumps(asdict(limits)), str(int(lazy))]
    try:
        answer = run_confined(argv, path, confinement)
    except StoreError as exc:
        return [str(exc)]
    return [one_line(str(p)) for p in answer.get("problems", [])]


def require_valid(path: str | Path, limits: Limits = Limits(), lazy: bool = False) -> None:
    """Raise StoreError, one line, unless `check_file` finds no problem."""
    problems = check_file(path, limits, lazy)
    if problems:
        raise StoreError(summary(problems))


@contextmanager
def scratch(root: Path) -> Iterator[Path]:
    """A fresh private folder under `root` (created if missing, never through a link), locked while the block runs
    and removed after it. Folders under `root` that no live process holds (left by one that was killed) are removed
    first; creating and sweeping happen under a lock on `root` itself, so two callers never remove each other's."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(root)
    root_fd = os.open(root, DIRECTORY)
    try:
        fcntl.flock(root_fd, fcntl.LOCK_EX)
        _sweep(root)
        path = Path(tempfile.mkdtemp(dir=root))
        fd = os.open(path, DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX)
    finally:
        os.close(root_fd)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


def _sweep(root: Path) -> None:
    """Remove what no live process holds under `root`: unlocked folders, and anything that is not a folder."""
    for entry in os.scandir(root):
        if not entry.is_dir(follow_symlinks=False):
            os.unlink(entry.path)
            continue
        fd = os.open(entry.path, DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue
        else:
            shutil.rmtree(entry.path, ignore_errors=True)
        finally:
            os.close(fd)


def _child(path: Path, limits: Limits, lazy: bool) -> dict:
    """In the child: the problems of the file, a MemoryError as one of them."""
    from .checks import file_problems

    try:
        return {"problems": file_problems(path, limits, check_lazy=lazy)}
    except MemoryError:
        return {"problems": [memory_problem(path)]}


if __name__ == "__main__":
    print(json.dumps(_child(Path(sys.argv[1]), Limits(**json.loads(sys.argv[2])), sys.argv[3] == "1")))
