"""Metrics against hand-computed values and known identities."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dicomnode import metrics


def test_roc_auc_perfect_random_and_ties() -> None:
    assert metrics.roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert metrics.roc_auc(np.array([0, 0, 1, 1]), np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert metrics.roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5
    # one of four positive/negative pairs is misordered
    assert metrics.roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.5, 0.9])) == 0.75
    assert math.isnan(metrics.roc_auc(np.array([1, 1]), np.array([0.1, 0.2])))


def test_sensitivity_at_specificity() -> None:
    labels = np.array([0] * 10 + [1] * 4)
    scores = np.array([*range(10), 8.5, 9.5, 20, 30])
    # 90 % specificity: threshold at the 9th negative (8): 8.5, 9.5, 20, 30 are above it
    assert metrics.sensitivity_at_specificity(labels, scores, 0.9) == 1.0
    # 100 % specificity: threshold at the largest negative (9): 9.5, 20, 30
    assert metrics.sensitivity_at_specificity(labels, scores, 1.0) == 0.75


def test_paired_auc_change_interval_follows_the_pairing() -> None:
    rng = np.random.default_rng(1)
    labels = np.array([0, 1] * 40)
    before = labels * 2.0 + rng.normal(size=labels.size)
    change, low, high = metrics.paired_auc_change(labels, before, before.copy())
    assert (change, low, high) == (0.0, 0.0, 0.0)
    # the same cases with the lesion signal halved: a clear, consistent drop
    after = labels * 1.0 + (before - labels * 2.0)
    change, low, high = metrics.paired_auc_change(labels, before, after)
    assert change < 0 and low <= change <= high < 0
    # unrelated scores: an interval that includes no change
    change, low, high = metrics.paired_auc_change(labels, before, rng.normal(size=labels.size) + labels * 2.0)
    assert low < 0.05 and high > -0.05 and low < high


def test_auc_interval_holds_the_auc_and_narrows_with_more_cases() -> None:
    rng = np.random.default_rng(1)

    def cases(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.r_[np.ones(n, dtype=bool), np.zeros(n, dtype=bool)]
        return labels, np.r_[rng.normal(1.0, 1.0, n), rng.normal(0.0, 1.0, n)]

    few, many = cases(16), cases(400)
    (low_few, high_few), (low_many, high_many) = metrics.auc_interval(*few), metrics.auc_interval(*many)
    assert low_few <= metrics.roc_auc(*few) <= high_few and low_many <= metrics.roc_auc(*many) <= high_many
    assert high_many - low_many < (high_few - low_few) / 3
    separated = np.array([1, 1, 0, 0], dtype=bool), np.array([2.0, 3.0, 0.0, 1.0])
    assert metrics.auc_interval(*separated) == (1.0, 1.0)
    assert np.isnan(metrics.auc_interval(np.ones(3, dtype=bool), np.arange(3.0))[0])


def test_average_precision_matches_hand_computation() -> None:
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    # precision at the two recalls: 1/1 and 2/3
    assert metrics.average_precision(labels, scores) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_dice_and_best_dice() -> None:
    truth = np.zeros((10, 10), bool)
    truth[2:6, 2:6] = True
    assert metrics.dice(truth, truth) == 1.0
    assert metrics.dice(np.zeros_like(truth), truth) == 0.0
    scores = truth * 5.0 + 1.0
    best, threshold = metrics.best_dice(scores, truth, np.array([0.5, 2.0, 10.0]))
    assert best == 1.0 and threshold == 2.0


def test_psnr_ssim_ccc() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(32, 32))
    assert metrics.psnr(image, image, 1.0) == float("inf")
    assert metrics.ssim(image, image, 4.0) == pytest.approx(1.0)
    assert metrics.ssim(image, image + rng.normal(size=image.shape), 4.0) < 0.9
    assert metrics.concordance_correlation(image, image) == pytest.approx(1.0)
    assert metrics.concordance_correlation(image, image + 1) < 1.0
