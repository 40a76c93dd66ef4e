"""Evaluation under several processes: shard the examples across ranks, gather per-item results.

Rank r scores a contiguous block of each set's rows (whole batches of `batch_size`), the per-item
results are gathered in row order on every rank, and the set-level numbers (token summaries,
truth ratios, MIA AUCs, forget quality, model utility) are computed once from the gathered items by
the same evaluator code (`quick.sharded_quick_eval`: `quick_eval`'s suite, resumed with those items).
Per-item numbers do not depend on how rows are batched, so they equal a single-process evaluation (checked bit for bit on
CPU in tests/test_distributed.py).

Only when the model is replicated on every rank (DDP, ZeRO-1/2): under FSDP and ZeRO-3 a forward
pass is a collective, so there every rank evaluates everything (`shard=False`) and the ranks stay
in step.
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


def gather_lists(local: list, world_size: int) -> list:
    """Concatenate every rank's list in rank order (a collective: every rank must call it)."""
    if world_size == 1:
        return list(local)
    import torch.distributed as dist

    parts: list = [None] * world_size
    dist.all_gather_object(parts, local)
    return [x for p in parts for x in p]
