import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from evalharness.errors import StoreError
from evalharness.probes.common import video_vectors
from evalharness.store import Chunk, EmbeddingFile, Header, file_problems, finalize, write_part

from helpers import write_file

HEADER = Header(model="builtin:test", model_revision="", weights_sha256="", model_config="{}", protocol="p",
                protocol_version=1, extraction_hash="e" * 64, protocol_json="{}", manifest_hash="m" * 64,
                harness_version="0", environment=json.dumps({"device": "cpu"}))


def make_valid(folder, n=6, views=2, dim=4, chunk=3):
    rng = np.random.default_rng(0)
    ids = [f"v{i:03d}" for i in range(n)]
    chunks = [Chunk(ids[c:c + chunk], rng.normal(size=(len(ids[c:c + chunk]), views, dim)).astype(np.float32),
                    np.tile(np.arange(8, dtype=np.int32), (len(ids[c:c + chunk]), 1, 1))) for c in range(0, n, chunk)]
    return write_file(folder / "x.h5.parts", HEADER, folder / "x.h5", chunks, views=views)


@pytest.fixture()
def valid(tmp_path):
    return make_valid(tmp_path / "valid")


def mutated(valid, tmp_path, mutate):
    path = tmp_path / "crafted.h5"
    shutil.copy(valid, path)
    with h5py.File(path, "r+") as f:
        mutate(f, tmp_path)
    return path


def replace(f, name, **kwargs):
    del f[name]
    f.create_dataset(name, **kwargs)


def dense(f, vid, maps, stride=8, frame_size=(16, 16)):
    """Dense maps for `vid` with the geometry attributes a reader expects (valid for a 2 x 2 grid by default)."""
    ds = f["dense"].create_dataset(vid, data=maps)
    ds.attrs["stride"] = stride
    ds.attrs["frame_size"] = np.array(frame_size)
    return ds


def test_valid_file_reads_back(valid):
    assert file_problems(valid) == []
    with EmbeddingFile(valid) as f:
        assert f.ids == [f"v{i:03d}" for i in range(6)]
        assert f.shape == (6, 2, 4)
        vectors = video_vectors(f)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
        raw = f.clip()
        unit = raw / np.linalg.norm(raw, axis=2, keepdims=True)
        mean = unit.mean(1)
        assert np.allclose(vectors, mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-6)
        assert f.header.model == "builtin:test" and f.failures == []


def _secret(tmp):
    secret = tmp / "secret.bin"
    secret.write_bytes(b"TOPSECRET" * 100)
    return secret


