"""The thread policy (llm_forget/threads.py): a core kept busy by another process is not counted."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from llm_forget import threads


def test_a_busy_core_is_left_to_its_process(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    n = len(os.sched_getaffinity(0))
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        cpus, busy = threads.busy_cpus()
        chosen, why = threads.default_threads()
    finally:
        spinner.kill()
        spinner.wait()
    assert cpus == n
    assert busy >= 0.8  # the spinner alone keeps one CPU busy (more when the machine is shared)
    assert 1 <= chosen <= max(1, n - 1) and "busy" in why


def test_omp_num_threads_and_threads_option_win(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert threads.default_threads() == (3, "OMP_NUM_THREADS")
        assert threads.use_threads(None) == 3 and torch.get_num_threads() == 3
        assert threads.use_threads(2) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    from llm_forget.errors import UserError

    with pytest.raises(UserError, match="--threads must be >= 1"):
        threads.use_threads(0)


@pytest.mark.parametrize("command", ["unlearn", "finetune", "retrain", "edit", "demo", "eval", "stream"])
def test_every_training_or_scoring_command_takes_threads(command):
    from llm_forget.cli import build_parser

    required = {"eval": ["--model", "tiny"], "stream": ["npo", "--requests", "r.jsonl"]}.get(command, [])
    args, _ = build_parser().parse_known_args([command, "--threads", "1", *required])
    assert args.threads == 1


def test_jobs_take_the_free_cpus_one_thread_each(monkeypatch):
    """The demo's recipes run side by side: as many processes as free CPUs (one busy core is left to its
    process), one torch thread each unless OMP_NUM_THREADS or --threads say otherwise; never more jobs
    than tasks."""
    from llm_forget.errors import UserError

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    n = len(os.sched_getaffinity(0))
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        jobs, each = threads.jobs_and_threads(64)
    finally:
        spinner.kill()
        spinner.wait()
    assert each == 1 and 1 <= jobs <= max(1, n - 1)
    assert threads.jobs_and_threads(8, jobs=3, threads=2) == (3, 2)
    assert threads.jobs_and_threads(2, jobs=5) == (2, 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    jobs, each = threads.jobs_and_threads(64)
    assert each == 2 and 1 <= jobs <= max(1, n // 2)
    with pytest.raises(UserError, match="--jobs and --threads must be >= 1"):
        threads.jobs_and_threads(4, jobs=0)


def test_demo_refuses_bad_recipes_and_jobs_before_writing(tmp_path, capsys):
    from llm_forget.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--recipes", "npo,nope", "--output", str(out)]) == 2
    assert "unknown recipe(s) nope; shipped: " in capsys.readouterr().err
    assert main(["demo", "--jobs", "0", "--output", str(out)]) == 2
    assert "--jobs and --threads must be >= 1" in capsys.readouterr().err
    assert not out.exists()
