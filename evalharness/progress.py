"""Progress bars with rate and ETA on a terminal; silent with --quiet and in non-interactive logs."""

from __future__ import annotations

import sys

from tqdm import tqdm


def bar(total: int, desc: str, unit: str, quiet: bool = False, initial: int = 0) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, smoothing=0.1,
                disable=quiet or not sys.stderr.isatty(), file=sys.stderr)
