"""How like retraining the forget rows' answer losses are, row by row."""


def nll_spread_quality(nll_model: list[float], nll_retain: list[float]) -> float:
    """p-value of the two-sample Kolmogorov–Smirnov test between the model's and the retain model's per-row
    answer NLLs on the forget set (each row's mean −log p over its answer tokens). 1 = the same spread of
    confidence as a model never trained on the forget rows; small when rows stay memorised or when every
    row is pushed past what retraining gives (over-unlearning), which forget quality (the same test on
    truth ratios) can miss."""
    from scipy.stats import ks_2samp

    return float(ks_2samp(nll_model, nll_retain).pvalue)
