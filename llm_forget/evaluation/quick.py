"""The quick evaluation: token metrics on forget / retain / holdout and forget-vs-holdout MIA AUC.

Used after every unlearning run and by the demo; the full suites live in evaluation/suite.py.
"""

from __future__ import annotations

import math
import time

from ..data.encode import pad
from .scoring import score


def batches(encoder, rows: list[dict], batch_size: int, answer_key: str = "answer"):
    enc = [encoder.row(r, answer_key) for r in rows]
    pad_id = encoder.tokenizer.pad_token_id
    for s in range(0, len(enc), batch_size):
        yield pad(enc[s:s + batch_size], pad_id)


def auc(members: list[float], nonmembers: list[float]) -> float:
    """ROC-AUC of a membership score (higher = member): P(score(member) > score(non-member))."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score([1] * len(members) + [0] * len(nonmembers), list(members) + list(nonmembers)))


def summarize(items: list[dict]) -> dict:
    n = len(items)
    mean = lambda k: sum(x[k] for x in items) / n  # noqa: E731
    tok = sum(x["n_tokens"] for x in items)
    return {
        "perplexity": math.exp(sum(x["nll_sum"] for x in items) / tok),  # token-weighted over the set
        "probability": sum(math.exp(-x["nll"]) for x in items) / n,
        "exact_memorization": mean("exact_memorization"),
        "extraction_strength": mean("extraction_strength"),
        "n": n,
    }


def quick_eval(model, encoder, sets: dict[str, list[dict]], batch_size: int = 32) -> dict:
    """Token metrics per set (`forget`, `retain`, `holdout`, ...) plus `mia_auc` (LOSS attack,
    forget members vs holdout non-members; 0.5 = indistinguishable, 1 = fully remembered)."""
    t = time.perf_counter()
    per_item = {name: score(model, batches(encoder, rows, batch_size), minkpp=False)
                for name, rows in sets.items() if rows}
    summary = {f"{name}_{k}": v for name, items in per_item.items() for k, v in summarize(items).items()}
    if "forget" in per_item and "holdout" in per_item:
        summary["mia_auc"] = auc([-x["nll"] for x in per_item["forget"]], [-x["nll"] for x in per_item["holdout"]])
    summary["eval_seconds"] = time.perf_counter() - t
    return {"summary": summary, "per_item": per_item}
