"""CLIP-style linear probe: logistic regression, C chosen on a validation split of train.

The objective is scikit-learn's `LogisticRegression(C)`: C * sum of cross-entropies +
||W||^2 / 2 (bias unpenalised), multinomial with three or more classes and one
logistic column with two (as scikit-learn fits binary problems), minimised by
full-batch L-BFGS in torch (float32; a hand-written loss and gradient, two GEMMs each)
to scikit-learn's stopping rule (largest gradient entry <= tol), warm-started along the
C path from strong to weak regularisation. Only the ridge term depends on C, so the
next C's gradient at the last solution and the curvature pairs come along for free:
where the weights need not move (most of the weak end), a fit costs no data pass.
C is chosen on a validation split of train, stratified by class and disjoint by group,
with features standardised by the fit part's mean and std; the model is then refit on
all of train (standardised by all of train) and scored on test.
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


def _penalised(weights: torch.Tensor, strength: float) -> torch.Tensor:
    """strength * weights with the bias row zeroed: the gradient of the ridge term (the bias is unpenalised)."""
    out = weights * strength
    out[..., -1, :] = 0
    return out


class _Objective:
    """Mean cross-entropy of x W + b over the rows of x (softmax over K columns, or one logistic column when K = 1)
    and its gradient, hand-written: two GEMMs and a softmax in place in one preallocated (N, K) buffer, no autograd."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, columns: int) -> None:
        self.x, self.columns = x, columns
        self.labels = y.long()[:, None]
        self.target = y.to(x.dtype)[:, None]
        self.minus_one = -torch.ones_like(self.target)
        self.buffer = torch.empty(len(x), columns, dtype=x.dtype, device=x.device)

    def __call__(self, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean cross-entropy, summed in float64, as a 0-dim tensor; its gradient (D + 1, K))."""
        z = torch.addmm(weights[-1], self.x, weights[:-1], out=self.buffer)
        if self.columns == 1:
            rows = F.softplus(z) - z * self.target
            z.sigmoid_().sub_(self.target)
        else:
            picked = z.gather(1, self.labels)
            top = z.amax(1, keepdim=True)
            total = z.sub_(top).exp_().sum(1, keepdim=True)
            rows = total.log() + top - picked
            z.div_(total).scatter_add_(1, self.labels, self.minus_one)
        gradient = torch.empty_like(weights)
        torch.mm(self.x.T, z, out=gradient[:-1])
        gradient[-1] = z.sum(0)
        return rows.sum(dtype=torch.float64) / len(z), gradient.div_(len(z))


@dataclass
class _Point:
    """Weights with the data loss and its gradient there, and the L-BFGS curvature pairs that led there, oldest first:
    steps and changes of the data gradient, each (m, D + 1, K). The pairs hold the data term only, so they stay exact
    when C changes (the ridge term adds strength * step to each change) and carry the curvature along the C path."""

    weights: torch.Tensor
    loss: torch.Tensor
    gradient: torch.Tensor
    steps: torch.Tensor
    changes: torch.Tensor

    def value(self, strength: float) -> torch.Tensor:
        """scikit-learn's objective over n: the mean cross-entropy + strength / 2 ||W||^2 (bias unpenalised)."""
        return self.loss + 0.5 * strength * self.weights[:-1].pow(2).sum()

    def total_gradient(self, strength: float) -> torch.Tensor:
        """The gradient of that objective."""
        return self.gradient + _penalised(self.weights, strength)

    def moved(self, weights: torch.Tensor, loss: torch.Tensor, gradient: torch.Tensor) -> _Point:
        """Another point with these pairs."""
        return _Point(weights, loss, gradient, self.steps, self.changes)

    def remembering(self, step: torch.Tensor, change: torch.Tensor, history: int) -> _Point:
        """This point with one more pair, keeping the newest `history`."""
        return _Point(self.weights, self.loss, self.gradient, torch.cat([self.steps, step[None]])[-history:],
                      torch.cat([self.changes, change[None]])[-history:])

    def forgetting(self) -> _Point:
        """This point without pairs (after a failed line search, L-BFGS restarts from steepest descent)."""
        return _Point(self.weights, self.loss, self.gradient, self.steps[:0], self.changes[:0])


def _start(objective: _Objective, weights: torch.Tensor) -> _Point:
    none = weights.new_zeros((0, *weights.shape))
    return _Point(weights, *objective(weights), none, none)


