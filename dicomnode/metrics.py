"""Evaluation metrics in plain numpy: ROC AUC, operating points, AUPRC, Dice, PSNR, SSIM, CCC."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tie correction); NaN without both classes."""
    y = np.asarray(labels, dtype=bool).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def sensitivity_at_specificity(labels: np.ndarray, scores: np.ndarray, specificity: float) -> float:
    """Sensitivity at the lowest threshold whose specificity is at least `specificity`."""
    y = np.asarray(labels, dtype=bool).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    negatives = np.sort(s[~y])
    if negatives.size == 0 or not y.any():
        return float("nan")
    # Scores strictly above the threshold count as positive calls.
    index = int(np.ceil(specificity * negatives.size)) - 1
    threshold = negatives[min(max(index, 0), negatives.size - 1)]
    return float((s[y] > threshold).mean())


def paired_auc_change(labels: np.ndarray, before: np.ndarray, after: np.ndarray, rounds: int = 2000,
                      seed: int = 0) -> tuple[float, float, float]:
    """AUC(after) - AUC(before) on the same cases, with a 95 % bootstrap interval over cases.

    Resampling the cases jointly keeps the pairing, so the interval reflects the change
    itself and not the spread of two independent AUCs.
    """
    y = np.asarray(labels, dtype=bool).ravel()
    a = np.asarray(before, dtype=float).ravel()
    b = np.asarray(after, dtype=float).ravel()
    change = roc_auc(y, b) - roc_auc(y, a)
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(rounds):
        pick = rng.integers(0, y.size, y.size)
        if y[pick].all() or not y[pick].any():
            continue
        samples.append(roc_auc(y[pick], b[pick]) - roc_auc(y[pick], a[pick]))
    if not samples:
        return change, float("nan"), float("nan")
    low, high = np.percentile(samples, [2.5, 97.5])
    return change, float(low), float(high)


def auc_interval(labels: np.ndarray, scores: np.ndarray, rounds: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap interval of the ROC AUC; positives and negatives are resampled apart, so every
    round keeps the study's numbers of each (a subset of 16 lesions against 100 healthy heads)."""
    y = np.asarray(labels, dtype=bool).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    positives, negatives = s[y], s[~y]
    if positives.size == 0 or negatives.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    truth = np.r_[np.ones(positives.size, dtype=bool), np.zeros(negatives.size, dtype=bool)]
    samples = [roc_auc(truth, np.r_[rng.choice(positives, positives.size),
                                    rng.choice(negatives, negatives.size)]) for _ in range(rounds)]
    low, high = np.percentile(samples, [2.5, 97.5])
    return float(low), float(high)


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve (step-wise average precision)."""
    y = np.asarray(labels, dtype=bool).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    total = int(y.sum())
    if total == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    y, s = y[order], s[order]
    true_positives = np.cumsum(y)
    # Only the last element of each group of tied scores is an operating point.
    last = np.r_[s[1:] != s[:-1], True]
    tp = true_positives[last]
    precision = tp / (np.nonzero(last)[0] + 1)
    recall = tp / total
    recall_steps = np.diff(np.r_[0.0, recall])
    return float((recall_steps * precision).sum())


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    p = np.asarray(prediction, dtype=bool)
    t = np.asarray(truth, dtype=bool)
    denominator = int(p.sum() + t.sum())
    return 1.0 if denominator == 0 else float(2.0 * (p & t).sum() / denominator)


def best_dice(scores: np.ndarray, truth: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
    """The highest Dice over thresholds of a score map, and the threshold reaching it."""
    best, best_t = 0.0, float(thresholds[0])
    for t in thresholds:
        d = dice(scores > t, truth)
        if d > best:
            best, best_t = d, float(t)
    return best, best_t


def psnr(reference: np.ndarray, test: np.ndarray, data_range: float) -> float:
    mse = float(np.mean((np.asarray(reference, float) - np.asarray(test, float)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def ssim(reference: np.ndarray, test: np.ndarray, data_range: float, sigma: float = 1.5) -> float:
    """Mean structural similarity of two 2-D images with a Gaussian window (Wang et al. 2004)."""
    x = np.asarray(reference, dtype=float)
    y = np.asarray(test, dtype=float)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = ndimage.gaussian_filter(x, sigma), ndimage.gaussian_filter(y, sigma)
    var_x = ndimage.gaussian_filter(x * x, sigma) - mu_x**2
    var_y = ndimage.gaussian_filter(y * y, sigma) - mu_y**2
    cov = ndimage.gaussian_filter(x * y, sigma) - mu_x * mu_y
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(index.mean())


def concordance_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Lin's concordance correlation coefficient."""
    x = np.asarray(a, dtype=float).ravel()
    y = np.asarray(b, dtype=float).ravel()
    covariance = float(((x - x.mean()) * (y - y.mean())).mean())
    return 2 * covariance / float(x.var() + y.var() + (x.mean() - y.mean()) ** 2)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size, dtype=float)
    sorted_values = values[order]
    start = 0
    while start < values.size:
        end = start
        while end + 1 < values.size and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks
