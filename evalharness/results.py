"""Result records (JSON, schema `evalharness.result` v2): assembling, writing, validated loading, discovery, comparison.

v2 adds `higher_is_better` and `unit` to every metric; v1 records are read by declaring
the only lower-is-better, rank-valued metrics v1 ever wrote (retrieval's median and mean
ranks).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .cards import shipped_cards, shipped_protocol
from .environment import environment, utc_now
from .errors import HarnessError
from .metrics import FRACTION, INTERVALS, MAX_CLASSES, RANK, UNITS, confusion, mcnemar_exact, paired_difference
from .probes import ProbeOutcome
from .protocol import Protocol
from .untrusted import folder_name, load_json, name_problem, one_line, shown
from .version import __version__

FORMAT = "evalharness.result"
SCHEMA_VERSION = 2
REQUIRED = {
    "format": str, "schema_version": int, "model": str, "model_revision": str, "protocol": str,
    "protocol_version": int, "extraction_hash": str, "probe_hash": str, "manifest_hash": str,
    "embedding_file": dict, "probe": str, "config": dict, "chosen": dict, "headline": str, "metrics": dict,
    "conforming": bool, "harness_version": str, "environment": dict, "timings": dict, "created_utc": str,
}
MAX_RECORD_BYTES = 256 << 20  # a record of Kinetics-400's 19,906 test clips with top-5 predictions of 3 seeds is ~10 MB
# what schema v1 wrote as ranks (lower is better), by probe; every other v1 metric is a share (v1 records carry
# neither direction nor unit of their own)
V1_RANKS = {"retrieval": {"t2v_MdR", "t2v_MnR", "v2t_MdR", "v2t_MnR"}}


def make_record(*, model: str, model_revision: str, protocol: Protocol, manifest_hash: str, embedding_file: dict,
                probe: str, config: dict, outcome: ProbeOutcome, conforming: bool, notes: list[str], device: str,
                timings: dict) -> dict:
    """A result record of one probe's outcome on one embedding file under one card."""
    return {
        "format": FORMAT, "schema_version": SCHEMA_VERSION,
        "model": model, "model_revision": model_revision,
        "protocol": protocol.name, "protocol_version": protocol.version,
        "extraction_hash": protocol.extraction_hash, "probe_hash": protocol.probe_hash, "manifest_hash": manifest_hash,
        "embedding_file": embedding_file,
        "probe": probe, "config": config, "chosen": outcome.chosen,
        "headline": outcome.headline, "metrics": {name: e.as_dict() for name, e in outcome.metrics.items()},
        "predictions": outcome.predictions, "per_class": confusion(outcome.predictions),
        "conforming": conforming, "notes": notes, "caveats": list(outcome.caveats),
        "harness_version": __version__, "environment": environment(device),
        "timings": timings, "created_utc": utc_now(),
    }


def headline(record: dict) -> str:
    """A record's headline as one terminal line: shares in percent, ranks as they are, with the interval; names
    shown safely (records may come from strangers)."""
    head = record["metrics"][record["headline"]]
    scale, digits = (100, 2) if head["unit"] == FRACTION else (1, 1)
    return (f"{shown(record['model'])}{'@' + shown(record['model_revision']) if record['model_revision'] else ''} "
            f"{shown(record['protocol'])} {record['probe']} {shown(record['headline'])}: "
            f"{scale * head['value']:.{digits}f} [{scale * head['ci_low']:.{digits}f}, "
            f"{scale * head['ci_high']:.{digits}f}]{'' if record['conforming'] else ' (non-conforming)'}")


def record_path(results_dir: Path, record: dict) -> Path:
    """results/<model folder>/<protocol>/<probe>.json, the model folder unique to model@revision (untrusted.folder_name)."""
    for key, pattern in (("protocol", r"[a-z0-9][a-z0-9._-]*"), ("probe", r"[a-z]+")):
        if not re.fullmatch(pattern, record[key]):
            raise HarnessError(f"record {key} {record[key]!r} cannot name a folder")
    return (Path(results_dir) / folder_name(record["model"], record["model_revision"]) / record["protocol"]
            / f"{record['probe']}.json")


