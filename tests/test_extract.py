import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace

import h5py
import numpy as np
import pytest
import yaml

from evalharness.backbones import build_backbone
from evalharness.cards import load_protocol
from evalharness.datasets import resolve_manifest
from evalharness.errors import ChunkingError, HarnessError
from evalharness.extract import ExtractConfig, extract
from evalharness.sampling import frame_indices
from evalharness.store import EmbeddingFile
from evalharness.video import make_views, normalization, read_sampled

from helpers import decode_all, probe


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "evalharness", *map(str, args)], capture_output=True, text=True, timeout=timeout)


def arrays(path):
    with h5py.File(path, "r") as f:
        return f["ids"][()].tolist(), f["clip"][()].tobytes(), f["frame_indices"][()].tobytes()


def test_extract_writes_a_valid_self_describing_file(tmp_path, synth30, card30):
    protocol = load_protocol(card30)
    out = tmp_path / "e.h5"
    summary = extract("builtin:pixels", protocol, synth30, out, ExtractConfig(batch_size=4, workers=0, quiet=True))
    assert summary.finalized and summary.embedded == 30 and not summary.failures
    assert not (tmp_path / "e.h5.parts").exists()
    manifest = resolve_manifest(protocol, synth30)
    with EmbeddingFile(out) as f:
        assert f.ids == manifest.ids and f.shape[:2] == (30, 1)
        assert f.header.extraction_hash == protocol.extraction_hash and f.header.manifest_hash == manifest.hash
        assert (f.frame_indices() == frame_indices(protocol.frames, 1, 48)).all()
        # the stored vector is the model applied to the frames the card selects
        item = manifest.items[7]
        _, indices, frames = read_sampled(item.path, lambda n: frame_indices(protocol.frames, 1, n))
        model = build_backbone("builtin:pixels")
        mean, std = normalization(protocol.transform, model.input.mean, model.input.std)
        expected = model.embed(make_views(indices, frames, protocol.transform, 1, mean, std)).numpy()
        assert np.array_equal(f.clip(slice(7, 8))[0], expected)
        assert '"device": "cpu"' in f.header.environment


