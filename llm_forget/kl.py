"""The one KL divergence every method and metric uses."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_rows(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) = Σ_v p(v) (log p(v) − log q(v)) over the last axis of two logit (or log-prob)
    tensors (..., V) -> (...), in float32; ≥ 0, 0 when p = q (lower = closer). Computed by
    torch's `kl_div` on log-softmaxes (log-probs given as logits come back unchanged)."""
    lp = F.log_softmax(logits_p.float(), -1)
    lq = F.log_softmax(logits_q.float(), -1)
    return F.kl_div(lq, lp, reduction="none", log_target=True).sum(-1)
