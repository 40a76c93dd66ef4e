"""Evaluation suites: a YAML file names datasets and the metric groups to run on each;
`evaluate()` runs them on a model and writes `results.json`.

Suite YAML (see llm_forget/suites/*.yaml, also reachable as eval/ at the repository root):

    name: quick
    prompt_template: "Question: {question}\\nAnswer:"   # or chat_template: true
    max_length: 256
    score_eos: false                                  # true: the closing eos counts in EM, ES and Min-K
    variables: {forget_split: forget01}               # defaults for {name} in data specs
    datasets:
      forget: {data: "{data_dir}/{forget_split}.json"}
      holdout: {data: "{data_dir}/retain90.json", rows: [3560, 3600]}
    metrics:
      token: [forget, retain, holdout]                # one teacher-forced pass per set
      truth_ratio: {forget: [forget], retain: [retain]}
      generation: {sets: [forget, retain], max_new_tokens: 200, stop: ["\\nQuestion:"]}  # batch_size: 2x --batch-size
      knowmem: {sets: [...], max_new_tokens: 32}       # ROUGE-L F1 of QA answers
      verbmem: {sets: [...], prefix_tokens: 128, max_new_tokens: 128}
      mia: {members: forget, nonmembers: holdout, headline: loss, privleak: mink_40}   # README: "Suite YAML"
      forget_quality: {set: forget}
      model_utility: [retain_probability, retain_rougeL_recall, retain_truth_ratio]
      consistency: {sets: [forget, retain]}
      text_ppl: {data: "{text_file}", window: 512, stride: 256, max_tokens: 20000}
      scope: {set: scope}                              # answer accuracy per (split, form): builtin:scope

Modules, in the order data flows: spec.py (the format, the rows) -> scoring.py / generation.py
(per-item numbers) -> evaluator.py, generating.py, groups.py (metric groups, summary) -> this file
(models, retain model, results.json).
Results are written at the end and whenever 10 s of work are unsaved, and a re-run skips groups
already computed for the same model and the same group settings (unless `overwrite`).
"""

from __future__ import annotations

import json
import logging
import platform
import time
from pathlib import Path

from ..errors import UserError
from .evaluator import Evaluator
from .groups import token_summary  # noqa: F401  (re-exported)
from .spec import check_rows, load_suite, resolve_datasets, retain_suite, shipped_suites, used_sets  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)


def environment(model=None) -> dict:
    import torch
    import transformers

    from importlib.metadata import version

    env = {"llm_forget": version("llm_forget"), "torch": torch.__version__, "transformers": transformers.__version__,
           "python": platform.python_version(), "machine": platform.machine(),
           "cpu_threads": torch.get_num_threads(), "world_size": 1}
    try:
        import rouge_score  # noqa: F401

        env["rouge_score"] = version("rouge-score")
        env["scipy"] = version("scipy")
    except Exception:  # pragma: no cover - metadata missing in odd installs
        pass
    if model is not None:
        p = next(model.parameters())
        env.update(device=str(p.device), dtype=str(p.dtype).replace("torch.", ""))
    return env


def _identity(path: str) -> dict:
    from ..models import model_hash

    return {"path": str(Path(path).resolve()), "hash": model_hash(path)}


def _load(path: str, dtype: str, device: str | None):
    from ..models import load_model, load_tokenizer

    return load_model(path, dtype, device=device), load_tokenizer(path)


def read_results(path: str | Path) -> dict | None:
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file() or p.suffix != ".json":
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"results file {p} is not valid JSON: {e.msg}") from e