def _direction(gradient: torch.Tensor, steps: torch.Tensor, changes: torch.Tensor) -> torch.Tensor:
    """-H gradient, H the L-BFGS inverse-Hessian estimate from the pairs (steps, changes of the whole objective's
    gradient), in the compact form of Byrd, Nocedal and Schnabel (1994): a few products with the (m, P) pair matrices
    instead of the two-loop recursion's 4m vector operations, and no wait on a GPU. The initial estimate scales the
    weights and the bias rows apart (the ridge term makes the weights' curvature up to 1 / (C n) larger than the
    unpenalised bias's). Steepest descent without pairs."""
    if len(steps) == 0:
        return -gradient
    s, y = steps[-1], changes[-1]
    weights = (s[:-1] * y[:-1]).sum() / y[:-1].pow(2).sum()
    bias = (s[-1] * y[-1]).sum() / y[-1].pow(2).sum()
    initial = torch.cat([weights.expand(gradient[:-1].numel()), torch.where(bias > 0, bias, weights).expand(len(s[-1]))])
    steps, changes, g = steps.flatten(1), changes.flatten(1), gradient.flatten()
    scaled = changes * initial
    inner = steps @ changes.T
    triangle = inner.triu()
    a, b = steps @ g, scaled @ g
    first = torch.linalg.solve_triangular(triangle, a[:, None], upper=True)
    top = (torch.diag(inner.diagonal()) + scaled @ changes.T) @ first - b[:, None]
    top = torch.linalg.solve_triangular(triangle.T, top, upper=False)
    return -(initial * g + steps.T @ top[:, 0] - scaled.T @ first[:, 0]).view_as(gradient)


# line search constants: Wolfe's curvature (sigma) and sufficient decrease (c1), and Hager-Zhang's approximate Wolfe
# test (delta, epsilon), which judges a step by its slope where float32 losses cannot resolve the decrease
_SIGMA, _C1, _DELTA, _EPSILON = 0.9, 1e-4, 0.1, 1e-6
_LINE_EVALUATIONS = 20


def _line_search(objective: _Objective, strength: float, point: _Point, value: float, direction: torch.Tensor,
                 step: float) -> tuple[float, _Point] | None:
    """A step along `direction` meeting the Wolfe or approximate Wolfe conditions (Hager and Zhang 2005), found by
    secant steps on the slope (the objective is convex, so the slope rises along any line); None if none is found."""
    def objective_and_slope(t: float) -> tuple[float, float, _Point]:
        weights = point.weights + t * direction
        new = point.moved(weights, *objective(weights))
        slope = (new.total_gradient(strength) * direction).sum()
        value, slope = torch.stack([new.value(strength), slope.to(new.loss.dtype)]).tolist()  # one wait on a GPU
        return value, slope, new

    slope0 = float((point.total_gradient(strength) * direction).sum())
    if slope0 >= 0:  # not a descent direction: the pairs no longer describe this objective's curvature
        return None
    low, low_slope, high, high_slope = 0.0, slope0, None, None
    slack = _EPSILON * abs(value)
    for _ in range(_LINE_EVALUATIONS):
        new_value, slope, new = objective_and_slope(step)
        if slope >= _SIGMA * slope0 and (new_value <= value + _C1 * step * slope0
                                         or (slope <= (2 * _DELTA - 1) * slope0 and new_value <= value + slack)):
            return step, new
        if slope < _SIGMA * slope0 and new_value <= value + slack:
            low, low_slope = step, slope
        else:
            high, high_slope = step, slope
        step = _next_step(slope0, low, low_slope, high, high_slope)
    return None


def _next_step(slope0: float, low: float, low_slope: float, high: float | None, high_slope: float | None) -> float:
    """Where the slope, linear between two known points, reaches zero: inside the bracket's middle 80% once a step has
    gone too far, else at least twice the longest step so far (on the slope's line from 0 to it; 10 times that
    step when the slope has not risen)."""
    if high is None:
        return max(low * slope0 / (slope0 - low_slope), 2 * low) if low_slope > slope0 else 10 * low
    width = high - low
    secant = low - low_slope * width / (high_slope - low_slope) if high_slope > low_slope else low + width / 2
    return min(max(secant, low + 0.1 * width), high - 0.1 * width)


