"""DINO's weighted kNN classifier on view-aggregated, L2-normalised video vectors.

Cosine similarity by exact inner-product search; each of the k nearest train videos
votes for its class with weight exp(sim / T). Neighbour ties break toward the lower
train index and vote ties toward the lower class index; classes without a vote are
never ranked (a top-5 of two voted classes has two entries). A row whose similarities
at a k boundary are equal to within TIE (so also equal ones that a backend's float32
rounding tells apart: the same dot product can round differently in different rows of
one matrix product) is recomputed in float64 and rounded to float32 once, so ties give
the same answer on every backend and in every row.
"""

from __future__ import annotations

import faiss
import numpy as np
import torch

from ..metrics import accuracy_estimate, ranked_classes, topk_correct
from .base import ProbeOutcome
from .common import ProbeInput
from .knn_config import Config

TIE = 1e-5  # similarities of unit vectors this close at a k boundary are recomputed exactly (float32 rounding: ~1e-7)


def _exact_neighbours(train: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by (similarity descending, train index ascending), computed in full: in float64, rounded to float32
    once, so equal dot products are equal similarities whatever row of the product they fall in."""
    sims = (queries.astype(np.float64) @ train.T.astype(np.float64)).astype(np.float32)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), order


def _faiss_search(train: np.ndarray):
    index = faiss.IndexFlatIP(train.shape[1])
    index.add(np.ascontiguousarray(train, dtype=np.float32))
    return lambda q, k: index.search(np.ascontiguousarray(q, dtype=np.float32), k)


def _torch_search(train: np.ndarray, device: str):
    bank = torch.from_numpy(np.ascontiguousarray(train, dtype=np.float32)).to(device)

    def search(q: np.ndarray, k: int):
        sims = torch.from_numpy(np.ascontiguousarray(q, dtype=np.float32)).to(device) @ bank.T
        d, i = sims.topk(k, dim=1)
        return d.cpu().numpy(), i.cpu().numpy()

    return search


def neighbours(train: np.ndarray, queries: np.ndarray, ks: list[int], device: str = "cpu",
               chunk: int = 4096, backend: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, train indices) of the max(ks) nearest train vectors per query, in order of similarity
    then train index, so that every prefix of length k in ks is the exact top-k set under the tie-break rule.

    faiss on the CPU, torch matmul + topk on a GPU (`backend` overrides); neither orders tied
    neighbours by index, so rows with a tie (to within TIE) across a k boundary are recomputed exactly.
    """
    n_train = train.shape[0]
    kmax = min(max(ks), n_train)
    search_k = min(kmax + 1, n_train)
    backend = backend or ("faiss" if device == "cpu" else "torch")
    search = _faiss_search(train) if backend == "faiss" else _torch_search(train, device)
    sims = np.empty((queries.shape[0], kmax), dtype=np.float32)
    ids = np.empty((queries.shape[0], kmax), dtype=np.int64)
    boundaries = [min(k, n_train) for k in ks if min(k, n_train) < n_train]
    for start in range(0, queries.shape[0], chunk):
        q = np.ascontiguousarray(queries[start:start + chunk], dtype=np.float32)
        d, i = search(q, search_k)
        tied = np.zeros(len(q), dtype=bool)
        for b in boundaries:
            tied |= np.abs(d[:, b - 1] - d[:, b]) <= TIE
        if tied.any():
            d[tied, :kmax], i[tied, :kmax] = _exact_neighbours(train, q[tied], kmax)
        d, i = d[:, :kmax], i[:, :kmax]
        order = np.lexsort((i, -d), axis=1)  # within the set: similarity descending, then train index
        sims[start:start + chunk] = np.take_along_axis(d, order, 1)
        ids[start:start + chunk] = np.take_along_axis(i, order, 1)
    return sims, ids


def vote(sims: np.ndarray, ids: np.ndarray, train_labels: np.ndarray, n_classes: int, k: int, temperature: float) -> np.ndarray:
    """Class scores (n, C): sum of exp(sim / T) over the k nearest neighbours, per class."""
    weights = np.exp(sims[:, :k].astype(np.float64) / temperature)
    scores = np.zeros((sims.shape[0], n_classes), dtype=np.float64)
    rows = np.repeat(np.arange(sims.shape[0]), k)
    np.add.at(scores, (rows, train_labels[ids[:, :k]].ravel()), weights.ravel())
    return scores


def voted_ranking(scores: np.ndarray, top: int) -> np.ndarray:
    """The `top` highest-scoring classes per row (ties: lower class index), -1 where a class got no vote: a class
    no neighbour voted for is not a guess, so it cannot fill a top-5 slot."""
    ranked = ranked_classes(scores, top)
    return np.where(np.take_along_axis(scores, ranked, axis=1) > 0, ranked, -1)


def run(data: ProbeInput, config: Config, device: str = "cpu") -> ProbeOutcome:
    """Score the test split by kNN over the train split; returns metrics, chosen settings and predictions."""
    _, train_x, train_y = data.split("train")
    test_ids, test_x, test_y = data.split("test")
    n_classes = len(data.manifest.classes)
    sims, ids = neighbours(train_x, test_x, config.k, device)
    metrics, used, predictions = {}, {}, None
    for k in config.k:
        kk = min(k, len(train_y))
        ranked = voted_ranking(vote(sims, ids, train_y, n_classes, kk, config.temperature), min(5, n_classes))
        top1 = topk_correct(ranked, test_y, 1)
        metrics[f"top1@k{k}"] = accuracy_estimate(top1)
        metrics[f"top5@k{k}"] = accuracy_estimate(topk_correct(ranked, test_y, 5))
        metrics[f"mean_class@k{k}"] = accuracy_estimate(top1, test_y, per_class=True)
        used[str(k)] = kk
        if k == config.headline_k:
            predictions = {"ids": test_ids, "label": [data.manifest.classes[c] for c in test_y],
                           "predicted": [data.manifest.classes[c] for c in ranked[:, 0]],
                           "value": top1.astype(int).tolist()}
    capped = [k for k in config.k if used[str(k)] < k]
    caveats = (f"k = {', '.join(map(str, capped))} capped at the {len(train_y)} train videos: each of those metrics "
               f"votes with all {len(train_y)}",) if capped else ()
    return ProbeOutcome(f"top1@k{config.headline_k}", metrics,
                        {"k_used": used, "temperature": config.temperature, "train_size": len(train_y)}, predictions,
                        caveats)