def evaluate(model, suite="quick", *, retain_model=None, reference_model=None, output=None, overwrite: bool = False,
             batch_size: int = 32, data_dir=None, variables: dict | None = None, limit: int | None = None,
             dtype: str = "auto", device: str | None = None, seed: int = 0, progress: bool = True,
             chat_template: bool | None = None, lanes: int | None = None, rows: dict | None = None,
             notes: dict | None = None, allow_overlap: bool = False) -> dict:
    """Evaluate a model (folder or zoo name) on a suite (shipped name, YAML path or dict).

    retain_model: the model trained without the forget set: a model folder/zoo name (evaluated on
        the needed parts of the suite, into OUTPUT/retain/ when `output` is set), or a results.json
        (or a folder holding one) from an earlier `evaluate` of it. Gives forget quality, PrivLeak
        relative to it, and consistency (KL, greedy agreement, parameter distance).
    reference_model: a model for the reference membership attack.
    output: folder for results.json; an existing one is resumed (computed groups skipped) unless
        `overwrite`. data_dir / variables: values for {data_dir} / {name} in the suite's data specs.
    limit: use only the first `limit` rows of every dataset (quick looks, timing samples).
    chat_template: override the suite's choice of wrapping questions in the tokenizer's chat template.
    lanes: on CPU, batches that run side by side, each with an equal share of torch's threads
        (default 1: one batch at a time with all of them; lanes share one model, see
        evaluation/lanes.py). The numbers do not depend on it.
    allow_overlap: allow members among non-members, forget rows among retain rows (else an error).
    rows / notes: the datasets' rows already read, and what is not computed and why (plan.py, for
        the user's own files); otherwise the suite's data specs are read.
    Values that are not finite numbers are written as null, each named with its reason under
    `not_computed` (strict JSON).
    Returns the results dict (summary, per_item, groups with wall seconds, models, environment).
    """
    import torch

    from .. import io
    from ..zoo import resolve_model_path

    cfg = load_suite(suite)
    if chat_template is not None:
        cfg["chat_template"] = bool(chat_template)
    variables = {**(cfg.get("variables") or {}), **(variables or {})}
    if data_dir is not None:
        if not Path(data_dir).expanduser().is_dir():
            raise UserError(f"data dir {data_dir} does not exist")
        variables["data_dir"] = str(Path(data_dir).expanduser())
    if rows is None:
        rows = resolve_datasets(cfg, variables, limit)
    check_rows(cfg, rows, allow_overlap)
    path = resolve_model_path(str(model))
    from .calibrated import calibrated_rows

    calibrated = calibrated_rows(path, rows)  # rows the run that made the model measured to stop itself
    if calibrated:
        logger.warning("eval: %s of these rows were measured by the run that made this model to choose where to "
                       "stop (%s): numbers on them are tuned, not measured; evaluate on other rows, e.g. that "
                       "run's evaluation rows (`rows.evaluation`)", ", ".join(
                           f"{n} of {k!r}" for k, n in calibrated["datasets"].items()), calibrated["run"])
    ident = _identity(path)
    spec = {k: v for k, v in cfg.items() if k != "_source"}
    out = Path(output) if output else None
    res = None
    if out is not None:
        if out.exists() and not out.is_dir():
            raise UserError(f"output {out} is a file; give a folder")
        old = read_results(out)
        if old is not None and not overwrite:
            if old.get("models", {}).get("model", {}).get("hash") != ident["hash"]:
                raise UserError(f"{out / 'results.json'} holds results of another model; pass --overwrite "
                                "or choose another output folder")
            if old.get("suite", {}).get("name") != cfg["name"]:
                raise UserError(f"{out / 'results.json'} holds results of suite "
                                f"{old.get('suite', {}).get('name')!r}; pass --overwrite or another folder")
            res = old
    t0 = time.perf_counter()
    torch.manual_seed(seed)

    # retain model: results read from disk or computed now
    retain, retrained = None, None
    if retain_model is not None:
        retain = read_results(retain_model)
        rpath = None
        if retain is not None:
            check_retain_results(retain, cfg, rows, retain_model)
        if retain is None:
            rpath = resolve_model_path(str(retain_model))
            sub = retain_suite(cfg)
            if sub["metrics"]:
                logger.info("eval: evaluating the retain model %s", rpath)
                retain = evaluate(rpath, sub, output=out / "retain" if out else None, overwrite=overwrite,
                                  batch_size=batch_size, variables=variables, limit=limit, dtype=dtype,
                                  device=device, seed=seed, progress=progress, lanes=lanes,
                                  rows={k: rows[k] for k in used_sets(sub)}, allow_overlap=allow_overlap)
            else:
                retain = {"summary": {}, "per_item": {}, "models": {"model": _identity(rpath)}}
        else:
            p = retain.get("models", {}).get("model", {}).get("path")
            rpath = p if p and Path(p, "config.json").exists() else None
        if "consistency" in cfg["metrics"] and rpath is not None:
            retrained = _load(rpath, dtype, device)
    reference = None
    if reference_model is not None:
        rp = resolve_model_path(str(reference_model))
        m, t = _load(rp, dtype, device)
        reference = (m, _identity(rp)["hash"], t)

    mdl, tok = _load(path, dtype, device)
    if res is None:
        res = {"suite": {"name": cfg["name"], "source": cfg.get("_source"), "config": spec},
               "summary": {}, "per_item": {}, "groups": {}}
    res["suite"]["config"] = spec
    res["models"] = {"model": ident,
                     "retain": (retain or {}).get("models", {}).get("model") if retain_model is not None else None,
                     "reference": _identity(resolve_model_path(str(reference_model))) if reference_model else None}
    res["variables"] = variables
    res["not_computed"] = dict(notes or {})
    res["calibrated_rows"] = calibrated
    res["environment"] = {**environment(mdl), "seed": seed, "batch_size": batch_size}

    last = time.perf_counter()

    def save(force: bool = False):
        """Results are written at the end and, for resuming, whenever 10 s of work are unsaved."""
        nonlocal last
        if out is not None and (force or time.perf_counter() - last > 10):
            io.write_json(out / "results.json", strict_json(res))
            last = time.perf_counter()

    from .lanes import auto_lanes

    lane_pool = auto_lanes(mdl, lanes)
    res["environment"]["lanes"] = lane_pool.n if lane_pool else 1
    ev = Evaluator(mdl, tok, cfg, rows, res, batch_size=batch_size, retain=retain, retrained=retrained,
                   reference=reference, variables=variables, progress=progress, save=save, lanes=lane_pool)
    try:
        ev.run()
    finally:
        if lane_pool is not None:
            lane_pool.close()
    res["wall_seconds"] = round(time.perf_counter() - t0, 3)
    res.update(strict_json(res))
    save(force=True)
    return res


