"""The one scoring path: an embedding file is opened, validated and checked against its card once, its view
vectors and hash computed once, then scored by every requested probe into result records.

`probe`, `probe all`, `submit` and the demo all score through `score`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from .cards import check_not_shadowing
from .datasets import Manifest, resolve_manifest
from .errors import ProbeError
from .probes import ProbeInput, build_config, conformance_notes, probe_spec
from .protocol import Protocol
from .results import make_record
from .store import EmbeddingFile


class MismatchError(ProbeError):
    """The file does not conform to the card or manifest it is scored under (and that was not allowed)."""


class ProbesFailed(ProbeError):
    """Some of several probes could not score the file; the others' records were made (and passed to `on_record`)."""


def probes_for(protocol: Protocol, name: str) -> list[str]:
    """The probes a command names: one the card defines, or `all` the card lists."""
    names = list(protocol.probes) if name == "all" else [name]
    _check_defined(protocol, names)
    return names


def _check_defined(protocol: Protocol, names: list[str]) -> None:
    """ProbeError naming the first of `names` the card does not define."""
    for name in names:
        if name not in protocol.probes:
            raise ProbeError(f"protocol {protocol.name} does not define probe '{name}' "
                             f"(it has: {', '.join(protocol.probes) or 'none'})")


def score(file: str | Path, protocol: Protocol, probes: list[str] | None = None, *, data_root: str | Path | None = None,
          manifest: Manifest | None = None, device: str = "cpu", allow_mismatch: bool = False,
          values_checked: bool = False, shown_as: str | Path | None = None, options: dict | None = None,
          on_record: Callable[[dict], None] | None = None,
          reuse: Callable[[dict], dict | None] | None = None) -> list[dict]:
    """Score `file` with `probes` (default: every probe of the card) and return their result records.

    Labels come from `manifest` when given (a leaderboard's stored one), else from the
    card under `data_root`; never from the file. A file from another card or manifest,
    or lacking clips the card needs, raises MismatchError unless `allow_mismatch`
    (then its records say `conforming: false`). `values_checked` skips the value scan
    of a file this process or its sandbox already checked; `shown_as` is the path
    messages and records name (a submission's own, not its canonical copy's);
    `options` go to the probes that take them (`save_masks`); `on_record` sees each
    record as soon as it is made; `reuse`, asked with a probe's record-to-be (its identity keys) before the probe
    runs, may return an existing record of the same inputs to keep instead. A card that takes a shipped card's name
    and version with other settings is refused before anything runs; a smoke run's manifest (`datasets.limited`)
    makes every record non-conforming. When several probes run, one that fails does not stop the others: every
    failure is reported at the end as one ProbesFailed."""
    if manifest is None and data_root is None:
        raise ProbeError(f"protocol {protocol.name}: scoring needs the labels, from a data root or a manifest")
    names = probes if probes is not None else list(protocol.probes)
    _check_defined(protocol, names)
    check_not_shadowing(protocol)
    started = time.perf_counter()
    with EmbeddingFile(file, check_values=not values_checked) as f:
        shown = Path(shown_as) if shown_as is not None else f.path
        labels = manifest if manifest is not None else resolve_manifest(protocol, data_root)
        notes = conformance_notes(f, protocol, labels, data_root, shown)
        if notes and not allow_mismatch:
            raise MismatchError(notes[0])
        if labels.limit is not None:
            notes.append(f"limit: {labels.limit} clips per split (a smoke run; its scores compare with nothing)")
        data = ProbeInput(f, protocol, labels, conforming=not notes, notes=notes, shown=shown)
        embedding_file = {"path": str(shown), "sha256": f.file_sha256(), "extraction_hash": f.header.extraction_hash,
                          "manifest_hash": f.header.manifest_hash,
                          **({"model": f.header.model} if f.header.name else {})}
        identity = {"model": f.header.display, "model_revision": f.header.model_revision, "protocol": protocol.name,
                    "protocol_version": protocol.version, "extraction_hash": protocol.extraction_hash,
                    "probe_hash": protocol.probe_hash, "manifest_hash": labels.hash,
                    "embedding_file": embedding_file, "conforming": data.conforming}
        loaded = time.perf_counter()
        records, failures = [], []
        for name in names:
            kept = reuse({**identity, "probe": name}) if reuse is not None else None
            if kept is not None:
                records.append(kept)
                continue
            spec, begun = probe_spec(name), time.perf_counter()
            config = build_config(name, protocol.probes[name])
            try:
                outcome = spec.run(data, config, device, **{k: v for k, v in (options or {}).items() if k in spec.options})
            except ProbeError as exc:
                if len(names) == 1:
                    raise
                failures.append(f"{name}: {exc}")
                continue
            record = make_record(model=f.header.display, model_revision=f.header.model_revision, protocol=protocol,
                                 manifest_hash=labels.hash, embedding_file=embedding_file, probe=name,
                                 config=asdict(config), outcome=outcome, conforming=data.conforming,
                                 notes=data.notes, device=device,
                                 timings={"load_s": loaded - started, "probe_s": time.perf_counter() - begun})
            records.append(record)
            if on_record is not None:
                on_record(record)
    if failures:
        raise ProbesFailed(f"{len(failures)} of {len(names)} probes failed ({'; '.join(failures)}); "
                           f"the other {len(records)} were scored")
    return records
