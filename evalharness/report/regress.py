"""Regression gate: compare headline scores with a committed baseline table (the json or csv the leaderboard writes)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import HarnessError
from ..metrics import FRACTION
from .escape import from_csv_cell, markdown
from .tables import long_rows, render

HASHES = ("extraction", "manifest", "probe")  # what a baseline row stores as <name>_hash
LOUD = 5.0  # points: a tolerance above this lets real changes pass, and `check` says so


@dataclass(frozen=True)
class Comparison:
    """One (model, column) of the baseline or the board: both values as stored (shares as fractions), the unit
    that says how people read them, the status, and for a changed protocol which hashes changed."""

    model: str
    column: str
    baseline: float | None
    now: float | None
    status: str
    unit: str = FRACTION
    changed: tuple[str, ...] = ()  # the hashes that differ from the baseline's, for "protocol changed"

    @property
    def failed(self) -> bool:
        return self.status in ("regressed", "missing", "protocol changed", "not finite")

    @property
    def delta(self) -> float | None:
        """Now minus baseline, in points for a share and rank units for a rank."""
        if self.now is None or self.baseline is None:
            return None
        return _scale(self.unit) * (self.now - self.baseline)


def _scale(unit: str) -> float:
    """Shares are read in percent (points), ranks as they are."""
    return 100.0 if unit == FRACTION else 1.0


def read_baseline(path: Path) -> dict[tuple[str, str], dict]:
    """(model, column) -> row (value and hashes), from a leaderboard table in json or csv, of any schema version."""
    if not path.is_file():
        raise HarnessError(f"{path}: baseline not found")
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            rows = [{"model": row["model"], "column": column, **row["cells"][column]}
                    for row in data["rows"] for column in data["columns"] if column in row["cells"]]
        else:
            with path.open(newline="", encoding="utf-8") as handle:
                rows = [{k: from_csv_cell(v) for k, v in row.items()} for row in csv.DictReader(handle)]
        return {(r["model"], r["column"]): {**r, "value": float(r["value"])} for r in rows}
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
        raise HarnessError(f"{path}: not a leaderboard table (json or csv) as the leaderboard writes them ({exc})") from None


def changed_hashes(base: dict, cur: dict) -> tuple[str, ...]:
    """Which of the extraction, manifest and probe hashes differ (a hash an old baseline lacks is not compared)."""
    return tuple(name for name in HASHES if f"{name}_hash" in base and base[f"{name}_hash"] != cur[f"{name}_hash"])


def compare(current: dict, baseline: dict[tuple[str, str], dict], tolerance: float) -> list[Comparison]:
    """Every baseline entry against the current board, plus entries that are new; `tolerance` is in points for a
    share and in rank units for a rank."""
    now = {(r["model"], r["column"]): r for r in long_rows(current)}
    out = []
    for key in sorted(set(baseline) | set(now)):
        base, cur = baseline.get(key), now.get(key)
        unit = (cur or base).get("unit", FRACTION)
        changed: tuple[str, ...] = ()
        if cur is None:
            status = "missing"
        elif base is None:
            status = "new"
        elif not (math.isfinite(base["value"]) and math.isfinite(cur["value"])):
            status = "not finite"
        elif changed := changed_hashes(base, cur):
            status = "protocol changed"
        else:
            gain = _scale(unit) * (cur["value"] - base["value"]) * (1 if cur["higher_is_better"] else -1)
            status = "regressed" if gain < -tolerance else "improved" if gain > tolerance else "ok"
        out.append(Comparison(key[0], key[1], base["value"] if base else None, cur["value"] if cur else None, status,
                              unit, changed))
    return out


def tolerance_warning(rows: list[Comparison], tolerance: float) -> str | None:
    """A warning when the tolerance lets a share move more than LOUD points without failing, or None."""
    if tolerance <= LOUD:
        return None
    hidden = [r for r in rows if r.unit == FRACTION and r.status == "ok" and abs(r.delta or 0.0) > LOUD]
    return (f"warning: a tolerance of {tolerance:g} points lets a score move more than {LOUD:g} points without "
            f"failing; {len(hidden)} score(s) moved more than {LOUD:g} points and passed as ok")


def markdown_report(rows: list[Comparison], tolerance: float) -> str:
    """A table for a CI log or $GITHUB_STEP_SUMMARY: every compared metric (shares in percent) with its delta (in
    points) and status, which hashes changed, and a warning when the tolerance hides real changes."""
    def fmt(r: Comparison, x: float | None) -> str:
        return "" if x is None else f"{_scale(r.unit) * x:.2f}"

    lines = ["| model | task | baseline | now | delta | status |", "|---|---|---|---|---|---|"]
    for r in rows:
        delta = "" if r.delta is None else f"{r.delta:+.2f}"
        mark = "**" if r.failed else ""
        status = r.status + (": " + ", ".join(f"{name} hash" for name in r.changed) if r.changed else "")
        lines.append(f"| {markdown(r.model)} | {markdown(r.column, len(r.column))} | {fmt(r, r.baseline)} | "
                     f"{fmt(r, r.now)} | {delta} | {mark}{status}{mark} |")
    failed = sum(r.failed for r in rows)
    lines.append("")
    lines.append(f"{len(rows)} compared, {failed} failing (shares in percent, deltas in points; tolerance "
                 f"{tolerance:g} points for shares, {tolerance:g} for ranks)")
    warning = tolerance_warning(rows, tolerance)
    return "\n".join(lines + ([warning] if warning else []))


def write_baseline(path: Path, current: dict) -> None:
    """The current board as a baseline table: json or csv by the file's suffix, every cell with its three hashes."""
    fmt = "json" if path.suffix == ".json" else "csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(current, fmt) + "\n", encoding="utf-8")
