"""Every untrusted string (model, revision, protocol and metric names from records) passes through here on its way
into a table or plot: cut to a display length, then escaped for the format it lands in."""

from __future__ import annotations

import html as _html
import re

DISPLAY = 60  # characters of a name shown in a table cell or plot label (json keeps it whole)
_MARKDOWN = re.compile(r"([\\`*_\[\](){}<>&|~$#!])")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")
_LATEX = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#",
          "^": r"\textasciicircum{}", "_": r"\_", "%": r"\%", "~": r"\textasciitilde{}", "\u2020": r"\dag{}"}


def display(text: str, limit: int = DISPLAY) -> str:
    """`text` cut to `limit` characters, an ellipsis marking the cut, any line break shown as a space."""
    text = re.sub(r"[\r\n\t\x0b\x0c]", " ", text)
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def markdown(text: str, limit: int = DISPLAY) -> str:
    """Plain text in a markdown table cell: every character that could start markup, a link, html or a new cell
    is backslash-escaped (CommonMark renders each as itself)."""
    return _MARKDOWN.sub(r"\\\1", display(text, limit))


def csv_cell(value: object) -> object:
    """A csv value that a spreadsheet will not run: text starting like a formula (or with the apostrophe that
    marks one) gets a leading apostrophe."""
    return "'" + value if isinstance(value, str) and value.startswith((*_FORMULA, "'")) else value


def from_csv_cell(text: str) -> str:
    """The value `csv_cell` was given, from what it wrote (what `check` reads back from a csv baseline)."""
    return text[1:] if text.startswith("'") and text[1:].startswith((*_FORMULA, "'")) else text


def html(text: str, limit: int = DISPLAY) -> str:
    """Plain text in html (element content and quoted attributes)."""
    return _html.escape(display(text, limit), quote=True)


def latex(text: str) -> str:
    """Plain text in latex (a footnote under a table): every special character as its escape, the dagger as a command."""
    return re.sub(r"[\\{}$&#^_%~\u2020]", lambda m: _LATEX[m.group()], text)


def plot(text: str, limit: int = DISPLAY) -> str:
    """Plain text for a matplotlib label: `$` would start mathtext, which a crafted name can make crash."""
    return display(text, limit).replace("$", r"\$")
