"""Regression gate: compare headline scores with a committed baseline table (the json or csv the leaderboard writes)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import HarnessError
from .escape import from_csv_cell, markdown
from .tables import long_rows, render


@dataclass(frozen=True)
class Comparison:
    model: str
    column: str
    baseline: float | None
    now: float | None
    status: str

    @property
    def failed(self) -> bool:
        return self.status in ("regressed", "missing", "protocol changed", "not finite")


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


def compare(current: dict, baseline: dict[tuple[str, str], dict], tolerance: float) -> list[Comparison]:
    """Every baseline entry against the current board, plus entries that are new."""
    now = {(r["model"], r["column"]): r for r in long_rows(current)}
    out = []
    for key in sorted(set(baseline) | set(now)):
        base, cur = baseline.get(key), now.get(key)
        if cur is None:
            status = "missing"
        elif base is None:
            status = "new"
        elif not (math.isfinite(base["value"]) and math.isfinite(cur["value"])):
            status = "not finite"
        elif (base["extraction_hash"], base["probe_hash"]) != (cur["extraction_hash"], cur["probe_hash"]):
            status = "protocol changed"
        else:
            gain = (cur["value"] - base["value"]) * (1 if cur["higher_is_better"] else -1)
            status = "regressed" if gain < -tolerance else "improved" if gain > tolerance else "ok"
        out.append(Comparison(key[0], key[1], base["value"] if base else None, cur["value"] if cur else None, status))
    return out


def markdown_report(rows: list[Comparison], tolerance: float) -> str:
    """A table for a CI log or $GITHUB_STEP_SUMMARY: every compared metric with its delta and status."""
    def fmt(x: float | None) -> str:
        return "" if x is None else f"{x:.4f}"

    lines = ["| model | task | baseline | now | delta | status |", "|---|---|---|---|---|---|"]
    for r in rows:
        delta = f"{r.now - r.baseline:+.4f}" if r.now is not None and r.baseline is not None else ""
        mark = "**" if r.failed else ""
        lines.append(f"| {markdown(r.model)} | {markdown(r.column, len(r.column))} | {fmt(r.baseline)} | "
                     f"{fmt(r.now)} | {delta} | {mark}{r.status}{mark} |")
    failed = sum(r.failed for r in rows)
    lines.append("")
    lines.append(f"{len(rows)} compared, {failed} failing (tolerance {tolerance} absolute)")
    return "\n".join(lines)


def write_baseline(path: Path, current: dict) -> None:
    fmt = "json" if path.suffix == ".json" else "csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(current, fmt) + "\n", encoding="utf-8")
