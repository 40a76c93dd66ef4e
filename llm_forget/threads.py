"""How many torch CPU threads a command uses.

torch starts one intra-op thread per CPU it may run on. On a CPU where another process keeps a
core busy, those threads wait for each other at every operation (each parallel region ends
when its slowest thread, the one sharing a core, is done): small models then run many times
slower than with one thread. The default therefore counts the CPUs other processes leave free:

    threads = max(1, round(n_cpus - busy)),  busy = Σ_cpu (1 − idle time / time) over 0.2 s

from /proc/stat for the CPUs this process may use (`os.sched_getaffinity`), falling back to
the 1-minute load average where /proc/stat is missing. `--threads N` (every command) or an
OMP_NUM_THREADS in the environment wins over the measurement.
"""

from __future__ import annotations

import logging
import os
import time

logger = logging.getLogger(__name__)


def _cpu_times(cpus: set[int]) -> dict[int, tuple[int, int]]:
    """(idle + iowait, total) jiffies per CPU in `cpus`, from /proc/stat."""
    out = {}
    with open("/proc/stat", encoding="ascii") as f:
        for line in f:
            name, *vals = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            i = int(name[3:])
            if i in cpus:
                v = [int(x) for x in vals[:8]]
                out[i] = (v[3] + v[4], sum(v))
    return out


def busy_cpus(interval: float = 0.2) -> tuple[int, float]:
    """(CPUs this process may use, how many of them other processes keep busy, in CPUs)."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    try:
        a = _cpu_times(cpus)
        time.sleep(interval)
        b = _cpu_times(cpus)
        busy = sum(1 - (b[i][0] - a[i][0]) / (b[i][1] - a[i][1]) for i in a if b[i][1] > a[i][1])
    except (OSError, ValueError, KeyError):
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return len(cpus), max(0.0, busy)


def default_threads() -> tuple[int, str]:
    """(threads, why): OMP_NUM_THREADS when set, else the CPUs other processes leave free."""
    env = os.environ.get("OMP_NUM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env), "OMP_NUM_THREADS"
    n, busy = busy_cpus()
    return max(1, min(n, round(n - busy))), f"{busy:.1f} of {n} CPUs busy with other work"


def use_threads(requested: int | None = None) -> int:
    """Set torch's intra-op threads to `requested`, or to `default_threads()`; returns the number."""
    import torch

    from .errors import UserError

    if requested is not None and requested < 1:
        raise UserError("--threads must be >= 1")
    n, why = (requested, "--threads") if requested else default_threads()
    torch.set_num_threads(n)
    logger.debug("torch CPU threads: %d (%s)", n, why)  # results.json records it (environment.cpu_threads)
    return n


def add_argument(parser) -> None:
    """`--threads N` on a command's parser."""
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: the CPUs other processes leave free, or OMP_NUM_THREADS)")


def jobs_and_threads(n_tasks: int, jobs: int | None = None, threads: int | None = None) -> tuple[int, int]:
    """(processes, torch threads each) for `n_tasks` independent runs side by side (the demo's recipes).

    A small model gains little from a second intra-op thread, much from a second process: by default
    each job gets one thread (or `threads`, or OMP_NUM_THREADS when set) and there are as many jobs as
    the CPUs other processes leave free hold, at most `n_tasks`. `jobs` given wins."""
    from .errors import UserError

    if (jobs is not None and jobs < 1) or (threads is not None and threads < 1):
        raise UserError("--jobs and --threads must be >= 1")
    env = os.environ.get("OMP_NUM_THREADS")
    each = threads or (int(env) if env and env.isdigit() and int(env) > 0 else 1)
    if jobs is None:
        n, busy = busy_cpus()
        jobs = max(1, round(n - busy) // each)
    return max(1, min(jobs, n_tasks)), each
