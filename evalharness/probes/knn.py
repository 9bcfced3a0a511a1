"""DINO's weighted kNN classifier on view-aggregated, L2-normalised video vectors.

Cosine similarity by exact inner-product search; each of the k nearest train videos
votes for its class with weight exp(sim / T). Neighbour ties break toward the lower
train index and vote ties toward the lower class index; classes without a vote are
never ranked (a top-5 of two voted classes has two entries). A row whose similarities
at a k boundary are equal to within TIE (so also equal ones that a backend's float32
rounding tells apart: the same dot product can round differently in different rows of
one matrix product) is recomputed in float64 and rounded to float32 once, so ties give
the same answer on every backend and in every row.

The search is a float32 matrix product of a block of queries with the whole bank (its
size bounded in bytes, so memory does not grow with the number of queries) followed by a
top-k selection; the product comes from torch, numpy's BLAS or faiss, whichever is fastest
on this machine (measured on the first queries of a large search), since which BLAS wins
differs between machines by more than 2x.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import faiss
import numpy as np
import torch

from ..metrics import accuracy_estimate, ranked_classes, topk_correct
from .base import ProbeOutcome
from .common import ProbeInput
from .knn_config import Config

TIE = 1e-5  # similarities of unit vectors this close at a k boundary are recomputed exactly (float32 rounding: ~1e-7)
BLOCK_BYTES = 256 << 20  # the float32 similarity block of one matrix product: queries per product = this / (4 x bank)
MEASURE_WORK = 2e10  # queries x bank x dim from which the CPU backends are timed on the first queries (~0.2 s of BLAS)
TRIAL_SHARE = 16  # each timed backend searches at most 1/16 of the queries
TRIAL_BLOCKS = 4  # and at most this many blocks (faiss's speed per query shows from ~1,000 queries on)
BACKENDS = ("torch", "numpy-blas", "faiss")
SPARE = 32  # entries searched beyond max(ks) + 1, so that a tied row's exact recomputation rarely rereads its row
_UNIT = 2.0 ** -24  # float32 unit roundoff

Searcher = Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]]


@dataclass(frozen=True)
class Neighbours:
    """The search's answer: `sims`, `ids` (n, max k) in order of similarity then train index, and the backend used."""
    sims: np.ndarray
    ids: np.ndarray
    backend: str


