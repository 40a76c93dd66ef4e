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

Speed: `score_sequences` sorts sequences by length (little padding) and asks the model for
logits only at positions that predict an answer token (`logits_to_keep`), so the vocabulary
projection never runs on prompt or padding positions. Sequences that share a prompt (an item's
paraphrased and perturbed answers) run the prompt once and continue its KV cache
(shared_prompt.py). Rows marked `full=False` get only nll/nll_sum/n_tokens (truth-ratio variants
need nothing else). Right-padded batches run without an attention mask: causal attention never
reaches the trailing pads, the numbers are identical, and attention takes its fast causal path.
"""

from __future__ import annotations

import math

import torch

from ..data.encode import IGNORE, pad
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


def row_metrics(lg: torch.Tensor, y: torch.Tensor, ks=(20.0, 40.0), minkpp: bool = True, full: bool = True,
                logp: torch.Tensor | None = None) -> dict:
    """Metrics of one sequence from its answer-position logits lg (n, V) and targets y (n,);
    `logp` (n,), log p(y_t), when the caller already has it."""
    n = int(y.numel())
    if n == 0:
        raise ValueError("a row has no answer tokens")
    lg = lg.float()
    if logp is None:
        logp = lg.gather(1, y[:, None]).squeeze(1) - torch.logsumexp(lg, -1)
    r = {"nll": float(-logp.mean()), "nll_sum": float(-logp.sum()), "n_tokens": n}
    if not full:
        return r
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


def token_metrics(logits: torch.Tensor, labels: torch.Tensor, ks=(20.0, 40.0), minkpp: bool = True) -> list[dict]:
    """Every token metric for each row of one batch. logits (B, T, V), labels (B, T) with -100
    (unshifted: logits at t predict labels at t+1)."""
    logits, labels = logits[:, :-1], labels[:, 1:]
    rows = []
    for i in range(labels.shape[0]):
        m = labels[i] != IGNORE
        rows.append(row_metrics(logits[i][m], labels[i][m], ks, minkpp))
    return rows


def right_padded(mask: torch.Tensor) -> bool:
    """True when every row of the 0/1 mask is ones then zeros (padding only at the end)."""
    m = mask.bool()
    return bool((m[:, 1:] <= m[:, :-1]).all()) and bool(m[:, 0].all())


def batch_metrics(logits: torch.Tensor, targets: torch.Tensor, ks=(20.0, 40.0), minkpp: bool = True,
                  full: list[bool] | None = None) -> list[dict]:
    """Metrics of every row of one batch from aligned logits (B, K, V) and targets (B, K), -100
    outside answers. log p(y_t) comes from log_softmax (a fused kernel, ~3x faster here than
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
            out.append(row_metrics(logits[j][m[j]], targets[j][m[j]], ks, minkpp, True, logp[j][m[j]]))
        else:
            out.append({"nll": nll[j], "nll_sum": nll_sum[j], "n_tokens": n_tok[j]})
    return out


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


@torch.no_grad()
def score_sequences(model, encoded: list[dict], pad_id: int, batch_size: int = 32, ks=(20.0, 40.0),
                    minkpp: bool = True, full: list[bool] | None = None, progress=None, other=None,
                    share_prompts: bool = True, lanes=None, other_rows=None) -> list[dict]:
    """Metrics of every encoded sequence ({input_ids, labels}), in input order, one forward pass
    per batch. Batches are formed after sorting by length; results do not depend on batch size.
    With `share_prompts`, sequences that share their prompt (a question's answer variants) run
    the prompt once (shared_prompt.score_shared) when the model's cache allows it.
    `other`: a second model (same tokenizer) run on the same batches, for the rows `other_rows`
    (default all); each of them then also gets kl_other = mean over answer positions of
    KL(p_other ‖ p_model) (consistency.kl_rows).
    `lanes` (lanes.Lanes): run the batches side by side in its lanes; the numbers are the same."""
    from .consistency import add_kl_other
    from .lanes import SERIAL
    from .shared_prompt import prefix_groups, score_shared

    model.eval()
    device = next(model.parameters()).device
    full = [True] * len(encoded) if full is None else full

    def metrics(logits, targets, idx):
        return batch_metrics(logits, targets, ks, minkpp, [full[i] for i in idx])

    groups = prefix_groups(encoded) if share_prompts else None
    if groups is not None:
        got = score_shared(model, encoded, groups, pad_id, batch_size, metrics, progress, lanes=lanes,
                           other=other, other_rows=other_rows)
        if got is not None:
            return got
    other_device = next(other.parameters()).device if other is not None else None
    with_other = rows_with_other(len(encoded), other, other_rows)
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]["input_ids"]))

    def one(idx: list[int]) -> list[dict]:
        b = {k: v.to(device) for k, v in pad([encoded[i] for i in idx], pad_id).items()}
        logits, targets = answer_logits(model, b)
        rows = metrics(logits, targets, idx)
        if idx[0] in with_other:
            add_kl_other(rows, answer_logits(other, {k: v.to(other_device) for k, v in b.items()})[0], logits, targets)
        if progress is not None:
            progress.update(len(idx))
        return rows

    batches = batches_apart(order, with_other.__contains__, batch_size)
    out: list[dict | None] = [None] * len(encoded)
    for idx, rows in zip(batches, (lanes or SERIAL).map(one, batches)):
        for i, r in zip(idx, rows):
            out[i] = r
    return out
