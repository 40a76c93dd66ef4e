"""The method registry and the pieces every objective shares.

A method is a small dataclass (its hyperparameters, with defaults) whose `loss(batch)` returns
a dict with at least "loss". The batch (`llm_forget.trainer.Batch`) computes forward passes
lazily: a method touches only what it needs. Register with `@register("name")`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..kl import kl_rows

METHODS: dict[str, type] = {}


def register(name: str):
    def deco(cls):
        cls.name = name
        METHODS[name] = cls
        return cls

    return deco


class Method:
    """Base class. `reference_needs()` names what the frozen reference must provide:
    "forget_logps" (cacheable up front), "retain_logits" or "hidden" (need a live reference)."""

    name = "?"
    citation = ""
    # the loss has a fixed point at "never seen" (it stops moving there): the selection then does not raise the
    # learning rate once the forget rows have reached the reference (llm_forget/selection.py, `_adapt_lr`)
    fixed_point = False

    def reference_needs(self) -> set[str]:
        return set()

    def setup(self, model) -> None:
        """Called once before training (e.g. to freeze parameters)."""

    def loss(self, b) -> dict:
        raise NotImplementedError


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position log p(y_t | y_<t) of the labels and the answer mask, shifted for causal LMs.

    logits: (B, T, V); labels: (B, T) with -100 on prompt and padding.
    Returns logp (B, T-1) in fp32 (0 where masked) and mask (B, T-1) bool."""
    logits = logits[:, :-1].float()
    labels = labels[:, 1:]
    mask = labels != -100
    safe = labels.masked_fill(~mask, 0)
    logp = torch.gather(F.log_softmax(logits, dim=-1), 2, safe.unsqueeze(-1)).squeeze(-1)
    return logp * mask, mask


def sequence_logp(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum over answer tokens of log p, number of answer tokens), each of shape (B,)."""
    logp, mask = token_logps(logits, labels)
    return logp.sum(-1), mask.sum(-1)


def nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """NLL = -(1/N) Σ_t log p(y_t), the token mean over all answer tokens of the batch."""
    logp, mask = token_logps(logits, labels)
    return -logp.sum() / mask.sum().clamp(min=1)


def masked_kl(ref_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """KL(π_ref ‖ π_θ) = Σ_v p_ref(v) (log p_ref(v) − log p_θ(v)), averaged over answer tokens only
    (prompt and padding positions excluded, unlike the reference implementation)."""
    mask = labels[:, 1:] != -100
    kl = kl_rows(ref_logits[:, :-1], logits[:, :-1])
    return (kl * mask).sum() / mask.sum().clamp(min=1)


def retain_term(b, kind: str) -> torch.Tensor:
    """The retain loss: "nll" on the retain batch, or "kl" = KL(π_ref ‖ π_θ) on its answer tokens."""
    if kind == "nll":
        return nll(b.retain_logits, b.retain["labels"])
    if kind == "kl":
        return masked_kl(b.ref_retain_logits, b.retain_logits, b.retain["labels"])
    raise ValueError(f"retain_loss must be 'nll' or 'kl', not {kind!r}")
