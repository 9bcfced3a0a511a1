"""The Python API for notebooks: the commands' own functions with Python arguments, scoring of features a user
already has in memory, and result records as a pandas DataFrame.

`import evalharness as eh` exposes these names lazily, so importing the package stays light.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .cards import load_protocol, parse_protocol
from .datasets import Item, Manifest, limited, resolve_manifest
from .errors import HarnessError
from .extract import ExtractConfig, ExtractSummary
from .extract import extract as extract_file
from .protocol import Protocol
from .report import board, render
from .results import find_records
from .runs import RunOutcome, run
from .scoring import score as score_file
from .store import Chunk, Header, finalize, write_part
from .version import __version__

SPLITS = ("train", "val", "test")


def _protocol(card: str | Path | Protocol) -> Protocol:
    return card if isinstance(card, Protocol) else load_protocol(card)


def extract(model: str, protocol: str | Path | Protocol, data: str | Path, out: str | Path, *, name: str = "",
            limit: int | None = None, device: str = "cpu", batch_size: int = 16, workers: int = 2,
            quiet: bool = False) -> ExtractSummary:
    """`evalharness extract`: embed every clip of a card's dataset under `data` into `out` (resumable; an existing
    file of the same run is kept). `limit` embeds a smoke run's clips per split only."""
    card = _protocol(protocol)
    manifest = limited(resolve_manifest(card, data), limit) if limit is not None else None
    cfg = ExtractConfig(batch_size=batch_size, workers=workers, device=device, quiet=quiet, name=name)
    return extract_file(model, card, data, out, cfg, manifest=manifest)


def score(file: str | Path, protocol: str | Path | Protocol, *, data: str | Path, probes: Sequence[str] | None = None,
          device: str = "cpu", allow_mismatch: bool = False, quiet: bool = True) -> list[dict]:
    """`evalharness probe`: score an embedding file with the card's probes (default all), labels from `data`;
    returns the result records (write them with `results.save_record`)."""
    card = _protocol(protocol)
    return score_file(file, card, list(probes) if probes is not None else None, data_root=data, device=device,
                      allow_mismatch=allow_mismatch, options={"quiet": quiet})


def score_arrays(features: np.ndarray, labels: Sequence[str], splits: Sequence[str], *,
                 probes: dict[str, dict] | None = None, ids: Sequence[str] | None = None, model: str = "arrays",
                 device: str = "cpu", quiet: bool = True) -> list[dict]:
    """Score features a user already has: (N, D) or (N, views, D) vectors, a class label and a split (train, val or
    test) per row, with the named probes and settings (default kNN and linear with the card defaults).

    The arrays go through the same path as a file: written as an embedding file under a temporary folder, with a
    manifest of these labels, so every check and every probe is the one `evalharness probe` runs."""
    x = _rows(features, labels, splits)
    names = [str(i) for i in ids] if ids is not None else [f"row{i:07d}" for i in range(len(x))]
    card = _arrays_card(probes, splits)
    with tempfile.TemporaryDirectory(prefix="evalharness-arrays-") as tmp:
        manifest = _arrays_manifest(Path(tmp), names, labels, splits)
        path = _arrays_file(Path(tmp), card, manifest, model, x, names)
        return score_file(path, card, manifest=manifest, device=device, values_checked=False,
                          options={"quiet": quiet})


def _rows(features: np.ndarray, labels: Sequence[str], splits: Sequence[str]) -> np.ndarray:
    """The features as (N, views, D) float32, refused unless every row has a label and a known split."""
    x = np.asarray(features, dtype=np.float32)
    if x.ndim == 2:
        x = x[:, None, :]
    if x.ndim != 3 or len(x) == 0 or len(labels) != len(x) or len(splits) != len(x):
        raise HarnessError(f"features of shape {tuple(np.shape(features))} need one label and one split per row "
                           f"(got {len(labels)} labels, {len(splits)} splits)")
    bad = sorted(set(splits) - set(SPLITS))
    if bad:
        raise HarnessError(f"split {bad[0]!r} is not one of {', '.join(SPLITS)}")
    return x


def _arrays_card(probes: dict[str, dict] | None, splits: Sequence[str]) -> Protocol:
    """The classification card in-memory features are scored under: the splits they have, the probes asked for."""
    return parse_protocol({
        "name": "arrays", "version": 1, "task": "classification",
        "dataset": {"adapter": "manifest", **{s: s for s in SPLITS if s in set(splits)}},
        "frames": {"count": 1, "sampling": "uniform"}, "transform": {"resize_short": 8},
        "probes": probes if probes is not None else {"knn": {}, "linear": {}}}, "score_arrays")


def _arrays_manifest(root: Path, names: list[str], labels: Sequence[str], splits: Sequence[str]) -> Manifest:
    """The labels and splits of the rows as a manifest (ids unique), the only place scoring reads them from."""
    items = tuple(sorted((Item(i, root / i, s, str(label)) for i, s, label in zip(names, splits, labels, strict=True)),
                         key=lambda item: item.id))
    if len({item.id for item in items}) != len(items):
        raise HarnessError("ids must be unique")
    return Manifest(root, items, tuple(sorted({str(label) for label in labels})))


def _arrays_file(root: Path, card: Protocol, manifest: Manifest, model: str, x: np.ndarray, names: list[str]) -> Path:
    """The rows written as an embedding file of `card` under `root`, in the manifest's id order."""
    header = Header(model=model, model_revision="", weights_sha256="", model_config="{}", protocol=card.name,
                    protocol_version=card.version, extraction_hash=card.extraction_hash,
                    protocol_json=json.dumps(card.to_dict(), sort_keys=True), manifest_hash=manifest.hash,
                    harness_version=__version__, environment="{}")
    row = {name: r for r, name in enumerate(names)}
    order = manifest.ids
    chunk = Chunk(order, x[[row[i] for i in order]], np.zeros((len(x), 1, 1), np.int32))
    (root / "parts").mkdir()
    write_part(root / "parts", header, 0, 1, len(x), chunk, x.shape[1], 1, "float32", None)
    return finalize([root / "parts"], root / "arrays.h5")


def load_results(*paths: str | Path):
    """Every result record under the given files and folders as a pandas DataFrame: one row per model x card x
    probe x metric, with the value, its interval, the hashes and whether the run conforms."""
    import pandas as pd

    rows = []
    for record in find_records(list(paths)):
        for metric, m in record["metrics"].items():
            rows.append({"model": record["model"], "revision": record["model_revision"],
                         "protocol": record["protocol"], "protocol_version": record["protocol_version"],
                         "probe": record["probe"], "metric": metric, "headline": metric == record["headline"],
                         "value": m["value"], "ci_low": m["ci_low"], "ci_high": m["ci_high"], "n": m["n"],
                         "unit": m["unit"], "higher_is_better": m["higher_is_better"],
                         "conforming": record["conforming"], "extraction_hash": record["extraction_hash"],
                         "probe_hash": record["probe_hash"], "manifest_hash": record["manifest_hash"],
                         "created_utc": record["created_utc"]})
    return pd.DataFrame(rows)


def leaderboard(*paths: str | Path, fmt: str = "markdown", metric: str = "headline", rank_all: bool = False) -> str:
    """`evalharness leaderboard show`: the table of the records under the given files and folders (`rank_all`
    ranks non-conforming rows too)."""
    return render(board(find_records(list(paths)), metric, rank_all), fmt)


__all__ = ["RunOutcome", "extract", "leaderboard", "load_results", "run", "score", "score_arrays"]
