"""The embedded default: synthetic benchmark and its timeline -> both builtin backbones -> every probe of the cards ->
leaderboard."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from .datasets.synthetic import TIMELINE, SynthConfig, TimelineConfig, generate, generate_timeline
from .errors import HarnessError
from .progress import bar
from .runs import run

MODELS = ("builtin:pixels", "builtin:stats")
CARDS = ("synthetic-appearance", "synthetic-motion", "synthetic-motion-tokens", "synthetic-localization",
         "synthetic-segmentation")


def run_demo(out: str | Path, workers: int = 2, quiet: bool = False, echo: Callable[[str], None] = print) -> str:
    """Run the whole pipeline under `out` (what is already there is reused) and return the leaderboard as markdown."""
    out = Path(out)
    started = time.perf_counter()
    data = out / "data"
    if not (data / "synthetic.json").is_file():
        cfg = SynthConfig()
        with bar(cfg.clips, "synth", "clip", quiet) as progress:
            generate(data, cfg, progress=progress.update)
    if not (data / TIMELINE / "synthetic.json").is_file():
        timeline = TimelineConfig()
        with bar(timeline.clips, "timeline", "video", quiet) as progress:
            generate_timeline(data, timeline, progress=progress.update)
    echo(f"benchmark videos, masks, manifest, timeline: {data}")
    outcome = run(list(MODELS), list(CARDS), data, out, workers=workers, quiet=quiet, echo=echo)
    if outcome.problems:
        raise HarnessError(f"demo: {'; '.join(outcome.problems)}")
    (out / "leaderboard.md").write_text(outcome.table + "\n", encoding="utf-8")
    echo(f"leaderboard: {out / 'leaderboard.md'} (demo took {time.perf_counter() - started:.0f} s)")
    return outcome.table
