"""Leaderboard tables from result records: one row per model, one column per protocol x probe metric.

Models whose 95% CIs overlap on a task share a rank range instead of being ordered;
a model's mean rank is over the tasks it covers (the midpoint of each range).
Different versions of a protocol never share a column.
"""

from __future__ import annotations

import csv
import io
import json

import pandas as pd
from tabulate import tabulate

NOTE = "Values in percent with 95% bootstrap CI and rank (a range where CIs overlap); * = non-conforming run."


def _model(record: dict) -> str:
    return record["model"] + (f"@{record['model_revision']}" if record["model_revision"] else "")


def board(records: list[dict], metric: str = "headline") -> dict:
    """The leaderboard as data: columns, and per model its cells, coverage and mean rank (newest record wins)."""
    cells: dict[str, dict[str, dict]] = {}
    for r in sorted(records, key=lambda r: r["created_utc"]):
        names = [r["headline"]] if metric == "headline" else sorted(r["metrics"])
        for name in names:
            column = f"{r['protocol']} v{r['protocol_version']} / {r['probe']} {name}"
            m = r["metrics"][name]
            cells.setdefault(_model(r), {})[column] = {
                "value": m["value"], "ci_low": m["ci_low"], "ci_high": m["ci_high"], "n": m["n"],
                "conforming": r["conforming"], "protocol": r["protocol"], "protocol_version": r["protocol_version"],
                "probe": r["probe"], "metric": name, "extraction_hash": r["extraction_hash"],
                "probe_hash": r["probe_hash"], "manifest_hash": r["manifest_hash"],
                "lower_is_better": name.endswith(("MdR", "MnR"))}
    columns = sorted({c for row in cells.values() for c in row})
    for column in columns:
        _rank(column, [row[column] for row in cells.values() if column in row])
    rows = []
    for model in sorted(cells):
        ranks = [(c["rank_low"] + c["rank_high"]) / 2 for c in cells[model].values()]
        rows.append({"model": model, "coverage": f"{len(cells[model])}/{len(columns)}",
                     "mean_rank": sum(ranks) / len(ranks), "cells": cells[model]})
    rows.sort(key=lambda row: (-len(row["cells"]), row["mean_rank"], row["model"]))
    return {"format": "evalharness.leaderboard", "schema_version": 1, "metric": metric, "columns": columns, "rows": rows}


def _rank(column: str, cells: list[dict]) -> None:
    """Rank range per cell: 1 + models clearly better, up to N - models clearly worse (CIs not overlapping)."""
    sign = -1 if cells and cells[0]["lower_is_better"] else 1
    for cell in cells:
        low, high = sorted((sign * cell["ci_low"], sign * cell["ci_high"]))
        better = sum(1 for o in cells if min(sign * o["ci_low"], sign * o["ci_high"]) > high)
        worse = sum(1 for o in cells if max(sign * o["ci_low"], sign * o["ci_high"]) < low)
        cell["rank_low"], cell["rank_high"] = 1 + better, len(cells) - worse


def _text(cell: dict, percent: bool = True) -> str:
    scale = 100 if percent and not cell["lower_is_better"] else 1
    rank = f"{cell['rank_low']}" if cell["rank_low"] == cell["rank_high"] else f"{cell['rank_low']}-{cell['rank_high']}"
    return (f"{scale * cell['value']:.1f} [{scale * cell['ci_low']:.1f}, {scale * cell['ci_high']:.1f}] #{rank}"
            + ("" if cell["conforming"] else " *"))


def frame(data: dict) -> pd.DataFrame:
    """The display table: a row per model, a text cell per column, coverage and mean rank."""
    table = pd.DataFrame([{"model": row["model"], **{c: _text(row["cells"][c]) if c in row["cells"] else ""
                                                      for c in data["columns"]},
                           "coverage": row["coverage"], "mean rank": f"{row['mean_rank']:.2f}"} for row in data["rows"]],
                         columns=["model", *data["columns"], "coverage", "mean rank"])
    return table.set_index("model")


def long_rows(data: dict) -> list[dict]:
    """One row per model and column with every number and hash: what csv holds and `check` reads."""
    keys = ("value", "ci_low", "ci_high", "n", "rank_low", "rank_high", "conforming", "extraction_hash", "probe_hash",
            "manifest_hash")
    return [{"model": row["model"], "column": column, **{k: row["cells"][column][k] for k in keys}}
            for row in data["rows"] for column in data["columns"] if column in row["cells"]]


def render(data: dict, fmt: str = "markdown") -> str:
    if fmt == "html":
        from .html import page

        return page(data)
    if fmt == "json":
        return json.dumps(data, indent=1, sort_keys=True)
    if fmt == "csv":
        out = io.StringIO()
        rows = long_rows(data)
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["model", "column"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    table = frame(data)
    if fmt == "latex":
        return tabulate(table, headers="keys", tablefmt="latex_booktabs")
    return tabulate(table, headers="keys", tablefmt="github") + ("\n\n" + NOTE if len(table) else "")


def markdown(records: list[dict]) -> str:
    return render(board(records), "markdown")