def check_retain_results(retain: dict, cfg: dict, rows: dict, where) -> None:
    """Before any work: results of the retain model read from disk must hold what this suite needs
    from them (per-item forget truth ratios on the same rows, for forget quality)."""
    from ..data.readers import row_hash

    fq = cfg["metrics"].get("forget_quality")
    if not fq:
        return
    s = fq["set"]
    theirs = retain.get("per_item", {}).get(s)
    if not theirs or any("truth_ratio" not in x for x in theirs):
        raise UserError(f"--retain-model {where}: its results have no truth ratios on dataset {s} (forget quality "
                        "needs them); give the retain model's folder to evaluate it on these rows")
    if [x.get("id") for x in theirs] != [row_hash(r) for r in rows[s]]:
        raise UserError(f"--retain-model {where}: its results were computed on other rows of dataset {s}; give the "
                        "retain model's folder to evaluate it on these rows")


def strict_json(res: dict) -> dict:
    """`res` with every float that is not finite (nan, inf) replaced by null, each such place named
    under `not_computed` with its value: strict JSON readers reject NaN and Infinity."""
    import math

    bad: dict[str, str] = {}

    def clean(x, where: str):
        if isinstance(x, float) and not math.isfinite(x):
            bad[where] = f"not a finite number ({x}); written as null"
            return None
        if isinstance(x, dict):
            return {k: clean(v, f"{where}.{k}" if where else str(k)) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v, f"{where}[{i}]") for i, v in enumerate(x)]
        return x

    out = clean({k: v for k, v in res.items() if k != "not_computed"}, "")
    out["not_computed"] = {**res.get("not_computed", {}), **bad}
    return out
