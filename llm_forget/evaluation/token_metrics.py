"""Token-level metrics of one teacher-forced batch: pure functions of aligned answer logits and targets.

Per item (answer tokens only; prompt and padding never count; logits upcast to fp32):
- nll: mean negative log-likelihood (lower = model knows the answer better)
- nll_sum, n_tokens
- exact_memorization: fraction of positions where argmax = label (higher = more memorised)
- extraction_strength: 1 − k/|y|, k the smallest index with argmax reproducing y[k:] exactly;
  0 when even the last token is not reproduced (higher = more extractable)
- mink_{k}: Min-K% = mean of the lowest floor(k% · n) (at least 1) token log-probs (higher = more
  likely a member)
- minkpp_{k}: Min-K%++ = the same on (log p(y_t) − μ_t)/σ_t, μ_t and σ_t the mean and std of
  log p under the model's own next-token distribution (computed in vocabulary chunks)
- kl_other (add_kl_other): mean over answer positions of KL(p_other ‖ p_model) for a second model
Derived by callers: perplexity = exp(nll), probability = exp(−nll), LOSS score = −nll.

The closing eos: with `eos_id` given, a row whose last target is eos leaves that position out of
exact memorization, extraction strength, Min-K% and Min-K%++ (open-unlearning's convention: the
eos prediction says nothing about the memorised text); nll, probability and the LOSS/zlib scores
keep it (as open-unlearning's probability and LOSS attack do).
"""

from __future__ import annotations

import math

import torch

from ..data.encode import IGNORE
from ..kl import kl_rows


def extraction_strength(correct: torch.Tensor) -> float:
    """correct: (n,) bool, argmax == label at each answer position. 1 − k/n with k the smallest
    index such that correct[k:] is all True; 0 when correct[-1] is False (nothing extracted).
    open-unlearning reports 1/n in that case (its search stops at k = n − 1); not copied."""
    n = int(correct.numel())
    if n == 0:
        return 0.0
    wrong = (~correct).nonzero()
    k = 0 if wrong.numel() == 0 else int(wrong[-1]) + 1
    return 1.0 - k / n


def min_k(logp: torch.Tensor, k: float) -> float:
    """Mean of the lowest m = max(1, floor(k% · n)) values of `logp` (n answer tokens), k in (0, 100]
    (floor as in the Min-K% paper's code and open-unlearning)."""
    n = logp.numel()
    m = max(1, math.floor(n * k / 100.0))
    return float(torch.topk(logp, m, largest=False).values.mean())


