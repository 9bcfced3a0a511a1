"""The HTML leaderboard: one self-contained page (inline CSS and script, plots as embedded PNG)."""

from __future__ import annotations

import base64
import html
import io

from .board import cell_text, note
from .escape import html as html_text
from .escape import plot

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; }
th { background: #f0f0f0; cursor: pointer; user-select: none; }
th[aria-sort="ascending"]::after { content: " \\25B2"; } th[aria-sort="descending"]::after { content: " \\25BC"; }
td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; margin: 1rem 0; }
"""

_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function (th, column) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
    var ascending = th.getAttribute('aria-sort') !== 'ascending';
    table.querySelectorAll('th').forEach(function (h) { h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[column].getAttribute('data-sort'), y = b.cells[column].getAttribute('data-sort');
      var nx = parseFloat(x), ny = parseFloat(y);
      var order = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _plots(data: dict) -> list[tuple[str, str]]:
    """Per-task bars with CI whiskers, and appearance against motion where the protocols name them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = []
    columns = data["columns"]
    if columns:
        figure, axes = plt.subplots(1, len(columns), figsize=(3.2 * len(columns), 3.2), squeeze=False)
        for ax, column in zip(axes[0], columns, strict=True):
            rows = [r for r in data["rows"] if column in r["cells"]]
            cells = [r["cells"][column] for r in rows]
            values = [c["value"] for c in cells]
            errors = [[c["value"] - c["ci_low"] for c in cells], [c["ci_high"] - c["value"] for c in cells]]
            ax.bar(range(len(rows)), values, yerr=errors, capsize=4, color="#4c78a8")
            ax.set_xticks(range(len(rows)), [plot(r["model"]) for r in rows], rotation=30, ha="right", fontsize=8)
            ax.set_title(plot(column, len(column)), fontsize=8)
        plots.append(("Headline metric per task, with 95% CI", _png(figure)))
        plt.close(figure)
    appearance = [c for c in columns if "appearance" in c]
    motion = [c for c in columns if "motion" in c]
    if appearance and motion:
        figure, ax = plt.subplots(figsize=(4, 4))
        for row in data["rows"]:
            if appearance[0] in row["cells"] and motion[0] in row["cells"]:
                a, m = row["cells"][appearance[0]], row["cells"][motion[0]]
                ax.errorbar(a["value"], m["value"], xerr=[[a["value"] - a["ci_low"]], [a["ci_high"] - a["value"]]],
                            yerr=[[m["value"] - m["ci_low"]], [m["ci_high"] - m["value"]]], fmt="o", capsize=3)
                ax.annotate(plot(row["model"]), (a["value"], m["value"]), fontsize=8, xytext=(4, 4),
                            textcoords="offset points")
        ax.set_xlabel(plot(appearance[0], len(appearance[0])), fontsize=8)
        ax.set_ylabel(plot(motion[0], len(motion[0])), fontsize=8)
        ax.set_xlim(0, 1.05)
        ax.set_ylim(0, 1.05)
        plots.append(("Appearance against motion", _png(figure)))
        plt.close(figure)
    return plots


def page(data: dict, title: str = "evalharness leaderboard") -> str:
    """The whole page as one string; nothing is fetched when it is viewed."""
    head = "".join(f"<th>{html_text(c, len(c))}</th>" for c in ["model", *data["columns"], "coverage", "mean rank"])
    body = []
    for row in data["rows"]:
        cells = [f'<td data-sort="{html_text(row["model"], len(row["model"]))}">{html_text(row["model"])}</td>']
        for column in data["columns"]:
            cell = row["cells"].get(column)
            value = cell["value"] if cell else float("-inf")
            cells.append(f'<td data-sort="{value}">{html.escape(cell_text(cell)) if cell else ""}</td>')
        covered = len(row["cells"])
        cells.append(f'<td data-sort="{covered}">{row["coverage"]}</td>')
        cells.append(f'<td data-sort="{row["mean_rank"]}">{row["mean_rank"]:.2f}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    figures = "".join(f"<h2>{html.escape(caption)}</h2><img alt=\"{html.escape(caption)}\" src=\"{src}\">"
                      for caption, src in _plots(data))
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<table class=\"sortable\" id=\"leaderboard\"><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            f"<p>{html.escape(note(data))} Click a column header to sort.</p>{figures}<script>{_SCRIPT}</script></body></html>")