def test_rerun_is_a_no_op_and_another_model_is_refused(tmp_path, synth30, card30):
    protocol = load_protocol(card30)
    out = tmp_path / "e.h5"
    extract("builtin:pixels", protocol, synth30, out, ExtractConfig(batch_size=8, workers=0, quiet=True))
    before = out.read_bytes()
    again = extract("builtin:pixels", protocol, synth30, out, ExtractConfig(batch_size=8, workers=0, quiet=True))
    assert again.embedded == 0 and out.read_bytes() == before
    with pytest.raises(HarnessError, match=r"another run \(file -> this run: .*model: 'builtin:pixels' -> 'builtin:stats'"):
        extract("builtin:stats", protocol, synth30, out, ExtractConfig(batch_size=8, workers=0, quiet=True))
    other = replace(protocol, frames=replace(protocol.frames, count=protocol.frames.count // 2))
    with pytest.raises(HarnessError, match=rf"card.frames.count: {protocol.frames.count} -> {protocol.frames.count // 2}"):
        extract("builtin:pixels", other, synth30, out, ExtractConfig(batch_size=8, workers=0, quiet=True))


def test_resume_with_a_smaller_batch_gives_the_same_bytes_and_chunks_stay_fixed(tmp_path, synth30, card30):
    protocol = load_protocol(card30)
    whole = tmp_path / "whole.h5"
    extract("builtin:stats", protocol, synth30, whole, ExtractConfig(batch_size=8, chunk_size=6, workers=0, quiet=True))
    out = tmp_path / "e.h5"
    # half the chunks with forward passes of 8 views, then (out of GPU memory, say) the rest with 3
    extract("builtin:stats", protocol, synth30, out, ExtractConfig(batch_size=8, chunk_size=6, workers=0, quiet=True,
                                                                   shard=(0, 2)))
    with pytest.raises(ChunkingError, match="cut into chunks of 6 clips, not 4"):
        extract("builtin:stats", protocol, synth30, out, ExtractConfig(batch_size=3, chunk_size=4, workers=0, quiet=True))
    resumed = extract("builtin:stats", protocol, synth30, out, ExtractConfig(batch_size=3, workers=0, quiet=True))
    assert resumed.finalized and resumed.resumed_chunks == 3 and resumed.embedded == 12
    assert arrays(out) == arrays(whole)
    with EmbeddingFile(out) as f:
        batch_sizes = sorted(part["batch_size"] for part in json.loads(f.header.environment)["parts"])
    assert batch_sizes == [3, 8]


def test_two_shards_merged_equal_one_run(tmp_path, synth30, card30):
    single = tmp_path / "single.h5"
    assert cli("extract", "-m", "builtin:stats", "-p", card30, "-d", synth30, "-o", single, "--chunk-size", 3,
               "--workers", 1, "--quiet").returncode == 0
    for i in range(2):
        (tmp_path / f"m{i}").mkdir()
        result = cli("extract", "-m", "builtin:stats", "-p", card30, "-d", synth30, "-o", tmp_path / f"m{i}" / "x.h5",
                     "--shard", f"{i}/2", "--chunk-size", 3, "--batch-size", 2, "--workers", 0, "--quiet")
        assert result.returncode == 0, result.stderr
        assert "evalharness merge" in result.stdout and not (tmp_path / f"m{i}" / "x.h5").exists()
    half = cli("merge", tmp_path / "half.h5", tmp_path / "m0" / "x.h5.parts")
    assert half.returncode == 1 and "chunks not extracted yet" in half.stderr
    merged = tmp_path / "merged.h5"
    result = cli("merge", merged, tmp_path / "m0" / "x.h5.parts", tmp_path / "m1" / "x.h5.parts")
    assert result.returncode == 0, result.stderr
    assert arrays(merged) == arrays(single)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_identical_arrays(tmp_path, synth30, card30):
    reference = tmp_path / "reference.h5"
    base = ["extract", "-m", "builtin:stats", "-p", card30, "-d", synth30, "--chunk-size", 2, "--batch-size", 2,
            "--workers", 1, "--quiet"]
    assert cli(*base, "-o", reference).returncode == 0
    out = tmp_path / "killed.h5"
    rng = random.Random(1234)
    parts = tmp_path / "killed.h5.parts"
    mid_run_kills = 0
    # kill once during start-up, then at a random moment after a random number of finished chunks
    for target in [0] + sorted(rng.sample(range(1, 14), 4)):
        proc = subprocess.Popen([sys.executable, "-m", "evalharness", *map(str, base), "-o", str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while proc.poll() is None and len(list(parts.glob("part-*.h5"))) < target and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            mid_run_kills += 0 < len(list(parts.glob("part-*.h5"))) < 15
        proc.wait()
    assert mid_run_kills >= 3
    result = cli(*base, "-o", out)
    assert result.returncode == 0, result.stderr
    assert arrays(out) == arrays(reference)


@pytest.fixture()
def broken_root(tmp_path, synth30):
    root = tmp_path / "data"
    root.mkdir()
    rows = ["id,path,label,split"]
    for i in range(6):
        shutil.copy(synth30 / "videos" / f"synth{i:05d}.mp4", root / f"good{i}.mp4")
        rows.append(f"good{i},good{i}.mp4,{'ab'[i % 2]},{'train' if i < 4 else 'test'}")
    good = (root / "good0.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(good[: len(good) // 3])
    (root / "empty.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("not a video at all\n")
    rows += ["bad_truncated,truncated.mp4,a,test", "bad_empty,empty.mp4,b,test", "bad_text,text.mp4,a,train",
             "bad_missing,missing.mp4,b,train"]
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    card = tmp_path / "user.yaml"
    card.write_text(yaml.safe_dump({
        "name": "user", "version": 1, "task": "classification",
        "dataset": {"adapter": "manifest", "train": "train", "test": "test"},
        "frames": {"count": 8, "sampling": "dense", "stride": 2}, "transform": {"resize_short": 32, "crop": 32},
        "probes": {"knn": {"k": [1, 2], "headline_k": 1}}}))
    return root, card


def test_broken_inputs_are_recorded_and_summarised_without_traceback(tmp_path, broken_root):
    root, card = broken_root
    out = tmp_path / "u.h5"
    result = cli("extract", "-m", "builtin:pixels", "-p", card, "-d", root, "-o", out, "--chunk-size", 3, "--quiet")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    for vid, reason in [("bad_truncated", "not a readable video"), ("bad_empty", "file is empty"),
                        ("bad_text", "not a readable video"), ("bad_missing", "file not found")]:
        assert any(line.startswith(f"failed: {vid}: ") and reason in line for line in result.stderr.splitlines()), result.stderr
    assert "error: 4 clip(s) could not be decoded" in result.stderr
    assert "6 clips embedded" in result.stdout
    with EmbeddingFile(out) as f:
        assert len(f.ids) == 6 and sorted(i for i, _ in f.failures) == ["bad_empty", "bad_missing", "bad_text", "bad_truncated"]
    allowed = cli("extract", "-m", "builtin:pixels", "-p", card, "-d", root, "-o", tmp_path / "v.h5", "--allow-failures",
                  "--quiet")
    assert allowed.returncode == 0 and "4 failed" in allowed.stdout
    probe = cli("probe", "knn", out, "-p", card, "-d", root, "-o", tmp_path / "res")
    assert probe.returncode == 1 and "lacks 4 of the 10 clips" in probe.stderr and "--allow-mismatch" in probe.stderr
    probe = cli("probe", "knn", out, "-p", card, "-d", root, "-o", tmp_path / "res", "--allow-mismatch")
    assert probe.returncode == 0 and "top1@k1" in probe.stdout


def test_manifest_errors_name_the_row(tmp_path, broken_root):
    root, card = broken_root
    text = (root / "manifest.csv").read_text()
    (root / "manifest.csv").write_text(text + "good1,good1.mp4,a,train\n")
    result = cli("extract", "-m", "builtin:pixels", "-p", card, "-d", root, "-o", tmp_path / "x.h5")
    assert result.returncode == 1 and "manifest.csv line 12: duplicate id 'good1' (first on line 3)" in result.stderr


def test_real_clips_extract_with_the_card_frame_indices(tmp_path, realdata, real_clips):
    rows = ["id,path,label,split"] + [f"{r['path'].replace('.', '_')},{r['path']},{r['label'] or 'x'},"
                                      f"{'train' if i % 2 else 'test'}"
                                      for i, r in enumerate(real_clips)]
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    card = tmp_path / "real.yaml"
    card.write_text(yaml.safe_dump({
        "name": "real", "version": 1, "task": "classification",
        "dataset": {"adapter": "manifest", "file": str(tmp_path / "manifest.csv"), "train": "train", "test": "test"},
        "frames": {"count": 16, "sampling": "dense", "stride": 4}, "views": {"temporal": 2, "spatial": 3},
        "transform": {"resize_short": 64, "crop": 64}}))
    protocol = load_protocol(card)
    out = tmp_path / "real.h5"
    summary = extract("builtin:pixels", protocol, realdata / "videos", out, ExtractConfig(batch_size=4, workers=2, quiet=True))
    assert summary.embedded == len(real_clips) and not summary.failures
    with EmbeddingFile(out) as f:
        assert f.shape[1] == 6
        stored = f.frame_indices()
        for row, vid in enumerate(f.ids):
            path = realdata / "videos" / next(r["path"] for r in real_clips if r["path"].replace(".", "_") == vid)
            assert stored[row].tolist() == frame_indices(protocol.frames, 2, len(decode_all(path))).tolist()


def test_text_retrieval_extraction_writes_caption_embeddings(tmp_path, synth30):
    import torch

    from evalharness.backbones import Backbone, register

    class ColourWords(Backbone):
        """Mean colour per clip; captions map colour words to the same space (a toy text tower)."""

        def embed(self, clips):
            return clips.mean(dim=(1, 3, 4))

        def embed_text(self, texts):
            table = {"red": [1.0, -1, -1], "green": [-1, 1.0, -1], "blue": [-1, -1, 1.0]}
            return torch.tensor([next(v for w, v in table.items() if w in t) for t in texts])

    register("colourwords", lambda name, weights: ColourWords(name=f"colourwords:{name}"))
    card = tmp_path / "text.yaml"
    card.write_text(yaml.safe_dump({
        "name": "synth-text", "version": 1, "task": "text-retrieval",
        "dataset": {"adapter": "synthetic", "clips": 30, "test": "test"},
        "frames": {"count": 8, "sampling": "uniform"}, "transform": {"resize_short": 64, "crop": 64},
        "probes": {"retrieval": {}}}))
    protocol = load_protocol(card)
    out = tmp_path / "t.h5"
    extract("colourwords:toy", protocol, synth30, out, ExtractConfig(batch_size=4, workers=0, quiet=True))
    with EmbeddingFile(out) as f:
        text = f.text()
        ids, videos, emb = text.ids, text.video_ids, text.embeddings
        assert len(ids) == 18 and ids[0] == "synth00007#0" and videos[0] == "synth00007" and emb.shape == (18, 3)
    record = probe("retrieval", out, protocol, synth30)
    assert record["metrics"]["t2v_R@1"]["n"] == 18
    assert record["metrics"]["v2t_R@10"]["value"] > 0.5
    with pytest.raises(HarnessError, match="has no text tower"):
        extract("builtin:pixels", protocol, synth30, tmp_path / "u.h5", ExtractConfig(workers=0, quiet=True))


class BatchMix:
    """A toy backbone whose output depends on the batch it is in (as some GPU kernels' rounding does)."""

    @staticmethod
    def register():
        import torch

        from evalharness.backbones import Backbone, register

        class Mix(Backbone):
            def embed(self, clips):
                means = clips.mean(dim=(1, 3, 4))
                return means + 0.1 * means.mean(0, keepdim=True)

        register("batchmix", lambda name, weights: Mix(name=f"batchmix:{name}"))
        return torch


def test_same_batch_size_gives_the_same_bytes_even_for_a_batch_dependent_model(tmp_path, synth30, card30):
    BatchMix.register()
    protocol = load_protocol(card30)
    whole, sharded, other = tmp_path / "whole.h5", tmp_path / "sharded.h5", tmp_path / "other.h5"
    extract("batchmix:x", protocol, synth30, whole, ExtractConfig(batch_size=4, chunk_size=7, workers=0, quiet=True))
    for shard in ((1, 3), (0, 3), (2, 3)):  # out of order, as shards finish
        extract("batchmix:x", protocol, synth30, sharded, ExtractConfig(batch_size=4, chunk_size=7, workers=0, quiet=True,
                                                                         shard=shard))
    extract("batchmix:x", protocol, synth30, other, ExtractConfig(batch_size=3, chunk_size=7, workers=0, quiet=True))
    assert arrays(sharded) == arrays(whole)
    assert arrays(other)[1] != arrays(whole)[1]  # another batch size: the README says bytes may then differ


def test_retry_failures_takes_only_its_own_shard_and_empty_shards_are_fine(tmp_path, broken_root):
    root, card = broken_root
    out = tmp_path / "u.h5"
    run = ["extract", "-m", "builtin:pixels", "-p", card, "-d", root, "-o", out, "--quiet", "--allow-failures",
           "--workers", 0]
    base = [*run, "--chunk-size", 3]
    empty = cli(*base, "--shard", "4/5")  # 10 clips in 4 chunks: shard 4 of 5 has none
    assert empty.returncode == 0 and "0 clips embedded" in empty.stdout and not out.exists()
    for shard in ("0/5", "1/5", "2/5"):
        assert cli(*base, "--shard", shard).returncode == 0
    parts = tmp_path / "u.h5.parts"
    before = {p.name: p.stat().st_mtime_ns for p in parts.glob("part-*.h5")}
    assert len(before) == 3
    retried = cli(*base, "--shard", "0/5", "--retry-failures")
    assert retried.returncode == 0, retried.stderr
    after = {p.name: p.stat().st_mtime_ns for p in parts.glob("part-*.h5")}
    assert after["part-000001.h5"] == before["part-000001.h5"] and after["part-000002.h5"] == before["part-000002.h5"]
    mismatch = cli(*base, "--shard", "3/5", "--chunk-size", 4)
    assert mismatch.returncode == 1 and "cut into chunks of 3 clips, not 4" in mismatch.stderr
    assert "leave out --chunk-size" in mismatch.stderr
    assert cli(*run, "--shard", "3/5").returncode == 0  # no --chunk-size: the parts' own
    with EmbeddingFile(out) as f:
        assert len(f.ids) == 6 and len(f.failures) == 4


def test_token_files_shard_merge_and_resume_to_the_same_bytes_and_refuse_past_max_size(tmp_path, synth30):
    from conftest import write_card

    card = write_card(tmp_path, "tok", features={"tokens": {"layer": -1, "pool": [2, 2, 2]}},
                      probes={"attentive": {"num_heads": 4}})
    single = tmp_path / "single.h5"
    result = cli("extract", "-m", "builtin:stats", "-p", card, "-d", synth30, "-o", single, "--chunk-size", 3,
                 "--workers", 0, "--token-dtype", "bfloat16")
    assert result.returncode == 0, result.stderr
    assert "token features: 30 clips x 1 views x 128 tokens (8x4x4) x 24 x 2 bytes" in result.stderr
    for i in range(2):
        (tmp_path / f"m{i}").mkdir()
        assert cli("extract", "-m", "builtin:stats", "-p", card, "-d", synth30, "-o", tmp_path / f"m{i}" / "x.h5",
                   "--shard", f"{i}/2", "--chunk-size", 3, "--batch-size", 2, "--workers", 0, "--quiet",
                   "--token-dtype", "bfloat16").returncode == 0
    merged = tmp_path / "merged.h5"
    assert cli("merge", merged, tmp_path / "m0" / "x.h5.parts", tmp_path / "m1" / "x.h5.parts").returncode == 0
    with h5py.File(single, "r") as a, h5py.File(merged, "r") as b:
        assert a["tokens"][()].tobytes() == b["tokens"][()].tobytes() and a["tokens"].chunks == (1, 1, 128, 24)
        assert dict(a["tokens"].attrs)["dtype"] == "bfloat16"
    assert cli("validate", merged).returncode == 0
    with EmbeddingFile(merged) as f:
        assert f.clip_tokens(0).shape == (1, 128, 24) and f.token_info.grid == (8, 4, 4)
    refused = cli("extract", "-m", "builtin:stats", "-p", card, "-d", synth30, "-o", tmp_path / "big.h5",
                  "--max-size", "100K", "--workers", 0, "--quiet")
    assert refused.returncode == 1 and "more than the maximum" in refused.stderr and "--max-size" in refused.stderr
    assert not (tmp_path / "big.h5").exists() and not (tmp_path / "big.h5.parts").exists()
