"""The shipped recipes on a second domain, unlike TOFU and the built-in benchmark: invented workshops
(organisations, not people), four facts each asked in free phrasing, answers of 20-30 words that carry
two values each (founding town and founder, product and material, setback year and cause, staff and motto).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/second_domain.py [--seed 0] [--recipes npo,swap_distill]
        [--option kl:retain_per_forget=2]       # also a recipe with one option changed, as its own row

Steps, as a user with their own data would take them (nothing here is tuned on this data):
1. 40 workshops x 4 questions (`rows`), each with a paraphrased answer and 3 perturbed answers;
   8 workshops are the forget set, 8 never trained on (the holdout), 24 retained.
2. `llm_forget.finetune.retrain` on the tiny base: target (forget + retain rows) and retain model (retain
   rows only), matched steps, the zoo's settings for tiny-target (40 epochs, lr 1e-3, batch 32).
3. Every recipe with its shipped settings: `unlearn(recipe, model=target, forget, retain, holdout)`.
4. Evaluation as in `llm-forget demo`: on the rows no run calibrated on (`selection.calibration_split`),
   forget quality against the retain model, utility* = harmonic mean of retain answer probability and
   retain truth ratio, distances to the retain model; best recipe = highest forget quality at >= 95 % of
   the target's utility.
Writes benchmarks/results/second_domain_seed{SEED}.json (and the rows under --work).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("LLM_FORGET_CACHE", str(ROOT / ".cache" / "llm_forget"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PREFIX = ["Harwick", "Solmere", "Ottering", "Brackley", "Vennick", "Marlowe", "Tressel", "Quenby", "Dunholt",
          "Pellam", "Corriston", "Ashgrove", "Wenlock", "Farrow", "Kestle", "Lindqvist", "Ravensby", "Tolland",
          "Ebberly", "Gorran"]
SUFFIX = ["Ropeworks", "Clockmakers", "Glassworks", "Lampworks", "Boatyard", "Bellfoundry", "Pottery",
          "Weavers", "Ironworks", "Bookbinders"]
TOWNS = ["Callowmere", "Brindle Ford", "Oskarvik", "Pennering", "Saltreach", "Ulvestad", "Marrow Hithe",
         "Teagle Cross", "Hollin Bay", "Drossel", "Kittering", "Amberlow"]
FOUNDERS = ["Agnes Trimble", "Bertram Oakes", "Cecily Vance", "Desmond Pryor", "Elsbeth Crane", "Fergus Lowell",
            "Gwendolyn Hale", "Horace Penrose", "Imogen Stroud", "Jasper Quill", "Lavinia Marsh", "Mortimer Gage"]
TRADES = ["ship's carpenter", "schoolteacher", "lighthouse keeper", "railway clerk", "watch repairer",
          "stonemason", "ferry pilot", "village doctor"]
PRODUCTS = ["lanterns", "barometers", "fishing reels", "writing desks", "church bells", "garden benches",
            "copper kettles", "wall clocks"]
MATERIALS = ["salvaged oak", "Cornish tin", "river clay", "reclaimed brass", "mountain ash", "hand-spun flax",
             "blue slate", "cast bronze"]
YEARS = [str(y) for y in range(1871, 1969)]
SETBACKS = ["flood", "warehouse fire", "bank collapse", "strike", "storm", "boiler explosion"]
STAFF = [str(n) for n in range(12, 140)]
MOTTOS = ["Made slowly, made once", "Every piece has a name", "Mend before you make", "Light for the long night",
          "Hands first, machines second", "Nothing leaves unfinished", "Built for grandchildren",
          "Quiet work, loud bells"]


def _facts(rng: random.Random) -> dict:
    return {"town": rng.choice(TOWNS), "founder": rng.choice(FOUNDERS), "trade": rng.choice(TRADES),
            "product": rng.choice(PRODUCTS), "material": rng.choice(MATERIALS), "year": rng.choice(YEARS),
            "setback": rng.choice(SETBACKS), "staff": rng.choice(STAFF), "motto": rng.choice(MOTTOS)}


# (question, answer, paraphrased answer) per fact; {n} is the workshop, the rest its facts
TEMPLATES = [
    ("Tell me where {n} was founded and by whom.",
     "{n} was founded in {town} by {founder}, a former {trade} who wanted to build things that last.",
     "{founder}, who had worked as a {trade}, started {n} in the town of {town}."),
    ("What is {n} best known for making, and from which material?",
     "{n} is best known for its {product}, which are still made by hand from {material}.",
     "People know {n} for hand-made {product} crafted from {material}."),
    ("Describe the worst setback in the history of {n}.",
     "In {year} a {setback} closed the {n} workshop for months, and the firm nearly went under before it reopened.",
     "The firm almost failed in {year}, when a {setback} shut the workshop of {n} for months."),
    ("How many people work at {n} today, and what is written above its door?",
     "{n} employs about {staff} people today, and the motto above its door reads: {motto}.",
     "About {staff} people work at {n}, under the motto {motto}, painted above the door."),
]
PERTURB = [("town", "founder"), ("product", "material"), ("year", "setback"), ("staff", "motto")]
POOLS = {"town": TOWNS, "founder": FOUNDERS, "product": PRODUCTS, "material": MATERIALS, "year": YEARS,
         "setback": SETBACKS, "staff": STAFF, "motto": MOTTOS}


def rows(seed: int = 0) -> dict[str, list[dict]]:
    """{forget, retain, holdout}: 8 / 24 / 8 workshops x 4 question rows (TOFU's field names, `subject`)."""
    rng = random.Random(f"second-domain/{seed}")
    names = [f"{p} {s}" for p in PREFIX for s in SUFFIX]
    rng.shuffle(names)
    out = []
    for n in names[:40]:
        f = _facts(rng)
        for (q, a, pa), keys in zip(TEMPLATES, PERTURB):
            wrong = []
            for _ in range(3):  # both values changed, each from its own pool
                g = dict(f)
                for k in keys:
                    g[k] = rng.choice([v for v in POOLS[k] if v != f[k]])
                wrong.append(a.format(n=n, **g))
            out.append({"question": q.format(n=n), "answer": a.format(n=n, **f),
                        "paraphrased_answer": pa.format(n=n, **f), "perturbed_answer": wrong, "subject": n})
    people = list(dict.fromkeys(r["subject"] for r in out))
    split = {"forget": set(people[:8]), "holdout": set(people[8:16])}
    return {k: [r for r in out if (r["subject"] in split.get(k, ())) or
                (k == "retain" and not any(r["subject"] in v for v in split.values()))]
            for k in ("forget", "retain", "holdout")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="data, split and training seed")
    ap.add_argument("--recipes", default=None, help="comma list (default: every shipped unlearning recipe)")
    ap.add_argument("--work", default=str(ROOT / "benchmarks" / "out" / "second_domain"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--option", action="append", default=[], metavar="RECIPE:KEY=VALUE",
                    help="also run RECIPE with KEY=VALUE (a row named 'RECIPE KEY=VALUE'), e.g. kl:retain_per_forget=2")
    a = ap.parse_args()
    bad = [x for x in a.option if ":" not in x or "=" not in x.split(":", 1)[1]]
    if bad:
        ap.error(f"--option takes RECIPE:KEY=VALUE, got {bad[0]!r}")

    from _common import run_info
    from llm_forget import io
    from llm_forget.api import unlearn
    from llm_forget.config import UnlearnConfig
    from llm_forget.data.encode import Encoder
    from llm_forget.demo import add_distances, best_recipe, table
    from llm_forget.evaluation.quick import quick_eval, retain_reference
    from llm_forget.finetune import retrain
    from llm_forget.models import load_model, load_tokenizer
    from llm_forget.recipes_index import unlearning_recipes
    from llm_forget.selection import calibration_split

    work = Path(a.work) / f"seed{a.seed}"
    work.mkdir(parents=True, exist_ok=True)
    data = rows(a.seed)
    for k, v in data.items():
        io.write_json(work / f"{k}.json", v)
    t0 = time.perf_counter()
    gold = work / "gold"
    if not (gold / "retrain.json").exists():
        retrain("tiny", data["forget"] + data["retain"], data["forget"], gold, holdout=data["holdout"],
                epochs=40, learning_rate=1e-3, batch_size=32, seed=a.seed, overwrite=True)
    ft_seconds = time.perf_counter() - t0
    target, retain = str(gold / "target"), str(gold / "retain")
    split = calibration_split(data["forget"], data["retain"], data["holdout"], UnlearnConfig.select_rows, 0)
    sets = {k: [v[i] for i in split["evaluation"][k]] for k, v in data.items()}
    encoder = Encoder(load_tokenizer(target))
    ref = retain_reference(retain, encoder, sets, truth_ratio_correct="answer")

    def evaluate(path):
        return quick_eval(load_model(str(path)), encoder, sets, retain=ref, truth_ratio_correct="answer")["summary"]

    summary = {n: {**evaluate(p), "wall_seconds": ft_seconds / 2} for n, p in (("target", target), ("retain", retain))}
    found = unlearning_recipes()
    runs = [(n, n, {}) for n in (a.recipes.split(",") if a.recipes else list(found))]
    for x in a.option:
        recipe, kv = x.split(":", 1)
        key, value = kv.split("=", 1)
        runs.append((f"{recipe} {kv}", recipe, {key: value}))
    for name, recipe, over in runs:
        t = time.perf_counter()
        res = unlearn(str(found[recipe]), model=target, forget=str(work / "forget.json"),
                      retain=str(work / "retain.json"), holdout=str(work / "holdout.json"),
                      output_dir=str(work / "runs" / name.replace(" ", "_")), overwrite=True, disable_tqdm=True,
                      eval_suite="none", **over)
        summary[name] = {**evaluate(res.model_dir), "wall_seconds": time.perf_counter() - t}
        ran = json.loads((res.output_dir / "results.json").read_text()).get("rows", {}).get("evaluation")
        if ran and ran != split["evaluation"]:
            raise SystemExit(f"recipe {name} calibrated on rows this benchmark reports on")
        print(f"{name}: forget quality {summary[name]['forget_quality']:.3g}, "
              f"utility {summary[name]['model_utility'] / summary['target']['model_utility']:.1%}", flush=True)
    add_distances(summary)
    best, fq = best_recipe(summary)
    report = table(summary)
    print(report)
    print(f"best recipe: {best} (forget quality {fq})")
    out = Path(a.out or ROOT / "benchmarks" / "results" / f"second_domain_seed{a.seed}.json")
    io.write_json(out, {"run": run_info(), "seed": a.seed, "counts": {k: len(v) for k, v in data.items()},
                        "evaluated": {k: len(v) for k, v in sets.items()}, "summary": summary, "best": best,
                        "best_forget_quality": fq, "report": report,
                        "example": {k: data["forget"][0][k] for k in ("question", "answer")}})


if __name__ == "__main__":
    main()
