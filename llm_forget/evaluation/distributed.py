"""Evaluation under several processes: shard the examples across ranks, gather per-item results.

Rank r scores a contiguous block of each set's batches of `batch_size` rows (accelerate's
`split_between_processes` over the list of batches: whole batches, so every row is scored in the
same batch as in one process; block sizes differ by at most one batch), the per-item results are gathered in row order on every rank
(accelerate's `gather_object`), and the set-level numbers (token summaries,
truth ratios, MIA AUCs, forget quality, model utility) are computed once from the gathered items by
the same evaluator code (`quick_eval`'s suite, resumed with those items). Per-item numbers do not
depend on how rows are batched, so they equal a single-process evaluation (checked bit for bit on
CPU in tests/test_distributed.py).

Only when the model is replicated on every rank (DDP, ZeRO-1/2): under FSDP and ZeRO-3 a forward
pass is a collective, so there every rank evaluates everything (`shard=False`) and the ranks stay
in step.
"""

from __future__ import annotations


def world() -> tuple[int, int]:
    """(rank, world size) of the initialised torch.distributed group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def sharded_quick_eval(model, encoder, sets: dict[str, list[dict]], batch_size: int = 32, *, shard: bool = True,
                       retain=None, **kw) -> dict:
    """`quick_eval(model, encoder, sets, batch_size, retain=retain, **kw)` over all ranks: the same
    return value as the single-process call, on every rank. Every rank must call it (collectives).
    Generation (`generate=True`) is not sharded: every rank then evaluates everything."""
    import time

    from accelerate import PartialState
    from accelerate.utils import gather_object

    from .quick import quick_config, quick_eval, retain_reference
    from .suite import Evaluator, token_summary

    ws = world()[1]
    sets = {k: v for k, v in sets.items() if v}
    if ws == 1 or not shard or not sets or kw.get("generate"):
        return quick_eval(model, encoder, sets, batch_size, retain=retain, **kw)
    t = time.perf_counter()
    if retain is not None and not isinstance(retain, dict):
        retain = retain_reference(retain, encoder, sets, batch_size, **kw)  # on the full sets
    state = PartialState()  # the process group is already up (the Trainer's accelerator)
    local = {}
    for name, rows in sets.items():
        batches = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
        with state.split_between_processes(batches) as part:
            local[name] = [r for b in part for r in b]
    ev = quick_eval(model, encoder, local, batch_size, **kw)  # per-item work on this rank's rows
    per_item = {name: gather_object(ev["per_item"].get(name, [])) for name in sets}
    groups = gather_object([ev["groups"]])[0]  # rank 0 holds a share of every set
    res = {"per_item": per_item, "groups": {k: v for k, v in groups.items() if k.startswith("token:")},
           "summary": {f"{name}_{k}": v for name, items in per_item.items() for k, v in token_summary(items).items()}}
    cfg = quick_config(encoder, sets, **kw)
    Evaluator(model, encoder.tokenizer, cfg, sets, res, batch_size=batch_size, retain=retain, progress=False).run()
    res["summary"]["eval_seconds"] = time.perf_counter() - t
    return {"summary": res["summary"], "per_item": per_item, "groups": res["groups"]}
