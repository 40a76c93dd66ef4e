"""TOFU metrics: truth ratio, its aggregations, forget quality and model utility.

Inputs are mean NLLs over answer tokens (from scoring.py), so p = exp(−NLL) is the
per-token geometric-mean probability of an answer.
"""

from __future__ import annotations

import math
import statistics


def truth_ratio(nll_correct: float, nll_perturbed: list[float]) -> float:
    """TR = p̄(perturbed) / p(correct), p = exp(−mean NLL), perturbed answers averaged in NLL
    space (geometric mean): TR = exp(nll_correct − mean(nll_perturbed)). `correct` is the
    paraphrased answer where one exists (TOFU), else the answer. TR < 1: the model prefers the
    truth; TR ≈ 1: it cannot tell; TR > 1: it prefers the wrong answers."""
    return math.exp(nll_correct - sum(nll_perturbed) / len(nll_perturbed))


def forget_truth_ratio(trs: list[float]) -> float:
    """Forget aggregation mean(min(TR, 1/TR)) in (0, 1]. Higher = the model cannot tell true from
    perturbed answers (better forgotten); the value alone is not forget quality."""
    return sum(min(t, 1.0 / t) for t in trs) / len(trs)


def retain_truth_ratio(trs: list[float]) -> float:
    """Retain / real-authors / world-facts aggregation mean(max(0, 1 − TR)) in [0, 1].
    Higher = the model prefers the true answer (knowledge kept)."""
    return sum(max(0.0, 1.0 - t) for t in trs) / len(trs)


def normalised_probability(nll_true: float, nll_perturbed: list[float]) -> float:
    """p_true / (p_true + Σ p_perturbed), p = exp(−mean NLL): the probability of the true answer
    among the offered options. Higher = better (kept knowledge)."""
    pt = math.exp(-nll_true)
    return pt / (pt + sum(math.exp(-x) for x in nll_perturbed))


def forget_quality(trs_model: list[float], trs_retain: list[float]) -> float:
    """p-value of the two-sample Kolmogorov–Smirnov test between the model's and the retain
    model's per-item forget truth ratios. Higher = more like a model never trained on the forget
    set (1 = indistinguishable; the target model typically scores ~1e-5 or less)."""
    from scipy.stats import ks_2samp

    return float(ks_2samp(trs_model, trs_retain).pvalue)


# TOFU's model utility is the harmonic mean n / Σ 1/v of its numbers, 0 when any is 0 (higher = better).
harmonic_mean = statistics.harmonic_mean
