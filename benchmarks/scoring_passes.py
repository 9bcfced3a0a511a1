"""How often scoring reads an embedding file: wall time and full scans of /clip for `probe all` and a three-probe `submit`.

    python benchmarks/scoring_passes.py [--clips 20000] [--dim 768] [--views 3] [--workdir DIR] [--pythonpath SRC]

Builds (once, in --workdir) a manifest data root, a card with three probes (kNN, linear,
retrieval) and a matching embedding file, then runs the two commands as a user would,
each in fresh processes. Every process (the sandboxed validation child of `submit`
included) counts the bytes it reads from `/clip` through h5py, so "scans" is the bytes
read over the size of `/clip`. `--pythonpath` runs the commands from another checkout
of the harness (for a before/after comparison on the same file).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

COUNTER = '''
import atexit, json, os
import h5py

_read = {"bytes": 0}
_get = h5py.Dataset.__getitem__


def _counting(self, args, *rest, **kw):
    out = _get(self, args, *rest, **kw)
    if self.name == "/clip" and hasattr(out, "nbytes"):
        _read["bytes"] += int(out.nbytes) * (self.dtype.itemsize / out.dtype.itemsize if out.dtype.itemsize else 1)
    return out


h5py.Dataset.__getitem__ = _counting
atexit.register(lambda: open(os.path.join(os.environ["CLIP_READS"], str(os.getpid())), "w").write(json.dumps(_read)))
'''


def build(work: Path, clips: int, dim: int, views: int) -> tuple[Path, Path, Path]:
    """A data root, a card and an embedding file for them (written through the harness's own writer)."""
    from evalharness.cards import load_protocol
    from evalharness.datasets import resolve_manifest
    from evalharness.store import Chunk, Header, finalize, write_part

    root, card, path = work / "data", work / "card.yaml", work / "file.h5"
    if path.is_file():
        return root, card, path
    rng = np.random.default_rng(0)
    classes = 100
    labels = rng.integers(0, classes, clips)
    root.mkdir(parents=True, exist_ok=True)
    ids = [f"c{i:07d}" for i in range(clips)]
    splits = np.where(np.arange(clips) % 5 == 0, "test", "train")
    (root / "manifest.csv").write_text("id,path,label,split\n" + "".join(
        f"{i},{i}.mp4,k{y},{s}\n" for i, y, s in zip(ids, labels, splits, strict=True)))
    card.write_text(yaml.safe_dump({
        "name": "bench", "version": 1, "task": "classification",
        "dataset": {"adapter": "manifest", "train": "train", "test": "test"},
        "frames": {"count": 8, "sampling": "uniform"}, "views": {"temporal": views}, "transform": {"resize_short": 32},
        "probes": {"knn": {"k": [10, 20], "headline_k": 20},
                   "linear": {"c_grid": {"log10_min": -1, "log10_max": 1, "steps": 3}}, "retrieval": {}}}))
    protocol = load_protocol(card)
    manifest = resolve_manifest(protocol, root)
    header = Header(model="bench:model", model_revision="", weights_sha256="", model_config="{}", protocol="bench",
                    protocol_version=1, extraction_hash=protocol.extraction_hash, protocol_json="{}",
                    manifest_hash=manifest.hash, harness_version="0", environment="{}")
    centres = rng.normal(size=(classes, dim)) * 0.3
    parts, step = work / "file.h5.parts", 4096
    parts.mkdir(exist_ok=True)
    order = manifest.ids
    label_of = dict(zip(ids, labels, strict=True))
    chunks = range(0, clips, step)
    for index, start in enumerate(chunks):
        rows = order[start:start + step]
        x = centres[[label_of[i] for i in rows]][:, None, :] + rng.normal(size=(len(rows), views, dim))
        write_part(parts, header, index, len(chunks), step,
                   Chunk(rows, x.astype(np.float32), np.zeros((len(rows), views, 8), np.int32)), views, views, "float32")
    finalize([parts], path)
    return root, card, path


def run(args: list[str], env: dict, reads: Path) -> tuple[float, int]:
    for f in reads.iterdir():
        f.unlink()
    started = time.perf_counter()
    # run outside any checkout: `python -m` puts the working directory first on the path
    result = subprocess.run([sys.executable, "-m", "evalharness", *args], env=env, capture_output=True, text=True,
                            cwd=reads.parent)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed: {result.stderr.strip().splitlines()[-1]}")
    return seconds, sum(json.loads(f.read_text())["bytes"] for f in reads.iterdir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--pythonpath", help="Run the commands with this checkout of the harness first on the path.")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="scoring-passes-"))
    work.mkdir(parents=True, exist_ok=True)
    root, card, path = build(work, args.clips, args.dim, args.views)
    clip_bytes = args.clips * args.views * args.dim * 4
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "site").mkdir()
        (tmp / "site" / "sitecustomize.py").write_text(COUNTER)
        (tmp / "reads").mkdir()
        paths = [str(tmp / "site")] + ([args.pythonpath] if args.pythonpath else [])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "CLIP_READS": str(tmp / "reads")}
        rows = []
        probe_s, probe_b = run(["probe", "all", str(path), "-p", str(card), "-d", str(root), "-o", str(tmp / "res")],
                               env, tmp / "reads")
        rows.append(("probe all (3 probes)", probe_s, probe_b))
        run(["leaderboard", "init", str(tmp / "lb"), "-p", str(card), "-d", str(root)], env, tmp / "reads")
        submit_s, submit_b = run(["submit", str(path), "-l", str(tmp / "lb")], env, tmp / "reads")
        rows.append(("submit (3 probes)", submit_s, submit_b))
    print(f"file: {args.clips} clips x {args.views} views x {args.dim} float32 ({clip_bytes / 2**20:.0f} MiB of /clip), "
          f"harness from {args.pythonpath or 'this checkout'}")
    print("| command | wall s | /clip bytes read | full scans |")
    print("|---|---|---|---|")
    for name, seconds, read in rows:
        print(f"| {name} | {seconds:.1f} | {read / 2**20:.0f} MiB | {read / clip_bytes:.2f} |")


if __name__ == "__main__":
    main()
