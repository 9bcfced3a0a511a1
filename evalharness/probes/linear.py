"""CLIP-style linear probe: logistic regression, C chosen on a validation split of train.

The objective is scikit-learn's `LogisticRegression(C)`: C * sum of cross-entropies +
||W||^2 / 2 (bias unpenalised), multinomial with three or more classes and one
logistic column with two (as scikit-learn fits binary problems), minimised by
full-batch L-BFGS in torch (float32), warm-started along the C path from strong to
weak regularisation. C is chosen on a validation split of train, stratified by class
and disjoint by group, with features standardised by the fit part's mean and std; the
model is then refit on all of train (standardised by all of train) and scored on test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ProbeError
from ..metrics import accuracy_estimate, ranked_classes, topk_correct
from ..progress import bar
from .base import ProbeOutcome
from .common import ProbeInput, no_validation_reason, split_record, stratified_split, unit_rows
from .linear_config import Config

# float32 features carry a relative rounding error of about 6e-8; a spread below ten times that is not signal
_CONSTANT = 10 * float(np.finfo(np.float32).eps)


def standardise(x: torch.Tensor, rows: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std of x (accumulated in float64, in blocks of rows); a dimension whose spread is
    within float32 rounding of its values (std <= 10 eps (|mean| + rms of x)) keeps std 1, as scikit-learn's
    scaler keeps constant features, instead of being blown up to unit-variance noise."""
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    for start in range(0, len(x), rows):
        total += x[start:start + rows].double().sum(0)
    mean = total / len(x)
    square = torch.zeros_like(total)
    for start in range(0, len(x), rows):
        square += (x[start:start + rows].double() - mean).pow(2).sum(0)
    std = (square / len(x)).sqrt()
    scale = mean.abs() + (square.sum() / len(x) + mean.pow(2).sum()).div(x.shape[1]).sqrt()
    return mean.float(), torch.where(std > _CONSTANT * scale, std, torch.ones_like(std)).float()