CRAFTED = {
    "external storage": (lambda f, t: replace(f, "clip", shape=(6, 2, 4), dtype="f4",
                                              external=[(str(_secret(t)), 0, 6 * 2 * 4 * 4)]), "uses external storage"),
    "soft link": (lambda f, t: f["dense"].__setitem__("v000", h5py.SoftLink("/clip")), "is a soft link"),
    "external link": (lambda f, t: f["dense"].__setitem__("v000", h5py.ExternalLink("/etc/passwd", "/x")), "external link"),
    "second hard link": (lambda f, t: f["dense"].__setitem__("v000", f["clip"]), "second hard link"),
    "lzf filter": (lambda f, t: replace(f, "clip", data=np.ones((6, 2, 4), "f4"), compression="lzf"), "uses filter 32000"),
    "nan": (lambda f, t: f["clip"].__setitem__((3, 1, 2), np.nan), "non-finite values for id 'v003'"),
    "duplicate ids": (lambda f, t: replace(f, "ids", data=np.array(["a", "b", "b", "c", "d", "e"], dtype=object),
                                           dtype=h5py.string_dtype()), "duplicate id 'b'"),
    "unsorted ids": (lambda f, t: replace(f, "ids", data=np.array(["b", "a", "c", "d", "e", "f"], dtype=object),
                                          dtype=h5py.string_dtype()), "not sorted"),
    "lying lengths": (lambda f, t: replace(f, "frame_indices", data=np.zeros((5, 1, 8), "i4")), "lengths disagree"),
    "huge shape": (lambda f, t: (replace(f, "clip", shape=(6_000_000, 2, 4), dtype="f4", chunks=(1024, 2, 4)),
                                 replace(f, "ids", shape=(6_000_000,), dtype=h5py.string_dtype(), chunks=(1024,)),
                                 replace(f, "frame_indices", shape=(6_000_000, 1, 8), dtype="i4", chunks=(1024, 1, 8))),
                   "chunks written"),
    "wrong dtype": (lambda f, t: replace(f, "clip", data=np.ones((6, 2, 4), "f8")), "float16/float32"),
    "incomplete": (lambda f, t: f.attrs.__setitem__("complete", False), "not complete"),
    "other format": (lambda f, t: f.attrs.__setitem__("format", "something.else"), "not an evalharness embedding file"),
    "newer schema": (lambda f, t: f.attrs.__setitem__("schema_version", 99), "schema_version is 99"),
    "missing attribute": (lambda f, t: f.attrs.__delitem__("manifest_hash"), "missing root attribute 'manifest_hash'"),
    "stray dense maps": (lambda f, t: dense(f, "zzz", np.zeros((2, 2, 2, 3), np.float16)),
                         "/dense/zzz is not an embedded id"),
    "unexpected object": (lambda f, t: f.create_dataset("payload", data=np.zeros(3)), "unexpected object /payload"),
    "huge attribute": (lambda f, t: f.attrs.__setitem__("blob", np.zeros(4096)), "attribute 'blob'"),
    "virtual dataset": (lambda f, t: (f.__delitem__("clip"), f.create_virtual_dataset(
        "clip", h5py.VirtualLayout(shape=(6, 2, 4), dtype="f4"))), "virtual dataset"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_files_are_rejected_with_one_line(valid, tmp_path, case):
    mutate, needle = CRAFTED[case]
    path = mutated(valid, tmp_path, mutate)
    problems = file_problems(path)
    assert problems, case
    assert any(needle in p for p in problems), problems
    assert all(p.startswith(str(path)) and "\n" not in p for p in problems)
    with pytest.raises(StoreError):
        EmbeddingFile(path)
    result = subprocess.run([sys.executable, "-m", "evalharness", "validate", str(path)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "TOPSECRET" not in result.stdout + result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("content, needle", [(b"", "file is empty"), (b"hello world\n" * 100, "not an HDF5 file")])
def test_non_hdf5_inputs(tmp_path, content, needle):
    path = tmp_path / "bad.h5"
    path.write_bytes(content)
    assert needle in file_problems(path)[0]


def test_truncated_hdf5(valid, tmp_path):
    path = tmp_path / "truncated.h5"
    data = valid.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    problems = file_problems(path)
    assert len(problems) == 1 and ("truncated or corrupt" in problems[0] or "unreadable" in problems[0] or
                                   "not an HDF5 file" in problems[0])


def test_finalize_refuses_missing_chunks_and_foreign_parts(tmp_path):
    parts = tmp_path / "a.parts"
    parts.mkdir()
    chunk = Chunk(["a"], np.ones((1, 1, 2), np.float32), np.zeros((1, 1, 4), np.int32))
    write_part(parts, HEADER, 0, 3, 1, chunk, 1, 1, "float32")
    with pytest.raises(StoreError, match="2 of 3 chunks not extracted yet"):
        finalize([parts], tmp_path / "a.h5")
    other = tmp_path / "b.parts"
    other.mkdir()
    from dataclasses import replace as dc_replace

    write_part(other, dc_replace(HEADER, model="builtin:other"), 1, 3, 1, Chunk(["b"], chunk.clip, chunk.frame_indices),
               1, 1, "float32")
    with pytest.raises(StoreError, match="does not belong"):
        finalize([parts, other], tmp_path / "a.h5")


def test_failures_and_empty_chunks_survive_finalize(tmp_path):
    parts = tmp_path / "f.parts"
    parts.mkdir()
    write_part(parts, HEADER, 0, 2, 1, Chunk([], np.zeros((0, 1, 0), np.float32), np.zeros((0, 1, 0), np.int32),
                                             failures=[("a", "a.mp4: file is empty (0 bytes)")]), 1, 1, "float32")
    write_part(parts, HEADER, 1, 2, 1, Chunk(["b"], np.ones((1, 1, 3), np.float32), np.zeros((1, 1, 4), np.int32)),
               1, 1, "float32")
    out = finalize([parts], tmp_path / "f.h5")
    with EmbeddingFile(out) as f:
        assert f.ids == ["b"] and f.shape == (1, 1, 3)
        assert f.failures == [("a", "a.mp4: file is empty (0 bytes)")]
