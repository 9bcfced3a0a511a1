"""Probe speed against the matrix products each probe cannot avoid, and against what a user would otherwise run.

    python benchmarks/probes.py [--sizes small medium k400] [--probes knn linear labelprop] [--device cuda]
                                [--repeat 3] [--with METHOD ...] [--out results.json]

For each probe and size, in one run and each method in its own process (so the peak memory is that method's):
the floor, ours, and the anchors, as seconds and as ratios to the floor, then the machine (CPU, the BLAS that numpy,
torch and faiss each carry, threads), since which library is fastest depends on them.

- kNN, the probe's whole k sweep (10, 20, 100, 200; DINO's vote, accuracy reported at k = 20). Floor: the
  query x bank matrix product alone, in chunks, by the faster of torch and numpy. Anchors: scikit-learn
  `KNeighborsClassifier(algorithm="brute", metric="cosine")` asked once for the 200 neighbours (the least work it
  can do for a sweep) and voted with the same exp(sim / T) weights; faiss `IndexFlatIP` searched once, same vote.
- Linear, the probe's whole C sweep (25 values, 1e-6 to 1e6) and the refit at the chosen C. Floor: one loss and
  gradient evaluation (its two matrix products) on the fit split per fit, i.e. 26 of them: ours / floor is how
  many gradient evaluations a fit costs on average. Anchor: scikit-learn `LogisticRegression(lbfgs,
  warm_start=True)` over the same grid and split, with StandardScaler on the fit split for the sweep and on all of
  train for the refit, timed like ours from the split to the test's score (`--with linear_sklearn_cold` adds one
  fit per C from scratch, as most evaluation scripts do; slow).
- Label propagation (size `davis`, the real DAVIS-2016 sequences of ../shared/realdata at 480p, stride-8 grid,
  D = 64; see benchmarks/labelprop.py): ours with the crw preset, CRW's own propagation code (the tests' copy),
  and the floor, GEMMs of exactly the multiply-adds propagation needs.

Embeddings for kNN and linear are synthetic but shaped like real ones: class centres in a 64-dimensional subspace
plus isotropic noise, scaled so accuracies land between 30 and 80%.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, sync

SIZES = {
    "small": dict(train=10_000, test=2_000, dim=256, classes=50, spread=0.5),
    "medium": dict(train=50_000, test=5_000, dim=768, classes=200, spread=0.7),
    "k400": dict(train=240_000, test=20_000, dim=1024, classes=400, spread=0.75),
}
C_GRID = {"log10_min": -6, "log10_max": 6, "steps": 25}  # the probe's default sweep
KS = (10, 20, 100, 200)  # the probe's default k sweep
T = 0.07
FLOOR_BLOCK = 256 * 2 ** 20  # bytes of similarities the floor's product holds at once


def make_data(train: int, test: int, dim: int, classes: int, spread: float, seed: int = 0):
    """Unit vectors: class centres (scaled by `spread`) in a 64-d subspace, plus unit noise in all dimensions."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, 64)))[0]
    centres = spread * rng.normal(size=(classes, 64)) @ basis.T

    def draw(n):
        y = rng.integers(0, classes, n)
        x = centres[y] + rng.normal(size=(n, dim))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x.astype(np.float32), y

    return draw(train), draw(test)


def _vote_accuracy(sims: np.ndarray, ids: np.ndarray, ytr: np.ndarray, yte: np.ndarray, classes: int) -> float:
    """Top-1 at k = 20 after DINO's vote for every k of the sweep (the vote is part of the probe's work)."""
    from evalharness.metrics import ranked_classes
    from evalharness.probes.knn import vote

    top1 = {k: float((ranked_classes(vote(sims, ids, ytr, classes, k, T), 1)[:, 0] == yte).mean()) for k in KS}
    return top1[20]


