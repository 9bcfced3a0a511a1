"""Feature sequences (cards of sliding frames): extraction streams each video's snippets into `sequences/<id>`,
which parts, shards, merge, resume and the canonical copy carry byte for byte, and which validation checks (shapes
and bounds before any data is read, then values) on crafted files, one line a problem."""

import shutil
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from evalharness.backbones import build_backbone
from evalharness.cards import load_protocol
from evalharness.errors import HarnessError, StoreError
from evalharness.extract import ExtractConfig, extract
from evalharness.protocol import Task
from evalharness.sampling import snippet_windows
from evalharness.store import EmbeddingFile, Keep, Limits, finalize, write_canonical
from evalharness.store.checks import file_problems
from evalharness.store.sandbox import check_file
from evalharness.store.summary import summarise, summary_lines
from evalharness.video import make_views, normalization, read_snippets

from helpers import demuxed, probe, write_timed

FRAMES = {"sampling": "sliding", "count": 4, "stride": 2, "window_frames": 12, "overlap": 0.5}  # W = 12, H = 6


def write_sliding_card(folder: Path, name: str = "slide", **changes) -> Path:
    """A classification card of sliding frames over the csv manifest of `videos`."""
    card = folder / f"{name}.yaml"
    card.write_text(yaml.safe_dump({
        "name": name, "version": 1, "task": "classification",
        "dataset": {"adapter": "manifest", "train": "train", "test": "test"},
        "frames": FRAMES, "transform": {"resize_short": 24, "crop": 24},
        "probes": {"knn": {"k": [1], "headline_k": 1}}, **changes}))
    return card


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Six small videos of 9 to 70 frames (one shorter than a window, one of variable rate starting at 0.7 s)."""
    root = tmp_path_factory.mktemp("sequences")
    rng = np.random.default_rng(3)
    lengths = {"v0": 70, "v1": 9, "v2": 40, "v3": 33, "v4": 50}
    rows = ["id,path,label,split"]
    for i, (vid, n) in enumerate(lengths.items()):
        write_timed(root / f"{vid}.mp4", list(range(3 * i, 3 * i + n)), Fraction(1, 25))
        rows.append(f"{vid},{vid}.mp4,{'ab'[i % 2]},{'train' if i < 3 else 'test'}")
    gaps = rng.choice([20, 33, 40, 67], size=45)
    write_timed(root / "v5.mkv", (700 + np.concatenate([[0], np.cumsum(gaps[:-1])])).tolist(), Fraction(1, 1000))
    rows.append("v5,v5.mkv,b,test")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def card(tmp_path_factory) -> Path:
    return write_sliding_card(tmp_path_factory.mktemp("card"))


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, videos, card) -> Path:
    """The videos extracted with builtin:stats in forward passes of 5 snippets (spanning videos), chunks of 2."""
    out = tmp_path_factory.mktemp("out") / "e.h5"
    summary = extract("builtin:stats", load_protocol(card), videos, out,
                      ExtractConfig(batch_size=5, chunk_size=2, workers=0, quiet=True))
    assert summary.finalized and summary.embedded == 6 and not summary.failures
    return out


def sequences(path: Path) -> dict[str, tuple[bytes, bytes, bytes]]:
    """Every stored sequence's arrays, as bytes."""
    with h5py.File(path, "r") as f:
        return {vid: tuple(f["sequences"][vid][name][()].tobytes() for name in ("features", "windows", "times"))
                for vid in f["sequences"]}


def test_each_video_is_its_snippets_windows_centre_times_and_per_snippet_features(extracted, videos, card):
    protocol = load_protocol(card)
    model = build_backbone("builtin:stats")
    mean, std = normalization(protocol.transform, model.input.mean, model.input.std)
    with EmbeddingFile(extracted) as f:
        assert f.has_sequences and f.shape == (6, 1, 75)
        for row, vid in enumerate(f.ids):
            path = next(videos.glob(f"{vid}.*"))
            times, fps = demuxed(path)
            seq = f.sequence(vid)
            windows = snippet_windows(len(times), protocol.frames, fps)
            assert seq.windows.dtype == np.int32 and seq.windows.tolist() == windows.tolist()
            assert seq.times.dtype == np.float64
            assert seq.times.tolist() == [float((times[a] + times[b]) / 2 - times[0]) for a, b in windows.tolist()]
            assert f.sequence_length(vid) == len(windows) == seq.features.shape[0]
            direct = [model.embed(make_views(s.indices[None], s.frames, protocol.transform, 1, mean, std))[0].numpy()
                      for s in read_snippets(path, protocol.frames)]
            assert np.array_equal(seq.features, np.stack(direct))
            # /clip: the mean of the snippets' features; frame_indices: the first and last frame the windows cover
            assert np.array_equal(f.clip(slice(row, row + 1))[0, 0], seq.features.astype(np.float64).mean(0)
                                  .astype(np.float32))
            assert f.frame_indices(slice(row, row + 1)).tolist() == [[[0, int(windows[-1, 1])]]]
        assert len(f.sequences()) == 6 and f.sequences(["v1", "nope"]).keys() == {"v1"}
        assert f.sequence("v1").windows.tolist() == [[0, 8]]  # shorter than a window: one snippet over all of it
        with pytest.raises(StoreError, match="no feature sequence for 'nope'"):
            f.sequence("nope")