def _logits(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return x @ weights[:-1] + weights[-1]


def fit_logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, c: float, init: torch.Tensor | None = None,
                 max_iter: int = 1000, tolerance: float = 1e-4) -> torch.Tensor:
    """Weights (D + 1, K), bias last, minimising mean CE + ||W||^2 / (2 C n): scikit-learn's objective over n.
    With two classes K = 1: one logistic column for class 1, scikit-learn's binary objective (two softmax columns,
    both penalised, would equal scikit-learn only at 2C).

    Stops when the largest gradient entry is below `tolerance`, scikit-learn's lbfgs criterion (its tol)."""
    columns = 1 if n_classes == 2 else n_classes
    weights = (torch.zeros(x.shape[1] + 1, columns, dtype=x.dtype, device=x.device) if init is None
               else init.clone()).requires_grad_(True)
    penalty = 0.5 / (c * x.shape[0])
    optimizer = torch.optim.LBFGS([weights], lr=1.0, max_iter=max_iter, tolerance_grad=tolerance,
                                  tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")
    target = y.to(x.dtype) if columns == 1 else y

    def closure():
        optimizer.zero_grad()
        logits = _logits(x, weights)
        fit = (F.binary_cross_entropy_with_logits(logits[:, 0], target) if columns == 1
               else F.cross_entropy(logits, target))
        loss = fit + penalty * weights[:-1].pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weights.detach()


def _probabilities(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    logits = _logits(x, weights)
    if weights.shape[1] == 1:
        positive = torch.sigmoid(logits)
        return torch.cat([1 - positive, positive], dim=1)
    return torch.softmax(logits, dim=1)


def _samples(data: ProbeInput, role: str, per_view: bool) -> tuple[list[str], np.ndarray, np.ndarray, int]:
    """Features per video (view-aggregated) or per view (each L2-normalised), labels, and views per video."""
    ids, vectors, labels = data.split(role)
    if not per_view:
        return ids, vectors, labels, 1
    views = unit_rows(data.file.clip(data.file.rows(ids)), axis=2)
    n, v, d = views.shape
    return ids, views.reshape(n * v, d), np.repeat(labels, v), v


@dataclass
class LinearFit:
    """A chosen-C classifier: the train standardisation, the weights, and how C was chosen."""

    mean: torch.Tensor
    std: torch.Tensor
    weights: torch.Tensor
    c: float
    curve: list[dict]
    fit_videos: int
    val_videos: int
    split: dict

    def probabilities(self, x: np.ndarray, views: int = 1) -> np.ndarray:
        """Class probabilities per video, averaged over its `views` consecutive rows."""
        xs = (torch.from_numpy(x).to(self.mean.device, torch.float32) - self.mean) / self.std
        probs = _probabilities(xs, self.weights).cpu().numpy()
        return probs.reshape(len(x) // views, views, -1).mean(1)


def select_and_fit(train_x: np.ndarray, train_y: np.ndarray, n_classes: int, config: Config, device: str = "cpu",
                   views: int = 1, groups: list[str | None] | None = None, quiet: bool = False) -> LinearFit:
    """Sweep C on a validation split of train (by video, rows come in runs of `views`; stratified by class and
    disjoint by `groups`, one per video), warm-starting along the grid, then refit on all of train at the best C
    (ties: the smaller C); a progress bar counts the fits unless `quiet`."""
    dev = torch.device(device)
    xt = torch.from_numpy(train_x).to(dev, torch.float32)
    yt = torch.from_numpy(train_y).to(dev)
    video_y = train_y[::views]
    fit_videos, val_videos = stratified_split(video_y, config.val_fraction, config.seed, groups)
    if len(val_videos) == 0:
        raise ProbeError(no_validation_reason(video_y, config.val_fraction, groups))
    fit_idx, val_idx = (torch.from_numpy(np.ravel(v[:, None] * views + np.arange(views))).to(dev)
                        for v in (fit_videos, val_videos))
    mean, std = standardise(xt[fit_idx])
    x_fit, x_val = (xt[fit_idx] - mean) / std, (xt[val_idx] - mean) / std
    curve, weights, path = [], None, []
    grid = config.grid()
    with bar(len(grid) + 1, "linear: C sweep and refit", "fit", quiet) as progress:
        for c in grid:
            weights = fit_logistic(x_fit, yt[fit_idx], n_classes, float(c), weights, config.max_iter, config.tolerance)
            path.append(weights)
            probs = _probabilities(x_val, weights).cpu().numpy().reshape(len(val_videos), views, n_classes)
            curve.append({"C": float(c), "val_top1": float((probs.mean(1).argmax(1) == video_y[val_videos]).mean())})
            progress.update(1)
        best = max(range(len(curve)), key=lambda i: (curve[i]["val_top1"], -i))
        del x_fit, x_val
        mean, std = standardise(xt)
        # the objective is convex, so starting the refit from the validation fit at that C changes only the run time
        final = fit_logistic((xt - mean) / std, yt, n_classes, curve[best]["C"], path[best], config.max_iter,
                             config.tolerance)
        progress.update(1)
    return LinearFit(mean, std, final, curve[best]["C"], curve, len(fit_videos), len(val_videos),
                     split_record(groups, val_videos))


def run(data: ProbeInput, config: Config, device: str = "cpu", quiet: bool = False) -> ProbeOutcome:
    """Choose C on validation, refit on train, score test (a progress bar over the fits unless `quiet`); returns
    metrics, the C curve and predictions."""
    per_view = config.views == "clips"
    _, train_x, train_y, train_views = _samples(data, "train", per_view)
    test_ids, test_x, test_y_rows, test_views = _samples(data, "test", per_view)
    test_y = test_y_rows[::test_views]
    n_classes = len(data.manifest.classes)
    try:
        fit = select_and_fit(train_x, train_y, n_classes, config, device, train_views, data.groups("train"), quiet)
    except ProbeError as exc:
        raise ProbeError(f"{data.path}: {exc}") from None
    ranked = ranked_classes(fit.probabilities(test_x, test_views), min(5, n_classes))
    top1 = topk_correct(ranked, test_y, 1)
    metrics = {"top1": accuracy_estimate(top1), "top5": accuracy_estimate(topk_correct(ranked, test_y, 5)),
               "mean_class": accuracy_estimate(top1, test_y, per_class=True)}
    return ProbeOutcome("top1", metrics,
                        {"C": fit.c, "val_videos": fit.val_videos, "fit_videos": fit.fit_videos, "curve": fit.curve,
                         **fit.split},
                        {"ids": test_ids, "label": [data.manifest.classes[c] for c in test_y],
                         "predicted": [data.manifest.classes[c] for c in ranked[:, 0]],
                         "value": top1.astype(int).tolist()})