def vocab_moments(logits: torch.Tensor, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """μ_t = Σ_v p(v) log p(v) and σ_t = sqrt(Σ_v p(v) (log p(v) − μ_t)²) per position.

    logits: (T, V). Chunked over the vocabulary so memory stays O(T · chunk). Two passes: the variance
    is summed around μ_t, not as Σ p (log p)² − μ_t², whose float32 cancellation is of the order of
    1e-7 · μ_t² and swamps σ_t² where the distribution is flat over a large vocabulary (|μ_t| ≫ σ_t)."""
    lse = torch.logsumexp(logits, -1, keepdim=True)
    m1 = torch.zeros(logits.shape[0], dtype=torch.float32, device=logits.device)
    var = torch.zeros_like(m1)
    for s in range(0, logits.shape[-1], chunk):
        lp = logits[:, s:s + chunk] - lse
        m1 += (lp.exp() * lp).sum(-1)
    for s in range(0, logits.shape[-1], chunk):
        lp = logits[:, s:s + chunk] - lse
        var += (lp.exp() * (lp - m1[:, None]) ** 2).sum(-1)
    return m1, var.clamp(min=1e-12).sqrt()


def row_metrics(lg: torch.Tensor, y: torch.Tensor, ks=(20.0, 40.0), minkpp: bool = True, full: bool = True,
                logp: torch.Tensor | None = None, eos_id: int | None = None) -> dict:
    """Metrics of one sequence from its answer-position logits lg (n, V) and targets y (n,);
    `logp` (n,), log p(y_t), when the caller already has it. With `eos_id`, a closing eos target
    is left out of every metric but nll/nll_sum/n_tokens (when the row has another token)."""
    n = int(y.numel())
    if n == 0:
        raise ValueError("a row has no answer tokens")
    lg = lg.float()
    if logp is None:
        logp = lg.gather(1, y[:, None]).squeeze(1) - torch.logsumexp(lg, -1)
    r = {"nll": float(-logp.mean()), "nll_sum": float(-logp.sum()), "n_tokens": n}
    if not full:
        return r
    if eos_id is not None and n > 1 and int(y[-1]) == eos_id:
        lg, y, logp = lg[:-1], y[:-1], logp[:-1]
    correct = lg.argmax(-1) == y
    r["exact_memorization"] = float(correct.float().mean())
    r["extraction_strength"] = extraction_strength(correct)
    for k in ks:
        r[f"mink_{k:g}"] = min_k(logp, k)
    if minkpp:
        mu, sigma = vocab_moments(lg)
        z = (logp - mu) / sigma
        for k in ks:
            r[f"minkpp_{k:g}"] = min_k(z, k)
    return r


def token_metrics(logits: torch.Tensor, labels: torch.Tensor, ks=(20.0, 40.0), minkpp: bool = True,
                  eos_id: int | None = None) -> list[dict]:
    """Every token metric for each row of one batch. logits (B, T, V), labels (B, T) with -100
    (unshifted: logits at t predict labels at t+1)."""
    logits, labels = logits[:, :-1], labels[:, 1:]
    rows = []
    for i in range(labels.shape[0]):
        m = labels[i] != IGNORE
        rows.append(row_metrics(logits[i][m], labels[i][m], ks, minkpp, eos_id=eos_id))
    return rows


def batch_metrics(logits: torch.Tensor, targets: torch.Tensor, ks=(20.0, 40.0), minkpp: bool = True,
                  full: list[bool] | None = None, eos_id: int | None = None) -> list[dict]:
    """Metrics of every row of one batch from aligned logits (B, K, V) and targets (B, K), -100
    outside answers (`eos_id`: as in row_metrics). log p(y_t) comes from log_softmax (a fused kernel, ~3x faster here than
    logits − logsumexp) over at most 2^24 logits at a time; nll of every row in one reduction."""
    m = targets != IGNORE
    n_tok = m.sum(1)
    if bool((n_tok == 0).any()):
        raise ValueError("a row has no answer tokens")
    y = targets.clamp(min=0).unsqueeze(-1)
    logp = torch.empty(targets.shape, dtype=torch.float32, device=logits.device)
    step = max(1, (1 << 24) // max(1, logits.shape[1] * logits.shape[2]))
    for s in range(0, logits.shape[0], step):  # upcast one chunk at a time: a bf16 batch never gets a whole fp32 copy
        logp[s:s + step] = torch.log_softmax(logits[s:s + step].float(), -1).gather(-1, y[s:s + step]).squeeze(-1)
    logp = logp.masked_fill(~m, 0.0)
    nll_sum = -logp.sum(1)
    nll, nll_sum, n_tok = (nll_sum / n_tok).tolist(), nll_sum.tolist(), n_tok.tolist()
    full = [True] * len(nll) if full is None else full
    out = []
    for j, f in enumerate(full):
        if f:
            out.append(row_metrics(logits[j][m[j]], targets[j][m[j]], ks, minkpp, True, logp[j][m[j]], eos_id))
        else:
            out.append({"nll": nll[j], "nll_sum": nll_sum[j], "n_tokens": n_tok[j]})
    return out


def add_kl_other(rows: list[dict], logits_other: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
    """rows[j]["kl_other"] = mean over row j's answer positions of KL(p_other ‖ p_model), from one
    batch's aligned answer logits (B, K, V) of both models and its targets (B, K), -100 elsewhere."""
    logits_other = logits_other.to(logits.device)
    for j, r in enumerate(rows):
        m = targets[j] != IGNORE
        r["kl_other"] = float(kl_rows(logits_other[j][m], logits[j][m]).mean())
