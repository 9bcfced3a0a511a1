import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_shows_the_appearance_motion_and_temporal_contrasts(tmp_path):
    result = subprocess.run([sys.executable, "-m", "evalharness", "demo", "--out", str(tmp_path), "--quiet"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    assert "| model" in result.stdout and "leaderboard:" in result.stdout
    score, tokens, temporal = {}, {}, {}
    probes = set()
    for path in (tmp_path / "results").rglob("*.json"):
        record = json.loads(path.read_text())
        probes.add(record["probe"])
        if record["probe"] == "knn":
            score[record["model"], record["protocol"]] = record["metrics"][record["headline"]]["value"]
        if record["protocol"] == "synthetic-motion-tokens":
            tokens[record["model"], record["probe"]] = record["metrics"][record["headline"]]["value"]
        if record["probe"] in ("localization", "segmentation"):
            temporal[record["model"], record["probe"]] = record["metrics"][record["headline"]]["value"]
    assert len(score) == 4 and len(tokens) == 4 and len(temporal) == 4
    assert probes == {"knn", "linear", "retrieval", "attentive", "localization", "segmentation"}
    # motion lives in the order of builtin:stats' tokens: attentive reads it, a linear probe on their mean cannot
    assert tokens["builtin:stats", "attentive"] > 0.85 and tokens["builtin:stats", "linear"] < 0.4
    # chance: appearance 1/6, motion 1/4
    assert score["builtin:pixels", "synthetic-motion"] < 0.40
    assert score["builtin:pixels", "synthetic-appearance"] > 0.45
    assert score["builtin:stats", "synthetic-motion"] > 0.80
    assert score["builtin:stats", "synthetic-appearance"] > 0.60
    # the timeline: the mean of any window inside a stretch is the same, so only motion finds and names the actions
    assert temporal["builtin:stats", "localization"] > 0.6 and temporal["builtin:pixels", "localization"] < 0.35
    assert temporal["builtin:stats", "segmentation"] > 0.5 and temporal["builtin:pixels", "segmentation"] < 0.2
    board = (tmp_path / "leaderboard.md").read_text()
    assert board.count("builtin:") == 2 and "attentive" in board
    assert "localization mAP" in board and "segmentation F1@50" in board
    # the regression gate: any change that moves a demo score fails here until the baseline is updated on purpose
    # (evalharness check RESULTS --baseline tests/golden/demo_baseline.json --update)
    baseline = Path(__file__).parent / "golden" / "demo_baseline.json"
    gate = subprocess.run([sys.executable, "-m", "evalharness", "check", str(tmp_path / "results"), "--baseline", str(baseline)],
                          capture_output=True, text=True)
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert "20 compared, 0 failing" in gate.stdout
