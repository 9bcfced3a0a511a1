"""The embedded default: synthetic benchmark -> both builtin backbones -> every probe of the cards -> leaderboard."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from .cards import load_protocol
from .datasets.synthetic import SynthConfig, generate
from .extract import ExtractConfig, extract
from .progress import bar
from .report import board, render
from .results import write_record
from .scoring import score
from .untrusted import folder_name

MODELS = ("builtin:pixels", "builtin:stats")
CARDS = ("synthetic-appearance", "synthetic-motion", "synthetic-motion-tokens")


def run_demo(out: str | Path, workers: int = 2, quiet: bool = False, echo: Callable[[str], None] = print) -> str:
    """Run the whole pipeline under `out` and return the leaderboard as markdown."""
    out = Path(out)
    started = time.perf_counter()
    data = out / "data"
    if not (data / "synthetic.json").is_file():
        cfg = SynthConfig()
        with bar(cfg.clips, "synth", "clip", quiet) as progress:
            generate(data, cfg, progress=progress.update)
    echo(f"benchmark videos, masks, manifest: {data}")
    records = []
    for card in CARDS:
        protocol = load_protocol(card)
        for model in MODELS:
            path = out / "embeddings" / folder_name(model, "") / f"{card}.h5"
            summary = extract(model, protocol, data, path, ExtractConfig(batch_size=16, workers=workers, quiet=quiet))
            echo(f"embeddings {model} {card}: {path} ({summary.embedded} clips, {summary.clips_per_second:.1f} clips/s)")
            for record in score(path, protocol, data_root=data):
                records.append(record)
                echo(f"result {model} {card} {record['probe']}: {write_record(record, out / 'results')}")
    table = render(board(records))
    (out / "leaderboard.md").write_text(table + "\n", encoding="utf-8")
    echo(f"leaderboard: {out / 'leaderboard.md'} (demo took {time.perf_counter() - started:.0f} s)")
    return table
