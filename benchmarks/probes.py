"""Probe speed and memory, side by side with what a user would otherwise run (scikit-learn).

    python benchmarks/probes.py --sizes small medium [--repeat 3] [--device cuda] [--out results.json]

Embeddings are synthetic but shaped like real ones: class centres in a low-dimensional
subspace plus isotropic noise, scaled so accuracies land between 30 and 80%. Every
measurement runs in its own process, so the peak memory reported is that method's.
kNN: ours (faiss or torch, exact search, DINO vote) vs KNeighborsClassifier(brute,
cosine, the same exp(sim / T) weights), at k = 20 alone and over the probe's whole
k sweep (10, 20, 100, 200; scikit-learn predicts once per k). Linear: the probe's
whole C sweep (25 values, 1e-6 to 1e6; torch L-BFGS, warm starts, refit at the best C)
vs scikit-learn LogisticRegression(lbfgs) over the same grid, fitted one C at a time as
the usual evaluation scripts do, and with warm_start as a second anchor. Accuracies
are on the test set, at k = 20 and at the chosen C.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import sys
import time

import numpy as np

SIZES = {
    "small": dict(train=10_000, test=2_000, dim=256, classes=50, spread=0.5),
    "medium": dict(train=50_000, test=5_000, dim=768, classes=200, spread=0.7),
    "k400": dict(train=240_000, test=20_000, dim=1024, classes=400, spread=0.75),
}
C_GRID = {"log10_min": -6, "log10_max": 6, "steps": 25}  # the probe's default sweep
T = 0.07


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


KS = (10, 20, 100, 200)


def ours_knn(size, device, ks=(20,)):
    from evalharness.metrics import ranked_classes
    from evalharness.probes.knn import neighbours, vote

    (xtr, ytr), (xte, yte) = make_data(**SIZES[size])
    classes = SIZES[size]["classes"]
    start = time.perf_counter()
    sims, ids = neighbours(xtr, xte, list(ks), device)
    accuracy = {k: float((ranked_classes(vote(sims, ids, ytr, classes, k, T), 1)[:, 0] == yte).mean()) for k in ks}
    return time.perf_counter() - start, accuracy[20]


def sklearn_knn(size, device, ks=(20,)):
    from sklearn.neighbors import KNeighborsClassifier

    (xtr, ytr), (xte, yte) = make_data(**SIZES[size])
    start = time.perf_counter()
    accuracy = {}
    for k in ks:
        model = KNeighborsClassifier(n_neighbors=k, algorithm="brute", metric="cosine",
                                     weights=lambda d: np.exp((1.0 - d) / T)).fit(xtr, ytr)
        accuracy[k] = float((model.predict(xte) == yte).mean())
    return time.perf_counter() - start, accuracy[20]


def ours_knn_sweep(size, device):
    return ours_knn(size, device, KS)


def sklearn_knn_sweep(size, device):
    return sklearn_knn(size, device, KS)


def ours_linear(size, device):
    from evalharness.probes.linear import Config, select_and_fit

    (xtr, ytr), (xte, yte) = make_data(**SIZES[size])
    config = Config(c_grid=C_GRID)
    start = time.perf_counter()
    fit = select_and_fit(xtr, ytr, SIZES[size]["classes"], config, device)
    accuracy = float((fit.probabilities(xte).argmax(1) == yte).mean())
    return time.perf_counter() - start, accuracy, fit.c


def sklearn_linear(size, device, warm=False):
    from sklearn.linear_model import LogisticRegression

    from evalharness.probes.linear import stratified_split

    (xtr, ytr), (xte, yte) = make_data(**SIZES[size])
    start = time.perf_counter()
    mean, std = xtr.mean(0), xtr.std(0)
    x, xt = (xtr - mean) / std, (xte - mean) / std
    fit, val = stratified_split(ytr, 0.1, 0)
    grid = np.logspace(C_GRID["log10_min"], C_GRID["log10_max"], C_GRID["steps"])
    model, scores = LogisticRegression(max_iter=1000, warm_start=warm), []
    for c in grid:
        model = model.set_params(C=float(c)) if warm else LogisticRegression(C=float(c), max_iter=1000)
        scores.append(float(model.fit(x[fit], ytr[fit]).score(x[val], ytr[val])))
    best = float(grid[int(np.argmax(scores))])
    accuracy = float(LogisticRegression(C=best, max_iter=1000).fit(x, ytr).score(xt, yte))
    return time.perf_counter() - start, accuracy, best


def sklearn_linear_warm(size, device):
    return sklearn_linear(size, device, warm=True)


METHODS = {"ours_knn": ours_knn, "sklearn_knn": sklearn_knn, "ours_knn_sweep": ours_knn_sweep,
           "sklearn_knn_sweep": sklearn_knn_sweep, "ours_linear": ours_linear,
           "sklearn_linear": sklearn_linear, "sklearn_linear_warm": sklearn_linear_warm}


def _child(name, size, device, queue):
    import warnings

    warnings.filterwarnings("ignore")
    result = METHODS[name](size, device)
    queue.put((result, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2))


def measure(name: str, size: str, device: str, repeat: int) -> dict:
    """Run one method `repeat` times, each in a fresh process; median seconds, accuracy, chosen C and
    peak resident memory (GiB)."""
    runs = []
    for _ in range(repeat):
        queue = mp.get_context("spawn").Queue()
        proc = mp.get_context("spawn").Process(target=_child, args=(name, size, device, queue))
        proc.start()
        runs.append(queue.get())
        proc.join()
    result = runs[0][0]
    seconds = sorted(r[0][0] for r in runs)
    out = {"method": name, "size": size, "seconds": float(np.median(seconds)), "all_seconds": seconds,
           "accuracy": result[1], "peak_gib": max(p for _, p in runs)}
    if len(result) > 2:
        out["chosen_C"] = result[2]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["small", "medium"], choices=list(SIZES))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method; the median time is reported")
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        for name in args.methods:
            row = measure(name, size, args.device, args.repeat)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{platform.processor() or platform.machine()}, {mp.cpu_count()} cores, device {args.device}, "
          f"python {sys.version.split()[0]}")
    print("| size | probe | ours s | scikit-learn s | ratio | ours acc | sklearn acc | ours peak GiB | sklearn peak GiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for probe, anchors in (("knn", ["sklearn_knn"]), ("knn_sweep", ["sklearn_knn_sweep"]),
                               ("linear", ["sklearn_linear", "sklearn_linear_warm"])):
            ours = next((r for r in rows if r["size"] == size and r["method"] == f"ours_{probe}"), None)
            for anchor in anchors:
                other = next((r for r in rows if r["size"] == size and r["method"] == anchor), None)
                if ours and other:
                    print(f"| {size} | {probe} vs {anchor} | {ours['seconds']:.2f} | {other['seconds']:.2f} | "
                          f"{other['seconds'] / ours['seconds']:.1f}x | {100 * ours['accuracy']:.2f} | "
                          f"{100 * other['accuracy']:.2f} | {ours['peak_gib']:.2f} | {other['peak_gib']:.2f} |")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
