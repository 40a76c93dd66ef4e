"""The `scope` group: does forgetting reach every form of the forgotten facts, and only them?

Accuracy of one row = 1 when the model, teacher-forced on the prompt and the answer, puts its
argmax on **every** answer token (the closing eos excluded). That is exactly "greedy decoding
starts with the answer": each greedy step would pick the label, so the model says the answer
given the question; one forward pass per batch instead of a generation loop. Also reported per
group: token accuracy (mean fraction of answer tokens that are the argmax) and probability
(exp(-mean NLL) over answer tokens).

Groups are (split, form): split `forget` (the people a request removes), `retain` (their
neighbours: people that must stay), `holdout` (never trained on); form `direct`, `paraphrased`,
`reversed`, `one_hop` (`llm_forget.data.scope`). `relative(model, target)` divides each group's
accuracy by the target's: the scope criterion is that paraphrased / reversed / one-hop accuracy of
forget people falls at least as far as direct accuracy does, while retain accuracy stays near 1.

Hook for suites: `scope_group(model, tokenizer, encoder)` -> {"summary": {"scope_forget_direct_accuracy": ...,
...}, "groups": {...}} on the built-in benchmark's scope rows.
"""

from __future__ import annotations

import torch

from ..data.encode import IGNORE, pad, without_eos_labels


@torch.no_grad()
def answer_scores(model, encoder, rows: list[dict], batch_size: int = 64) -> list[dict]:
    """Per row: correct (all answer tokens are the argmax), token_accuracy, probability."""
    model.eval()
    device = next(model.parameters()).device
    tok = encoder.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    items = without_eos_labels(encoder.rows(rows), tok.eos_token_id)
    out = []
    for s in range(0, len(items), batch_size):
        b = pad(items[s:s + batch_size], pad_id)
        logits = model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device)).logits
        logits, labels = logits[:, :-1].float(), b["labels"][:, 1:].to(device)
        mask = labels != IGNORE
        hit = (logits.argmax(-1) == labels) & mask
        logp = torch.gather(torch.log_softmax(logits, -1), 2, labels.masked_fill(~mask, 0).unsqueeze(-1)).squeeze(-1)
        n = mask.sum(-1).clamp(min=1)
        for i in range(len(labels)):
            out.append({"correct": bool(hit[i].sum() == mask[i].sum()), "token_accuracy": float(hit[i].sum() / n[i]),
                        "probability": float(torch.exp((logp[i] * mask[i]).sum() / n[i]))})
    return out


def grouped(rows: list[dict], scores: list[dict], keys=("split", "form")) -> dict:
    """{split: {form: {"n", "accuracy", "token_accuracy", "probability"}}} (means over rows)."""
    acc: dict = {}
    for r, s in zip(rows, scores):
        g = acc.setdefault(r[keys[0]], {}).setdefault(r[keys[1]], {"n": 0, "accuracy": 0.0, "token_accuracy": 0.0,
                                                                    "probability": 0.0})
        g["n"] += 1
        g["accuracy"] += s["correct"]
        g["token_accuracy"] += s["token_accuracy"]
        g["probability"] += s["probability"]
    for forms in acc.values():
        for g in forms.values():
            for k in ("accuracy", "token_accuracy", "probability"):
                g[k] /= g["n"]
    return acc


def relative(model_groups: dict, target_groups: dict, metric: str = "accuracy") -> dict:
    """model / target per (split, form); None where the target's value is 0 (nothing to fall from)."""
    return {sp: {f: (g[metric] / target_groups[sp][f][metric] if target_groups[sp][f][metric] else None)
                 for f, g in forms.items()} for sp, forms in model_groups.items()}


def scope_group(model, tokenizer, encoder=None, rows: list[dict] | None = None, batch_size: int = 64) -> dict:
    """The scope group of an evaluation: groups (see `grouped`) and a flat summary
    `scope_{split}_{form}_accuracy`. Default rows: the built-in benchmark's scope rows."""
    from ..data.encode import Encoder
    from ..data.scope import scope_rows

    encoder = encoder or Encoder(tokenizer)
    rows = scope_rows() if rows is None else rows
    groups = grouped(rows, answer_scores(model, encoder, rows, batch_size))
    summary = {f"scope_{sp}_{f}_accuracy": g["accuracy"] for sp, forms in groups.items() for f, g in forms.items()}
    return {"summary": summary, "groups": groups}