def chunk_rows(n_train: int, block_bytes: int = BLOCK_BYTES) -> int:
    """Queries per matrix product, so that their float32 similarities to the whole bank fit in `block_bytes`."""
    return max(1, block_bytes // (4 * n_train))


def _ordered(vals: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows sorted by similarity descending (as top-k and faiss give them) with equal similarities put in index
    order: only rows with an equal pair are sorted again (by index, then stably by similarity)."""
    fix = torch.nonzero((vals[:, 1:] == vals[:, :-1]).any(1)).flatten()
    if len(fix):
        c, at = cols[fix].sort(dim=1)
        v, at = vals[fix].gather(1, at).sort(dim=1, descending=True, stable=True)
        vals[fix], cols[fix] = v, c.gather(1, at)
    return vals, cols


def _top(block: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest similarities of each row of `block` and their columns, ordered as `_ordered`."""
    return _ordered(*block.topk(k, dim=1))


def _matmul_search(train: np.ndarray, device: str, rows: int, k: int, numpy_blas: bool) -> Searcher:
    """Similarity block (queries x bank, float32, one buffer reused) by torch or numpy's BLAS, then `_top`."""
    bank = torch.from_numpy(train).to(device)
    block = torch.empty((rows, len(train)), dtype=torch.float32, device=device)

    def search(q: np.ndarray):
        out = block[:len(q)]
        if numpy_blas:
            np.matmul(q, train.T, out=out.numpy())
        else:
            torch.mm(torch.from_numpy(q).to(device), bank.T, out=out)
        return (*_top(out, k), out)

    return search


def _faiss_search(train: np.ndarray, k: int) -> Searcher:
    """faiss's exact inner-product search (BLAS blocks and heaps; no copy of the bank); no similarity block."""
    def search(q: np.ndarray):
        d, i = faiss.knn(q, train, k, metric=faiss.METRIC_INNER_PRODUCT)
        return (*_ordered(torch.from_numpy(d), torch.from_numpy(i)), None)

    return search


def _searcher(name: str, train: np.ndarray, device: str, rows: int, k: int) -> Searcher:
    if name not in BACKENDS:
        raise ValueError(f"unknown kNN backend {name!r}: use one of {', '.join(BACKENDS)}")
    if name != "torch" and device != "cpu":
        raise ValueError(f"the {name} backend runs on the CPU only; on {device} use backend='torch'")
    if name == "faiss":
        return _faiss_search(train, k)
    return _matmul_search(train, device, rows, k, numpy_blas=name == "numpy-blas")


def _margin(dim: int, query: np.ndarray, bank_norm: float) -> float:
    """How far below a row's k-th largest float32 similarity kth an entry of the exact top-k can fall in float32.

    A float32 dot product in any summation order is within eps = gamma_d |q| |x| of the exact one
    (gamma_d = d u / (1 - d u), u = 2^-24); rounding the exact one to float32, and a float64 bank to float32 for
    the search, add u |q| |x| each: delta = eps + 2 u |q| |x| bounds |float32 value - exact similarity|. The k
    entries at or above kth have exact similarities >= kth - delta, so the exact k-th largest is too, and every
    exact top-k entry has a float32 value >= kth - 2 delta, in any float32 product. For unit vectors (d <= 1024)
    2 delta is ~1e-4: a few entries beyond the k, where the whole bank was recomputed in float64 and sorted before.
    """
    gamma = dim * _UNIT / (1 - dim * _UNIT)
    return 2 * (gamma + 2 * _UNIT) * float(np.linalg.norm(query.astype(np.float64))) * bank_norm


def _exact(train: np.ndarray, query: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of the candidates `cand` (ascending) by (similarity descending, train index ascending), similarities
    in float64 rounded to float32 once, so equal dot products are equal similarities whatever row they fall in."""
    sims = (train[cand].astype(np.float64) @ query.astype(np.float64)).astype(np.float32)
    order = np.argsort(-sims, kind="stable")[:k]
    return sims[order], cand[order]


def _settle(train: np.ndarray, q: np.ndarray, found: tuple, kmax: int, boundaries: list[int],
            bank_norm: float) -> tuple[np.ndarray, np.ndarray]:
    """The first kmax of a searcher's ordered (sims, ids), rows with a tie (to within TIE) across a k boundary
    recomputed exactly from the entries within `_margin` of their kmax-th similarity: those of the searched list
    when its last similarity is below that floor (entries not listed are below it too), else those of the whole row
    (the search's similarity block, or a product of the row for faiss). `train` is the bank as given (float32 or
    float64: the recomputation reads it, as it always did)."""
    d, i, block = found
    d, i = d.cpu().numpy(), i.cpu().numpy()
    tied = np.zeros(len(q), dtype=bool)
    for b in boundaries:
        tied |= np.abs(d[:, b - 1] - d[:, b]) <= TIE
    for row in np.flatnonzero(tied):
        floor = d[row, kmax - 1] - _margin(train.shape[1], q[row], bank_norm)
        if d.shape[1] == len(train) or d[row, -1] < floor:
            cand = np.sort(i[row][d[row] >= floor])
        elif block is None:
            cand = np.flatnonzero((train @ q[row]).astype(np.float32) >= floor)
        else:
            cand = torch.nonzero(block[row] >= floor).flatten().cpu().numpy()
        d[row, :kmax], i[row, :kmax] = _exact(train, q[row], cand, kmax)
    return d[:, :kmax], i[:, :kmax]


@contextmanager
def _ieee_float32() -> Iterator[None]:
    """Full float32 matrix products for the duration (no TF32 / bf16 shortcuts): `_margin`'s bound needs them."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def _candidates(device: str, work: float) -> tuple[str, ...]:
    """Backends to time: torch off the CPU; on the CPU all three for a search of `work` >= MEASURE_WORK, else
    faiss alone (today's answers to the last bit for small searches, and no time spent measuring them)."""
    if device != "cpu":
        return ("torch",)
    return BACKENDS if work >= MEASURE_WORK else ("faiss",)


def search(train: np.ndarray, queries: np.ndarray, ks: list[int], device: str = "cpu",
           block_bytes: int = BLOCK_BYTES, backend: str | None = None) -> Neighbours:
    """The max(ks) nearest train vectors per query, in order of similarity then train index, so that every prefix of
    length k in ks is the exact top-k set under the tie-break rule; `backend` (one of BACKENDS) skips the choice.

    Several candidate backends each search their own slice of the first queries, timed; the fastest does the rest.
    Every row is exact under the rule whichever backend found it (ties are recomputed in float64).
    """
    given, train = train, np.ascontiguousarray(train, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n_train, n = len(train), len(queries)
    kmax = min(max(ks), n_train)
    k = min(kmax + 1 + SPARE, n_train)
    boundaries = [min(b, n_train) for b in ks if min(b, n_train) < n_train]
    rows = chunk_rows(n_train, block_bytes)
    bank_norm = float(np.sqrt(np.einsum("ij,ij->i", given, given, dtype=np.float64).max()))
    names = (backend,) if backend else _candidates(device, float(n) * n_train * train.shape[1])
    sims = np.empty((n, kmax), dtype=np.float32)
    ids = np.empty((n, kmax), dtype=np.int64)

    def fill(searcher: Searcher, start: int, stop: int) -> None:
        q = queries[start:stop]
        sims[start:stop], ids[start:stop] = _settle(given, q, searcher(q), kmax, boundaries, bank_norm)

    with _ieee_float32():
        searchers = {name: _searcher(name, train, device, rows, k) for name in names}
        start, seconds = 0, {}
        trial = max(1, min(TRIAL_BLOCKS * rows, n // TRIAL_SHARE))
        for name, searcher in searchers.items() if len(names) > 1 else ():
            stop, began = min(start + trial, n), time.perf_counter()
            if stop > start:
                for begin in range(start, stop, rows):
                    fill(searcher, begin, min(begin + rows, stop))
                seconds[name] = (time.perf_counter() - began) / (stop - start)
            start = stop
        chosen = min(seconds, key=seconds.get) if seconds else names[0]
        searcher = searchers.pop(chosen)
        searchers.clear()  # the others' similarity blocks
        for begin in range(start, n, rows):
            fill(searcher, begin, min(begin + rows, n))
    return Neighbours(sims, ids, chosen)


def neighbours(train: np.ndarray, queries: np.ndarray, ks: list[int], device: str = "cpu",
               block_bytes: int = BLOCK_BYTES, backend: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, train indices) of `search`, without the backend's name."""
    found = search(train, queries, ks, device, block_bytes, backend)
    return found.sims, found.ids


def vote(sims: np.ndarray, ids: np.ndarray, train_labels: np.ndarray, n_classes: int, k: int, temperature: float) -> np.ndarray:
    """Class scores (n, C): sum of exp(sim / T) over the k nearest neighbours, per class. One bincount over
    row * C + class: it adds the weights in the order np.add.at did (row by row, neighbour by neighbour, from 0.0),
    so the sums are the same to the last bit, at a fraction of the time."""
    weights = np.exp(sims[:, :k].astype(np.float64) / temperature)
    cells = np.arange(sims.shape[0])[:, None] * n_classes + train_labels[ids[:, :k]]
    return np.bincount(cells.ravel(), weights.ravel(), minlength=sims.shape[0] * n_classes).reshape(-1, n_classes)


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
    found = search(train_x, test_x, list(config.k), device)
    sims, ids = found.sims, found.ids
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
                        {"k_used": used, "temperature": config.temperature, "train_size": len(train_y),
                         "search": found.backend}, predictions,
                        caveats)