def test_info_shows_the_sequences_and_clip_probes_read_the_file(extracted, videos, card):
    lines = summary_lines(extracted, summarise(extracted))
    with EmbeddingFile(extracted) as f:
        total = sum(map(f.sequence_length, f.ids))
    assert total > 20 and f"sequences: 6 videos, {total} snippets (longest 10)" in lines  # v0: 70 frames, 10 snippets
    record = probe("knn", extracted, load_protocol(card), videos)
    assert record["conforming"] and record["probe"] == "knn"


def test_batch_size_shards_merge_and_resume_give_the_same_bytes(tmp_path, extracted, videos, card):
    protocol = load_protocol(card)
    for i in range(2):
        summary = extract("builtin:stats", protocol, videos, tmp_path / f"m{i}" / "x.h5",
                          ExtractConfig(batch_size=3, chunk_size=2, workers=0, quiet=True, shard=(i, 2)))
        assert not summary.finalized
    merged = finalize([tmp_path / "m0" / "x.h5.parts", tmp_path / "m1" / "x.h5.parts"], tmp_path / "merged.h5")
    assert sequences(merged) == sequences(extracted)
    # interrupted after the first shard's chunks, resumed with another batch size
    out = tmp_path / "resumed.h5"
    extract("builtin:stats", protocol, videos, out, ExtractConfig(batch_size=1, chunk_size=2, workers=0, quiet=True,
                                                                  shard=(1, 2)))
    resumed = extract("builtin:stats", protocol, videos, out, ExtractConfig(batch_size=7, workers=0, quiet=True))
    assert resumed.finalized and resumed.resumed_chunks == 1
    assert sequences(out) == sequences(extracted)
    with EmbeddingFile(out) as a, EmbeddingFile(extracted) as b:
        assert np.array_equal(a.clip(), b.clip()) and np.array_equal(a.frame_indices(), b.frame_indices())


