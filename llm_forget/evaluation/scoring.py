"""One teacher-forced forward pass per batch -> every token-level metric, per item.

Per item (answer tokens only; the metrics are defined in token_metrics.py):
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

import torch

from ..data.encode import pad
from .forward import answer_logits, batches_apart, right_padded, rows_with_other  # noqa: F401  (re-exported)
from .shared_prompt import prefix_groups, score_shared
from .token_metrics import (add_kl_other, batch_metrics, extraction_strength, min_k, row_metrics,  # noqa: F401
                            token_metrics, vocab_moments)


@torch.no_grad()
def score_sequences(model, encoded: list[dict], pad_id: int, batch_size: int = 32, ks=(20.0, 40.0),
                    minkpp: bool = True, full: list[bool] | None = None, progress=None, other=None,
                    share_prompts: bool = True, lanes=None, other_rows=None, eos_id: int | None = None) -> list[dict]:
    """Metrics of every encoded sequence ({input_ids, labels}), in input order, one forward pass
    per batch. Batches are formed after sorting by length; results do not depend on batch size.
    With `share_prompts`, sequences that share their prompt (a question's answer variants) run
    the prompt once (shared_prompt.score_shared) when the model's cache allows it.
    `other`: a second model (same tokenizer) run on the same batches, for the rows `other_rows`
    (default all); each of them then also gets kl_other = mean over answer positions of
    KL(p_other ‖ p_model) (consistency.kl_rows).
    `lanes` (lanes.Lanes): run the batches side by side in its lanes; the numbers are the same.
    `eos_id`: a closing eos is left out of the memorization and Min-K metrics (token_metrics.py)."""
    from .lanes import SERIAL

    model.eval()
    device = next(model.parameters()).device
    full = [True] * len(encoded) if full is None else full

    def metrics(logits, targets, idx):
        return batch_metrics(logits, targets, ks, minkpp, [full[i] for i in idx], eos_id)

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
