"""What the side-by-side benchmarks share: the machine/commit record, timing summaries, and one
results file per benchmark holding one entry per model."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else platform.processor()): tiny models trained on two CPU
    types differ at rounding level, so results name the one that made them."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def code_version() -> str | None:
    """HEAD's short commit, with "+changes" when the library or its recipes differ from it (uncommitted edits
    under llm_forget/); None outside a git checkout. A benchmark reuses a finished run only at the same version."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "llm_forget"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if dirty else "")


def run_info() -> dict:
    """{"threads", "machine", "cpu", "commit"} of this run (torch's thread count, CPU count and arch, CPU model,
    `code_version()`: HEAD, marked when the library has uncommitted changes)."""
    import torch

    return {"threads": torch.get_num_threads(), "machine": f"{os.cpu_count()}-core {platform.machine()} CPU",
            "cpu": cpu_model(), "commit": code_version()}


def timings(times: dict[str, list[float]]) -> dict:
    """{"seconds": every repeat, "median_seconds": their median} per variant, to the millisecond."""
    return {"seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
            "median_seconds": {k: round(statistics.median(v), 3) for k, v in times.items()}}


def save_per_model(name: str, model: str, res: dict) -> None:
    """Print `res` and store it as benchmarks/results/NAME.json[model], keeping the other models' entries."""
    print(json.dumps(res, indent=1))
    out = ROOT / "benchmarks" / "results" / f"{name}.json"
    old = json.loads(out.read_text()) if out.exists() else {}
    old[model] = res
    out.write_text(json.dumps(old, indent=1) + "\n")
