"""Run independent tasks side by side in spawned processes, each with its own torch thread count."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def _job_init(threads: int, level: int) -> None:
    import os

    import torch

    from .logs import setup

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    setup(level)


def _task(fn, *args):
    return fn(*args)


def run_jobs(tasks: list[tuple], jobs: int, threads: int) -> list:
    """Each task (function, *arguments) in order, results in order; `jobs` > 1: in that many fresh processes
    with `threads` torch threads each (spawned, so no process shares a model or tokenizer with another)."""
    if jobs <= 1:
        return [_task(*t) for t in tasks]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    logger.info("%d tasks in %d processes of %d thread(s)", len(tasks), jobs, threads)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_job_init,
                             initargs=(threads, logging.getLogger().getEffectiveLevel())) as pool:
        futures = [pool.submit(_task, *t) for t in tasks]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise
