import subprocess
import sys

import pytest


def cli(*args):
    return subprocess.run([sys.executable, "-m", "evalharness", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_protocols_lists_and_prints_cards():
    listing = cli("protocols")
    assert listing.returncode == 0 and "synthetic-motion" in listing.stdout and "manifest-16x4" in listing.stdout
    card = cli("protocols", "synthetic-appearance")
    assert card.returncode == 0 and "extraction_hash:" in card.stdout and "label: appearance" in card.stdout


@pytest.mark.parametrize("args, needle", [
    (["extract", "-m", "builtin:pixels", "-p", "no-such-card", "-d", ".", "-o", "x.h5"],
     "error: protocol no-such-card: no such file"),
    (["extract", "-m", "magic:model", "-p", "{card}", "-d", "{data}", "-o", "{tmp}/x.h5"], "unknown model prefix"),
    (["extract", "-m", "builtin:pixels", "-p", "synthetic-motion", "-d", "{data}", "-o", "{tmp}/x.h5"],
     "clips is 30 but the card needs 360"),
    (["extract", "-m", "builtin:pixels", "-p", "synthetic-motion", "-d", "{tmp}/nowhere", "-o", "{tmp}/x.h5"],
     "data root is not a directory"),
    (["extract", "-m", "builtin:pixels", "-p", "synthetic-motion", "-d", "{data}", "-o", "{tmp}/x.h5", "--shard", "2/2"],
     "need 0 <= i < N"),
    (["validate", "{tmp}/missing.h5"], "missing.h5: file not found"),
    (["probe", "labelprop", "{tmp}/missing.h5", "-p", "synthetic-motion", "-d", "{data}"], "does not define probe 'labelprop'"),
    (["leaderboard", "{tmp}"], "no result records"),
    (["merge", "{tmp}/out.h5", "{tmp}"], "no part files found"),
])
def test_errors_are_one_line_without_traceback(tmp_path, synth30, card30, args, needle):
    result = cli(*[a.format(tmp=tmp_path, data=synth30, card=card30) for a in args])
    assert result.returncode != 0
    assert needle in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) <= 3


def test_synth_command(tmp_path):
    result = cli("synth", tmp_path / "s", "--clips", "10", "--seed", "2", "--quiet")
    assert result.returncode == 0 and (tmp_path / "s" / "manifest.csv").is_file()
    assert len(list((tmp_path / "s" / "videos").glob("*.mp4"))) == 10


def test_probe_all_scores_the_other_probes_and_reports_every_failure(tmp_path):
    import numpy as np

    from helpers import build_file, clustered

    rng = np.random.default_rng(0)
    x, y = clustered(rng, 60, 8, 3, rng.normal(size=(3, 8)))
    probes = {"knn": {"k": [5], "headline_k": 5}, "linear": {"val_fraction": 0.001}}
    path, _, root = build_file(tmp_path, x[:40], y[:40], x[40:], y[40:], probes=probes)
    out = cli("probe", "all", path, "-p", tmp_path / "hand.yaml", "-d", root, "-o", tmp_path / "results")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "top1@k5" in out.stdout and len(list((tmp_path / "results").rglob("knn.json"))) == 1
    assert ("1 of 2 probes failed (linear: " in out.stderr and "val_fraction 0.001 holds out no validation video" in out.stderr
            and "the other 1 were scored" in out.stderr)
