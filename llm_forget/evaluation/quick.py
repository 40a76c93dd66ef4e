"""The quick evaluation: token metrics on forget / retain / holdout, forget-vs-holdout MIA AUC and
PrivLeak, truth ratios, and (with a retain model) forget quality.

Used after every unlearning run and by the demo. It runs the same code as the suites
(evaluation/suite.py) on rows already in memory, with an already loaded model.
"""

from __future__ import annotations

import time

from .mia import auc  # noqa: F401  (re-exported: older callers import it from here)
from .evaluator import Evaluator
from .groups import token_summary


def summarize(items: list[dict]) -> dict:
    return token_summary(items)


def quick_config(encoder, sets: dict[str, list[dict]], generate: bool = False, minkpp: bool = False,
                 truth_ratio_correct: str | None = None) -> dict:
    """The in-memory suite quick_eval runs on `sets` (only non-empty sets). truth_ratio_correct:
    the truth ratio's denominator; None picks it from the rows (data.benchmark.truth_ratio_correct_for)."""
    if truth_ratio_correct is None:
        from ..data.benchmark import truth_ratio_correct_for

        truth_ratio_correct = truth_ratio_correct_for(sets.get("forget") or sets.get("retain") or [])
    names = [k for k, v in sets.items() if v]
    has_tr = {k for k in names if all(r.get("perturbed_answer") for r in sets[k])}
    metrics: dict = {"token": names}
    tr = {"forget": [k for k in ("forget",) if k in has_tr], "retain": [k for k in ("retain",) if k in has_tr],
          "correct": truth_ratio_correct}
    if tr["forget"] or tr["retain"]:
        metrics["truth_ratio"] = tr
    if "forget" in names and "holdout" in names:
        metrics["mia"] = {"members": "forget", "nonmembers": "holdout", "headline": "loss", "minkpp": minkpp}
    if "forget" in has_tr:
        metrics["forget_quality"] = {"set": "forget"}
    if generate:
        metrics["generation"] = {"sets": [k for k in ("forget", "retain") if k in names], "max_new_tokens": 48,
                                 "stop": ["\nQuestion:"]}
    if "retain" in has_tr:
        mu = ["retain_probability", "retain_truth_ratio"] + (["retain_rougeL_recall"] if generate else [])
        metrics["model_utility"] = mu
    return {"name": "quick_eval", "prompt_template": encoder.template, "chat_template": encoder.chat,
            "max_length": encoder.max_length, "datasets": {k: {"data": f"<memory:{k}>"} for k in names},
            "metrics": metrics}


def _run(model, tokenizer, cfg, sets, batch_size, retain=None) -> dict:
    res = {"summary": {}, "per_item": {}, "groups": {}}
    rows = {k: sets[k] for k in cfg["datasets"]}
    Evaluator(model, tokenizer, cfg, rows, res, batch_size=batch_size, retain=retain, progress=False).run()
    return res


def retain_reference(retain_model, encoder, sets: dict[str, list[dict]], batch_size: int = 32, **kw) -> dict:
    """What quick_eval needs from the retain model (trained without the forget set), computed once:
    its per-item forget truth ratios and MIA AUCs. `retain_model`: a loaded model (sharing
    `encoder`'s tokenizer) or a model folder / zoo name. Pass the result as `retain=` to many
    quick_eval calls."""
    import torch

    from ..data.encode import Encoder

    tok = encoder.tokenizer
    if isinstance(retain_model, (str, bytes)) or hasattr(retain_model, "__fspath__"):
        from ..models import load_model, load_tokenizer

        tok = load_tokenizer(str(retain_model))
        retain_model = load_model(str(retain_model))
        encoder = Encoder(tok, encoder.template, encoder.chat, encoder.max_length)
    cfg = quick_config(encoder, sets, **kw)
    cfg["metrics"].pop("model_utility", None)
    with torch.no_grad():
        return _run(retain_model, tok, cfg, sets, batch_size)


