"""Does forgetting some of an author's TOFU rows reach the author's other rows? The tiny TOFU protocol's models.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/transfer_within_author.py [--recipe kl] [--shots 10,2]

The zero-shot and few-shot bars of forgetting from a description assume that what a model knows about a person
is reachable through that person: unlearn some of it (the model's own answers about them, or a few of their rows)
and the rest goes too. This measures that assumption directly, with no probing in between: the recipe as shipped
is given K of each forget01 author's 20 rows as an ordinary request (`--shots`, default 10 and 2), and the tofu
suite reports on rows 10-19 of each author (20 rows that no run here trains on) against the forget01 retain
model on the same 20 rows. The same recipe given all 40 rows (the TOFU section's run) is evaluated on those 20
rows beside it: there they were trained on.

Models, data and calibration are the full tiny protocol's (benchmarks/tofu_protocol.py --scale tiny, trained
once in benchmarks/out/tofu_tiny and shared): target = full TOFU - holdout, retain model = that - forget01,
retain = the retain model's rows, the holdout's calibration author for the selection, the suite's retain rows
kept out of calibration. Writes benchmarks/results/transfer_within_author.json (a rerun skips what is there).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LLM_FORGET_CACHE", str(ROOT / ".cache" / "llm_forget"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(ROOT / "benchmarks"))
import tofu_protocol as tp  # noqa: E402
import zero_shot as zs  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
UNSEEN = [*range(10, 20), *range(30, 40)]  # rows 10-19 of each author: never given to a run here
KEEP = ("forget_quality", "forget_truth_ratio", "forget_probability", "forget_rougeL_recall", "mia_auc",
        "retain_probability")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", default="kl")
    ap.add_argument("--shots", default="10,2", help="rows per author given to the run (each at most 10)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from llm_forget import io
    from llm_forget.api import unlearn

    work = ROOT / "benchmarks" / "out" / "transfer_within_author"
    rfile = RESULTS / "transfer_within_author.json"
    res = json.loads(rfile.read_text()) if rfile.is_file() else {"rows": {}}
    setup = zs.shared_protocol("tiny", work)
    files, target, retain = setup["files"], setup["target"], setup["retain"]
    forget = setup["data"]["forget"]["forget01"]
    unseen_file = work / "data" / "forget_unseen.json"
    io.write_json(unseen_file, [forget[i] for i in UNSEEN])
    suite = copy.deepcopy(setup["suite"])
    suite["datasets"]["forget"] = str(unseen_file)
    suite["name"] = "tofu-holdout-evaluation-half, forget rows 10-19 of each author"
    res.update(machine={"cpu_cores": os.cpu_count(), "cpu_threads": args.threads, "platform": platform.platform(),
                        "torch": torch.__version__}, recipe=args.recipe, evaluated_rows=UNSEEN)
    rows = res["rows"]
    save = lambda: (RESULTS.mkdir(parents=True, exist_ok=True), io.write_json(rfile, res))  # noqa: E731
    ev = work / "eval"

    def report(name: str, model: str, **info) -> None:
        if name in rows:
            return
        s = tp.evaluate(model, suite, "forget01", ev / name.replace(" ", "_"),
                        None if name == "retain model" else ev / "retain_model" / "results.json")
        if name == "retain model":
            s["forget_quality"] = 1.0
        rows[name] = {**{k: s.get(k) for k in KEEP}, **info}
        print(name, json.dumps(rows[name]), flush=True)
        save()

    report("retain model", str(retain))
    report("target", str(target))
    for k in (int(x) for x in args.shots.split(",")):
        given = [*range(0, k), *range(20, 20 + k)]
        name = f"{k} rows per author given"
        if name in rows:
            continue
        f = work / "data" / f"forget_{k}.json"
        io.write_json(f, [forget[i] for i in given])
        out = work / "runs" / f"shots{k}"
        t = time.perf_counter()
        unlearn(str(ROOT / "llm_forget" / "recipes" / f"{args.recipe}.yaml"), model=str(target), forget=str(f),
                retain=str(files["retain"]), holdout=str(files["holdout"]), **zs._avoid(files),
                output_dir=str(out), eval_suite="none", overwrite=True)
        sel = json.loads((out / "results.json").read_text()).get("selection", {})
        report(name, str(out / "model"), unlearn_seconds=round(time.perf_counter() - t, 1), given_rows=given,
               selected_step=sel.get("selected_step"))
    full = ROOT / "benchmarks" / "out" / "tofu_tiny" / "runs" / "forget01" / args.recipe / "model"
    if full.is_dir():  # the TOFU section's run on all 40 rows: the 20 rows reported here were trained on
        report("all 40 rows given (the TOFU section's run)", str(full))
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
