"""Progress of long work: a bar with rate and ETA on a terminal, a plain line now and then in logs (Slurm, CI),
nothing with --quiet."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from types import TracebackType

from tqdm import tqdm

from .untrusted import one_line

LINE_SECONDS = 30.0  # in a log, a line at least this often...
LINE_FRACTION = 0.1  # ...and at least every tenth of the total, whichever comes first
RELAY_SECONDS = 1.0  # how often `relayed` looks for new lines
RELAY_BYTES = 1 << 16  # the most it reads at once


def _duration(seconds: float) -> str:
    """Seconds as H:MM:SS."""
    return str(timedelta(seconds=round(seconds)))


def _plural(unit: str) -> str:
    """frame -> frames, batch -> batches."""
    return unit + ("es" if unit.endswith(("s", "sh", "ch", "x")) else "s")


class LogLines:
    """Progress for output that is not a terminal: a line `desc: 40/90 frames, 2.1 frames/s, ETA 0:00:24` on
    stderr when LINE_SECONDS have passed or LINE_FRACTION of the total was done since the last line, and one at
    the end; it takes what callers use of a tqdm bar (`update`, `n`, `refresh`, `close`, `with`)."""

    def __init__(self, total: int, desc: str, unit: str, initial: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self._clock = clock
        self._start = self._shown_at = clock()
        self._start_n = self._shown_n = initial

    def update(self, n: int = 1) -> None:
        """Count `n` more units done and print a line if one is due."""
        self.n += n
        self.refresh()

    def refresh(self) -> None:
        """Print a line if one is due (callers may also set `n` directly and then refresh)."""
        now = self._clock()
        if now - self._shown_at >= LINE_SECONDS or self.n - self._shown_n >= LINE_FRACTION * max(self.total, 1):
            self._show(now)

    def close(self) -> None:
        """Print the last line, unless the last printed line already says it."""
        if self.n != self._shown_n:
            self._show(self._clock())

    def line(self, now: float) -> str:
        """What the line says at time `now`: done of total, the rate since the start, and the time left at that rate."""
        elapsed = now - self._start
        rate = (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0
        left = max(self.total - self.n, 0)
        eta = "done" if left == 0 else f"ETA {_duration(left / rate)}" if rate > 0 else "ETA ?"
        units = _plural(self.unit)
        return f"{self.desc}: {self.n}/{self.total} {units}, {rate:.1f} {units}/s, {eta}"

    def _show(self, now: float) -> None:
        print(self.line(now), file=sys.stderr, flush=True)
        self._shown_at, self._shown_n = now, self.n

    def __enter__(self) -> LogLines:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def bar(total: int, desc: str, unit: str, quiet: bool = False, initial: int = 0) -> tqdm | LogLines:
    """The one progress helper: a tqdm bar when stderr is a terminal, `LogLines` when it is not (a log keeps a line
    every 30 s or 10%), silent when `quiet`."""
    if quiet or sys.stderr.isatty():
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, smoothing=0.1,
                    disable=quiet, file=sys.stderr)
    return LogLines(total, desc, unit, initial)


def _relay_new_lines(log: Path, offset: int) -> int:
    """Print the complete lines appended to `log` since `offset` (cleaned to one line each); the new offset."""
    try:
        fd = os.open(log, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return offset
    with os.fdopen(fd, "rb") as handle:
        handle.seek(offset)
        chunk = handle.read(RELAY_BYTES)
    done = chunk.rfind(b"\n") + 1
    if not done and len(chunk) == RELAY_BYTES:  # no line ends within a whole read: skip it, it is no progress line
        return offset + len(chunk)
    for line in chunk[:done].decode("utf-8", "replace").splitlines():
        print(one_line(line, 300), file=sys.stderr, flush=True)
    return offset + done


@contextlib.contextmanager
def relayed(log: Path, quiet: bool = False) -> Iterator[None]:
    """While the block runs, print on stderr the progress lines another process (a confined child, whose stderr is
    captured) appends to `log`, each cleaned to one printable line; nothing when `quiet`."""
    if quiet:
        yield
        return
    stop = threading.Event()

    def relay() -> None:
        offset = 0
        while not stop.wait(RELAY_SECONDS):
            offset = _relay_new_lines(log, offset)
        _relay_new_lines(log, offset)

    thread = threading.Thread(target=relay, name="progress relay", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
