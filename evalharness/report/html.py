"""The HTML leaderboard: one self-contained page (inline CSS and script, plots as embedded PNG)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

from ..environment import utc_now
from ..metrics import FRACTION
from ..version import __version__
from .board import cell_text, mean_rank_text, note
from .details import section
from .escape import html as html_text
from .escape import plot

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; }
th { background: #f0f0f0; }
table.sortable th { cursor: pointer; user-select: none; }
th[aria-sort="ascending"]::after { content: " \\25B2"; } th[aria-sort="descending"]::after { content: " \\25BC"; }
td:first-child, th:first-child { text-align: left; }
.scroll { overflow-x: auto; max-width: 100%; }
#leaderboard td { white-space: nowrap; }
td.nonconforming { color: #777; font-style: italic; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(22rem, 1fr)); gap: 1rem; }
figure { margin: 0; border: 1px solid #ddd; padding: 0.5rem; }
figcaption { font-size: 0.85rem; font-weight: 600; overflow-wrap: anywhere; }
img { max-width: 100%; }
table.confusion td { min-width: 1.6rem; text-align: center; padding: 0.2rem; }
table.confusion th.predicted { writing-mode: vertical-rl; transform: rotate(180deg); text-align: left; }
footer { margin-top: 2rem; border-top: 1px solid #ccc; font-size: 0.8rem; color: #555; }
footer td, footer th { font-family: ui-monospace, monospace; }
"""

_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function (th) {
  var column = th.cellIndex;
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


def _axis(cells: list[dict]) -> tuple[float, str]:
    """The scale and axis label of a column's cells: shares in percent, ranks as they are."""
    if cells[0]["unit"] == FRACTION:
        return 100.0, "percent"
    return 1.0, "rank (lower is better)" if not cells[0]["higher_is_better"] else "rank"


def _bars(plt, column: str, data: dict) -> str:
    """One column's scores per model as bars with 95% CI whiskers, a marker on each value (so a zero shows), a
    dashed chance line where the task has one, and non-conforming models hatched and marked *."""
    rows = [r for r in data["rows"] if column in r["cells"]]
    cells = [r["cells"][column] for r in rows]
    scale, label = _axis(cells)
    values = [scale * c["value"] for c in cells]
    errors = [[scale * (c["value"] - c["ci_low"]) for c in cells], [scale * (c["ci_high"] - c["value"]) for c in cells]]
    figure, ax = plt.subplots(figsize=(max(3.6, 0.45 * len(rows) + 1.6), 3.0))
    positions = range(len(rows))
    bars = ax.bar(positions, values, yerr=errors, capsize=4, color="#4c78a8", ecolor="#333333")
    for bar, cell in zip(bars, cells, strict=True):
        if not cell["conforming"]:
            bar.set(color="#b8c7d9", hatch="//", edgecolor="#4c78a8")
    ax.plot(positions, values, linestyle="none", marker="D", markersize=4, color="#111111", clip_on=False, zorder=3)
    chance = next((c["chance"] for c in cells if c.get("chance") is not None), None)
    if chance is not None:
        ax.axhline(scale * chance, color="#d6604d", linestyle="--", linewidth=1.2,
                   label=f"chance {scale * chance:.1f}%")
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False, borderaxespad=0.2)
    names = [plot(r["model"]) + ("" if c["conforming"] else " *") for r, c in zip(rows, cells, strict=True)]
    ax.set_xticks(list(positions), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(label, fontsize=8)
    if scale == 100.0:
        ax.set_ylim(0, 105)
        ax.set_yticks(range(0, 101, 20))
    else:
        ax.set_ylim(0, max(1.0, max(c["ci_high"] for c in cells)) * 1.1)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="y", color="#eeeeee")
    ax.set_axisbelow(True)
    src = _png(figure)
    plt.close(figure)
    return src


def _scatter(plt, data: dict, appearance: str, motion: str) -> str:
    """Appearance against motion per model, in percent, with 95% CI whiskers."""
    figure, ax = plt.subplots(figsize=(4, 4))
    for row in data["rows"]:
        if appearance in row["cells"] and motion in row["cells"]:
            a, m = row["cells"][appearance], row["cells"][motion]
            ax.errorbar(100 * a["value"], 100 * m["value"], xerr=[[100 * (a["value"] - a["ci_low"])],
                                                                  [100 * (a["ci_high"] - a["value"])]],
                        yerr=[[100 * (m["value"] - m["ci_low"])], [100 * (m["ci_high"] - m["value"])]], fmt="o",
                        capsize=3)
            ax.annotate(plot(row["model"]), (100 * a["value"], 100 * m["value"]), fontsize=8, xytext=(4, 4),
                        textcoords="offset points")
    ax.set_xlabel(plot(appearance, len(appearance)) + " (%)", fontsize=8)
    ax.set_ylabel(plot(motion, len(motion)) + " (%)", fontsize=8)
    ax.set_xlim(0, 105)
    ax.set_ylim(0, 105)
    src = _png(figure)
    plt.close(figure)
    return src


