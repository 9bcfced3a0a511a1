"""Builders for embedding files with chosen vectors and a CSV manifest (no videos needed to probe)."""

from __future__ import annotations

import json

import numpy as np
import yaml

from evalharness.datasets import resolve_manifest
from evalharness.protocol import load_protocol
from evalharness.store import Chunk, Header, finalize, write_part


def clustered(rng, n, dim, n_classes, centres, views=None):
    """Unit vectors around class centres (optionally (n, views, dim) noisy views of each)."""
    labels = rng.integers(0, n_classes, n)
    x = centres[labels] + rng.normal(scale=1.0, size=(n, dim))
    if views:
        x = x[:, None, :] + rng.normal(scale=0.5, size=(n, views, dim))
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    return x.astype(np.float32), labels


def build_file(folder, train_x, train_y, test_x, test_y, name="hand", probes=None, text=None):
    """An embedding file and a manifest data root for train/test vectors (N, D) or (N, V, D); returns (path, protocol, root)."""
    ids = [f"tr{i:04d}" for i in range(len(train_x))] + [f"te{i:04d}" for i in range(len(test_x))]
    labels = list(train_y) + list(test_y)
    splits = ["train"] * len(train_x) + ["test"] * len(test_x)
    root = folder / "data"
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.csv").write_text("id,path,label,split\n" + "".join(
        f"{i},{i}.mp4,c{l},{s}\n" for i, l, s in zip(ids, labels, splits)))
    dataset = {"adapter": "manifest", "train": "train", "test": "test"}
    if text is not None:
        (root / "captions.csv").write_text("video_id,caption\n" + "".join(f"{v},{c}\n" for v, c in text["captions"]))
        dataset["captions"] = "captions.csv"
    card = folder / f"{name}.yaml"
    card.write_text(yaml.safe_dump({
        "name": name, "version": 1, "task": "classification" if text is None else "text-retrieval",
        "dataset": dataset, "frames": {"count": 4, "sampling": "uniform"}, "transform": {"resize_short": 32},
        "probes": probes if probes is not None else {"knn": {"k": [1, 10, 20], "headline_k": 10}}}))
    protocol = load_protocol(card)
    manifest = resolve_manifest(protocol, root)
    all_x = np.concatenate([train_x, test_x])
    vectors = dict(zip(ids, all_x if all_x.ndim == 3 else all_x[:, None, :]))
    header = Header(model="m", model_revision="", weights_sha256="", model_config="{}", protocol=name,
                    protocol_version=1, extraction_hash=protocol.extraction_hash, protocol_json="{}",
                    manifest_hash=manifest.hash, harness_version="0", environment=json.dumps({}))
    parts = folder / f"{name}.parts"
    parts.mkdir()
    order = manifest.ids
    clip = np.stack([vectors[i] for i in order]).astype(np.float32)
    write_part(parts, header, 0, 1, Chunk(order, clip, np.zeros((len(order), 1, 4), np.int32)))
    path = finalize([parts], folder / f"{name}.h5")
    if text is not None:
        import h5py

        with h5py.File(path, "r+") as f:
            group = f.create_group("text")
            string = h5py.string_dtype()
            group.create_dataset("ids", data=np.array(text["ids"], dtype=object), dtype=string)
            group.create_dataset("video_ids", data=np.array([v for v, _ in text["captions"]], dtype=object), dtype=string)
            group.create_dataset("embeddings", data=np.asarray(text["embeddings"], dtype=np.float32))
    return path, protocol, root
