"""Retrieval by cosine similarity: video-to-video class retrieval, and text-video retrieval.

Ranks count ties against the model: the rank of the ground truth is 1 + the number
of other candidates scoring at least as high, so collapsed embeddings cannot score.
Similarities are computed in chunks of queries, so 20k x 20k fits in memory.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ProbeError
from ..metrics import RANK, Estimate, estimate, proportion_estimate
from ..protocol import Task
from .base import ProbeOutcome
from .common import ProbeInput, unit_rows
from .retrieval_config import Config

TEXT_KS = (1, 5, 10)


def ranks(queries: np.ndarray, gallery: np.ndarray, relevant: np.ndarray, device: str = "cpu",
          chunk: int = 1024) -> np.ndarray:
    """Rank of the best relevant gallery item per query: 1 + number of irrelevant items scoring at least as high.

    `relevant` is a (Q, G) boolean matrix or a callable giving it for a slice of queries.
    A query with no relevant item gets rank G + 1.
    """
    bank = torch.from_numpy(np.ascontiguousarray(gallery, dtype=np.float32)).to(device)
    out = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        q = torch.from_numpy(np.ascontiguousarray(queries[start:start + chunk], dtype=np.float32)).to(device)
        sims = q @ bank.T
        mask = torch.from_numpy(relevant(slice(start, start + chunk)) if callable(relevant)
                                else relevant[start:start + chunk]).to(device)
        best = torch.where(mask, sims, torch.full_like(sims, -torch.inf)).amax(1, keepdim=True)
        above = ((sims >= best) & ~mask).sum(1)
        rank = 1 + above
        rank[~mask.any(1)] = gallery.shape[0] + 1
        out[start:start + chunk] = rank.cpu().numpy()
    return out


def _recall(rank: np.ndarray, k: int) -> Estimate:
    """R@K: the share of queries whose match ranks within k, with Wilson's interval."""
    return proportion_estimate(rank <= k)


def _rank_stat(rank: np.ndarray, fn) -> Estimate:
    """A statistic of ranks (median, mean): lower is better."""
    return estimate(lambda idx: float(fn(rank[idx])), len(rank), higher_is_better=False, unit=RANK)


def video_to_video(data: ProbeInput, config: Config, device: str) -> ProbeOutcome:
    """Test videos query the train videos; a hit is a same-class video within the top k."""
    _, train_x, train_y = data.split("train")
    test_ids, test_x, test_y = data.split("test")
    rank = ranks(test_x, train_x, lambda s: test_y[s][:, None] == train_y[None, :], device)
    metrics = {f"R@{k}": _recall(rank, k) for k in config.k}
    return ProbeOutcome(f"R@{config.k[0]}", metrics, {"gallery_size": len(train_y)},
                        {"ids": test_ids, "rank": rank.tolist(), "value": (rank <= config.k[0]).astype(int).tolist()})


def _text(data: ProbeInput) -> tuple[list[str], np.ndarray, list[str]]:
    """Caption ids, embeddings and ground-truth video of each test caption; the truth comes from our manifest."""
    if not data.file.has_text:
        raise ProbeError(f"{data.path}: no text/ group (caption embeddings); extract with a model that has a text tower")
    text = data.file.text()
    file_ids, file_videos, embeddings = text.ids, text.video_ids, text.embeddings
    test = {item.id for item in data.manifest.split(data.protocol.splits["test"])}
    truth = {f"{vid}#{i}": vid for vid, captions in data.manifest.captions.items() if vid in test
             for i in range(len(captions))}
    if not truth:
        raise ProbeError(f"protocol {data.protocol.name}: the manifest has no captions for the test videos")
    row = {cid: i for i, cid in enumerate(file_ids)}
    missing = sorted(set(truth) - set(row))
    if missing:
        raise ProbeError(f"{data.path}: lacks embeddings for {len(missing)} test captions, e.g. '{missing[0]}'")
    ids = sorted(truth)
    wrong = [cid for cid in ids if file_videos[row[cid]] != truth[cid]]
    if wrong:
        raise ProbeError(f"{data.path}: text/video_ids disagrees with the manifest for caption '{wrong[0]}'")
    return ids, embeddings[[row[cid] for cid in ids]], [truth[cid] for cid in ids]


def text_video(data: ProbeInput, config: Config, device: str) -> ProbeOutcome:
    """Text-to-video and video-to-text R@1/5/10, median and mean rank over the test videos and their captions."""
    video_ids, videos = _test_videos(data)
    caption_ids, texts, truth = _text(data)
    texts = unit_rows(texts)
    column = {vid: i for i, vid in enumerate(video_ids)}
    gt = np.array([column[v] for v in truth])
    t2v = ranks(texts, videos, lambda s: gt[s][:, None] == np.arange(len(video_ids))[None, :], device)
    v2t = ranks(videos, texts, lambda s: np.arange(len(video_ids))[s][:, None] == gt[None, :], device)
    metrics = {}
    for name, rank in (("t2v", t2v), ("v2t", v2t)):
        for k in TEXT_KS:
            metrics[f"{name}_R@{k}"] = _recall(rank, k)
        metrics[f"{name}_MdR"] = _rank_stat(rank, np.median)
        metrics[f"{name}_MnR"] = _rank_stat(rank, np.mean)
    return ProbeOutcome("t2v_R@1", metrics, {"videos": len(video_ids), "captions": len(caption_ids)},
                        {"ids": caption_ids, "rank": t2v.tolist(), "value": (t2v <= 1).astype(int).tolist()})


def _test_videos(data: ProbeInput) -> tuple[list[str], np.ndarray]:
    """Ids and vectors of the embedded test videos (text retrieval needs no class labels)."""
    ids = [item.id for item in data.items("test")]
    return ids, data.vectors()[data.file.rows(ids)]


def run(data: ProbeInput, config: Config, device: str = "cpu") -> ProbeOutcome:
    """Text-video retrieval on a text-retrieval card, video-to-video class retrieval otherwise."""
    if data.protocol.task == Task.TEXT_RETRIEVAL:
        return text_video(data, config, device)
    return video_to_video(data, config, device)

