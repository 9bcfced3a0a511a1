"""The leaderboard model: from result records to rows, columns, cells with rank ranges, coverage and mean rank.

Models whose 95% CIs overlap on a task share a rank range instead of being ordered;
a model's mean rank is over the tasks it covers (the midpoint of each range). A
non-conforming cell (another card's file, a smoke run) is shown but neither ranked nor
counted in coverage or mean rank, unless the board ranks all.
Different versions of a protocol never share a column. Every renderer (markdown,
csv, latex, json, html) and the CI gate read this model.
"""

from __future__ import annotations

import re

from ..metrics import FRACTION, INTERVALS
from .chance import chance


def note(data: dict) -> str:
    """The footnote of a table: units, how the intervals in it were computed, and what the marks mean."""
    used = sorted({c["interval"] for row in data["rows"] for c in row["cells"].values()})
    methods = "; ".join(f"{INTERVALS[m]}" for m in used) or INTERVALS["bootstrap"]
    counted = ("ranked with the others (--rank-all)" if data.get("rank_all")
               else "shown, not ranked, not counted in coverage or mean rank")
    return (f"Shares in percent with a 95% CI ({methods}) and rank (a range where CIs overlap); "
            f"* = non-conforming run (a file from another card or manifest, or a smoke run with --limit): {counted}; "
            "\u2020 = the record states a caveat (such as k capped at the train size).")


def model_name(record: dict) -> str:
    """The row a record belongs to: model@revision."""
    return record["model"] + (f"@{record['model_revision']}" if record["model_revision"] else "")


def board(records: list[dict], metric: str = "headline", rank_all: bool = False) -> dict:
    """The leaderboard as data: columns, and per model its cells, coverage and mean rank (newest record wins);
    non-conforming cells are ranked and counted only with `rank_all`."""
    cells: dict[str, dict[str, dict]] = {}
    for r in sorted(records, key=lambda r: r["created_utc"]):
        names = [r["headline"]] if metric == "headline" else sorted(r["metrics"])
        for name in names:
            column = f"{r['protocol']} v{r['protocol_version']} / {r['probe']} {name}"
            m = r["metrics"][name]
            cells.setdefault(model_name(r), {})[column] = {
                "value": m["value"], "ci_low": m["ci_low"], "ci_high": m["ci_high"], "n": m["n"],
                "higher_is_better": m["higher_is_better"], "unit": m["unit"],
                "interval": m.get("interval", "bootstrap"), "caveat": bool(r.get("caveats")),
                "conforming": r["conforming"], "protocol": r["protocol"], "protocol_version": r["protocol_version"],
                "probe": r["probe"], "metric": name, "headline": name == r["headline"], "extraction_hash": r["extraction_hash"],
                "probe_hash": r["probe_hash"], "manifest_hash": r["manifest_hash"], "chance": chance(r, name)}
    columns = sorted({c for row in cells.values() for c in row}, key=natural)
    for column in columns:
        _rank([row[column] for row in cells.values() if column in row], rank_all)
    ranked = []
    for model in sorted(cells):
        ranks = [(c["rank_low"] + c["rank_high"]) / 2 for c in cells[model].values() if c["rank_low"] is not None]
        ranked.append((len(ranks), {"model": model, "coverage": f"{len(ranks)}/{len(columns)}",
                                    "mean_rank": sum(ranks) / len(ranks) if ranks else None, "cells": cells[model]}))
    ranked.sort(key=lambda pair: (-pair[0], pair[1]["mean_rank"] or 0.0, pair[1]["model"]))
    rows = [row for _, row in ranked]
    return {"format": "evalharness.leaderboard", "schema_version": 2, "metric": metric, "rank_all": rank_all,
            "columns": columns, "rows": rows}


def natural(text: str) -> list:
    """A sort key that orders numbers inside names by value: R@5 before R@10, top1@k20 before top1@k100."""
    return [(0, int(part), "") if part.isascii() and part.isdigit() else (1, 0, part)
            for part in re.split(r"([0-9]+)", text) if part]


def _rank(cells: list[dict], rank_all: bool) -> None:
    """Rank range per ranked cell: 1 + models clearly better, up to N - models clearly worse (CIs not overlapping);
    a non-conforming cell gets no rank (None) unless `rank_all`."""
    for cell in cells:
        cell["rank_low"] = cell["rank_high"] = None
    cells = [cell for cell in cells if rank_all or cell["conforming"]]
    sign = 1 if not cells or cells[0]["higher_is_better"] else -1
    for cell in cells:
        low, high = sorted((sign * cell["ci_low"], sign * cell["ci_high"]))
        better = sum(1 for o in cells if min(sign * o["ci_low"], sign * o["ci_high"]) > high)
        worse = sum(1 for o in cells if max(sign * o["ci_low"], sign * o["ci_high"]) < low)
        cell["rank_low"], cell["rank_high"] = 1 + better, len(cells) - worse


def cell_text(cell: dict) -> str:
    """A cell as people read it: value [CI] #rank (no rank when unranked), shares in percent, * when
    non-conforming, \u2020 with a caveat."""
    scale = 100 if cell["unit"] == FRACTION else 1
    low, high = cell["rank_low"], cell["rank_high"]
    rank = "" if low is None else f" #{low}" if low == high else f" #{low}-{high}"
    return (f"{scale * cell['value']:.1f} [{scale * cell['ci_low']:.1f}, {scale * cell['ci_high']:.1f}]{rank}"
            + ("" if cell["conforming"] else " *") + (" \u2020" if cell.get("caveat") else ""))


def mean_rank_text(row: dict) -> str:
    """A row's mean rank with two decimals, or a dash for a row with no ranked cell."""
    return "\u2013" if row["mean_rank"] is None else f"{row['mean_rank']:.2f}"
