"""Strings that come from files we did not write (model and revision names, protocol, probe and metric names in
records): what a name may hold, the unique path it maps to, how any such string is shown on a terminal, and the
strict, bounded reading of a JSON file (result records, annotation and prediction files)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import unicodedata
from pathlib import Path

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


def _refuse_constant(name: str) -> None:
    """JSON's parser hook for NaN and Infinity, which the standard does not allow and no metric can rank."""
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """JSON's object hook: a repeated key (which json keeps the last of, silently) is refused."""
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"an object repeats the key {shown(next(k for k in keys if keys.count(k) > 1))}")
    return dict(pairs)


def load_json(path: str | Path, max_bytes: int) -> object:
    """The JSON value of a regular file of at most `max_bytes`, strictly parsed (no NaN or Infinity, no repeated
    keys, bounded nesting); ValueError or OSError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("is not a regular file")
        if info.st_size > max_bytes:
            raise ValueError(f"is {info.st_size} bytes, more than the {max_bytes} allowed")
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"grew past the {max_bytes} bytes allowed while it was read")
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except UnicodeDecodeError as exc:
        raise ValueError(f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise ValueError("is nested too deeply") from None
