"""Evaluation of the user's own files without a suite YAML: `evaluate_files(model, forget, retain,
holdout, retain_model=...)`, behind `llm-forget eval --model M --forget F --retain R [--holdout H]
[--retain-model RM]`.

Every metric group is enabled by what the rows support, decided and checked before any work:

| group | needs |
|---|---|
| token metrics (perplexity, probability, exact memorization, extraction strength) | any rows |
| truth ratio of a set | `perturbed_answer` on every row (correct answer: `paraphrased_answer` where every row has one, as TOFU, else `answer`; `answer` too when rows carry `perturbed_paraphrased_answer`, i.e. the perturbed answers are in the answer's form, as the built-in benchmark) |
| forget quality | forget truth ratios and `--retain-model` |
| forget NLL quality (KS test on per-row answer NLLs) | `--retain-model` (with forget truth ratios) |
| ROUGE-L (generation) | question/answer rows |
| MIA AUC, privleak | `--holdout`: rows of the same kind the model never trained on |
| model utility | retain probability (+ retain truth ratio, ROUGE-L recall when supported) |
| consistency (KL, greedy agreement, parameter distance) | `--retain-model` |

What cannot be computed is named with its reason in `results["not_computed"]`. Forget, retain and
holdout must not share rows (by row hash) unless `allow_overlap`.
"""

from __future__ import annotations

from ..errors import UserError

SETS = ("forget", "retain", "holdout")


def kind(name: str, rows: list[dict]) -> str:
    """"qa" (question/answer rows) or "text"; a file mixing the two is an error."""
    qa = sum("question" in r and "answer" in r for r in rows)
    if 0 < qa < len(rows):
        raise UserError(f"{name} data mixes question/answer rows ({qa}) and text rows ({len(rows) - qa}); "
                        "use one kind per file")
    return "qa" if qa else "text"


def check_overlap(rows: dict[str, list[dict]], allow_overlap: bool = False) -> None:
    """A UserError when two of forget / retain / holdout share rows (same content hash)."""
    from ..data.readers import overlap

    names = [s for s in SETS if rows.get(s)]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            n = overlap(rows[a], rows[b])
            if n and not allow_overlap:
                raise UserError(f"{n} of {len(rows[a])} {a} rows also occur in the {b} set; remove them or pass "
                                "--allow_overlap")


def _every(rows: list[dict], field: str) -> bool:
    return all(r.get(field) for r in rows)


