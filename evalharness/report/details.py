"""Per-class results of one model for the html page: the per-class accuracy and confusion matrix its classification
records hold, chosen by the name the table gives the model, rendered as escaped html tables."""

from __future__ import annotations

from ..errors import HarnessError
from ..untrusted import shown
from .board import model_name
from .escape import html

MAX_DRAWN = 50  # classes of the largest confusion matrix drawn as a table (a bigger one is unreadable on a page)


def details(records: list[dict], model: str) -> list[dict]:
    """The newest record per protocol version and probe of `model` (model or model@revision, as the table names
    it) that holds per-class counts, in column order; an error when there is none says what there is."""
    mine = [r for r in records if model_name(r) == model]
    if not mine:
        known = sorted({model_name(r) for r in records})
        raise HarnessError(f"no results of model {shown(model)}; these results hold "
                           f"{', '.join(shown(name) for name in known[:20])}{' ...' if len(known) > 20 else ''}")
    newest = {(r["protocol"], r["protocol_version"], r["probe"]): r
              for r in sorted(mine, key=lambda r: r["created_utc"]) if r.get("per_class")}
    if not newest:
        raise HarnessError(f"model {shown(model)} has no classification result with per-class counts (records "
                           "written before per-class counts were recorded hold none: probe again to get them)")
    return [{"model": model, "task": f"{protocol} v{version} / {probe}", "conforming": record["conforming"],
             **record["per_class"]} for (protocol, version, probe), record in sorted(newest.items())]


def section(detail: dict) -> str:
    """One record's per-class accuracy table and its confusion matrix as a heat map (row shares), names escaped."""
    classes, matrix = detail["classes"], detail["confusion"]
    totals = [sum(row) for row in matrix]
    rows = []
    for i, name in enumerate(classes):
        share = matrix[i][i] / totals[i] if totals[i] else None
        rows.append(f'<tr><td data-sort="{html(name, len(name))}">{html(name)}</td><td data-sort="{totals[i]}">'
                    f'{totals[i]}</td><td data-sort="{matrix[i][i]}">{matrix[i][i]}</td>'
                    f'<td data-sort="{-1 if share is None else share}">{"" if share is None else f"{100 * share:.1f}"}'
                    "</td></tr>")
    mark = "" if detail["conforming"] else " *"
    out = (f"<h3>{html(detail['task'], len(detail['task']))}{mark}</h3><table class=\"sortable per-class\">"
           "<thead><tr><th>class</th><th>test predictions</th><th>correct</th><th>accuracy (%)</th></tr></thead>"
           f"<tbody>{''.join(rows)}</tbody></table>")
    if len(classes) > MAX_DRAWN:
        return out + (f"<p>The confusion matrix of {len(classes)} classes is not drawn (at most {MAX_DRAWN}); the "
                      "record's <code>per_class</code> field holds it.</p>")
    return out + _heat_map(classes, matrix, totals)


def _heat_map(classes: list[str], matrix: list[list[int]], totals: list[int]) -> str:
    """The confusion matrix as a table: a row per true class, a column per predicted class, each cell shaded by
    its share of the row."""
    head = "".join(f'<th class="predicted" title="{html(name, len(name))}">{html(name, 16)}</th>' for name in classes)
    rows = []
    for i, name in enumerate(classes):
        cells = []
        for j, count in enumerate(matrix[i]):
            share = count / totals[i] if totals[i] else 0.0
            colour = "#ffffff" if count == 0 else f"rgba({'76,120,168' if i == j else '214,96,77'},{0.15 + 0.85 * share:.3f})"
            ink = "#ffffff" if share > 0.6 else "#222222"
            cells.append(f'<td style="background:{colour};color:{ink}">{count or ""}</td>')
        rows.append(f'<tr><th title="{html(name, len(name))}">{html(name, 24)}</th>{"".join(cells)}</tr>')
    return ("<p>Confusion matrix: a row per true class, a column per predicted class (shaded by the share of the "
            "row; the diagonal is correct)</p><table class=\"confusion\">"
            f"<thead><tr><th>true \\ predicted</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
