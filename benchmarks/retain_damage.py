"""Where an unlearning run's retain damage falls: the rise of each evaluated retain row's answer NLL (target →
unlearned model) against the row's TF-IDF similarity to the nearest forget row, on the TOFU tiny protocol.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/retain_damage.py [--split forget01] [--run kl]

Reads the models and data `benchmarks/tofu_protocol.py --scale tiny` left in benchmarks/out/tofu_tiny (the target,
runs/SPLIT/RUN/model, data/evaluated_retain.json: the 400 retain rows the tofu suite reports on). Per row: answer
NLL (mean over answer tokens) under both models and s = max_i cos(tfidf(row), tfidf(forget_i)) over question +
answer, the TF-IDF fitted on both sets (llm_forget/pairing.py). Reported: the Spearman correlation of the NLL rise
with s, and per quarter of s the mean NLL rise and the share of the answer probability lost (sum of p_target − p_run
over the quarter's rows, over all rows). Beside it, the same two models on the run's own calibration retain rows
(results.json `rows.calibration.retain`, into data/retain_SPLIT.json): pooled perplexity rise and mean answer
probability kept there and on the evaluated rows, i.e. whether the budget the run held on the rows it measured holds on
the rows it is judged on, beside all other retain rows (the retain set less the evaluated rows) and the retain
model's answer probability kept on each set; and the ten evaluated rows that lose the most answer probability, their
share of the loss
and the probability kept without them. Results: benchmarks/results/retain_damage.json, one entry per split/run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import run_info, save_per_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="forget01")
    ap.add_argument("--run", default="kl", help="the run folder under runs/SPLIT/")
    ap.add_argument("--work", default=str(ROOT / "benchmarks" / "out" / "tofu_tiny"))
    args = ap.parse_args()
    import numpy as np
    import torch
    from scipy.stats import spearmanr

    from llm_forget.data.encode import Encoder
    from llm_forget.models import load_model, load_tokenizer
    from llm_forget.pairing import qa_text
    from llm_forget.selection import length_batches, row_nlls
    from sklearn.feature_extraction.text import TfidfVectorizer

    work = Path(args.work)
    model_dir = work / "runs" / args.split / args.run / "model"
    if not model_dir.exists():
        sys.exit(f"{model_dir} does not exist: run benchmarks/tofu_protocol.py --scale tiny --splits {args.split} "
                 "first")
    evaluated = json.loads((work / "data" / "evaluated_retain.json").read_text())
    forget = json.loads((work / "data" / f"{args.split}.json").read_text())
    tok = load_tokenizer(str(work / "models" / "target"))
    run_rows = json.loads((model_dir.parent / "results.json").read_text())["rows"]
    retain = json.loads((work / "data" / f"retain_{args.split}.json").read_text())
    calibration = [retain[i] for i in run_rows["calibration"]["retain"]]
    enc = Encoder(tok)
    asked = {r["question"] for r in evaluated}
    others = [r for r in retain if r["question"] not in asked]  # the retain set the suite does not report on
    models = {"target": load_model(str(work / "models" / "target")), "run": load_model(str(model_dir)),
              "retain model": load_model(str(work / "models" / f"retain_{args.split}"))}

    sets = {"calibration": calibration, "evaluated": evaluated, "other_retain": others}
    scored: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

    def sums(which: str, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-row (answer NLL sum, answer tokens) of model `which` on set `name`, each pair scored once."""
        if (which, name) not in scored:
            with torch.no_grad():
                x = row_nlls(models[which], length_batches(enc.rows(sets[name]), tok.pad_token_id or 0, 32))
            scored[which, name] = np.array([a for a, _ in x]), np.maximum(np.array([k for _, k in x]), 1)
        return scored[which, name]

    def budget(name: str) -> dict:
        (s0, k0), (s1, k1), (s2, k2) = sums("target", name), sums("run", name), sums("retain model", name)
        p0 = np.exp(-s0 / k0).mean()
        rise = np.exp(s1.sum() / k1.sum() - s0.sum() / k0.sum()) - 1
        return {"rows": len(sets[name]), "perplexity_rise": round(float(rise), 4),
                "probability_kept": round(float(np.exp(-s1 / k1).mean() / p0), 4),
                "target_probability": round(float(p0), 4),
                "retain_model_probability_kept": round(float(np.exp(-s2 / k2).mean() / p0), 4)}

    (s0, k0), (s1, k1) = sums("target", "evaluated"), sums("run", "evaluated")
    before, after = s0 / k0, s1 / k1
    rise, lost = after - before, np.exp(-before) - np.exp(-after)
    x = TfidfVectorizer().fit_transform([qa_text(r) for r in evaluated + forget])
    sim = (x[:len(evaluated)] @ x[len(evaluated):].T).max(axis=1).toarray().ravel()
    order = np.argsort(sim, kind="stable")
    quarters = []
    for q, idx in enumerate(np.array_split(order, 4)):
        quarters.append({"quarter": q + 1,
                         "similarity": [round(float(sim[idx].min()), 3), round(float(sim[idx].max()), 3)],
                         "mean_nll_rise": round(float(rise[idx].mean()), 4),
                         "share_of_probability_lost": round(float(lost[idx].sum() / lost.sum()), 3)})
    # are the 5 calibration authors a fair sample of the others, and what sets the evaluated authors apart?
    (t0, n0), (t1, n1) = sums("target", "other_retain"), sums("run", "other_retain")
    kept_rows, p_rows = np.exp(-t1 / n1), np.exp(-t0 / n0)
    author = np.array([str(r.get("author")) for r in others])
    names = np.unique(author)
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(200):
        ix = np.isin(author, rng.choice(names, 5, replace=False))
        draws.append(kept_rows[ix].mean() / p_rows[ix].mean())
    per_author = {a: (p_rows[author == a].mean(), kept_rows[author == a].mean() / p_rows[author == a].mean())
                  for a in names}
    least = sorted(names, key=lambda a: per_author[a][0])[:21]
    vec = TfidfVectorizer().fit([qa_text(r) for r in retain + forget])  # one vocabulary for both sets
    fv = vec.transform([qa_text(r) for r in forget])

    def likeness(rows: list[dict]) -> float:
        return round(float((vec.transform([qa_text(r) for r in rows]) @ fv.T).max(axis=1).toarray().mean()), 3)
    apart = {"five_author_draws_probability_kept_q05_q50_q95":
             [round(float(q), 4) for q in np.quantile(draws, [.05, .5, .95])],
             "least_learned_21_authors":
             {"target_probability": round(float(np.mean([per_author[a][0] for a in least])), 4),
              "probability_kept": round(float(np.mean([per_author[a][1] for a in least])), 4)},
             "mean_max_similarity_to_forget": {"evaluated": likeness(evaluated), "other_retain": likeness(others)}}
    top = np.argsort(-lost, kind="stable")[:10]
    rest = np.setdiff1d(np.arange(len(lost)), top)
    worst = {"share_of_probability_lost": round(float(lost[top].sum() / lost.sum()), 3),
             "probability_kept_without_them":
             round(float(np.exp(-after[rest]).mean() / np.exp(-before[rest]).mean()), 4),
             "rows": [{"probability_lost": round(float(lost[i]), 3), "similarity": round(float(sim[i]), 3),
                       "answer": evaluated[i]["answer"][:100]} for i in top]}
    rho = spearmanr(rise, sim)
    res = {"run": run_info(), "rows": len(evaluated), "forget_rows": len(forget),
           "retain_probability_kept": round(float(np.exp(-after).mean() / np.exp(-before).mean()), 4),
           "spearman": round(float(rho.statistic), 3), "spearman_p": float(rho.pvalue), "quarters": quarters,
           "ten_worst_rows": worst, "evaluated_apart": apart, "budget": {name: budget(name) for name in sets}}
    print(json.dumps(res, indent=1))
    save_per_model("retain_damage", f"{args.split}/{args.run}", res)


if __name__ == "__main__":
    main()
