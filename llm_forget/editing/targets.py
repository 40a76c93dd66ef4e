"""Teacher-forced scoring of answers after prompts: the one forward pass both editing metric
families read from. The answer is scored as " " + answer (a word following the prompt);
only its tokens count (prompt and padding never do), logits in fp32."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.encode import pad as pad_batch


@torch.no_grad()
def score_targets(model, tokenizer, prompts: list[str], targets: list[str], batch_size: int = 32) -> list[dict]:
    """Per (prompt, target): nll (mean over target tokens), nll_sum, n_tokens, argmax (predicted
    ids at the target positions) and target (the target ids)."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = []
    model.eval()
    for s in range(0, len(prompts), batch_size):
        items = []
        for p, t in zip(prompts[s:s + batch_size], targets[s:s + batch_size]):
            pi = list(tokenizer(p)["input_ids"])
            ti = list(tokenizer(" " + t.strip(), add_special_tokens=False)["input_ids"])
            items.append((pi + ti, len(pi), ti))
        b = pad_batch([{"input_ids": ids, "labels": ids} for ids, _, _ in items], pad)
        x, m = b["input_ids"], b["attention_mask"]
        logits = model(input_ids=x.to(device), attention_mask=m.to(device)).logits.float()
        for i, (ids, lp, ti) in enumerate(items):
            lg = logits[i, lp - 1: lp - 1 + len(ti)]
            y = torch.tensor(ti, device=lg.device)
            nll = F.cross_entropy(lg, y, reduction="none")
            out.append({"nll": float(nll.mean()), "nll_sum": float(nll.sum()), "n_tokens": len(ti),
                        "argmax": lg.argmax(-1).tolist(), "target": ti})
    return out
