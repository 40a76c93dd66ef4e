"""SISA cost and utility on the built-in benchmark: what exact deletion costs against retraining,
and what sharding costs in utility against one adapter trained on everything.

    python benchmarks/sisa_cost.py [--model tiny-retain] [--shards 4] [--slices 4] [--out runs/bench_sisa]

Trains (1) SISA with S shards x R slices and (2) one adapter on all rows (S = R = 1, same
epochs), evaluates both (answer probability on the training rows and on holdout people), then
applies two deletions to the SISA run: one random row of a person the base model never saw,
then every row of one such person (which usually spans several shards). Deleted rows should
end up as likely as holdout rows (people never trained on). Prints a markdown table and writes OUT/sisa_cost.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-retain", help="base: knows the retain people, not the forget people")
    ap.add_argument("--data", default="builtin:train")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--slices", type=int, default=4)
    ap.add_argument("--epochs_per_slice", type=int, default=3)
    ap.add_argument("--learning_rate", type=float, default=2e-3)
    ap.add_argument("--lora_r", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/bench_sisa")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(a.threads)
    from llm_forget.data.readers import read_rows
    from llm_forget.exact import sisa
    from llm_forget.reporting import ledger

    out = Path(a.out)
    common = dict(model=a.model, data=a.data, epochs_per_slice=a.epochs_per_slice, learning_rate=a.learning_rate,
                  lora_r=a.lora_r, lora_alpha=2 * a.lora_r, batch_size=8, overwrite=True)
    res = {"settings": vars(a)}
    mono = sisa.train(None, **common, shards=1, slices=1, output_dir=str(out / "single"))
    res["single"] = {"train_seconds": mono["train_seconds"], "steps": mono["steps"], "summary": mono["summary"]}
    s = sisa.train(None, **common, shards=a.shards, slices=a.slices, output_dir=str(out / "sisa"))
    res["sisa"] = {"train_seconds": s["train_seconds"], "steps": s["steps"], "summary": s["summary"]}

    rows = read_rows(a.data)
    rng = random.Random(0)
    # rows the base model never saw (the benchmark's forget people; the base knows the retain people):
    # SISA can only remove what the shards learned, never what the base model already knows
    new = [r for r in rows if r.get("split") == "forget"] or rows
    one = rng.choice(new)
    person = new[-1].get("person")
    reqs = {"one row": {"kind": "items", "rows": [one]}}
    if person:
        reqs["one person (5 rows)"] = {"kind": "concept", "data": a.data, "field": "person", "value": person}
    res["deletions"] = {}
    for name, req in reqs.items():
        p = out / f"request_{len(res['deletions'])}.json"
        p.write_text(json.dumps(req))
        t = time.perf_counter()
        cost = sisa.forget(out / "sisa", str(p))
        wall = time.perf_counter() - t  # with loading and evaluation; cost["seconds"] is the retraining alone
        summ = json.loads((out / "sisa" / "results.json").read_text()).get("summary", {})
        res["deletions"][name] = {**cost, "wall_seconds": wall, "summary": summ}
        p.unlink()  # the request held forget-set text; the ledger keeps hashes only
    res["ledger_ok"] = ledger.verify(out / "sisa").ok

    def f(x, k):
        v = (x or {}).get(k)
        return f"{v:.3f}" if isinstance(v, (int, float)) else "–"

    lines = ["| model | steps | train s | train-rows p | holdout p | MIA AUC |", "|---|---|---|---|---|---|",
             f"| one adapter on all rows | {res['single']['steps']} | {res['single']['train_seconds']:.0f} | "
             f"{f(res['single']['summary'], 'retain_probability')} | {f(res['single']['summary'], 'holdout_probability')} | – |",
             f"| SISA {a.shards}x{a.slices} | {res['sisa']['steps']} | {res['sisa']['train_seconds']:.0f} | "
             f"{f(res['sisa']['summary'], 'retain_probability')} | {f(res['sisa']['summary'], 'holdout_probability')} | – |"]
    lines += ["", "| deletion | shards retrained | steps retrained | full retraining steps | fraction | retrain s | "
                  "wall s | deleted rows p | MIA AUC |", "|---|---|---|---|---|---|---|---|---|"]
    for name, d in res["deletions"].items():
        lines.append(f"| {name} | {len(d['shards_retrained'])} of {a.shards} | {d['steps_retrained']} | "
                     f"{d['full_retrain_steps']} | {d['fraction_of_full']:.2f} | {d['seconds']:.0f} | "
                     f"{d['wall_seconds']:.0f} | "
                     f"{f(d['summary'], 'forget_probability')} | {f(d['summary'], 'mia_auc')} |")
    lines.append(f"\nledger verifies: {res['ledger_ok']}")
    table = "\n".join(lines)
    (out / "sisa_cost.json").write_text(json.dumps(res, indent=2, default=str))
    (out / "sisa_cost.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
