"""Score many answers to one prompt with the prompt run once and its keys/values reused.

TOFU-style sets score several answers per question (a paraphrase and five perturbed answers for
the truth ratio); the prompt is about a third of each sequence. Here each distinct prompt, less
its last token, runs once (left-padded, in batches). Every continuation (the prompt's last token,
the answer, eos) then runs on a copy of its prompt's keys and values, at the positions it has in
the whole sequence, so its logits are those of the full sequence up to float rounding (≤ 1e-5,
tested). Continuations of many prompts are sorted by length before batching, so little padding
is computed (batching each question's variants together pads them to the longest of the
question's answers).

Only for models whose cache is plain per-layer keys and values (transformers' `DynamicLayer`,
not a sliding window or a recurrent state), and only when prompts repeat; otherwise
`score_shared` returns None and the caller runs every sequence whole.
"""

from __future__ import annotations

import torch

from ..data.encode import IGNORE, pad
from ..models import accepts, cache_kwarg, cache_of


def prefix_groups(encoded: list[dict]) -> dict[tuple, list[int]] | None:
    """Sequence indices grouped by prefix (the prompt less its last token). None when there is
    little to share: fewer than two sequences per prefix on average, or a sequence whose answer
    starts before its third token."""
    groups: dict[tuple, list[int]] = {}
    for k, e in enumerate(encoded):
        start = next((t for t, y in enumerate(e["labels"]) if y != IGNORE), 0)
        if start < 2:
            return None
        groups.setdefault(tuple(e["input_ids"][:start - 1]), []).append(k)
    return groups if 2 * len(groups) <= len(encoded) else None


def plain_kv(cache) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Per layer (keys, values) of a cache made only of plain dynamic layers, else None."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return None
    return [(layer.keys, layer.values) for layer in layers]


@torch.no_grad()
def score_shared(model, encoded: list[dict], groups: dict[tuple, list[int]], pad_id: int, batch_size: int,
                 metrics, progress=None, chunk: int | None = None, lanes=None) -> list[dict] | None:
    """Per-sequence metrics (in input order) with each prefix of `groups` run once.

    `metrics(logits, targets, idx)` turns one batch's aligned answer logits into the rows of the
    sequences `idx`. Prefixes are taken `chunk` at a time (default 4 × batch_size: their keys and
    values are held while their continuations run). None when the model cannot continue a cache.
    `lanes` (lanes.Lanes): run the prompt batches, then the continuation batches, side by side."""
    from transformers.cache_utils import DynamicCache

    from .lanes import SERIAL
    from .scoring import answer_logits

    name = cache_kwarg(model)
    if name is None or not accepts(model, "position_ids"):
        return None
    first = {"logits_to_keep": 1} if accepts(model, "logits_to_keep") else {}
    device = next(model.parameters()).device
    prefixes = sorted(groups, key=len, reverse=True)
    chunk = chunk or 4 * batch_size
    submit = (lanes or SERIAL).submit

    def start_prompts(part: list[tuple]):
        """Submit the prompt batches of one chunk; each gives per layer (keys, values) or None."""
        pre = pad([{"input_ids": list(p), "labels": list(p)} for p in part], pad_id, side="left")
        ids, mask = pre["input_ids"].to(device), pre["attention_mask"].to(device)

        def prompt_kv(s: int):
            m = mask[s:s + batch_size]
            o = model(input_ids=ids[s:s + batch_size], attention_mask=m,
                      position_ids=(m.cumsum(-1) - 1).clamp(min=0), use_cache=True, **first)
            return plain_kv(cache_of(o))

        return part, mask, [submit(prompt_kv, s) for s in range(0, len(part), batch_size)]

    def continuation(mb: list[tuple[int, int]], part: list[tuple], pre_mask, kv) -> list[dict]:
        idx = [k for k, _ in mb]
        qi = torch.tensor([i for _, i in mb], device=device)
        cont = pad([{"input_ids": encoded[k]["input_ids"][len(part[i]):],
                     "labels": encoded[k]["labels"][len(part[i]):]} for k, i in mb], pad_id)
        cont = {k: v.to(device) for k, v in cont.items()}
        cache = DynamicCache(ddp_cache_data=[(k[qi], v[qi]) for k, v in kv])
        start = torch.tensor([len(part[i]) for _, i in mb], device=device)
        pos = start[:, None] + torch.arange(cont["input_ids"].shape[1], device=device)
        batch = {**cont, "attention_mask": torch.cat([pre_mask[qi], cont["attention_mask"]], 1)}
        logits, targets = answer_logits(model, batch, position_ids=pos, **{name: cache})
        if progress is not None:
            progress.update(len(mb))
        return metrics(logits, targets, idx)

    # Chunk c's continuations are submitted before chunk c+1's prompts, so the lanes never wait
    # for the end of a chunk.
    chunks = [prefixes[c:c + chunk] for c in range(0, len(prefixes), chunk)]
    out: list[dict | None] = [None] * len(encoded)
    pending = start_prompts(chunks[0]) if chunks else None
    for c in range(len(chunks)):
        part, pre_mask, futures = pending
        batches = [f.result() for f in futures]
        if any(b is None for b in batches):
            return None
        kv = [(torch.cat([k for k, _ in layer]), torch.cat([v for _, v in layer])) for layer in zip(*batches)]
        members = [(k, i) for i, p in enumerate(part) for k in groups[p]]
        members.sort(key=lambda x: -(len(encoded[x[0]]["input_ids"]) - len(part[x[1]])))
        conts = [members[b:b + batch_size] for b in range(0, len(members), batch_size)]
        running = [submit(continuation, mb, part, pre_mask, kv) for mb in conts]
        pending = start_prompts(chunks[c + 1]) if c + 1 < len(chunks) else None
        for mb, f in zip(conts, running):
            for (k, _), r in zip(mb, f.result()):
                out[k] = r
    return out
