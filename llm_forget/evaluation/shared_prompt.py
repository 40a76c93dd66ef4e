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
from ..models import accepts, cache_from_kv, cache_kwarg, cache_of
from .forward import answer_logits, batches_apart, rows_with_other
from .token_metrics import add_kl_other


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


def _cacheable(model) -> bool:
    return cache_kwarg(model) is not None and accepts(model, "position_ids")


@torch.no_grad()
def score_shared(model, encoded: list[dict], groups: dict[tuple, list[int]], pad_id: int, batch_size: int,
                 metrics, progress=None, chunk: int | None = None, lanes=None, other=None,
                 other_rows=None) -> list[dict] | None:
    """Per-sequence metrics (in input order) with each prefix of `groups` run once.

    `metrics(logits, targets, idx)` turns one batch's aligned answer logits into the rows of the
    sequences `idx`. Prefixes are taken `chunk` at a time (default 4 × batch_size: their keys and
    values are held while their continuations run). None when the model cannot continue a cache.
    `lanes` (lanes.Lanes): run the prompt batches and the continuation batches side by side.
    `other`: a second model (same tokenizer) run on the sequences `other_rows` (default all), on
    its own copy of their prompts' keys and values; those rows also get kl_other = mean over
    answer positions of KL(p_other ‖ p_model), as in `scoring.score_sequences`."""
    from .lanes import SERIAL

    if not _cacheable(model) or (other is not None and not _cacheable(other)):
        return None
    with_other = rows_with_other(len(encoded), other, other_rows)
    device = next(model.parameters()).device
    prefixes = sorted(groups, key=len, reverse=True)
    chunk = chunk or 4 * batch_size
    submit = (lanes or SERIAL).submit

    def start_prompts(part: list[tuple]):
        """Submit the prompt batches of one chunk, for the model and (when some of the chunk's
        sequences need it) the other model; each batch gives per layer (keys, values) or None."""
        pre = pad([{"input_ids": list(p), "labels": list(p)} for p in part], pad_id, side="left")
        ids, mask = pre["input_ids"].to(device), pre["attention_mask"].to(device)

        def prompt_kv(m, s: int):
            first = {"logits_to_keep": 1} if accepts(m, "logits_to_keep") else {}
            dev = next(m.parameters()).device
            am = mask[s:s + batch_size].to(dev)
            o = m(input_ids=ids[s:s + batch_size].to(dev), attention_mask=am,
                  position_ids=(am.cumsum(-1) - 1).clamp(min=0), use_cache=True, **first)
            return plain_kv(cache_of(o))

        need_other = any(k in with_other for p in part for k in groups[p])
        return part, mask, {m: [submit(prompt_kv, m, s) for s in range(0, len(part), batch_size)]
                            for m in ([model, other] if need_other else [model])}

    def gathered(futures) -> list | None:
        batches = [f.result() for f in futures]
        if any(b is None for b in batches):
            return None
        return [(torch.cat([k for k, _ in layer]), torch.cat([v for _, v in layer])) for layer in zip(*batches)]

    def run(m, kv, mb, part, pre_mask, cont):
        """Answer logits of model `m` on the continuations `cont` of the batch `mb`, from its prompt cache `kv`."""
        dev = next(m.parameters()).device
        qi = torch.tensor([i for _, i in mb], device=dev)
        cache = cache_from_kv([(k[qi], v[qi]) for k, v in kv])
        start = torch.tensor([len(part[i]) for _, i in mb], device=dev)
        pos = start[:, None] + torch.arange(cont["input_ids"].shape[1], device=dev)
        batch = {k: v.to(dev) for k, v in cont.items()}
        batch["attention_mask"] = torch.cat([pre_mask.to(dev)[qi], batch["attention_mask"]], 1)
        return answer_logits(m, batch, position_ids=pos, **{cache_kwarg(m): cache})

    def continuation(mb: list[tuple[int, int]], part: list[tuple], pre_mask, kv, other_kv) -> list[dict]:
        idx = [k for k, _ in mb]
        cont = pad([{"input_ids": encoded[k]["input_ids"][len(part[i]):],
                     "labels": encoded[k]["labels"][len(part[i]):]} for k, i in mb], pad_id)
        logits, targets = run(model, kv, mb, part, pre_mask, cont)
        rows = metrics(logits, targets, idx)
        if other_kv is not None:
            add_kl_other(rows, run(other, other_kv, mb, part, pre_mask, cont)[0], logits, targets)
        if progress is not None:
            progress.update(len(mb))
        return rows

    # Chunk c's continuations are submitted before chunk c+1's prompts, so the lanes never wait
    # for the end of a chunk. Sequences that also run the other model are batched apart.
    chunks = [prefixes[c:c + chunk] for c in range(0, len(prefixes), chunk)]
    out: list[dict | None] = [None] * len(encoded)
    pending = start_prompts(chunks[0]) if chunks else None
    for c in range(len(chunks)):
        part, pre_mask, futures = pending
        kv = {m: gathered(f) for m, f in futures.items()}
        if any(v is None for v in kv.values()):
            return None
        members = [(k, i) for i, p in enumerate(part) for k in groups[p]]
        members.sort(key=lambda x: -(len(encoded[x[0]]["input_ids"]) - len(part[x[1]])))
        running = [(mb, submit(continuation, mb, part, pre_mask, kv[model],
                               kv[other] if mb[0][0] in with_other else None))
                   for mb in batches_apart(members, lambda x: x[0] in with_other, batch_size)]
        pending = start_prompts(chunks[c + 1]) if c + 1 < len(chunks) else None
        for mb, f in running:
            for (k, _), r in zip(mb, f.result()):
                out[k] = r
    return out
