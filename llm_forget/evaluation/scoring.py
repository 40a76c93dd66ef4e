"""One teacher-forced forward pass per batch -> every token-level metric, per item.

Per item (answer tokens only; prompt and padding never count; logits upcast to fp32):
- nll: mean negative log-likelihood (lower = model knows the answer better)
- nll_sum, n_tokens
- exact_memorization: fraction of positions where argmax = label (higher = more memorised)
- extraction_strength: 1 − k/|y|, k the smallest index with argmax reproducing y[k:] exactly;
  0 when even the last token is not reproduced (higher = more extractable)
- mink_{k}: Min-K% = mean of the lowest k% token log-probs (higher = more likely a member)
- minkpp_{k}: Min-K%++ = the same on (log p(y_t) − μ_t)/σ_t, μ_t and σ_t the mean and std of
  log p under the model's own next-token distribution (computed in vocabulary chunks)
Derived by callers: perplexity = exp(nll), probability = exp(−nll), LOSS score = −nll.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def extraction_strength(correct: torch.Tensor) -> float:
    """correct: (n,) bool, argmax == label at each answer position. 1 − k/n with k the smallest
    index such that correct[k:] is all True; 0 when correct[-1] is False (nothing extracted)."""
    n = int(correct.numel())
    if n == 0:
        return 0.0
    wrong = (~correct).nonzero()
    k = 0 if wrong.numel() == 0 else int(wrong[-1]) + 1
    return 1.0 - k / n


def min_k(logp: torch.Tensor, k: float) -> float:
    """Mean of the lowest ceil(k% · n) values of `logp` (n answer tokens), k in (0, 100]."""
    n = logp.numel()
    m = max(1, math.ceil(n * k / 100.0))
    return float(torch.topk(logp, m, largest=False).values.mean())


def vocab_moments(logits: torch.Tensor, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """μ_t = Σ_v p(v) log p(v) and σ_t = sqrt(Σ_v p(v) (log p(v))² − μ_t²) per position.

    logits: (T, V). Chunked over the vocabulary so memory stays O(T · chunk)."""
    lse = torch.logsumexp(logits, -1, keepdim=True)
    m1 = torch.zeros(logits.shape[0], dtype=torch.float32, device=logits.device)
    m2 = torch.zeros_like(m1)
    for s in range(0, logits.shape[-1], chunk):
        lp = logits[:, s:s + chunk] - lse
        p = lp.exp()
        m1 += (p * lp).sum(-1)
        m2 += (p * lp * lp).sum(-1)
    return m1, (m2 - m1 * m1).clamp(min=1e-12).sqrt()


def token_metrics(logits: torch.Tensor, labels: torch.Tensor, ks=(20.0, 40.0), minkpp: bool = True) -> list[dict]:
    """Every token metric for each row of one batch. logits (B, T, V), labels (B, T) with -100."""
    logits = logits[:, :-1].float()
    labels = labels[:, 1:]
    rows = []
    for i in range(labels.shape[0]):
        m = labels[i] != -100
        lg, y = logits[i][m], labels[i][m]
        n = int(y.numel())
        if n == 0:
            raise ValueError("a row has no answer tokens")
        logp_all = F.log_softmax(lg, -1)
        logp = logp_all.gather(1, y[:, None]).squeeze(1)
        correct = lg.argmax(-1) == y
        r = {"nll": float(-logp.mean()), "nll_sum": float(-logp.sum()), "n_tokens": n,
             "exact_memorization": float(correct.float().mean()),
             "extraction_strength": extraction_strength(correct)}
        for k in ks:
            r[f"mink_{k:g}"] = min_k(logp, k)
        if minkpp:
            mu, sigma = vocab_moments(lg)
            z = (logp - mu) / sigma
            for k in ks:
                r[f"minkpp_{k:g}"] = min_k(z, k)
        rows.append(r)
    return rows


@torch.no_grad()
def score(model, batches, ks=(20.0, 40.0), minkpp: bool = True, progress=None) -> list[dict]:
    """Run `model` once over each padded batch (dicts of input_ids, attention_mask, labels)."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for b in batches:
        b = {k: v.to(device) for k, v in b.items()}
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        out += token_metrics(logits, b["labels"], ks, minkpp)
        if progress is not None:
            progress.update(b["input_ids"].shape[0])
    return out