def _upgrade_v1(record: dict) -> dict:
    ranks = V1_RANKS.get(record.get("probe"), set())
    metrics = record.get("metrics")
    if isinstance(metrics, dict):
        record["metrics"] = {name: ({**m, "higher_is_better": name not in ranks, "unit": RANK if name in ranks else FRACTION}
                                    if isinstance(m, dict) else m) for name, m in metrics.items()}
    record["schema_version"] = SCHEMA_VERSION
    return record


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _metric_problem(metric: object) -> str | None:
    """Why a record's metric entry is malformed or impossible, or None."""
    if not isinstance(metric, dict):
        return "not a mapping"
    for key in ("value", "ci_low", "ci_high"):
        if not _number(metric.get(key)):
            return f"'{key}' is not a finite number"
    if isinstance(metric.get("n"), bool) or not isinstance(metric.get("n"), int) or metric["n"] < 1:
        return "'n' is not a positive integer"
    if not isinstance(metric.get("higher_is_better"), bool):
        return "'higher_is_better' is not true or false"
    if metric.get("unit") not in UNITS:
        return f"'unit' is not one of {', '.join(UNITS)}"
    if metric.get("interval", "bootstrap") not in INTERVALS:
        return f"'interval' is not one of {', '.join(INTERVALS)}"
    low, value, high = metric["ci_low"], metric["value"], metric["ci_high"]
    if low > high:
        return f"its interval [{low}, {high}] is upside down"
    if metric["unit"] == FRACTION and not all(0 <= x <= 1 for x in (low, value, high)):
        return "a share outside [0, 1]"
    if metric["unit"] == RANK and min(low, value) < 1:
        return "a rank below 1"
    return None


def _predictions_problem(predictions: object) -> str | None:
    """Why a record's per-item predictions are malformed (ids unique strings, every list as long as ids), or None."""
    if predictions is None:
        return None
    if not isinstance(predictions, dict) or not isinstance(predictions.get("ids"), list):
        return "not a mapping with a list of ids"
    ids = predictions["ids"]
    if not all(isinstance(i, str) for i in ids) or len(set(ids)) != len(ids):
        return "ids are not unique strings"
    for key, values in predictions.items():
        if not isinstance(values, list) or len(values) != len(ids):
            return f"'{key}' is not a list as long as ids"
    if not all(_number(v) for v in predictions.get("value", [])):
        return "'value' holds something other than finite numbers"
    return None


def _per_class_problem(per_class: object) -> str | None:
    """Why a record's per-class counts are malformed (classes: unique names, at most MAX_CLASSES; confusion: a
    square table of non-negative integers, one row and column per class), or None."""
    if per_class is None:
        return None
    if not isinstance(per_class, dict) or set(per_class) != {"classes", "confusion"}:
        return "not a mapping of 'classes' and 'confusion'"
    classes, matrix = per_class["classes"], per_class["confusion"]
    if not isinstance(classes, list) or not 0 < len(classes) <= MAX_CLASSES or len(set(map(str, classes))) != len(classes):
        return f"'classes' is not a list of 1 to {MAX_CLASSES} unique names"
    for name in classes:
        problem = name_problem(name, "a class name")
        if problem:
            return problem
    if not isinstance(matrix, list) or len(matrix) != len(classes) or not all(
            isinstance(row, list) and len(row) == len(classes) for row in matrix):
        return "'confusion' is not a square table with a row and a column per class"
    if not all(type(count) is int and 0 <= count < 1 << 53 for row in matrix for count in row):
        return "'confusion' holds something other than non-negative integer counts"
    return None


def _names_problem(record: dict) -> str | None:
    """Why a name a table would show (model, revision, protocol, probe, metric names) cannot be one, or None."""
    for key, empty in (("model", False), ("model_revision", True), ("protocol", False), ("probe", False)):
        problem = name_problem(record[key], f"'{key}'", empty)
        if problem:
            return problem
    for name in record["metrics"]:
        problem = name_problem(name, "a metric name")
        if problem:
            return problem
    return None


