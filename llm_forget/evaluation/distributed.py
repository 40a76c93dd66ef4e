"""Evaluation under several processes: shard the examples across ranks, gather per-item results.

Rank r scores a contiguous block of each set's batches of `batch_size` rows (accelerate's
`split_between_processes` over the list of batches: whole batches, so every row is scored in the
same batch as in one process; block sizes differ by at most one batch), the per-item results are
gathered in row order on every rank (accelerate's `gather_object`), and the set-level numbers (token summaries,
truth ratios, MIA AUCs, forget quality, model utility) are computed once from the gathered items by
the same evaluator code (`quick.sharded_quick_eval`: `quick_eval`'s suite, resumed with those
items). Per-item numbers do not depend on how rows are batched, so they equal a single-process
evaluation (checked bit for bit on CPU in tests/test_distributed.py).

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
