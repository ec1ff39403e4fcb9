"""Gao et al.'s over-optimization forms: KL of best-of-n and closed-form fits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from companion.overoptimization import GaoFit, fit_gao, kl_best_of_n


def test_kl_best_of_n_by_hand():
    assert kl_best_of_n([1, 2, 16]).tolist() == pytest.approx([0.0, math.log(2) - 0.5, math.log(16) - 15 / 16])
    with pytest.raises(ValueError, match="n must be >= 1"):
        kl_best_of_n(0)


def test_kl_best_of_n_matches_a_discrete_distribution_without_ties():
    # best-of-n over 1000 equally likely, distinct-reward outcomes: p_bon(i) = (i^n - (i-1)^n) / N^n
    n_out, n = 1000, 4
    i = np.arange(1, n_out + 1)
    p_bon = (i ** n - (i - 1.0) ** n) / n_out ** n
    kl = float((p_bon * np.log(p_bon * n_out)).sum())
    assert kl == pytest.approx(float(kl_best_of_n(n)), abs=2e-3)


@pytest.mark.parametrize("form", ["bon", "rl"])
def test_fit_recovers_the_parameters(form):
    d = np.linspace(0.1, 4, 30)
    truth = GaoFit(form, alpha=0.8, beta=0.3)
    fit = fit_gao(d, truth(d), form)
    assert fit.alpha == pytest.approx(0.8, abs=1e-9) and fit.beta == pytest.approx(0.3, abs=1e-9)
    peak = d[np.argmax(truth(np.linspace(0.1, 4, 30)))]
    dense = np.linspace(0.01, 10, 100_000)
    assert fit.peak == pytest.approx(dense[np.argmax(truth(dense))], rel=1e-3)
    assert peak > 0


def test_fit_checks_its_input():
    with pytest.raises(ValueError, match="form"):
        fit_gao([1, 2], [0, 1], "ppo")
    with pytest.raises(ValueError, match="same length"):
        fit_gao([1, 2, 3], [0, 1], "rl")
    assert GaoFit("bon", 1.0, -0.1).peak == float("inf")
