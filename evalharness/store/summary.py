"""What `evalharness info` shows of an embedding file: its header, shapes and types, from attributes and dataset
shapes only (no array is read).

The file may come from a stranger, so it is read in a confined child (`sandbox.run_confined`) after the same
structural checks `validate` makes; `python -m evalharness.store.summary FILE LIMITS` is that child. The caller
shows every string through `untrusted.shown`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from ..errors import StoreError
from ..untrusted import one_line, shown
from .limits import Limits, summary
from .sandbox import Confinement, memory_problem, run_confined, seconds_for

# what `info` shows of a file's environment record (what decides its numbers), when it holds them as plain values
ENVIRONMENT_KEYS = ("harness", "python", "torch", "numpy", "device", "dtype", "autocast")


def _environment(text: str) -> dict[str, str]:
    """The plain values of ENVIRONMENT_KEYS in a header's environment JSON (of its first part, for a merged file)."""
    try:
        env = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    if isinstance(env, dict) and isinstance(env.get("parts"), list) and env["parts"]:
        env = env["parts"][0]
    if not isinstance(env, dict):
        return {}
    return {key: str(env[key]) for key in ENVIRONMENT_KEYS if isinstance(env.get(key), (str, int, float))}


def _sequences(f) -> dict | None:
    """How many videos have a feature sequence, their snippets in all and the longest, from shapes (checked ones)."""
    if "sequences" not in f:
        return None
    lengths = [f["sequences"][vid]["features"].shape[0] for vid in f["sequences"]]
    return {"videos": len(lengths), "snippets": sum(lengths), "longest": max(lengths, default=0)}


def describe(path: Path, limits: Limits = Limits()) -> dict:
    """In the child: the file's structural problems, or its summary (header, shapes, types, counts) as JSON values."""
    from .checks import READ_ERRORS, open_h5, structure_problems, unreadable
    from .layout import Header, read_token_info

    try:
        f = open_h5(path)
    except StoreError as exc:
        return {"problems": [str(exc)]}
    try:
        problems = structure_problems(f, limits)
        if problems:
            return {"problems": [f"{path}: {p}" for p in problems]}
        header = Header.read(f.attrs, "root")
        tokens = read_token_info(f)
        n, views, dim = f["clip"].shape
        return {"problems": [], **asdict(header), "environment": _environment(header.environment),
                "clips": n, "views": views, "dim": dim, "dtype": str(f["clip"].dtype),
                "tokens": None if tokens is None else {"shape": list(f["tokens"].shape), "dtype": tokens.dtype,
                                                       "grid": list(tokens.grid), "dim": tokens.dim},
                "dense": len(f["dense"]) if "dense" in f else 0,
                "sequences": _sequences(f),
                "captions": f["text"]["ids"].shape[0] if "text" in f else 0,
                "failures": f["failures"]["ids"].shape[0]}
    except READ_ERRORS as exc:
        return {"problems": [f"{path}: {unreadable(exc)}"]}
    except StoreError as exc:
        return {"problems": [str(exc)]}
    except MemoryError:
        return {"problems": [memory_problem(path)]}
    finally:
        f.close()


def summarise(path: str | Path, limits: Limits = Limits()) -> dict:
    """`describe` of a file, run in a confined child; a file with problems, or one that crashes or hangs the child,
    is a StoreError of one line."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: {'file not found' if not path.exists() else 'not a regular file'}")
    argv = ["-m", "evalharness.store.summary", str(path), json.dumps(asdict(limits))]
    answer = run_confined(argv, path, Confinement(seconds=seconds_for(path)))
    problems = answer.get("problems")
    if not isinstance(problems, list) or problems:
        raise StoreError(one_line(summary([str(p) for p in problems or ["the sandbox gave no summary"]])))
    return answer


def _size(count: int) -> str:
    """Bytes in the largest binary unit that keeps the number at least 1."""
    value, unit = float(count), "bytes"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{count} bytes" if unit == "bytes" else f"{value:.1f} {unit} ({count} bytes)"


def summary_lines(path: str | Path, info: dict) -> list[str]:
    """`info`'s lines for a summary from `summarise`, each untrusted string shown safely on one line."""
    def text(key: str) -> str:
        return shown(str(info.get(key, ""))) or "-"

    tokens, sequences = info.get("tokens"), info.get("sequences")
    env = info.get("environment") if isinstance(info.get("environment"), dict) else {}
    lines = [
        f"file: {path}",
        f"size: {_size(Path(path).stat().st_size)}",
        f"model: {text('model')}",
        f"revision: {text('model_revision')}",
        *([f"display name: {text('name')}"] if info.get("name") else []),
        f"weights sha256: {text('weights_sha256')}",
        f"protocol: {text('protocol')} v{text('protocol_version')}",
        f"extraction hash: {text('extraction_hash')}",
        f"manifest hash: {text('manifest_hash')}",
        f"clips: {text('clips')} x {text('views')} views x {text('dim')} dims, {text('dtype')}",
        "tokens: " + ("none" if not isinstance(tokens, dict) else
                      f"{'x'.join(shown(str(s)) for s in tokens.get('shape', []))} {shown(str(tokens.get('dtype')))} "
                      f"(grid {'x'.join(shown(str(s)) for s in tokens.get('grid', []))}, "
                      f"width {shown(str(tokens.get('dim')))})"),
        f"dense maps: {text('dense') if info.get('dense') else 'none'}{' videos' if info.get('dense') else ''}",
        "sequences: " + ("none" if not isinstance(sequences, dict) else
                         f"{shown(str(sequences.get('videos')))} videos, {shown(str(sequences.get('snippets')))} "
                         f"snippets (longest {shown(str(sequences.get('longest')))})"),
        f"text: {text('captions') + ' captions' if info.get('captions') else 'none'}",
        f"failures: {text('failures')}",
        f"created: {text('created_utc')}",
        f"harness version: {text('harness_version')}",
        "environment: " + (", ".join(f"{key} {shown(str(value))}" for key, value in env.items()) or "-"),
    ]
    return [one_line(line) for line in lines]


if __name__ == "__main__":
    print(json.dumps(describe(Path(sys.argv[1]), Limits(**json.loads(sys.argv[2])))))