def check_record(record: object, where: str) -> dict:
    """Schema check of a loaded record (v1 upgraded on the way): types, names a table can show, finite numbers in
    their ranges, predictions of equal length; problems name the file and the field."""
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise HarnessError(f"{where}: not an evalharness result record")
    if record.get("schema_version") == 1:
        record = _upgrade_v1(record)
    if record.get("schema_version") != SCHEMA_VERSION:
        raise HarnessError(f"{where}: schema_version {record.get('schema_version')!r:.40}, this harness reads {SCHEMA_VERSION}")
    for key, kind in REQUIRED.items():
        if not isinstance(record.get(key), kind) or (kind is int and isinstance(record.get(key), bool)):
            raise HarnessError(f"{where}: field '{key}' missing or not a {kind.__name__}")
    if record["protocol_version"] < 1:
        raise HarnessError(f"{where}: field 'protocol_version' is not a positive integer")
    if not isinstance(record.get("caveats", []), list) or not all(isinstance(c, str) for c in record.get("caveats", [])):
        raise HarnessError(f"{where}: field 'caveats' is not a list of strings")
    problem = _names_problem(record)
    if problem:
        raise HarnessError(f"{where}: {problem}")
    if record["headline"] not in record["metrics"]:
        raise HarnessError(f"{where}: headline metric missing")
    for name, metric in record["metrics"].items():
        problem = _metric_problem(metric)
        if problem:
            raise HarnessError(f"{where}: metric {name!r} is malformed ({problem})")
    problem = _predictions_problem(record.get("predictions"))
    if problem:
        raise HarnessError(f"{where}: field 'predictions' is malformed ({problem})")
    problem = _per_class_problem(record.get("per_class"))
    if problem:
        raise HarnessError(f"{where}: field 'per_class' is malformed ({problem})")
    return record


def write_record(record: dict, results_dir: str | Path) -> Path:
    """Write atomically to results/<model>/<protocol>/<probe>.json."""
    path = record_path(Path(results_dir), check_record(record, "new record"))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_record(path: str | Path) -> dict:
    """A record from a JSON file of at most MAX_RECORD_BYTES, checked (any file may be hostile)."""
    path = Path(path)
    try:
        record = load_json(path, MAX_RECORD_BYTES)
    except (OSError, ValueError) as exc:
        raise HarnessError(f"{path}: unreadable result record ({str(exc)[:200]})") from None
    return check_record(record, str(path))


def check_against_card(record: dict, where: str) -> None:
    """A record naming a shipped card at that card's version must carry that card's hashes."""
    if record["protocol"] not in shipped_cards():
        return
    card = shipped_protocol(record["protocol"])
    if card.version != record["protocol_version"]:
        return
    for key in ("extraction_hash", "probe_hash"):
        if record[key] != getattr(card, key):
            raise HarnessError(f"{where}: {key} {record[key][:12]} differs from card {card.name} v{card.version}'s "
                               f"{getattr(card, key)[:12]}: the record was made with another card of that name and version")


def find_records(paths: list[str | Path]) -> list[dict]:
    """Every record in the given files and folders (folders searched recursively), checked against shipped cards."""
    records = []
    for p in map(Path, paths):
        if not p.exists():
            raise HarnessError(f"{p}: no such file or folder")
        files = sorted(p.rglob("*.json")) if p.is_dir() else [p]
        for f in files:
            record = load_record(f)
            check_against_card(record, str(f))
            records.append(record)
    if not records:
        raise HarnessError(f"no result records found in {', '.join(map(str, paths))}")
    return records


