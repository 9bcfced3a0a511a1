"""Rendering the leaderboard model as markdown, csv (long format), latex, json or one html page."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence

import pandas as pd
from tabulate import tabulate

from .board import cell_text, mean_rank_text, note
from .escape import csv_cell, display, latex, markdown

FORMATS = ("markdown", "csv", "latex", "html", "json")


def frame(data: dict, shown: Callable[..., str]) -> pd.DataFrame:
    """The display table: a row per model, a text cell per column, coverage and mean rank; names (model names cut
    to DISPLAY, column names whole, at most 200 characters each) pass through `shown`."""
    columns = {c: shown(c, len(c)) for c in data["columns"]}
    table = pd.DataFrame([{"model": shown(row["model"]),
                           **{columns[c]: cell_text(row["cells"][c]) if c in row["cells"] else "" for c in columns},
                           "coverage": row["coverage"], "mean rank": mean_rank_text(row)} for row in data["rows"]],
                         columns=["model", *columns.values(), "coverage", "mean rank"])
    return table.set_index("model")


def long_rows(data: dict) -> list[dict]:
    """One row per model and column with every number and hash: what csv holds and `check` reads."""
    keys = ("value", "ci_low", "ci_high", "interval", "n", "higher_is_better", "unit", "rank_low", "rank_high",
            "conforming", "caveat", "extraction_hash", "probe_hash", "manifest_hash")
    return [{"model": row["model"], "column": column, **{k: row["cells"][column][k] for k in keys}}
            for row in data["rows"] for column in data["columns"] if column in row["cells"]]


def _csv(data: dict) -> str:
    """The long rows as csv; text cells that a spreadsheet would run as formulas are neutralised."""
    out = io.StringIO()
    rows = long_rows(data)
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["model", "column"], lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in rows)
    return out.getvalue().rstrip("\n")


def render(data: dict, fmt: str = "markdown", details: Sequence[dict] = ()) -> str:
    """The leaderboard model in one of FORMATS; the html page also shows `details` (see `details.details`)."""
    if fmt == "html":
        from .html import page

        return page(data, details)
    if fmt == "json":
        return json.dumps(data, indent=1, sort_keys=True, allow_nan=False)
    if fmt == "csv":
        return _csv(data)
    if fmt == "latex":  # tabulate's latex formats escape every special character themselves
        table = frame(data, display)
        return (tabulate(table, headers="keys", tablefmt="latex_booktabs", disable_numparse=True)
                + ("\n\n" + latex(note(data)) if len(table) else ""))
    table = frame(data, markdown)
    return (tabulate(table, headers="keys", tablefmt="github", disable_numparse=True)
            + ("\n\n" + note(data) if len(table) else ""))
