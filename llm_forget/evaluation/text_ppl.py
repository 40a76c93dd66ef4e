"""Retain utility on general text: sliding-window perplexity of a plain-text file.

The text is tokenised once; windows of `window` tokens advance by `stride`; each token is scored
once, by the first window that reaches it, with up to window − stride tokens of left context
(Hugging Face's "perplexity of fixed-length models" recipe). Lower = better language modelling.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def window_spans(n: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first_scored) per window over n tokens: the window is ids[begin:end] and
    targets at positions ≥ first_scored (and > begin: the first token has no context) count."""
    if not 0 < stride <= window:
        raise ValueError("need 0 < stride <= window")
    spans, prev_end = [], 0
    for begin in range(0, n, stride):
        end = min(begin + window, n)
        if end <= prev_end:
            break
        spans.append((begin, end, max(prev_end, begin + 1)))
        prev_end = end
        if end == n:
            break
    return spans


def perplexity(total_nll: float, n_tokens: int) -> float:
    """exp(Σ NLL / N): token-weighted perplexity. Lower = better."""
    return math.exp(total_nll / n_tokens)


@torch.no_grad()
def sliding_window_nll(model, ids: list[int], window: int, stride: int) -> tuple[float, int]:
    """(Σ NLL, number of scored tokens) over `ids` with sliding windows (one sequence per pass)."""
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for begin, end, first in window_spans(len(ids), window, stride):
        x = torch.tensor([ids[begin:end]], device=device)
        logits = model(input_ids=x).logits[0, first - begin - 1: end - begin - 1].float()
        y = x[0, first - begin: end - begin]
        total += float(F.cross_entropy(logits, y, reduction="sum"))
        count += int(y.numel())
    return total, count
