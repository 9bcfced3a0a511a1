"""From models and cards to a table in one call: extract what is missing (the embedding file is the cache), score
what is missing or stale (a record of the same inputs is kept), and build the leaderboard of what was run.

`evalharness run`, the Python API's `run` and the demo all go through `run`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .cards import check_not_shadowing, load_protocol
from .datasets import Manifest, limited, resolve_manifest
from .errors import HarnessError
from .extract import ExtractConfig, extract
from .protocol import Protocol
from .report import board, render
from .results import Ledger
from .scoring import MismatchError, score
from .untrusted import folder_name, one_line, shown


@dataclass
class RunOutcome:
    """What a run did: the records of every (model, card) it scored (new and kept), the problems of those it could
    not finish, one line each, and the leaderboard of the records as markdown."""

    records: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    table: str = ""


def data_roots(values: list[str], cards: list[str]) -> tuple[Path | None, dict[str, Path]]:
    """The data roots of `-d ROOT` and `-d CARD=ROOT` options (CARD as given to `-p`): one default root and one per
    card; a CARD that is not among `cards`, or two default roots, is an error."""
    default, per_card = None, {}
    for value in values:
        card, sep, root = value.partition("=")
        if sep and card in cards:
            per_card[card] = Path(root)
        elif sep and not Path(value).exists():
            raise HarnessError(f"-d {value}: {card} is not one of the cards of this run ({', '.join(cards)})")
        elif default is not None:
            raise HarnessError(f"-d {value}: a second data root for every card; use CARD=ROOT for one card's root")
        else:
            default = Path(value)
    return default, per_card


def layout(out: str | Path, limit: int | None) -> Path:
    """The folder a run writes under: `out`, or `out/limit-N` for a smoke run, so that its files and records never
    mix with a full run's."""
    return Path(out) if limit is None else Path(out) / f"limit-{limit}"


def embedding_path(folder: Path, model: str, protocol: Protocol) -> Path:
    """folder/embeddings/<model folder>/<card>.h5: one file per model and card, the cache a later run reuses."""
    return folder / "embeddings" / folder_name(model, "") / f"{protocol.name}.h5"


def run(models: list[str], cards: list[str | Path | Protocol], data: str | Path | None, out: str | Path, *,
        roots: dict[str, str | Path] | None = None, limit: int | None = None, rerun: bool = False,
        allow_mismatch: bool = False, device: str = "cpu", workers: int = 2, batch_size: int = 16,
        quiet: bool = False, echo: Callable[[str], None] = print) -> RunOutcome:
    """Every model on every card under `out`, reusing what is done. A card's data root is `roots[card]` (keyed by
    the card as given or by its name), else `data`. A (model, card) that fails is reported and the others go on;
    `limit` makes a smoke run of that many clips per split, non-conforming everywhere."""
    roots = {str(k): Path(v) for k, v in (roots or {}).items()}
    protocols = [(str(c) if not isinstance(c, Protocol) else c.name,
                  c if isinstance(c, Protocol) else load_protocol(c)) for c in cards]
    for _, protocol in protocols:
        check_not_shadowing(protocol)
    folder = layout(out, limit)
    outcome = RunOutcome()
    for ref, protocol in protocols:
        root = roots.get(ref) or roots.get(protocol.name) or (Path(data) if data is not None else None)
        if root is None:
            outcome.problems.append(f"{protocol.name}: no data root given for this card (-d {ref}=ROOT)")
            continue
        try:
            manifest = resolve_manifest(protocol, root)
        except HarnessError as exc:
            outcome.problems.append(f"{protocol.name}: {exc}")
            continue
        if limit is not None:
            manifest = limited(manifest, limit)
        for model in models:
            try:
                _one(model, protocol, root, manifest, folder, outcome.records, rerun=rerun,
                     allow_mismatch=allow_mismatch, device=device, workers=workers, batch_size=batch_size,
                     quiet=quiet, echo=echo)
            except HarnessError as exc:
                outcome.problems.append(f"{shown(model)} on {protocol.name}: {one_line(str(exc))}")
    if outcome.records:
        outcome.table = render(board(outcome.records))
    return outcome


def _one(model: str, protocol: Protocol, root: Path, manifest: Manifest, folder: Path, records: list[dict], *,
         rerun: bool, allow_mismatch: bool, device: str, workers: int, batch_size: int, quiet: bool,
         echo: Callable[[str], None]) -> None:
    """One model on one card: the file extracted or reused, then every probe of the card scored or kept, each
    record added to `records` as soon as it exists (so a probe that fails loses none of the others)."""
    path = embedding_path(folder, model, protocol)
    cfg = ExtractConfig(batch_size=batch_size, workers=workers, device=device, quiet=quiet)
    summary = extract(model, protocol, root, path, cfg, announce=None if quiet else echo, manifest=manifest)
    if summary.embedded or summary.resumed_chunks:
        echo(f"embedded {shown(model)} on {protocol.name}: {summary.embedded} clips "
             f"({summary.clips_per_second:.1f} clips/s), {summary.resumed_chunks} chunks resumed -> {path}")
    else:
        echo(f"kept {path} (the same model, card and clips)")
    for vid, reason in summary.failures:
        echo(f"  failed clip {shown(vid)}: {one_line(reason)}")
    if not summary.finalized:
        raise HarnessError(f"{path}: not every chunk is extracted yet (another shard is still running)")
    ledger = Ledger(folder / "results", rerun, echo, records=records)
    try:
        score(path, protocol, manifest=manifest, data_root=root, device=device, allow_mismatch=allow_mismatch,
              values_checked=True, options={"quiet": quiet}, on_record=ledger.publish, reuse=ledger.reuse)
    except MismatchError as exc:
        raise HarnessError(f"{exc} (--allow-mismatch scores it anyway, marked non-conforming)") from None
