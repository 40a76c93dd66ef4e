"""Batches and forward passes shared by the scoring paths (scoring.py, shared_prompt.py): which rows a
second model runs on, how batches are cut, and the answer-position logits of one batch."""

from __future__ import annotations

import torch

from ..data.encode import IGNORE
from ..models import accepts


def rows_with_other(n: int, other, other_rows) -> set[int]:
    """Indices of the `n` sequences a second model also runs on: `other_rows` (default all), none without one."""
    if other is None:
        return set()
    return set(range(n)) if other_rows is None else set(other_rows)


def batches_apart(items: list, with_other, batch_size: int) -> list[list]:
    """`items` (kept in order) cut into batches of `batch_size`, the items for which
    `with_other(item)` holds first and in batches of their own (a second model runs on those)."""
    out = []
    for mine in (True, False):
        part = [x for x in items if bool(with_other(x)) == mine]
        out += [part[s:s + batch_size] for s in range(0, len(part), batch_size)]
    return out


def right_padded(mask: torch.Tensor) -> bool:
    """True when every row of the 0/1 mask is ones then zeros (padding only at the end)."""
    m = mask.bool()
    return bool((m[:, 1:] <= m[:, :-1]).all()) and bool(m[:, 0].all())


def answer_logits(model, batch: dict, **extra) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, targets) aligned: logits[:, j] predicts targets[:, j]; targets are -100 outside
    answers. Only positions that predict some row's answer token are projected to the vocabulary.
    `extra` goes to the model (a KV cache and position ids, for continuations of cached prompts)."""
    labels = batch["labels"]
    targets = labels[:, 1:]
    keep = (targets != IGNORE).any(0).nonzero().squeeze(1)  # positions t predicting labels[t+1]
    mask = batch["attention_mask"]
    if right_padded(mask):
        mask = None  # causal attention never sees the trailing pads: exact, and SDPA's fast causal path
    kw = dict(input_ids=batch["input_ids"], attention_mask=mask, **extra)
    if accepts(model, "logits_to_keep"):
        logits = model(**kw, logits_to_keep=keep).logits
    else:
        logits = model(**kw).logits[:, keep]
    return logits, targets[:, keep]