def test_a_broken_video_is_a_failure_and_the_run_goes_on(tmp_path, videos, card):
    root = tmp_path / "data"
    shutil.copytree(videos, root)
    whole = (root / "v0.mp4").read_bytes()
    (root / "v0.mp4").write_bytes(whole[: len(whole) * 6 // 10])  # decodes for a while, then fails
    (root / "v3.mp4").write_text("not a video\n")
    summary = extract("builtin:pixels", load_protocol(card), root, tmp_path / "b.h5",
                      ExtractConfig(batch_size=4, chunk_size=3, workers=1, quiet=True, dtype="float16"))
    assert dict(summary.failures).keys() == {"v0", "v3"} and "not a readable video" in dict(summary.failures)["v3"]
    with EmbeddingFile(tmp_path / "b.h5") as f:
        assert f.ids == ["v1", "v2", "v4", "v5"] and sorted(f.sequences()) == f.ids
        assert f.clip_dtype == "float16" and f.sequence("v2").features.dtype == np.float32


def test_cards_whose_snippets_would_need_tokens_or_dense_maps_and_ids_that_cannot_name_a_group_are_refused(
        tmp_path, videos, card):
    tokens = write_sliding_card(tmp_path, features={"tokens": {"layer": -1}})
    with pytest.raises(HarnessError, match="one feature per snippet; token features and dense maps"):
        extract("builtin:stats", load_protocol(tokens), videos, tmp_path / "t.h5", ExtractConfig(workers=0, quiet=True))
    root = tmp_path / "data"
    root.mkdir()
    (root / "manifest.csv").write_text(f"id,path,label,split\nv0,{videos}/v0.mp4,a,train\nsub/v1,{videos}/v1.mp4,b,test\n")
    with pytest.raises(HarnessError, match="manifest id sub/v1 cannot name its video's group"):
        extract("builtin:stats", load_protocol(card), root, tmp_path / "i.h5", ExtractConfig(workers=0, quiet=True))


def test_the_canonical_copy_keeps_sequences_only_when_asked(tmp_path, extracted, card):
    write_canonical(extracted, tmp_path / "all.h5", Keep())
    assert sequences(tmp_path / "all.h5") == sequences(extracted)
    write_canonical(extracted, tmp_path / "some.h5", Keep(frozenset({"v2", "v5"})))
    assert sequences(tmp_path / "some.h5") == {vid: a for vid, a in sequences(extracted).items() if vid in ("v2", "v5")}
    protocol = load_protocol(card)
    assert Keep.for_card(replace(protocol, task=Task.SEGMENTATION), []).sequences
    assert not Keep.for_card(protocol, []).sequences  # a classification card scores /clip only
    write_canonical(extracted, tmp_path / "none.h5", Keep.for_card(protocol, ["v1", "v2"]))
    with EmbeddingFile(tmp_path / "none.h5") as f:
        assert not f.has_sequences and f.ids == ["v1", "v2"]


def _craft(path: Path, change) -> Path:
    with h5py.File(path, "r+") as f:
        change(f["sequences"])
    return path


def _replace(group: h5py.Group, name: str, data) -> None:
    del group[name]
    group[name] = data


CRAFTED = {
    "times of another length": (lambda g: _replace(g["v2"], "times", np.zeros(3)),
                                "/sequences/v2 holds 5 features but windows (5, 2) and times (3,)"),
    "a NaN feature": (lambda g: g["v2"]["features"].__setitem__((2, 5), np.nan), "/sequences/v2 has non-finite features"),
    "windows going backwards": (lambda g: g["v4"]["windows"].__setitem__(3, [0, 11]),
                                "/sequences/v4 has windows going backwards"),
    "first after last": (lambda g: g["v4"]["windows"].__setitem__(0, [5, 2]), "first < 0 or first > last"),
    "times going backwards": (lambda g: g["v0"]["times"].__setitem__(9, 0.0), "/sequences/v0 has times going backwards"),
    "infinite time": (lambda g: g["v0"]["times"].__setitem__(0, np.inf), "/sequences/v0 has non-finite times"),
    "a stray id": (lambda g: g.move("v3", "stranger\nid"), r"/sequences/'stranger\nid' is not an embedded id"),
    "a missing sequence": (lambda g: g.__delitem__("v3"), "id v3 has no sequence in /sequences"),
    "a missing array": (lambda g: g["v1"].__delitem__("times"), "/sequences/v1 must hold features, windows and times"),
    "an extra array": (lambda g: g["v1"].create_dataset("labels", data=[1]), "unexpected object /sequences/v1/labels"),
    "an array as the group": (lambda g: g.file.__delitem__("sequences") or g.file.create_dataset("sequences", data=[1]),
                              "/sequences must be a group"),
    "another width": (lambda g: _replace(g["v1"], "features", np.zeros((1, 3), np.float32)), "3 wide but /clip is 75"),
    "another type": (lambda g: _replace(g["v1"], "windows", np.zeros((1, 2), np.int64)), "windows (T, 2) int32"),
    "no snippets": (lambda g: [_replace(g["v1"], k, np.zeros(s, d)) for k, s, d in
                               [("features", (0, 75), np.float32), ("windows", (0, 2), np.int32), ("times", 0, float)]],
                    "/sequences/v1 holds 0 snippets"),
    "a huge declared shape": (lambda g: [g["v1"].__delitem__(k) or g["v1"].create_dataset(k, shape=s, dtype=d, chunks=c)
                                         for k, s, d, c in [("features", (2**40, 75), np.float32, (4096, 75)),
                                                            ("windows", (2**40, 2), np.int32, (4096, 2)),
                                                            ("times", (2**40,), float, (4096,))]],
                              "/sequences/v1/features is stored in 268435456 chunks, more than 16384"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_crafted_sequence_is_refused_in_one_line_naming_the_file_and_id(tmp_path, extracted, case):
    change, needle = CRAFTED[case]
    path = _craft(Path(shutil.copy(extracted, tmp_path / "crafted.h5")), change)
    problems = file_problems(path)
    assert problems and all("\n" not in p and p.startswith(f"{path}: ") for p in problems)
    assert needle in problems[0], problems


def test_sequences_past_the_limits_are_refused_before_any_read(extracted):
    assert "/sequences/v0 holds 10 snippets (1 to 9 allowed)" in file_problems(extracted, Limits(snippets=9))[0]
    assert "more than 700 for one video" in file_problems(extracted, Limits(sequence_video_elements=700))[0]
    assert "feature values, beyond sane bounds" in file_problems(extracted, Limits(sequence_elements=2000))[0]


def test_validate_and_the_reader_refuse_a_crafted_file_in_the_sandbox(tmp_path, extracted):
    path = _craft(Path(shutil.copy(extracted, tmp_path / "nan.h5")), CRAFTED["a NaN feature"][0])
    assert check_file(path) == [f"{path}: /sequences/v2 has non-finite features"]
    with EmbeddingFile(path) as f:  # the open checks structure and ids; values are checked as a sequence is read
        f.sequence("v1")
        with pytest.raises(StoreError, match="v2 has non-finite features"):
            f.sequence("v2")
    with pytest.raises(StoreError, match="non-finite features"):
        write_canonical(path, tmp_path / "copy.h5")
    assert not (tmp_path / "copy.h5").exists()
    huge = _craft(Path(shutil.copy(extracted, tmp_path / "huge.h5")), CRAFTED["a huge declared shape"][0])
    problems = check_file(huge)
    assert "/sequences/v1/features is stored in 268435456 chunks" in problems[0] and all("\n" not in p for p in problems)
