"""zsRE / EasyEdit metrics: the TOKEN-ACCURACY family. Not to be confused with the CounterFact
probability family in `metrics_counterfact.py`.

All are teacher-forced token accuracies: the fraction of answer tokens where the argmax of
the model (given the prompt and the answer's earlier tokens) equals the answer token.
- reliability    = accuracy of target_new on the edit prompt             (higher = better)
- generalization = accuracy of target_new on rephrased prompts           (higher = better)
- locality       = fraction of the locality answer's positions whose argmax is the same
                   before and after the edit (needs the pre-edit argmax)  (higher = better)
- portability    = accuracy of the implied answers on portability prompts (higher = better)
"""

from __future__ import annotations

from .targets import score_targets


def token_accuracy(argmax: list[int], target: list[int]) -> float:
    """Fraction of positions where argmax == target (higher = better)."""
    if not target:
        return float("nan")
    return sum(a == b for a, b in zip(argmax, target)) / len(target)


def unchanged_fraction(before: list[int], after: list[int]) -> float:
    """Fraction of positions whose argmax did not change (higher = more local)."""
    if not before:
        return float("nan")
    return sum(a == b for a, b in zip(before, after)) / len(before)


def _mean(xs):
    xs = [x for x in xs if x == x]
    return sum(xs) / len(xs) if xs else float("nan")


def locality_argmax(model, tokenizer, requests, batch_size: int = 32) -> list[list[list[int]]]:
    """The model's argmax on each request's locality answers: run before editing, pass to zsre_metrics."""
    items = [(q, a) for r in requests for q, a in r.neighbourhood]
    scored = score_targets(model, tokenizer, [q for q, _ in items], [a for _, a in items], batch_size)
    out, i = [], 0
    for r in requests:
        out.append([s["argmax"] for s in scored[i:i + len(r.neighbourhood)]])
        i += len(r.neighbourhood)
    return out


def zsre_metrics(model, tokenizer, requests, pre_locality: list | None = None, batch_size: int = 32) -> dict:
    """The token-accuracy family; locality only when `pre_locality` (from `locality_argmax` on the
    unedited model) is given."""
    rel_p = [(r.prompt, r.target_new) for r in requests]
    gen_p = [(q, r.target_new, i) for i, r in enumerate(requests) for q in r.rephrase]
    por_p = [(q, a, i) for i, r in enumerate(requests) for q, a in r.portability]
    s_rel = score_targets(model, tokenizer, [p for p, _ in rel_p], [t for _, t in rel_p], batch_size)
    s_gen = score_targets(model, tokenizer, [p for p, *_ in gen_p], [t for _, t, _ in gen_p], batch_size)
    s_por = score_targets(model, tokenizer, [p for p, *_ in por_p], [t for _, t, _ in por_p], batch_size)
    per = [{"case_id": r.case_id, "reliability": token_accuracy(s["argmax"], s["target"])}
           for r, s in zip(requests, s_rel)]
    for (_, _, i), s in zip(gen_p, s_gen):
        per[i].setdefault("generalization", []).append(token_accuracy(s["argmax"], s["target"]))
    for (_, _, i), s in zip(por_p, s_por):
        per[i].setdefault("portability", []).append(token_accuracy(s["argmax"], s["target"]))
    summary = {"reliability": _mean([p["reliability"] for p in per]),
               "generalization": _mean([x for p in per for x in p.get("generalization", [])]),
               "portability": _mean([x for p in per for x in p.get("portability", [])]),
               "n_requests": len(requests)}
    if pre_locality is not None:
        post = locality_argmax(model, tokenizer, requests, batch_size)
        for i, (b, a) in enumerate(zip(pre_locality, post)):
            per[i]["locality"] = [unchanged_fraction(x, y) for x, y in zip(b, a)]
        summary["locality"] = _mean([x for p in per for x in p.get("locality", [])])
    return {"summary": summary, "per_request": per}
