"""Leaderboard tables from result records: one row per model, one column per protocol x probe."""

from __future__ import annotations

import pandas as pd
from tabulate import tabulate


def _cell(metric: dict) -> str:
    return f"{100 * metric['value']:.1f} [{100 * metric['ci_low']:.1f}, {100 * metric['ci_high']:.1f}]"


def leaderboard_frame(records: list[dict]) -> pd.DataFrame:
    """Headline value with 95% CI (percent) per model and task; newest record wins on duplicates."""
    rows: dict[str, dict[str, str]] = {}
    for r in sorted(records, key=lambda r: r["created_utc"]):
        model = r["model"] + (f"@{r['model_revision']}" if r["model_revision"] else "")
        column = f"{r['protocol']} v{r['protocol_version']} / {r['probe']} {r['headline']}"
        rows.setdefault(model, {})[column] = _cell(r["metrics"][r["headline"]]) + ("" if r["conforming"] else " *")
    frame = pd.DataFrame.from_dict(rows, orient="index").sort_index()
    frame = frame.reindex(sorted(frame.columns), axis=1)
    frame.index.name = "model"
    return frame.fillna("")


def markdown(records: list[dict]) -> str:
    frame = leaderboard_frame(records)
    table = tabulate(frame, headers="keys", tablefmt="github")
    note = "\n\nValues in percent with 95% bootstrap CI; * = non-conforming run." if len(frame) else ""
    return table + note
