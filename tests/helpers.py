"""Builders for embedding files with chosen vectors and a CSV manifest (no videos needed to probe), a reference
decoder, and a one-probe shortcut through the scoring path."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import yaml

from evalharness.cards import load_protocol
from evalharness.datasets import resolve_manifest
from evalharness.scoring import score
from evalharness.store import Chunk, Header, TextEmbeddings, TokenInfo, finalize, write_part, write_text_part


def probe(name, path, protocol, root, **kwargs):
    """The record of one probe, scored as `evalharness probe NAME` does."""
    return score(path, protocol, [name], data_root=root, **kwargs)[0]


def decode_all(path) -> np.ndarray:
    """Every frame of a video as RGB, by PyAV's plain sequential decode (the reference the harness is checked against)."""
    with av.open(str(path), metadata_errors="ignore") as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])])


def write_file(parts, header, out, chunks, views=1, temporal_views=1, dtype="float32", chunk_size=None, text=None,
               tokens=None):
    """An embedding file written as extraction writes one: each chunk a part, then finalize."""
    parts.mkdir(parents=True, exist_ok=True)
    size = chunk_size or max(len(c.ids) + len(c.failures) for c in chunks)
    for index, chunk in enumerate(chunks):
        write_part(parts, header, index, len(chunks), size, chunk, views, temporal_views, dtype, tokens)
    if text is not None:
        write_text_part(parts, header, text)
    return finalize([parts], out)


def clustered(rng, n, dim, n_classes, centres, views=None):
    """Unit vectors around class centres (optionally (n, views, dim) noisy views of each)."""
    labels = rng.integers(0, n_classes, n)
    x = centres[labels] + rng.normal(scale=1.0, size=(n, dim))
    if views:
        x = x[:, None, :] + rng.normal(scale=0.5, size=(n, views, dim))
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    return x.astype(np.float32), labels


def build_file(folder, train_x, train_y, test_x, test_y, name="hand", probes=None, text=None, tokens=None,
               token_dtype="float16", groups=None):
    """An embedding file and a manifest data root for train/test vectors (N, D) or (N, V, D); returns (path, protocol, root).

    With `tokens` ((train (N, V, t, h, w, D), test)), the card asks for token features and the file holds them; with
    `groups` (one per train video), the manifest has a group column."""
    ids = [f"tr{i:04d}" for i in range(len(train_x))] + [f"te{i:04d}" for i in range(len(test_x))]
    labels = list(train_y) + list(test_y)
    splits = ["train"] * len(train_x) + ["test"] * len(test_x)
    root = folder / "data"
    root.mkdir(parents=True, exist_ok=True)
    group_of = list(groups if groups is not None else [""] * len(train_x)) + [""] * len(test_x)
    (root / "manifest.csv").write_text("id,path,label,split,group\n" + "".join(
        f"{i},{i}.mp4,c{label},{s},{g}\n" for i, label, s, g in zip(ids, labels, splits, group_of, strict=True)))
    dataset = {"adapter": "manifest", "train": "train", "test": "test"}
    if text is not None:
        (root / "captions.csv").write_text("video_id,caption\n" + "".join(f"{v},{c}\n" for v, c in text["captions"]))
        dataset["captions"] = "captions.csv"
    card = folder / f"{name}.yaml"
    transform = {"resize_short": 32, **({"crop": 32} if tokens is not None else {})}
    card.write_text(yaml.safe_dump({
        "name": name, "version": 1, "task": "classification" if text is None else "text-retrieval",
        "dataset": dataset, "frames": {"count": 4, "sampling": "uniform"}, "transform": transform,
        "probes": probes if probes is not None else {"knn": {"k": [1, 10, 20], "headline_k": 10}},
        **({"features": {"tokens": {"layer": -1}}} if tokens is not None else {})}))
    protocol = load_protocol(card)
    manifest = resolve_manifest(protocol, root)
    all_x = np.concatenate([train_x, test_x])
    vectors = dict(zip(ids, all_x if all_x.ndim == 3 else all_x[:, None, :], strict=True))
    header = Header(model="m", model_revision="", weights_sha256="", model_config="{}", protocol=name,
                    protocol_version=1, extraction_hash=protocol.extraction_hash, protocol_json="{}",
                    manifest_hash=manifest.hash, harness_version="0", environment=json.dumps({}))
    order = manifest.ids
    clip = np.stack([vectors[i] for i in order]).astype(np.float32)
    captions = None if text is None else TextEmbeddings(list(text["ids"]), [v for v, _ in text["captions"]],
                                                        np.asarray(text["embeddings"], dtype=np.float32))
    chunk = Chunk(order, clip, np.zeros((len(order), 1, 4), np.int32))
    info = None
    if tokens is not None:
        grids = dict(zip(ids, np.concatenate(tokens), strict=True))
        grid = grids[ids[0]].shape[1:4]
        info = TokenInfo(tuple(grid), grids[ids[0]].shape[-1], -1, "after", (1, 1, 1), (0, 0), 0, token_dtype)
        chunk.tokens = {i: grids[i].reshape(grids[i].shape[0], -1, grids[i].shape[-1]).astype(np.float32) for i in order}
    path = write_file(folder / f"{name}.parts", header, folder / f"{name}.h5", [chunk], views=clip.shape[1],
                      text=captions, tokens=info)
    return path, protocol, root


def write_timed(path: Path, pts: list[int], time_base: Fraction, codec: str = "mpeg4", size=(32, 24),
                options: dict | None = None) -> Path:
    """A small video whose frame i (grey level and a bright column moving with i) is presented at pts[i] x time_base."""
    width, height = size
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt, stream.time_base = width, height, "yuv420p", time_base
        stream.codec_context.time_base = time_base
        for i, stamp in enumerate(pts):
            image = np.full((height, width, 3), (i * 7) % 200, np.uint8)
            image[:, i % width] = 255
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = stamp, time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def demuxed(path: Path) -> tuple[list[Fraction], Fraction]:
    """Every decoded frame's presentation time and the stream's average rate, by PyAV's plain decode (FFmpeg's own)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [f.pts * f.time_base for f in container.decode(stream)], stream.average_rate
