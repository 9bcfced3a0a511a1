"""One command from model to table (`evalharness run`), results never replaced silently, smoke runs, display names,
refusals that say which card keys differ, and the Python API."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

import evalharness as eh
from evalharness.cards import load_protocol
from evalharness.cli import cli
from evalharness.datasets import Item, Manifest, limited
from evalharness.errors import HarnessError
from evalharness.extract import ExtractConfig, extract
from evalharness.store import EmbeddingFile

from conftest import write_card
from helpers import clustered


def invoke(*args: str) -> SimpleNamespace:
    """The command run in this process: its exit code and output, a HarnessError as `main` prints it."""
    result = CliRunner().invoke(cli, list(args))
    if isinstance(result.exception, HarnessError):
        return SimpleNamespace(exit_code=1, output=result.output + f"error: {result.exception}\n")
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def records(folder):
    return {(r["model"], r["protocol"], r["probe"]): r for r in map(json.loads, map(lambda p: p.read_text(),
                                                                                       folder.rglob("*.json")))}


@pytest.mark.slow
def test_run_extracts_scores_reuses_and_replaces_only_when_told_or_changed(tmp_path, synth30, card30):
    motion = str(card30)
    looks = str(write_card(tmp_path, "small-looks", dataset={"adapter": "synthetic", "seed": 0, "clips": 30,
                                                             "label": "appearance", "train": "train", "test": "test"}))
    out = tmp_path / "run"
    args = ["run", "-m", "builtin:pixels", "-p", motion, "-p", looks, "-d", str(synth30), "-d", f"{looks}={synth30}",
            "--out", str(out), "--workers", "0", "--quiet"]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    assert first.output.count("embedded builtin:pixels") == 2 and "| builtin:pixels" in first.output
    made = records(out / "results")
    assert set(made) == {("builtin:pixels", "small-motion", "knn"), ("builtin:pixels", "small-looks", "knn")}
    assert all(r["conforming"] for r in made.values())

    again = invoke(*args)  # everything is there: nothing extracted, nothing scored, the same table
    assert again.exit_code == 0 and "embedded" not in again.output and again.output.count("kept") == 4
    assert records(out / "results") == made and again.output.split("| model")[1] == first.output.split("| model")[1]

    rerun = invoke(*args, "--rerun")
    assert rerun.output.count("(rerun)") == 2 and rerun.output.count("kept") == 2  # files kept, records replaced

    write_card(tmp_path, "small-looks", dataset={"adapter": "synthetic", "seed": 0, "clips": 30, "label": "appearance",
                                                 "train": "train", "test": "test"},
               probes={"knn": {"k": [5, 10], "headline_k": 5}})
    changed = invoke(*args)
    assert "small-looks knn top1@k5" in changed.output and "probe_hash changed" in changed.output
    assert "kept" in changed.output.split("small-looks knn")[0]  # a probe setting does not re-extract

    smoke = invoke(*args[:-1], "--limit", "2", "--quiet")
    assert smoke.exit_code == 0, smoke.output
    limited_records = records(out / "limit-2" / "results")
    assert len(limited_records) == 2 and not any(r["conforming"] for r in limited_records.values())
    assert all(any(n.startswith("limit: 2 clips per split") for n in r["notes"]) for r in limited_records.values())
    with EmbeddingFile(next((out / "limit-2" / "embeddings").rglob("small-motion.h5"))) as f:
        assert f.shape[0] == 6  # 2 train + 2 val + 2 test
    assert records(out / "results").keys() == made.keys()  # the full run's records are untouched


def test_run_refuses_a_card_shadowing_a_shipped_one_before_writing(tmp_path, synth30):
    card = write_card(tmp_path, "synthetic-motion")  # the shipped card's name and version, other settings
    result = invoke("run", "-m", "builtin:pixels", "-p", str(card), "-d", str(synth30), "--out", str(tmp_path / "o"))
    assert result.exit_code == 1 and not (tmp_path / "o").exists()
    assert "shipped card's name and version with other settings" in result.output
    assert "card.dataset.clips: 360 -> 30" in result.output
    bad = invoke("run", "-m", "builtin:pixels", "-p", "synthetic-motion", "-d", str(synth30), "-d", f"nocard={synth30}",
                 "--out", str(tmp_path / "o"))
    assert bad.exit_code == 1 and "nocard is not one of the cards of this run" in bad.output


def test_probe_keeps_a_record_of_the_same_inputs_and_names_the_card_keys_a_file_differs_in(tmp_path, synth30, card30):
    protocol = load_protocol(card30)
    file = tmp_path / "e.h5"
    extract("builtin:pixels", protocol, synth30, file, ExtractConfig(workers=0, quiet=True, name="my model"))
    with EmbeddingFile(file) as f:
        assert f.header.name == "my model" and f.header.model == "builtin:pixels"
    args = ["probe", "knn", str(file), "-p", str(card30), "-d", str(synth30), "--out", str(tmp_path / "r"), "--quiet"]
    first = invoke(*args)
    assert first.exit_code == 0 and first.output.startswith("'my model' small-motion knn")
    (record,) = records(tmp_path / "r").values()
    assert record["model"] == "my model" and record["embedding_file"]["model"] == "builtin:pixels"
    assert "kept" in invoke(*args).output
    assert "(rerun)" in invoke(*args, "--rerun").output
    other = write_card(tmp_path, "small-motion", frames={"count": 8, "sampling": "uniform"})
    refused = invoke("probe", "knn", str(file), "-p", str(other), "-d", str(synth30), "--out", str(tmp_path / "r"))
    assert refused.exit_code == 1 and "(file -> card: card.frames.count: 16 -> 8)" in refused.output
    with pytest.raises(HarnessError, match="display name holds the character U"):
        ExtractConfig(name="bad\nname")


def test_a_smoke_manifest_takes_each_class_in_turn():
    items = tuple(Item(f"{label}{i}", None, split, label) for split in ("train", "test") for label in "abc"
                  for i in range(3 if label == "a" else 1))
    manifest = Manifest(None, tuple(sorted(items, key=lambda item: item.id)), ("a", "b", "c"))
    small = limited(manifest, 4)
    assert [i.id for i in small.split("train")] == ["a0", "a1", "b0", "c0"] and small.limit == 4
    assert small.hash != manifest.hash and len(limited(manifest, 100).items) == len(items)
    folds = tuple(Item(f"v{i}", None, "all", group=f"fold{1 + i // 3}") for i in range(9))  # unlabelled: by group
    assert [i.id for i in limited(Manifest(None, folds, ()), 3).items] == ["v0", "v3", "v6"]


def test_python_api_scores_arrays_and_loads_results(tmp_path, synth30, card30):
    rng = np.random.default_rng(0)
    x, y = clustered(rng, 300, 16, 3, rng.normal(scale=3.0, size=(3, 16)))
    splits = ["train"] * 200 + ["test"] * 100
    out = eh.score_arrays(x, [f"c{k}" for k in y], splits, probes={"knn": {"k": [10], "headline_k": 10}, "linear": {}})
    assert [r["probe"] for r in out] == ["knn", "linear"] and all(r["metrics"][r["headline"]]["value"] > 0.9 for r in out)
    assert out[0]["predictions"]["ids"][0] == "row0000200"
    with pytest.raises(HarnessError, match="split 'tset' is not one of train, val, test"):
        eh.score_arrays(x, y, ["tset"] * 300)
    outcome = eh.run(["builtin:pixels"], [card30], synth30, tmp_path / "api", workers=0, quiet=True, echo=lambda _: None)
    assert not outcome.problems and "| builtin:pixels" in outcome.table
    frame = eh.load_results(tmp_path / "api" / "results")
    assert set(frame["probe"]) == {"knn"} and frame["headline"].sum() == 1
    assert {"value", "ci_low", "ci_high", "extraction_hash", "manifest_hash", "conforming"} <= set(frame.columns)
    assert eh.leaderboard(tmp_path / "api" / "results", fmt="csv").startswith("model,")
