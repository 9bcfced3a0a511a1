"""Leaderboard folders and hostile submissions.

A leaderboard folder holds its protocol cards, the resolved manifests with the
ground-truth labels, the canonical copies of accepted files, the result records and
the rendered tables. A submitted embedding file is validated in a child process
with memory and time limits, which also copies the accepted arrays into a canonical
file of our own; only that copy is ever opened here. Scoring uses the folder's
labels. Every write happens after acceptance, under a lock, so a rejection leaves
the folder unchanged and two submissions cannot interleave.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from .cards import load_protocol
from .datasets import Item, Manifest, resolve_manifest
from .errors import HarnessError, StoreError
from .locking import locked
from .protocol import Protocol
from .report import board, render
from .results import find_records, load_record, record_path, write_record
from .scoring import score
from .store import write_canonical
from .store.checks import READ_ERRORS, unreadable
from .untrusted import check_name, folder_name, shown

CONFIG = "leaderboard.json"
DEFAULT_MAX_BYTES = 64 << 30
CHILD_MEMORY = 8 << 30
CHILD_SECONDS = 600


def init(folder: str | Path, cards: list[str], data_root: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> Path:
    """Create a leaderboard folder: copies of the cards and their resolved manifests, labels included."""
    folder = Path(folder)
    if (folder / CONFIG).exists():
        raise HarnessError(f"{folder}: already a leaderboard folder")
    protocols = [load_protocol(card) for card in cards]
    for protocol in protocols:
        manifest = resolve_manifest(protocol, data_root)
        target = folder / "protocols" / protocol.name
        target.mkdir(parents=True, exist_ok=True)
        (target / "card.yaml").write_text(yaml.safe_dump(protocol.to_dict(), sort_keys=False), encoding="utf-8")
        (target / "manifest.json").write_text(json.dumps({
            "manifest_hash": manifest.hash, "classes": list(manifest.classes), "captions": manifest.captions,
            "items": [[item.id, item.label, item.split, str(item.masks) if item.masks else None, item.group]
                      for item in manifest.items],
        }, indent=1), encoding="utf-8")
    (folder / "results").mkdir(parents=True, exist_ok=True)
    (folder / CONFIG).write_text(json.dumps({"format": "evalharness.leaderboard-folder", "schema_version": 1,
                                             "protocols": [p.name for p in protocols], "max_file_bytes": max_bytes},
                                            indent=1) + "\n", encoding="utf-8")
    return folder


def _config(folder: Path) -> dict:
    if not (folder / CONFIG).is_file():
        raise HarnessError(f"{folder}: not a leaderboard folder (no {CONFIG}); create one first")
    return json.loads((folder / CONFIG).read_text(encoding="utf-8"))


def stored_card(folder: Path, name: str) -> tuple[Protocol, Manifest]:
    """A card of the folder with its stored manifest (the folder's labels, whatever any file says)."""
    base = folder / "protocols" / name
    protocol = load_protocol(base / "card.yaml")
    data = json.loads((base / "manifest.json").read_text(encoding="utf-8"))
    # folders made before groups existed store four fields per item
    items = tuple(Item(vid, base / "videos" / vid, split, label, Path(masks) if masks else None,
                       group[0] if group else None) for vid, label, split, masks, *group in data["items"])
    manifest = Manifest(base, items, tuple(data["classes"]), data["captions"])
    if manifest.hash != data["manifest_hash"]:
        raise HarnessError(f"{base / 'manifest.json'}: manifest hash does not match its contents (edited by hand?)")
    return protocol, manifest


def _limits(memory: int, seconds: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def check_in_child(path: Path, copy_to: Path, memory: int = CHILD_MEMORY, seconds: int = CHILD_SECONDS) -> dict:
    """Validate a hostile file in a limited child process that also writes the canonical copy."""
    try:
        result = subprocess.run([sys.executable, "-m", "evalharness.submit", str(path), str(copy_to)],
                                capture_output=True, text=True, timeout=seconds, preexec_fn=_limits(memory, seconds),
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired:
        raise HarnessError(f"{path}: validation took longer than {seconds} s") from None
    if result.returncode != 0 or not result.stdout.strip():
        reason = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        raise HarnessError(f"{path}: validation failed in the sandbox ({reason[:200]})")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _child(path: Path, copy_to: Path) -> dict:
    """In the child: every check of the reader, made while copying the arrays we accept into a file of our own
    (one read of the values)."""
    try:
        header, items = write_canonical(path, copy_to)
    except StoreError as exc:
        return {"problems": [str(exc)]}
    except READ_ERRORS as exc:
        return {"problems": [f"{path}: {unreadable(exc)}"]}
    return {"problems": [], "protocol": header.protocol, "model": header.model, "revision": header.model_revision,
            "items": items}


def submit(path: str | Path, folder: str | Path, dry_run: bool = False) -> list[dict]:
    """Validate and copy in the sandbox, score the copy with the folder's labels (a file of another card or
    manifest, or lacking clips, is refused), append the results and rebuild the tables."""
    path, folder = Path(path), Path(folder)
    config = _config(folder)
    if not path.is_file():
        raise HarnessError(f"{path}: file not found")
    if path.stat().st_size > config["max_file_bytes"]:
        raise HarnessError(f"{path}: {path.stat().st_size} bytes, more than this leaderboard accepts "
                           f"({config['max_file_bytes']})")
    with tempfile.TemporaryDirectory(prefix="evalharness-submit-") as tmp:
        canonical = Path(tmp) / "canonical.h5"
        verdict = check_in_child(path, canonical)
        if verdict["problems"]:
            raise HarnessError(verdict["problems"][0])
        check_name(verdict["model"], "model name", str(path))
        check_name(verdict["revision"], "model revision", str(path), empty=True)
        if verdict["protocol"] not in config["protocols"]:
            raise HarnessError(f"{path}: protocol {shown(verdict['protocol'])} is not on this leaderboard "
                               f"(it has: {', '.join(config['protocols'])})")
        protocol, manifest = stored_card(folder, verdict["protocol"])
        records = score(canonical, protocol, manifest=manifest, values_checked=True, shown_as=path)
        if dry_run:
            return records
        with locked(folder):
            _publish(folder, canonical, records)
    return records


def _publish(folder: Path, canonical: Path, records: list[dict]) -> None:
    """Store the canonical file and the records, replacing an earlier entry of the same model@revision and card
    (each new record names the file and time it replaced), and the tables; every table is rendered before
    anything is written, so a record that cannot be shown changes nothing."""
    first = records[0]
    stored = folder / "submissions" / f"{folder_name(first['model'], first['model_revision'])}--{first['protocol']}.h5"
    for record in records:
        record["embedding_file"]["path"] = str(stored)
        old = record_path(folder / "results", record)
        if old.is_file():
            earlier = load_record(old)
            record["embedding_file"]["replaced"] = {"sha256": earlier["embedding_file"].get("sha256"),
                                                    "created_utc": earlier["created_utc"]}
    kept = [r for r in _records(folder) if record_path(folder / "results", r) not in
            {record_path(folder / "results", new) for new in records}]
    tables = _tables(kept + records)
    stored.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(canonical, stored.with_name(stored.name + ".tmp"))
    os.replace(stored.with_name(stored.name + ".tmp"), stored)
    for record in records:
        write_record(record, folder / "results")
    _write_tables(folder, tables)


def _records(folder: Path) -> list[dict]:
    """Every record of the folder (none yet is not an error here)."""
    results = folder / "results"
    return find_records([results]) if any(results.rglob("*.json")) else []


TABLES = (("markdown", "leaderboard.md"), ("html", "leaderboard.html"), ("json", "table.json"), ("csv", "table.csv"))


def _tables(records: list[dict]) -> dict[str, str]:
    """The four tables' texts by file name."""
    data = board(records)
    return {name: render(data, fmt) + "\n" for fmt, name in TABLES}


def _write_tables(folder: Path, tables: dict[str, str]) -> None:
    """Each table written beside its final name, then all four moved into place together."""
    for name, text in tables.items():
        (folder / f".{name}.tmp").write_text(text, encoding="utf-8")
    for name in tables:
        os.replace(folder / f".{name}.tmp", folder / name)


if __name__ == "__main__":
    print(json.dumps(_child(Path(sys.argv[1]), Path(sys.argv[2]))))
