"""Consistency with a retrained model (the gold standard of unlearning): how close the unlearned
model's behaviour and weights are to a model trained without the forget data.

- next-token KL: per item, mean over answer tokens of KL(p_retrained ‖ p_model) (lower = closer)
- greedy agreement: fraction of items whose greedy answers are identical (higher = closer)
- parameter distance: L2 norm of θ_model − θ_retrained over all parameters (lower = closer;
  only when names and shapes match)
"""

from __future__ import annotations

import math

import torch

from ..kl import kl_rows  # noqa: F401  (re-exported)


def agreement(a: list[str], b: list[str]) -> float:
    """Fraction of positions where a[i] == b[i] (greedy outputs or their hashes). Higher = closer."""
    if len(a) != len(b) or not a:
        raise ValueError("agreement needs two equally long, non-empty lists")
    return sum(x == y for x, y in zip(a, b)) / len(a)


@torch.no_grad()
def param_distance(model, other) -> float | None:
    """sqrt(Σ ‖θ − θ'‖²) over parameters with the same names; None when names or shapes differ."""
    pa, pb = dict(model.named_parameters()), dict(other.named_parameters())
    if pa.keys() != pb.keys() or any(pa[k].shape != pb[k].shape for k in pa):
        return None
    tot = 0.0
    for k in pa:
        tot += float(((pa[k].detach().double() - pb[k].detach().double().to(pa[k].device)) ** 2).sum())
    return math.sqrt(tot)


def next_token_kl(model, retrained, encoded: list[dict], pad_id: int, batch_size: int = 32) -> list[float]:
    """Per sequence: mean over answer-token positions of KL(p_retrained ‖ p_model).
    Both models see the same batches (same tokenizer required)."""
    from .scoring import score_sequences

    got = score_sequences(model, encoded, pad_id, batch_size, full=[False] * len(encoded), other=retrained)
    return [x["kl_other"] for x in got]