def compare_records(a: dict, b: dict) -> dict:
    """Paired comparison of two models' headline metric on the same test items of the same protocol and probe."""
    for key in ("protocol", "protocol_version", "extraction_hash", "probe_hash", "manifest_hash", "probe", "headline"):
        if a[key] != b[key]:
            raise HarnessError(f"cannot compare: the results differ in {key} ({a[key]!s:.40} vs {b[key]!s:.40})")
    pa, pb = a.get("predictions") or {}, b.get("predictions") or {}
    if not pa.get("ids") or pa.get("ids") != pb.get("ids"):
        raise HarnessError("cannot compare: the results do not hold per-item values for the same test items")
    va, vb = np.asarray(pa["value"], dtype=np.float64), np.asarray(pb["value"], dtype=np.float64)
    head = a["metrics"][a["headline"]]
    out = {"metric": a["headline"], "a": float(va.mean()), "b": float(vb.mean()),
           "difference": paired_difference(va, vb, higher_is_better=head["higher_is_better"], unit=head["unit"])}
    if set(np.unique(va)) <= {0.0, 1.0} and set(np.unique(vb)) <= {0.0, 1.0}:
        out["mcnemar"] = mcnemar_exact(va, vb)
    return out


# what a record was computed from: a record agreeing with a new run in all of these is that run's result
IDENTITY = ("model", "model_revision", "protocol", "protocol_version", "extraction_hash", "probe_hash",
            "manifest_hash", "probe", "conforming")


def changed(old: dict, new: dict) -> list[str]:
    """The identity keys (and the embedding file's sha256) in which two records of one path differ."""
    keys = [key for key in IDENTITY if old.get(key) != new.get(key)]
    if (old.get("embedding_file") or {}).get("sha256") != (new.get("embedding_file") or {}).get("sha256"):
        keys.append("embedding file sha256")
    return keys


def previous(results_dir: str | Path, record: dict) -> dict | str | None:
    """The record already at `record`'s path: the record, the reason it cannot be read, or None when there is none.
    `record` needs only the identity keys (what `scoring.score` asks about before it runs a probe)."""
    path = record_path(Path(results_dir), record)
    if not path.is_file():
        return None
    try:
        return load_record(path)
    except HarnessError as exc:
        return str(exc)


def reusable(results_dir: str | Path, record: dict) -> dict | None:
    """The record at `record`'s path when it was computed from the same file, card, manifest and probe settings."""
    old = previous(results_dir, record)
    return old if isinstance(old, dict) and not changed(old, record) else None


def save_record(record: dict, results_dir: str | Path, rerun: bool = False) -> tuple[Path, str]:
    """Write a record and say what it did to the one it replaces: nothing there, `--rerun`, which hashes changed,
    or an unreadable record, so no result is ever overwritten silently."""
    old = previous(results_dir, record)
    path = write_record(record, results_dir)
    if old is None:
        return path, ""
    if isinstance(old, str):
        return path, f"replaced an unreadable record ({old[:200]})"
    keys = changed(old, record)
    return path, (f"replaced the record of {old['created_utc']} ({', '.join(keys)} changed)" if keys
                  else f"replaced the record of {old['created_utc']} (rerun)" if rerun
                  else f"replaced the record of {old['created_utc']} (same inputs)")


@dataclass
class Ledger:
    """Where a scoring run's records go (`probe`, `run`): saved under `results_dir`, a record of the same inputs
    kept unless `rerun`, each said in one line through `echo`, all collected in `records`. A process that does not
    `speak` (a torchrun rank other than 0) keeps what exists and writes and says nothing."""

    results_dir: Path
    rerun: bool = False
    echo: Callable[[str], None] = print
    speaks: bool = True
    records: list[dict] = field(default_factory=list)

    def publish(self, record: dict) -> None:
        """A new record: saved (saying what it replaced and why) with its caveats shown."""
        if self.speaks:
            path, note = save_record(record, self.results_dir, self.rerun)
            self.echo(f"{headline(record)} -> {path}" + (f" ({note})" if note else ""))
            for caveat in record["caveats"]:
                self.echo(f"  caveat: {one_line(caveat)}")
        self.records.append(record)

    def reuse(self, record: dict) -> dict | None:
        """The existing record of the same inputs as this record-to-be, to keep instead of scoring again."""
        kept = None if self.rerun else reusable(self.results_dir, record)
        if kept is not None:
            self.records.append(kept)
            if self.speaks:
                self.echo(f"{headline(kept)} (kept {record_path(self.results_dir, kept)}: same file, card, clips and "
                          "probe settings; --rerun to score again)")
        return kept