def _figures(data: dict) -> str:
    """The plots section: a grid of one plot per task (headline), or per task (protocol version and probe) a
    heading and a grid of one plot per metric (all); then appearance against motion (headline metrics) where the
    protocols name them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = data["columns"]
    if not columns:
        return ""
    if data["metric"] == "headline":  # one metric per task: one grid, each plot captioned with its task
        out = ["<h2>Headline metric per task, with 95% CI</h2>", _grid(plt, data, [(c, c) for c in columns])]
    else:  # every metric: a heading per task, a grid of its metrics under it
        tasks: dict[str, list[tuple[str, str]]] = {}
        for column in columns:
            cell = _cell(data, column)
            tasks.setdefault(f"{cell['protocol']} v{cell['protocol_version']} / {cell['probe']}", []).append(
                (cell["metric"], column))
        out = ["<h2>Every metric per task, with 95% CI</h2>"]
        out += [f"<h3>{html_text(task, len(task))}</h3>{_grid(plt, data, metrics)}" for task, metrics in tasks.items()]
    appearance = [c for c in columns if "appearance" in c and _cell(data, c)["headline"]]
    motion = [c for c in columns if "motion" in c and _cell(data, c)["headline"]]
    if appearance and motion and all(_cell(data, c)["unit"] == FRACTION for c in (appearance[0], motion[0])):
        out.append(f'<h2>Appearance against motion</h2><img alt="appearance against motion" '
                   f'src="{_scatter(plt, data, appearance[0], motion[0])}">')
    return "".join(out)


def _grid(plt, data: dict, plots: list[tuple[str, str]]) -> str:
    """A responsive grid of bar plots, one per (caption, column)."""
    figures = "".join(f'<figure><figcaption>{html_text(caption, len(caption))}</figcaption>'
                      f'<img alt="{html_text(column, len(column))}" src="{_bars(plt, column, data)}"></figure>'
                      for caption, column in plots)
    return f'<div class="plots">{figures}</div>'


def _cell(data: dict, column: str) -> dict:
    """The first cell of a column (every cell of a column shares its protocol, probe, metric and unit)."""
    return next(r["cells"][column] for r in data["rows"] if column in r["cells"])


def _footer(data: dict) -> str:
    """When and by which harness version the page was made, and the hashes of every card behind its columns."""
    cards = sorted({(c["protocol"], c["protocol_version"], c["extraction_hash"], c["probe_hash"], c["manifest_hash"])
                    for row in data["rows"] for c in row["cells"].values()})
    rows = "".join(f"<tr><td>{html_text(name, len(name))} v{version}</td>"
                   + "".join(f'<td title="{html_text(h, 80)}">{html_text(h[:12], 12)}</td>' for h in hashes)
                   + "</tr>" for name, version, *hashes in cards)
    return (f"<footer><p>Made by evalharness {html.escape(__version__)} on {utc_now()}.</p>"
            "<table><thead><tr><th>card</th><th>extraction hash</th><th>probe hash</th><th>manifest hash</th></tr>"
            f"</thead><tbody>{rows}</tbody></table></footer>")


def page(data: dict, details: Sequence[dict] = (), title: str = "evalharness leaderboard") -> str:
    """The whole page as one string, with the per-class sections of `details` (see `details.details`); nothing is
    fetched when it is viewed."""
    head = "".join(f"<th>{html_text(c, len(c))}</th>" for c in ["model", *data["columns"], "coverage", "mean rank"])
    body = []
    for row in data["rows"]:
        cells = [f'<td data-sort="{html_text(row["model"], len(row["model"]))}">{html_text(row["model"])}</td>']
        for column in data["columns"]:
            cell = row["cells"].get(column)
            value = cell["value"] if cell else "-Infinity"  # what JavaScript's parseFloat reads
            kind = "" if not cell or cell["conforming"] else ' class="nonconforming"'
            cells.append(f'<td data-sort="{value}"{kind}>{html.escape(cell_text(cell)) if cell else ""}</td>')
        covered = int(row["coverage"].split("/")[0])
        cells.append(f'<td data-sort="{covered}">{row["coverage"]}</td>')
        mean_rank = "Infinity" if row["mean_rank"] is None else row["mean_rank"]
        cells.append(f'<td data-sort="{mean_rank}">{mean_rank_text(row)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    sections = "".join(section(detail) for detail in details)
    if details:
        model = details[0]["model"]
        sections = f"<h2>Per-class results of {html_text(model, len(model))}</h2>{sections}"
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<div class=\"scroll\"><table class=\"sortable\" id=\"leaderboard\"><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>"
            f"<p>{html.escape(note(data))} Click a column header to sort.</p>{_figures(data)}{sections}"
            f"{_footer(data)}<script>{_SCRIPT}</script></body></html>")