def quick_eval(model, encoder, sets: dict[str, list[dict]], batch_size: int = 32, *, retain=None,
               generate: bool = False, minkpp: bool = False, truth_ratio_correct: str | None = None) -> dict:
    """Token metrics per set (`forget`, `retain`, `holdout`, ...) plus:
    - mia_auc: LOSS attack, forget members vs holdout non-members (0.5 = indistinguishable,
      1 = fully remembered); mia_auc_{attack} for each attack; privleak in MUSE's form on the Min-K
      40 % AUC (mia.privleak: → 0 is ideal, negative = members still stand out; relative to the
      retain model's AUC when `retain` is given, else to 0.5);
    - forget_truth_ratio / retain_truth_ratio when rows have perturbed answers; the denominator is
      `truth_ratio_correct` ("paraphrased_answer" as TOFU, or "answer"; None: chosen from the rows,
      "answer" for the built-in benchmark whose perturbed answers are in the answer's form);
    - forget_quality (KS p-value vs the retain model's forget truth ratios) when `retain` is given:
      a retain model (loaded or a path) or the dict from `retain_reference` (cheaper when reused);
    - model_utility: harmonic mean of retain probability and retain truth ratio (+ retain ROUGE-L
      recall when `generate`), listed in `model_utility_components`; not TOFU's 9-number utility.
    """
    t = time.perf_counter()
    if retain is not None and not isinstance(retain, dict):
        retain = retain_reference(retain, encoder, sets, batch_size, minkpp=minkpp,
                                  truth_ratio_correct=truth_ratio_correct)
    cfg = quick_config(encoder, sets, generate, minkpp, truth_ratio_correct)
    res = _run(model, encoder.tokenizer, cfg, sets, batch_size, retain)
    summary = res["summary"]
    summary["eval_seconds"] = time.perf_counter() - t
    return {"summary": summary, "per_item": res["per_item"], "groups": res["groups"],
            "not_computed": res.get("not_computed", {})}


def sharded_quick_eval(model, encoder, sets: dict[str, list[dict]], batch_size: int = 32, *, shard: bool = True,
                       retain=None, **kw) -> dict:
    """`quick_eval(model, encoder, sets, batch_size, retain=retain, **kw)` over all ranks: the same
    return value as the single-process call, on every rank. Every rank must call it (collectives).
    Generation (`generate=True`) is not sharded: every rank then evaluates everything."""
    import time

    from accelerate import PartialState
    from accelerate.utils import gather_object

    from .distributed import world

    ws = world()[1]
    sets = {k: v for k, v in sets.items() if v}
    if ws == 1 or not shard or not sets or kw.get("generate"):
        return quick_eval(model, encoder, sets, batch_size, retain=retain, **kw)
    t = time.perf_counter()
    if retain is not None and not isinstance(retain, dict):
        retain = retain_reference(retain, encoder, sets, batch_size, **kw)  # on the full sets
    state = PartialState()  # the process group is already up (the Trainer's accelerator)
    local = {}
    for name, rows in sets.items():
        batches = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
        with state.split_between_processes(batches) as part:  # whole batches, contiguous blocks
            local[name] = [r for b in part for r in b]
    ev = quick_eval(model, encoder, local, batch_size, **kw)  # per-item work on this rank's rows
    per_item = {name: gather_object(ev["per_item"].get(name, [])) for name in sets}
    groups = gather_object([ev["groups"]])[0]  # rank 0 holds a share of every set
    res = {"per_item": per_item, "groups": {k: v for k, v in groups.items() if k.startswith("token:")},
           "summary": {f"{name}_{k}": v for name, items in per_item.items() for k, v in token_summary(items).items()}}
    cfg = quick_config(encoder, sets, **kw)
    Evaluator(model, encoder.tokenizer, cfg, sets, res, batch_size=batch_size, retain=retain, progress=False).run()
    res["summary"]["eval_seconds"] = time.perf_counter() - t
    return {"summary": res["summary"], "per_item": per_item, "groups": res["groups"],
            "not_computed": res.get("not_computed", {})}
