"""CounterFact metrics: the PROBABILITY family (ROME/MEMIT papers). Not to be confused with the
zsRE / EasyEdit token-accuracy family in `metrics_zsre.py`.

Probabilities of a multi-token object are compared through their mean token NLL
(p = exp(−mean NLL)), on the same prompt:
- efficacy_score       = E[P(o*) > P(o_true)] on the edit prompts          (higher = better)
- efficacy_magnitude   = E[P(o*) − P(o_true)]                              (higher = better)
- paraphrase_score     = E[P(o*) > P(o_true)] on rephrased prompts         (higher = better)
- neighbourhood_score  = E[P(o_true) > P(o*)] on neighbour prompts, o_true there being the
                         neighbour's own answer                              (higher = better)
- counterfact_score    = harmonic mean of the three scores; NaN when any of them is NaN (no
                         prompts of that kind), the missing ones named in
                         `counterfact_score_missing`                       (higher = better)
- fluency              = mean over generations of the weighted n-gram entropy
                         (2/3·H₂ + 4/3·H₃)/2 in bits; lower means repetitive text (higher = better)
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from statistics import harmonic_mean  # CounterFact score: n / Σ 1/x, 0 when any is 0

from .targets import score_targets

logger = logging.getLogger(__name__)


def prob_wins(nll_a: list[float], nll_b: list[float]) -> float:
    """E[P(a) > P(b)] = fraction of items with mean NLL(a) < mean NLL(b) (higher = a preferred)."""
    if not nll_a:
        return float("nan")
    return sum(a < b for a, b in zip(nll_a, nll_b)) / len(nll_a)


def prob_margin(nll_a: list[float], nll_b: list[float]) -> float:
    """E[exp(−NLL(a)) − exp(−NLL(b))] (higher = a more probable than b)."""
    if not nll_a:
        return float("nan")
    return sum(math.exp(-a) - math.exp(-b) for a, b in zip(nll_a, nll_b)) / len(nll_a)


def ngram_entropy(text: str, weights=(2 / 3, 4 / 3), ns=(2, 3)) -> float:
    """Mean over n of weight_n · H_n, H_n the entropy (bits) of the text's word n-gram frequencies.
    Repetitive text scores low (higher = more fluent / less degenerate)."""
    words = re.findall(r"\w+|[^\w\s]", text.lower())
    vals = []
    for w, n in zip(weights, ns):
        grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
        tot = sum(grams.values())
        h = -sum(c / tot * math.log2(c / tot) for c in grams.values()) if tot else 0.0
        vals.append(w * h)
    return sum(vals) / len(vals)


def counterfact_score(efficacy: float, paraphrase: float, neighbourhood: float) -> dict:
    """{"counterfact_score": harmonic mean of the three}, NaN (with the missing components named
    under "counterfact_score_missing", and a warning) when any is NaN: a score over fewer
    components is not comparable with one over all three."""
    parts = {"efficacy": efficacy, "paraphrase": paraphrase, "neighbourhood": neighbourhood}
    missing = [k for k, v in parts.items() if math.isnan(v)]
    if missing:
        logger.warning("counterfact_score is NaN: no %s prompts among the requests", " or ".join(missing))
        return {"counterfact_score": float("nan"), "counterfact_score_missing": missing}
    return {"counterfact_score": harmonic_mean(list(parts.values()))}


def counterfact_metrics(model, tokenizer, requests, batch_size: int = 32, fluency_prompts: int = 0,
                        max_new_tokens: int = 50) -> dict:
    """The probability family on CounterFact-style requests (each needs target_true). Returns
    the summary and per-request values; `fluency_prompts` > 0 adds fluency on that many prompts."""
    reqs = [r for r in requests if r.target_true]
    prompts, new, true, kind = [], [], [], []
    for i, r in enumerate(reqs):
        for p, k in [(r.prompt, "efficacy")] + [(q, "paraphrase") for q in r.rephrase]:
            prompts += [p, p]
            new.append(len(prompts) - 2)
            true.append(len(prompts) - 1)
            kind.append((i, k))
        for q, ans in r.neighbourhood:
            prompts += [q, q]
            new.append(len(prompts) - 2)
            true.append(len(prompts) - 1)
            kind.append((i, "neighbourhood"))
    targets = [None] * len(prompts)
    for (i, k), a, b in zip(kind, new, true):
        r = reqs[i]
        targets[a] = r.target_new
        targets[b] = r.target_true if k != "neighbourhood" else next(ans for q, ans in r.neighbourhood
                                                                        if q == prompts[b])
    scored = score_targets(model, tokenizer, prompts, targets, batch_size)
    groups = {"efficacy": ([], []), "paraphrase": ([], []), "neighbourhood": ([], [])}
    per = [{"case_id": r.case_id} for r in reqs]
    for (i, k), a, b in zip(kind, new, true):
        groups[k][0].append(scored[a]["nll"])
        groups[k][1].append(scored[b]["nll"])
        per[i].setdefault(k, []).append(scored[a]["nll"] < scored[b]["nll"])
    es = prob_wins(*groups["efficacy"])
    ps = prob_wins(*groups["paraphrase"])
    ns = prob_wins(groups["neighbourhood"][1], groups["neighbourhood"][0])
    out = {"efficacy_score": es, "efficacy_magnitude": prob_margin(*groups["efficacy"]),
           "paraphrase_score": ps, "neighbourhood_score": ns, **counterfact_score(es, ps, ns),
           "n_requests": len(reqs)}
    if fluency_prompts:
        out["fluency"] = fluency(model, tokenizer, [r.prompt for r in reqs[:fluency_prompts]], max_new_tokens)
    return {"summary": out, "per_request": per}


def fluency(model, tokenizer, prompts: list[str], max_new_tokens: int = 50) -> float:
    """Mean `ngram_entropy` of greedy continuations of `prompts` (higher = less repetitive)."""
    import torch

    device = next(model.parameters()).device
    vals = []
    with torch.no_grad():
        for p in prompts:
            enc = tokenizer(p, return_tensors="pt").to(device)
            g = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                               pad_token_id=tokenizer.pad_token_id)
            vals.append(ngram_entropy(tokenizer.decode(g[0], skip_special_tokens=True)))
    return sum(vals) / len(vals) if vals else float("nan")