def plan(rows: dict[str, list[dict]], *, retain_model: bool = False, template: str | None = None,
         chat_template: bool = False, max_length: int = 512) -> tuple[dict, dict[str, str]]:
    """(suite dict, {metric: why it is not computed}) for the user's rows: `forget` and `retain`
    (required) and `holdout` (optional). `retain_model`: whether a retain model is given."""
    from ..data.encode import DEFAULT_TEMPLATE

    for s in ("forget", "retain"):
        if not rows.get(s):
            raise UserError(f"eval on your own data needs --{s}")
    names = [s for s in SETS if rows.get(s)]
    kinds = {s: kind(s, rows[s]) for s in names}
    if "holdout" in kinds and kinds["holdout"] != kinds["forget"]:
        raise UserError(f"holdout rows are {kinds['holdout']} rows but forget rows are {kinds['forget']} rows; "
                        "membership inference compares rows of one kind")
    notes: dict[str, str] = {}
    m: dict = {"token": names}
    tr = {role: [s] for role, s in (("forget", "forget"), ("retain", "retain"))
          if kinds[s] == "qa" and _every(rows[s], "perturbed_answer")}
    for s in ("forget", "retain"):
        if s not in tr:
            have = sum(bool(r.get("perturbed_answer")) for r in rows[s])
            notes[f"{s}_truth_ratio"] = (f"needs perturbed_answer on every {s} row ({have} of {len(rows[s])} have one)"
                                         if kinds[s] == "qa" else f"needs question/answer rows; {s} has text rows")
    if tr:
        from ..data.benchmark import truth_ratio_correct_for

        sets = [s[0] for s in tr.values()]
        para = all(_every(rows[s], "paraphrased_answer") for s in sets)
        tr["correct"] = truth_ratio_correct_for(rows[sets[0]]) if para else "answer"
        if not para:
            notes["truth_ratio_correct"] = ("not every row has paraphrased_answer: the truth ratio compares the "
                                            "perturbed answers with the answer itself (TOFU uses the paraphrase)")
        m["truth_ratio"] = tr
    if "forget" in tr and retain_model:
        m["forget_quality"] = {"set": "forget"}
    else:
        notes["forget_quality"] = ("needs --retain-model (a model trained without the forget rows)" if "forget" in tr
                                   else f"no forget truth ratios: {notes['forget_truth_ratio']}")
    qa = [s for s in ("forget", "retain") if kinds[s] == "qa"]
    default = template is None and not chat_template
    if qa:
        m["generation"] = {"sets": qa, "max_new_tokens": 200, **({"stop": ["\nQuestion:"]} if default else {})}
    for s in ("forget", "retain"):
        if s not in qa:
            notes[f"{s}_rougeL_recall"] = f"ROUGE-L needs question/answer rows; {s} has text rows"
    if "holdout" in names:
        m["mia"] = {"members": "forget", "nonmembers": "holdout", "headline": "loss", "ks": [20, 40],
                    "minkpp": True, "privleak": "mink_40"}
    else:
        notes["mia_auc"] = notes["privleak"] = ("membership metrics need --holdout: rows of the same kind that "
                                                "the model never trained on")
    mu = ["retain_probability"] + (["retain_truth_ratio"] if "retain" in tr else []) + \
        (["retain_rougeL_recall"] if "retain" in qa else [])
    m["model_utility"] = mu
    if not retain_model:
        notes["consistency"] = "needs --retain-model"
    elif qa:
        m["consistency"] = {"sets": qa}
    else:
        notes["consistency"] = "KL and greedy agreement with the retain model need question/answer rows"
    cfg = {"name": "user_data", "prompt_template": template or DEFAULT_TEMPLATE, "chat_template": bool(chat_template),
           "max_length": max_length, "datasets": {s: {"data": f"<{s}>"} for s in names}, "metrics": m}
    return cfg, notes


def read_user_rows(forget: str, retain: str, holdout: str | None = None, *, allow_overlap: bool = False,
                   limit: int | None = None) -> dict[str, list[dict]]:
    """The rows of the user's data specs (files, Hub ids, builtin:), checked for overlap."""
    from ..data.readers import read_rows

    rows = {"forget": read_rows(str(forget)), "retain": read_rows(str(retain))}
    if holdout is not None:
        rows["holdout"] = read_rows(str(holdout))
    if limit:
        rows = {k: v[:limit] for k, v in rows.items()}
    check_overlap(rows, allow_overlap)
    return rows


def evaluate_files(model, forget, retain, holdout=None, *, retain_model=None, allow_overlap: bool = False,
                   limit: int | None = None, chat_template: bool = False, on_plan=None, **kw) -> dict:
    """Evaluate `model` on the user's rows (data specs: files, hf:..., builtin:...) with the metric
    groups they support. Rows, overlap and the retain model's results (when `retain_model` is a
    results.json) are checked, and `on_plan(notes)` is called with what cannot be computed, before
    any model is loaded. Other keywords go to `suite.evaluate` (output, batch_size, reference_model...).
    Returns the results dict; `results["not_computed"]` names what is missing and why."""
    from .suite import check_retain_results, evaluate, read_results

    rows = read_user_rows(forget, retain, holdout, allow_overlap=allow_overlap, limit=limit)
    cfg, notes = plan(rows, retain_model=retain_model is not None, chat_template=chat_template)
    specs = {"forget": forget, "retain": retain, "holdout": holdout}
    cfg["datasets"] = {k: {"data": str(specs[k])} for k in rows}
    if retain_model is not None:
        got = read_results(retain_model)
        if got is not None:
            check_retain_results(got, cfg, rows, retain_model)
    if on_plan is not None:
        on_plan(notes)
    return evaluate(model, cfg, retain_model=retain_model, rows=rows, notes=notes, allow_overlap=allow_overlap, **kw)
