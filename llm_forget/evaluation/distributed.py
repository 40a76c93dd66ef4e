"""Evaluation under several processes: shard the examples across ranks, gather per-item results.

Each set is cut into the same batches a single process would form (consecutive rows,
`batch_size` at a time); rank r scores a contiguous block of whole batches, so every row is
scored in exactly the batch it would have had alone, and the gathered per-item numbers equal
the single-process ones. Ranks with fewer batches run throw-away batches so that every rank makes
the same number of forward passes (FSDP and ZeRO-3 forwards are collective: a rank that stops
early would hang the others).
"""

from __future__ import annotations

import math


def world() -> tuple[int, int]:
    """(rank, world size) of the initialised torch.distributed group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_range(n: int, batch_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows [start, stop) of `n` that `rank` scores: a contiguous block of whole batches.

    With nb = ceil(n / batch_size) batches and per = ceil(nb / world_size) batches per rank, rank r
    takes batches [r·per, (r+1)·per) (the last ranks may get fewer or none)."""
    nb = math.ceil(n / batch_size)
    per = math.ceil(nb / world_size) if nb else 0
    start = min(n, rank * per * batch_size)
    return start, min(n, start + per * batch_size)


def n_batches(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def gather_lists(local: list, world_size: int) -> list:
    """Concatenate every rank's list in rank order (a collective: every rank must call it)."""
    if world_size == 1:
        return list(local)
    import torch.distributed as dist

    parts: list = [None] * world_size
    dist.all_gather_object(parts, local)
    return [x for p in parts for x in p]


def sharded_quick_eval(model, encoder, sets: dict[str, list[dict]], batch_size: int = 32) -> dict:
    """`quick_eval` over all ranks: same return value as the single-process call, on every rank.

    Every rank must call it (it runs collectives)."""
    import time

    from .quick import auc, quick_eval, summarize

    rank, ws = world()
    sets = {k: v for k, v in sets.items() if v}
    if ws == 1 or not sets:
        return quick_eval(model, encoder, sets, batch_size)
    t = time.perf_counter()
    local = {}
    mine = most = 0
    for name, rows in sets.items():
        a, b = shard_range(len(rows), batch_size, rank, ws)
        local[name] = rows[a:b]
        mine += n_batches(b - a, batch_size)
        most += n_batches(shard_range(len(rows), batch_size, 0, ws)[1], batch_size)  # rank 0 has the most
    # every rank runs `most` forward passes: throw-away batches of one repeated row fill the gap
    pad_rows = [next(iter(sets.values()))[0]] * ((most - mine) * batch_size)
    ev = quick_eval(model, encoder, {**local, "_lockstep_padding": pad_rows}, batch_size)
    per_item = {name: gather_lists(ev["per_item"].get(name, []), ws) for name in sets}
    summary = {f"{name}_{k}": v for name, items in per_item.items() for k, v in summarize(items).items()}
    if "forget" in per_item and "holdout" in per_item:
        summary["mia_auc"] = auc([-x["nll"] for x in per_item["forget"]], [-x["nll"] for x in per_item["holdout"]])
    summary["eval_seconds"] = time.perf_counter() - t
    return {"summary": summary, "per_item": per_item}