def _minimise(objective: _Objective, strength: float, point: _Point, max_iter: int, tolerance: float,
              history: int = 20) -> _Point:
    """L-BFGS on the data loss + strength / 2 ||W||^2 from `point` (its pairs included), until the largest entry of
    the objective's gradient is at most `tolerance` (scikit-learn's lbfgs criterion, its tol) or after `max_iter`
    steps. Starting at the previous C's solution costs no evaluation: only the ridge term's gradient changes."""
    for _ in range(max_iter):
        gradient = point.total_gradient(strength)
        if float(gradient.abs().max()) <= tolerance:
            break
        changes = point.changes + _penalised(point.steps, strength)
        direction = _direction(gradient, point.steps, changes)
        found = _line_search(objective, strength, point, float(point.value(strength)), direction,
                             1.0 if len(changes) else min(1.0, 1 / float(gradient.abs().sum())))
        if found is None:
            if not len(changes):
                break
            point = point.forgetting()
            continue
        step, new = found
        s, y = step * direction, new.gradient - point.gradient
        # float rounding can bend a tiny step's curvature negative: such a pair is left out
        point = new.remembering(s, y, history) if float((s * (y + _penalised(s, strength))).sum()) > 0 else new
    return point


def fit_logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, c: float, init: torch.Tensor | None = None,
                 max_iter: int = 1000, tolerance: float = 1e-4) -> torch.Tensor:
    """Weights (D + 1, K), bias last, minimising mean CE + ||W||^2 / (2 C n): scikit-learn's objective over n.
    With two classes K = 1: one logistic column for class 1, scikit-learn's binary objective (two softmax columns,
    both penalised, would equal scikit-learn only at 2C).

    Stops when the largest gradient entry is below `tolerance`, scikit-learn's lbfgs criterion (its tol)."""
    columns = 1 if n_classes == 2 else n_classes
    objective = _Objective(x, y, columns)
    weights = torch.zeros(x.shape[1] + 1, columns, dtype=x.dtype, device=x.device) if init is None else init
    return _minimise(objective, _strength(c, len(x)), _start(objective, weights), max_iter, tolerance).weights


def _strength(c: float, rows: int) -> float:
    """The ridge coefficient of scikit-learn's objective divided by n: 1 / (C n)."""
    return 1.0 / (c * rows)


def _restandardise(weights: torch.Tensor, old: tuple[torch.Tensor, torch.Tensor],
                   new: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Weights for features standardised by `new` (mean, std) giving the same logits as `weights` under `old`."""
    ratio = (new[1] / old[1])[:, None]
    out = weights.clone()
    out[:-1] *= ratio
    out[-1] += ((new[0] - old[0]) / old[1]) @ weights[:-1]
    return out


def _probabilities(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    logits = _logits(x, weights)
    if weights.shape[1] == 1:
        positive = torch.sigmoid(logits)
        return torch.cat([1 - positive, positive], dim=1)
    return torch.softmax(logits, dim=1)


def _top1(x: torch.Tensor, weights: torch.Tensor, labels: np.ndarray, views: int) -> float:
    """Top-1 accuracy per video of the class probabilities averaged over its `views` consecutive rows."""
    probs = _probabilities(x, weights).cpu().numpy().reshape(len(labels), views, -1)
    return float((probs.mean(1).argmax(1) == labels).mean())


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
    columns = 1 if n_classes == 2 else n_classes
    objective = _Objective(x_fit, yt[fit_idx], columns)
    point = _start(objective, torch.zeros(xt.shape[1] + 1, columns, device=dev))
    curve, best = [], None
    grid = config.grid()
    with bar(len(grid) + 1, "linear: C sweep and refit", "fit", quiet) as progress:
        for c in grid:
            moved = _minimise(objective, _strength(float(c), len(x_fit)), point, config.max_iter, config.tolerance)
            # weak regularisation often leaves the weights where they were (the gradient is within tolerance already)
            top1 = (curve[-1]["val_top1"] if curve and moved.weights is point.weights
                    else _top1(x_val, moved.weights, video_y[val_videos], views))
            point = moved
            curve.append({"C": float(c), "val_top1": top1})
            if best is None or curve[-1]["val_top1"] > curve[best[0]]["val_top1"]:
                best = len(curve) - 1, point
            progress.update(1)
        del x_fit, x_val, objective
        chosen = curve[best[0]]["C"]
        all_mean, all_std = standardise(xt)
        # the objective is convex, so starting the refit from the validation fit at that C (its logits kept under
        # the new standardisation, its curvature pairs as a first Hessian estimate) changes only the run time
        objective = _Objective((xt - all_mean) / all_std, yt, columns)
        start = _restandardise(best[1].weights, (mean, std), (all_mean, all_std))
        refit = best[1].moved(start, *objective(start))
        final = _minimise(objective, _strength(chosen, len(xt)), refit, config.max_iter, config.tolerance).weights
        progress.update(1)
    return LinearFit(all_mean, all_std, final, chosen, curve, len(fit_videos), len(val_videos),
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

