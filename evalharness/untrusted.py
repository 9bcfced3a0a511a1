"""Strings that come from files we did not write (model and revision names, protocol, probe and metric names in
records): what a name may hold, the unique path it maps to, and how any such string is shown on a terminal."""

from __future__ import annotations

import hashlib
import re
import unicodedata

from .errors import HarnessError

MAX_NAME = 200  # characters of a model, revision, protocol, probe or metric name
SHOWN = 120  # characters of an untrusted string echoed on a terminal line
# control, format (bidi overrides, zero-width), surrogate, private-use, unassigned, line and paragraph separators
_FORBIDDEN = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
_PLAIN = re.compile(r"[A-Za-z0-9._:/@+=&-]*")


def name_problem(text: object, what: str, empty: bool = False) -> str | None:
    """Why `text` cannot be a name (not a string, empty, longer than MAX_NAME, or holding a control, format,
    bidi or line-breaking character), or None."""
    if not isinstance(text, str):
        return f"{what} is not a string"
    if not text and not empty:
        return f"{what} is empty"
    if len(text) > MAX_NAME:
        return f"{what} is {len(text)} characters long (at most {MAX_NAME})"
    for ch in text:
        if unicodedata.category(ch) in _FORBIDDEN:
            return f"{what} holds the character U+{ord(ch):04X}, which names may not hold (control, format or line break)"
    return None


def check_name(text: object, what: str, where: str, empty: bool = False) -> str:
    """`text` if it can be a name, else a HarnessError naming `where` and the problem."""
    problem = name_problem(text, what, empty)
    if problem:
        raise HarnessError(f"{where}: {problem}")
    return text


def shown(text: str, limit: int = SHOWN) -> str:
    """An untrusted string for a terminal or log line: as it is when it is short and plain (letters, digits and
    `._:/@+=&-`), else its repr (quotes, escapes for every control character) cut at `limit` characters, so it can
    neither forge a line nor flood the terminal."""
    if len(text) <= limit and _PLAIN.fullmatch(text):
        return text
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def one_line(message: str, limit: int = 2000) -> str:
    """An error message as one terminal line: control, format and line-break characters (which may come from a
    hostile file's strings inside it) written as escapes, cut at `limit` characters."""
    text = "".join(repr(ch)[1:-1] if unicodedata.category(ch) in _FORBIDDEN else ch for ch in message)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def folder_name(model: str, revision: str) -> str:
    """A file-system name for model@revision that no other name shares: its slug (at most 60 characters) and a
    short hash of the raw name, so `builtin:stats` and `builtin_stats`, `.` and `..` all land apart, inside."""
    raw = f"{model}@{revision}"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("._")[:60] or "model"
    return f"{slug}-{hashlib.sha256(raw.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}"
