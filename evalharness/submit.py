"""Leaderboard folders and hostile submissions.

A leaderboard folder holds its protocol cards, the resolved manifests with the
ground-truth labels, the canonical copies of accepted files, the result records and
the rendered tables. A submitted embedding file is validated in a confined child
process (`store.sandbox`: memory, CPU, wall time and written bytes limited, killed
with us), which copies the manifest's rows and the groups the card's task reads into
a canonical file of our own in a scratch folder inside the leaderboard folder, and
scores that copy with the folder's labels; this process never opens an HDF5 file.
Every write happens after acceptance, under a lock, in a folder checked to hold no
links, so a rejection leaves the folder unchanged and two submissions cannot
interleave.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
from pathlib import Path

import yaml

from .cards import load_protocol
from .datasets import Item, Manifest, resolve_manifest
from .errors import HarnessError
from .locking import locked
from .progress import relayed
from .protocol import Protocol
from .report import board, render
from .results import find_records, load_record, record_path, write_record
from .scoring import score
from .store import EmbeddingFile, Keep, Limits, write_canonical
from .store.checks import READ_ERRORS, unreadable
from .store.sandbox import Confinement, memory_problem, run_confined, scratch, seconds_for
from .untrusted import check_name, folder_name, shown

CONFIG = "leaderboard.json"
DEFAULT_MAX_BYTES = 64 << 30
CHILD_MEMORY = 8 << 30
CHILD_SECONDS = 3600  # checking, copying and scoring, plus a second per 10 MB of file
SCRATCH = ".scratch"
PROGRESS_LOG = "progress.log"  # beside the copy: the child's progress lines, which the submitter relays


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


def _check_tree(folder: Path) -> None:
    """Raise HarnessError unless every entry under a leaderboard folder is a real folder or a regular file: a
    symbolic link planted where we write (a temporary name, the lock, a subfolder) would redirect the write outside
    the folder, and a FIFO would block it. The scratch folder's contents (fresh private folders, written and swept
    by submissions running now) are not walked, nor is an entry another submission renames meanwhile."""
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                continue
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file or folder"
                raise HarnessError(f"{path} is {kind}; a leaderboard folder holds only real files and folders "
                                   "(remove it)")
        if Path(root) == folder:
            dirs[:] = [name for name in dirs if name != SCRATCH]


def check_in_child(path: Path, folder: Path, copy_to: Path, max_bytes: int) -> dict:
    """Validate, copy and score a hostile file in a confined child (see `_child`); its problems, or its model,
    revision, protocol, clip count and records. The child may write at most the copy (`max_bytes` of data, plus
    HDF5's own overhead)."""
    confinement = Confinement(CHILD_MEMORY, seconds_for(path, CHILD_SECONDS), max_bytes + (64 << 20))
    return run_confined(["-m", "evalharness.submit", str(path), str(folder), str(copy_to)], path, confinement)


def _card_of(path: Path, folder: Path, limits: Limits) -> tuple[Protocol, Manifest]:
    """The folder's card and manifest of the protocol a file names (checked on open); another protocol is refused."""
    config = _config(folder)
    with EmbeddingFile(path, limits, check_values=False) as f:
        name = f.header.protocol
    if name not in config["protocols"]:
        raise HarnessError(f"{path}: protocol {shown(name)} is not on this leaderboard "
                           f"(it has: {', '.join(config['protocols'])})")
    return stored_card(folder, name)


def _child(path: Path, folder: Path, copy_to: Path) -> dict:
    """In the child: the file's protocol must be the folder's; every check of the reader is made while the
    manifest's rows and the groups the card's task reads are copied into a file of our own (one read of the
    values), within the folder's size limit counted uncompressed; the copy is then scored with the folder's labels
    (a file of another card or manifest, or lacking clips, is refused there); the progress lines of both are written to
    PROGRESS_LOG beside the copy (this process's stderr is captured by the sandbox)."""
    limits = Limits(data_bytes=_config(folder)["max_file_bytes"])
    with (copy_to.with_name(PROGRESS_LOG).open("w", encoding="utf-8", buffering=1) as log,
          contextlib.redirect_stderr(log)):
        try:
            protocol, manifest = _card_of(path, folder, limits)
            header, items = write_canonical(path, copy_to, Keep.for_card(protocol, manifest.ids), limits,
                                            quiet=False)
            records = score(copy_to, protocol, manifest=manifest, values_checked=True, shown_as=path,
                            options={"quiet": False})
        except HarnessError as exc:
            return {"problems": [str(exc)]}
        except READ_ERRORS as exc:
            return {"problems": [f"{path}: {unreadable(exc)}"]}
        except MemoryError:
            return {"problems": [memory_problem(path)]}
    return {"problems": [], "protocol": header.protocol, "model": header.display, "revision": header.model_revision,
            "items": items, "records": records}


def submit(path: str | Path, folder: str | Path, dry_run: bool = False, quiet: bool = False) -> list[dict]:
    """Validate and copy in the sandbox, score the copy with the folder's labels (a file of another card or
    manifest, or lacking clips, is refused), append the results and rebuild the tables; the scoring's progress
    lines are relayed to stderr unless `quiet`."""
    path, folder = Path(path), Path(folder)
    config = _config(folder)
    if not path.is_file():
        raise HarnessError(f"{path}: file not found")
    if path.stat().st_size > config["max_file_bytes"]:
        raise HarnessError(f"{path}: {path.stat().st_size} bytes, more than this leaderboard accepts "
                           f"({config['max_file_bytes']})")
    _check_tree(folder)
    with scratch(folder / SCRATCH) as tmp:
        canonical = tmp / "canonical.h5"
        with relayed(canonical.with_name(PROGRESS_LOG), quiet):
            verdict = check_in_child(path, folder, canonical, config["max_file_bytes"])
        if verdict["problems"]:
            raise HarnessError(verdict["problems"][0])
        check_name(verdict["model"], "model name", str(path))
        check_name(verdict["revision"], "model revision", str(path), empty=True)
        records = verdict["records"]
        if dry_run:
            return records
        with locked(folder):
            _check_tree(folder)
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
    os.replace(canonical, stored)
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
    print(json.dumps(_child(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))))
