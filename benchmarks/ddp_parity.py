"""Two CPU processes (accelerate launch, accelerate_configs/cpu_ddp.yaml) against one process.

For each case: the 2-process run (per-device batch 4) is compared with one process at per-device 4
and gradient_accumulation_steps 2 (the same micro-batches) and with one process at per-device 8
(the same global batch in one micro-batch). Prints max |Δweight| per pair and how far training
moved the weights; writes benchmarks/out/ddp_parity.json.

    .venv/bin/python benchmarks/ddp_parity.py            # ~1 min per case on 2 cores
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
CASES = [  # name, recipe, options
    ("grad_diff sgd 10 steps", "grad_diff", {"optim": "sgd", "learning_rate": "0.05", "max_steps": "10"}),
    ("grad_diff adamw 10 steps", "grad_diff", {"optim": "adamw_torch", "learning_rate": "1e-4", "max_steps": "10"}),
    ("npo adamw 10 steps", "npo", {"optim": "adamw_torch", "learning_rate": "1e-4", "max_steps": "10"}),
    ("npo lora adapter-ref adamw 10 steps", "npo",
     {"optim": "adamw_torch", "learning_rate": "1e-3", "max_steps": "10", "lora_r": "4", "reference": "adapter"}),
]


def weights(folder: Path):
    from safetensors.torch import load_file

    sd = {}
    for f in sorted(folder.glob("*.safetensors")):
        sd.update(load_file(f))
    return sd


def max_diff(a, b) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def main() -> int:
    os.environ.setdefault("LLM_FORGET_CACHE", str(REPO / ".cache" / "llm_forget"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from llm_forget import zoo

    model = str(zoo.get("tiny-target"))
    runs = OUT / "ddp_parity_runs"
    rows = []
    for name, recipe, opts in CASES:
        tag = name.replace(" ", "_")
        common = ["--model", model, "--eval_suite", "none", "--overwrite", "--disable_tqdm", "true"]
        common += [x for k, v in opts.items() for x in (f"--{k}", v)]
        env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                        str(REPO / "accelerate_configs" / "cpu_ddp.yaml"), "-m", "llm_forget", "unlearn", recipe,
                        "--output_dir", str(runs / f"{tag}_2proc"), "--per_device_train_batch_size", "4", *common],
                       check=True, env=env, capture_output=True)
        t2 = time.perf_counter() - t
        for sub, extra in (("accum", ["--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2"]),
                           ("b8", ["--per_device_train_batch_size", "8"])):
            subprocess.run([sys.executable, "-m", "llm_forget", "unlearn", recipe, "--output_dir",
                            str(runs / f"{tag}_{sub}"), *extra, *common], check=True, env=env, capture_output=True)
        two, acc, b8 = (weights(runs / f"{tag}_{s}" / "model") for s in ("2proc", "accum", "b8"))
        start = weights(Path(model))
        moved = max_diff(two, start) if two.keys() == start.keys() else max(float(v.abs().max()) for k, v in
                                                                            two.items() if "lora_B" in k)
        env2 = json.loads((runs / f"{tag}_2proc" / "results.json").read_text())["environment"]
        rows.append({"case": name, "world_size": env2["world_size"], "effective_batch": env2["effective_batch"],
                     "vs_1proc_accum2": max_diff(two, acc), "vs_1proc_batch8": max_diff(two, b8),
                     "weights_moved": moved, "launch_seconds": round(t2, 1)})
        print(rows[-1], flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "ddp_parity.json").write_text(json.dumps(rows, indent=1))
    print("\n| case | world size | effective batch | max abs Δw vs 1 proc (4 × accum 2) | vs 1 proc (batch 8) "
          "| max abs weight change | 2-proc launch s |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['world_size']} | {r['effective_batch']} | {r['vs_1proc_accum2']:.2g} | "
              f"{r['vs_1proc_batch8']:.2g} | {r['weights_moved']:.2g} | {r['launch_seconds']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
