"""Lanes: batches of an evaluation run side by side on a CPU, each lane with its share of the threads.

Off by default (`--lanes 2` turns them on). Two lanes run forward passes of ONE module from two
threads, and nothing in transformers promises that this is safe: rotary embeddings with a dynamic
or long-context scaling (`rope_type` "dynamic", "longrope") re-register `inv_freq` inside forward,
so one lane can compute with the frequencies another lane set for its sequence length; a shared
tokenizer's `padding_side` and truncation settings are process-wide state that other code may
change. The gain does not pay for that risk. Measured with
`llm-forget eval --model tiny-target --retain-model tiny-retain --limit 100` (a 2-core x86 CPU
shared with other jobs, load average 9-16; wall seconds): 2 threads in 2 lanes 53 and 84; 1 thread
in 1 lane 76 and 97; 2 threads in 1 lane 227. Two lanes mostly avoid what two OpenMP threads cost
on a busy CPU, which one thread avoids as well, with no shared module; on an idle 2-core CPU two
lanes were 1.14-1.15x faster than one (tofu-tiny, SmolLM2-135M; BENCHMARKS.md). A model whose
rotary embedding updates itself in forward never gets lanes, even when asked.

On a CPU, one batch at a time with all of torch's threads wastes part of them on a small model
(the products are small, and the Python between operations runs on one core while the others
wait). Two lanes, each a worker thread with half of torch's threads, run two batches at once:
generation in one lane beside the scoring batches in the other, then scoring in both. Each batch
is computed as before, only on another thread, so the numbers do not change.

torch's thread count is per thread here (OpenMP and MKL keep it per calling thread), so a lane
sets its own without touching other threads; `close` restores the caller's count anyway, since
`torch.get_num_threads()` reports the count last set by any thread. Tasks run without autograd
(grad mode is per thread as well).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import torch

logger = logging.getLogger(__name__)


class Lanes:
    """`n` worker threads with `threads` torch threads each. `map` runs a function on items across
    the lanes (results in item order); `submit` runs one long task in a lane. A long task should
    look at `stopping` between its steps: it is set when the caller fails or is interrupted."""

    def __init__(self, n: int = 2, threads: int = 1):
        if n < 1 or threads < 1:
            raise ValueError("lanes need n >= 1 and threads >= 1")
        self.n, self.threads = n, threads
        self.stopping = threading.Event()
        self._caller_threads = torch.get_num_threads()
        self._pool = ThreadPoolExecutor(n, thread_name_prefix="llm-forget-lane",
                                        initializer=torch.set_num_threads, initargs=(threads,))

    @staticmethod
    def _no_grad(fn, *args):
        with torch.no_grad():
            return fn(*args)

    def submit(self, fn, *args) -> Future:
        return self._pool.submit(self._no_grad, fn, *args)

    def map(self, fn, items) -> list:
        futures = [self.submit(fn, x) for x in items]
        return [f.result() for f in futures]

    def close(self) -> None:
        """Wait for the running tasks (long ones see `stopping`), drop the queued ones (left only
        when the caller failed or was interrupted), and restore the caller's thread count."""
        self.stopping.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(self._caller_threads)

    def __enter__(self) -> Lanes:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Done:
    """A result already computed, read like a Future."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


class Serial:
    """The one-lane case, with `submit` and `map` as in `Lanes`: work runs at once on the calling
    thread (with autograd as the caller has it)."""

    @staticmethod
    def submit(fn, *args) -> _Done:
        return _Done(fn(*args))

    @staticmethod
    def map(fn, items) -> list:
        return [fn(x) for x in items]


SERIAL = Serial()


def updates_in_forward(model) -> bool:
    """True when a module of `model` changes its own buffers in forward: a rotary embedding with a
    dynamic or long-context rope type (transformers' `dynamic_rope_update`)."""
    for m in model.modules():
        kinds = getattr(m, "rope_type", None)
        kinds = kinds.values() if isinstance(kinds, dict) else [kinds]
        if any(isinstance(k, str) and ("dynamic" in k or k == "longrope") for k in kinds):
            return True
    return False


def auto_lanes(model, lanes: int | None = None) -> Lanes | None:
    """Lanes for evaluating `model`: None (one batch at a time) unless `lanes` >= 2 is asked for;
    None as well on an accelerator, for a model spread over devices, under torch.distributed, with
    fewer torch threads than lanes, or for a model that updates its buffers in forward."""
    from .distributed import world

    if lanes is not None and lanes < 1:
        raise ValueError("lanes must be >= 1")
    if lanes is None or lanes == 1:
        return None
    devices = {p.device.type for p in model.parameters()}
    if devices != {"cpu"} or world()[1] > 1:  # under several processes a forward pass may be a collective
        return None
    if updates_in_forward(model):
        logger.warning("one lane: this model's rotary embedding updates its buffers in forward")
        return None
    total = torch.get_num_threads()
    n = min(lanes, total)
    return Lanes(n, total // n) if n >= 2 else None