def knn_ours(size: str, device: str) -> dict:
    from evalharness.probes import knn

    (xtr, ytr), (xte, yte) = make_data(**SIZES[size])
    start = time.perf_counter()
    if hasattr(knn, "search"):
        found = knn.search(xtr, xte, list(KS), device)
        sims, ids, note = found.sims, found.ids, f"search: {found.backend}"
    else:  # a checkout from before the choice of backend (--compare-src)
        (sims, ids), note = knn.neighbours(xtr, xte, list(KS), device), "search: faiss"
    accuracy = _vote_accuracy(sims, ids, ytr, yte, SIZES[size]["classes"])
    return {"seconds": time.perf_counter() - start, "accuracy": accuracy, "note": note}


def knn_floor(size: str, device: str) -> dict:
    """The query x bank product alone, in blocks of at most FLOOR_BLOCK bytes, by torch and (on the CPU) numpy: the
    faster one's time."""
    import torch

    (xtr, _), (xte, _) = make_data(**SIZES[size])
    rows = max(1, FLOOR_BLOCK // (4 * len(xtr)))
    bank, queries = torch.from_numpy(xtr).to(device), torch.from_numpy(xte).to(device)
    products = {"torch": lambda q: q @ bank.T}
    if device == "cpu":
        products["numpy"] = lambda q: q.numpy() @ xtr.T
    times = {}
    for name, product in products.items():
        product(queries[:rows])  # warm-up: thread pools, kernels
        sync(device)
        start = time.perf_counter()
        for first in range(0, len(queries), rows):
            product(queries[first:first + rows])
        sync(device)
        times[name] = time.perf_counter() - start
    best = min(times, key=times.get)
    return {"seconds": times[best], "note": f"{best} product ({', '.join(f'{k} {v:.2f} s' for k, v in times.items())})"}


def knn_sklearn(size: str, device: str) -> dict:
    from sklearn.neighbors import KNeighborsClassifier

    (xtr, ytr), (xte, yte) = make_data(**SIZES[size])
    start = time.perf_counter()
    model = KNeighborsClassifier(n_neighbors=max(KS), algorithm="brute", metric="cosine").fit(xtr, ytr)
    distances, ids = model.kneighbors(xte)
    accuracy = _vote_accuracy((1.0 - distances).astype(np.float32), ids, ytr, yte, SIZES[size]["classes"])
    return {"seconds": time.perf_counter() - start, "accuracy": accuracy}


def knn_faiss(size: str, device: str) -> dict:
    import faiss

    (xtr, ytr), (xte, yte) = make_data(**SIZES[size])
    start = time.perf_counter()
    index = faiss.IndexFlatIP(xtr.shape[1])
    index.add(xtr)
    sims, ids = index.search(xte, max(KS))
    accuracy = _vote_accuracy(sims, ids, ytr, yte, SIZES[size]["classes"])
    return {"seconds": time.perf_counter() - start, "accuracy": accuracy}


def linear_ours(size: str, device: str) -> dict:
    from evalharness.probes.linear import Config, select_and_fit

    (xtr, ytr), (xte, yte) = make_data(**SIZES[size])
    start = time.perf_counter()
    fit = select_and_fit(xtr, ytr, SIZES[size]["classes"], Config(c_grid=C_GRID), device, quiet=True)
    accuracy = float((fit.probabilities(xte).argmax(1) == yte).mean())
    return {"seconds": time.perf_counter() - start, "accuracy": accuracy, "C": fit.c}


def _standardised_split(size: str):
    from evalharness.probes.common import stratified_split

    (xtr, ytr), (xte, yte) = make_data(**SIZES[size])
    mean, std = xtr.mean(0), xtr.std(0)
    fit, val = stratified_split(ytr, 0.1, 0)
    return (xtr - mean) / std, ytr, (xte - mean) / std, yte, fit, val


def linear_floor(size: str, device: str) -> dict:
    """One cross-entropy loss and gradient on the fit split (X W, softmax, X^T G), once per fit: 25 C values and the
    refit. The best of three evaluations, times 26."""
    import torch

    x, y, _, _, fit, _ = _standardised_split(size)
    xf = torch.from_numpy(x[fit]).to(device)
    yf = torch.from_numpy(y[fit]).to(device)
    weights = torch.zeros(x.shape[1], SIZES[size]["classes"], device=device)
    best = float("inf")
    for _ in range(3):
        sync(device)
        start = time.perf_counter()
        probs = torch.softmax(xf @ weights, dim=1)
        probs[torch.arange(len(yf), device=device), yf] -= 1
        loss_grad = xf.T @ probs
        sync(device)
        best = min(best, time.perf_counter() - start)
        del loss_grad
    fits = C_GRID["steps"] + 1
    return {"seconds": fits * best, "note": f"{fits} x {best:.3f} s (one loss and gradient on {len(fit)} rows)"}


def linear_sklearn(size: str, device: str, warm: bool = True) -> dict:
    """scikit-learn over the probe's protocol, timed from the same point as ours: the same split of train, a
    StandardScaler fitted on the fit split for the sweep and on all of train for the refit, the test scored."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from evalharness.probes.common import stratified_split

    (x, y), (xt, yt) = make_data(**SIZES[size])
    start = time.perf_counter()
    fit, val = stratified_split(y, 0.1, 0)
    scaler = StandardScaler().fit(x[fit])
    x_fit, x_val = scaler.transform(x[fit]), scaler.transform(x[val])
    grid = np.logspace(C_GRID["log10_min"], C_GRID["log10_max"], C_GRID["steps"])
    model, scores = LogisticRegression(max_iter=1000, warm_start=warm), []
    for c in grid:
        model = model.set_params(C=float(c)) if warm else LogisticRegression(C=float(c), max_iter=1000)
        scores.append(float(model.fit(x_fit, y[fit]).score(x_val, y[val])))
    best = float(grid[int(np.argmax(scores))])
    scaler = StandardScaler().fit(x)
    refit = LogisticRegression(C=best, max_iter=1000).fit(scaler.transform(x), y)
    accuracy = float(refit.score(scaler.transform(xt), yt))
    return {"seconds": time.perf_counter() - start, "accuracy": accuracy, "C": best}


def linear_sklearn_cold(size: str, device: str) -> dict:
    return linear_sklearn(size, device, warm=False)


def labelprop_ours(size: str, device: str) -> dict:
    import labelprop

    result = labelprop.measure("crw", device)
    return {"seconds": result["seconds"], "note": f"{result['frames']} frames, masks {result['hash']}"}


def labelprop_reference(size: str, device: str) -> dict:
    import labelprop

    result = labelprop.measure("crw", "cpu", with_reference=True)
    return {"seconds": result["reference_seconds"],
            "note": f"mask pixels equal to ours: {result['reference_equal']} of {result['pixels']}"}


def labelprop_floor(size: str, device: str) -> dict:
    import labelprop

    return {"seconds": labelprop.floor_seconds("crw", device)}


# probe -> (role, method name, function); the first role is the floor, the second ours, the rest anchors
METHODS = {
    "knn": [("floor", "knn_floor", knn_floor), ("ours", "knn_ours", knn_ours),
            ("scikit-learn", "knn_sklearn", knn_sklearn), ("faiss", "knn_faiss", knn_faiss)],
    "linear": [("floor", "linear_floor", linear_floor), ("ours", "linear_ours", linear_ours),
               ("scikit-learn warm", "linear_sklearn", linear_sklearn),
               ("scikit-learn cold", "linear_sklearn_cold", linear_sklearn_cold)],
    "labelprop": [("floor", "labelprop_floor", labelprop_floor), ("ours", "labelprop_ours", labelprop_ours),
                  ("CRW code", "labelprop_reference", labelprop_reference)],
}
OPTIONAL = {"linear_sklearn_cold"}  # run only when named with --with
FUNCTIONS = {name: function for rows in METHODS.values() for _, name, function in rows}


def _child(name: str, size: str, device: str, src: str | None, queue) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    if src:
        sys.path.insert(0, src)  # this process imports evalharness from that checkout
    result = FUNCTIONS[name](size, device)
    queue.put({**result, "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2})


def measure(name: str, size: str, device: str, repeat: int, src: str | None = None) -> dict:
    """Run one method `repeat` times, each in a fresh process (importing evalharness from the checkout `src` if
    given): the median seconds, the first run's other fields, the largest peak resident memory (GiB)."""
    runs = []
    context = mp.get_context("spawn")
    for _ in range(repeat):
        queue = context.Queue()
        proc = context.Process(target=_child, args=(name, size, device, src, queue))
        proc.start()
        runs.append(queue.get())
        proc.join()
    seconds = sorted(r["seconds"] for r in runs)
    return {**runs[0], "method": name + ("@before" if src else ""), "size": size, "seconds": float(np.median(seconds)),
            "all_seconds": seconds,
            "peak_gib": max(r["peak_gib"] for r in runs)}


def _cell(row: dict | None, floor: dict | None, ours: dict | None) -> str:
    if row is None:
        return "-"
    text = f"{row['seconds']:.2f} s"
    if floor is not None:
        text += f" ({row['seconds'] / floor['seconds']:.2f}x floor)"
    if ours is not None and row is not ours:
        ratio = row["seconds"] / ours["seconds"]
        text += f", ours {ratio:.1f}x faster" if ratio >= 1 else f", ours {1 / ratio:.1f}x slower"
    return text


def table(rows: list[dict]) -> str:
    """One markdown row per probe and size: the floor, ours and each anchor as seconds and ratios, accuracy, C."""
    lines = ["| probe | size | floor | ours | anchors | accuracy (ours; anchors) | chosen C (ours; anchors) | peak GiB |",
             "|---|---|---|---|---|---|---|---|"]
    for probe, methods in METHODS.items():
        for size in dict.fromkeys(r["size"] for r in rows):
            found = {role: next((r for r in rows if r["method"] == name and r["size"] == size), None)
                     for role, name, _ in methods}
            found["before"] = next((r for r in rows if r["method"] == f"{methods[1][1]}@before" and r["size"] == size),
                                   None)
            floor, ours = found["floor"], found["ours"]
            if ours is None:
                continue
            anchors = [(role, row) for role, row in list(found.items())[2:] if row is not None]
            acc = "; ".join(f"{100 * r['accuracy']:.2f}" for r in [ours] + [row for _, row in anchors] if "accuracy" in r)
            cs = "; ".join(f"{r['C']:.3g}" for r in [ours] + [row for _, row in anchors] if "C" in r)
            peaks = "; ".join(f"{r['peak_gib']:.2f}" for r in [ours] + [row for _, row in anchors])
            lines.append(f"| {probe} | {size} | {_cell(floor, None, None)} | {_cell(ours, floor, None)} | "
                         + "<br>".join(f"{role}: {_cell(row, floor, ours)}" for role, row in anchors)
                         + f" | {acc or '-'} | {cs or '-'} | {peaks} |")
    return "\n".join(lines)


def main() -> None:

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["small", "medium"], choices=list(SIZES),
                        help="embedding sizes for kNN and linear (label propagation always runs on the DAVIS clips)")
    parser.add_argument("--probes", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--with", dest="extra", nargs="+", default=[], choices=sorted(OPTIONAL),
                        help="optional anchors to run too")
    parser.add_argument("--without", nargs="+", default=[], choices=sorted(FUNCTIONS), help="methods to skip")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method; the median time is reported")
    parser.add_argument("--compare-src", metavar="CHECKOUT",
                        help="also run ours with evalharness imported from this checkout (a before/after in one run)")
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args()
    rows = []
    for probe in args.probes:
        for size in (["davis"] if probe == "labelprop" else args.sizes):
            for _, name, _ in METHODS[probe]:
                if name in args.without or (name in OPTIONAL and name not in args.extra):
                    continue
                ours = name == METHODS[probe][1][1]
                for src in [None] + ([args.compare_src] if ours and args.compare_src else []):
                    row = measure(name, size, args.device, args.repeat, src)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print()
    print(describe(args.device))
    print(table(rows))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
