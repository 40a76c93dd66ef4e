"""`llm_forget.edit(...)`: one editing run from a recipe, a dict or an EditConfig.

Writes OUTPUT_DIR/{model/ (unless restore or save_model is false), recipe.yaml, results.json};
results hold both metric families before and after the edit, timings and per-layer logs. A saved model gets a
ledger entry (operation "edit": the requests fingerprinted as prompt/new-target rows, continuing the input model's
ledger) and a Hub model card README.md, as unlearning runs do; so does task-vector negation (its forget rows).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from .config import EditConfig, parse_layers, validate  # noqa: F401  (EditConfig re-exported)

logger = logging.getLogger(__name__)

CITATIONS = {  # the model card's citation of each editing method
    "rome": "Meng et al., Locating and Editing Factual Associations in GPT, NeurIPS 2022",
    "memit": "Meng et al., Mass-Editing Memory in a Transformer, ICLR 2023",
    "alphaedit": "Fang et al., AlphaEdit: Null-Space Constrained Knowledge Editing for Language Models, ICLR 2025",
    "lora_edit": "Hu et al., LoRA: Low-Rank Adaptation of Large Language Models, ICLR 2022",
}


@dataclass
class EditRun:
    output_dir: Path
    method: str
    metrics: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    model: object = None


def _config(config, overrides) -> EditConfig:
    from ..config import build_config, load_yaml, parse_overrides

    if isinstance(config, EditConfig):
        values = {k: v for k, v in vars(config).items()}
    elif isinstance(config, dict):
        values = dict(config)
    elif config is None:
        values = {}
    else:
        from ..recipes_index import resolve_recipe

        values = load_yaml(resolve_recipe(str(config)))
    values.update(parse_overrides(overrides) if isinstance(overrides, list) else overrides)
    cfg = build_config(EditConfig, values)
    validate(cfg)
    return cfg


def value_config(cfg: EditConfig):
    from .locate import ValueConfig

    rome = cfg.method == "rome"
    return ValueConfig(steps=cfg.v_steps, lr=cfg.v_lr, kl_factor=cfg.kl_factor,
                       weight_decay=cfg.v_weight_decay if cfg.v_weight_decay is not None else (1e-3 if rome else 0.5),
                       clamp_norm=cfg.clamp_norm if cfg.clamp_norm is not None else (4.0 if rome else 0.75),
                       n_prefixes=cfg.n_value_prefixes)


def arch_overrides(cfg: EditConfig) -> dict:
    o = {"layers": cfg.arch_layers, "mlp_out": cfg.arch_mlp_out, "conv1d": cfg.arch_conv1d}
    return {k: v for k, v in o.items() if v is not None}


def evaluate_edits(model, tok, requests, pre_locality=None) -> dict:
    """Both families: CounterFact probability metrics (needs target_true) and zsRE token accuracy
    (locality only with `pre_locality`, the unedited model's argmax from `locality_argmax`)."""
    from .metrics_counterfact import counterfact_metrics
    from .metrics_zsre import zsre_metrics

    out = {}
    if any(r.target_true for r in requests):
        out["counterfact"] = counterfact_metrics(model, tok, requests)["summary"]
    out["zsre"] = zsre_metrics(model, tok, requests, pre_locality)["summary"]
    return out


def apply_edits(model, tok, requests, cfg: EditConfig, progress: bool = True):
    """Run the locate-then-edit or LoRA method of `cfg` on `model` in place. Returns
    (model, EditResult or None, timings)."""
    from ..models import arch_for
    from .locate import context_prefixes

    arch = arch_for(model, arch_overrides(cfg) or None)
    layers = parse_layers(cfg.layers)
    timings = {}
    bs = cfg.batch_size if cfg.mode == "sequential" else None
    if cfg.method == "lora_edit":
        from .lora_edit import LoraEditConfig, lora_edit

        t = time.perf_counter()
        lcfg = LoraEditConfig(r=cfg.lora_r, alpha=2 * cfg.lora_r, steps=cfg.lora_steps, lr=cfg.lora_lr,
                              kl_weight=cfg.lora_kl_weight, target_modules=cfg.lora_target_modules,
                              layers=layers if cfg.lora_target_modules == "mlp_out" else None, seed=cfg.seed)
        model = lora_edit(model, tok, requests, lcfg, arch, progress)
        timings["edit_seconds"] = time.perf_counter() - t
        return model, None, timings
    from .covariance import second_moments

    rome_layers = layers[:1]
    stat_layers = rome_layers if cfg.method == "rome" else layers
    t = time.perf_counter()
    Cs = second_moments(model, tok, stat_layers, cfg.corpus, cfg.n_tokens, cfg.seq_len, arch=arch)
    timings["stats_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    kp = context_prefixes(model, tok, cfg.n_key_prefixes, cfg.prefix_length, cfg.seed)
    vp = kp[: cfg.n_value_prefixes + 1]
    vcfg = value_config(cfg)
    table = None
    if cfg.batch_eval and cfg.method in ("memit", "alphaedit") and bs:
        from .lifelong import StreamTable

        table = StreamTable(model, tok, requests[:bs])
    more = {"v_batch": cfg.v_batch_size, "cache": cfg.targets_cache,
            "after_batch": table.after_batch if table else None}
    if cfg.method == "rome":
        from .rome import rome_edit

        res = rome_edit(model, tok, requests, rome_layers[0], Cs[rome_layers[0]], kp, vp, arch, vcfg,
                        progress=progress)
    elif cfg.method == "memit":
        from .memit import memit_edit

        res = memit_edit(model, tok, requests, layers, Cs, kp, vp, arch, vcfg, cfg.mom2_weight, bs,
                         progress=progress, **more)
    else:
        from .alphaedit import AlphaEditState, alphaedit_edit

        state = AlphaEditState.from_moments(Cs, cfg.nullspace_threshold)
        res = alphaedit_edit(model, tok, requests, layers, state, kp, vp, arch, vcfg, cfg.l2, bs, progress=progress,
                             **more)
    timings["edit_seconds"] = time.perf_counter() - t
    res.per_batch = table.rows if table else None
    res.timings = timings
    return model, res, timings


def check_inputs(cfg: EditConfig, model_path: str) -> None:
    """Every file a run reads, checked before anything is written or computed (UserError): the
    model, the key-statistics corpus of locate-then-edit methods, a task vector's given models."""
    from ..models import check_model

    check_model(model_path)
    if cfg.method in ("rome", "memit", "alphaedit"):
        from .covariance import corpus_text

        if ":" not in cfg.corpus and not Path(cfg.corpus).expanduser().exists():
            raise UserError(f"corpus {cfg.corpus} does not exist (text for the key statistics: --corpus FILE)")
        corpus_text(cfg.corpus)
    for given in (cfg.reinforced, cfg.reinforced_retain) if cfg.method == "task_vector" else ():
        if given:
            check_model(given)


def edit(config: EditConfig | dict | str | None = None, **overrides) -> EditRun:
    """Run one editing recipe (see `EditConfig` for every option). Returns an EditRun whose
    `metrics` hold {"pre": ..., "post": ...} for locate-then-edit and LoRA editing, or the λ
    sweep for task vectors."""
    import torch
    import yaml

    from .. import io
    from ..api import environment, prepare_output_dir
    from ..config import to_dict
    from ..models import load_model, load_tokenizer
    from ..reporting.ledger import check_parent
    from ..zoo import resolve_model_path

    cfg = _config(config, overrides)
    out = Path(cfg.output_dir)
    if cfg.method == "task_vector":
        model_path = resolve_model_path(cfg.model)
        check_inputs(cfg, model_path)
        check_parent(model_path)  # a history that does not verify stops the run before any fine-tuning
        return _task_vector(cfg, model_path, out)
    from .requests import read_requests

    # the data first: a missing dataset stops the run before any model is built or loaded
    requests = read_requests(cfg.requests, cfg.format, cfg.n_requests)
    if cfg.method in ("rome", "memit", "alphaedit"):
        from .covariance import corpus_text

        corpus_text(cfg.corpus)
    model_path = resolve_model_path(cfg.model)
    check_inputs(cfg, model_path)
    check_parent(model_path)  # the edited model continues the input model's ledger, which must verify
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    prepare_output_dir(out, cfg.overwrite, False, model_path)
    tok = load_tokenizer(model_path)
    model = load_model(model_path, cfg.dtype)
    if cfg.dtype in ("float16", "fp16", "bfloat16", "bf16"):
        logger.warning("editing in %s: statistics and solves still run in fp32/fp64", cfg.dtype)
    results = {"method": cfg.method, "model": cfg.model, "n_requests": len(requests)}
    from .metrics_zsre import locality_argmax

    with torch.no_grad():
        pre_loc = locality_argmax(model, tok, requests) if cfg.eval else None
        results["pre"] = evaluate_edits(model, tok, requests) if cfg.eval else {}
    model, res, timings = apply_edits(model, tok, requests, cfg)
    if cfg.eval:
        with torch.no_grad():
            post = evaluate_edits(model, tok, requests, pre_loc)
            if cfg.fluency_prompts:
                from .metrics_counterfact import fluency

                post["fluency"] = fluency(model, tok, [r.prompt for r in requests[:cfg.fluency_prompts]])
        results["post"] = post
    results["log"] = res.log if res else []
    if res is not None and getattr(res, "per_batch", None):
        results["per_batch"] = res.per_batch
    if res:
        results["weight_change"] = res.weight_change()
    timings["total_seconds"] = time.perf_counter() - t0
    results["timings"] = timings
    results["environment"] = environment()
    saved = cfg.save_model and not (res and cfg.restore)
    if res and cfg.restore:
        res.restore()
    elif cfg.save_model:
        with io.atomic_dir(out / "model") as d:
            model.save_pretrained(d, safe_serialization=True)
            tok.save_pretrained(d)
    io.write_text(out / "recipe.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    if saved:  # what the card and the ledger entry carry
        results.update(citation=CITATIONS.get(cfg.method, ""), counts={"edits": len(requests)},
                       summary={k: v for family in ("counterfact", "zsre") for k, v in
                                results.get("post", {}).get(family, {}).items() if k != "n_requests"})
        if "fluency" in results.get("post", {}):
            results["summary"]["fluency"] = results["post"]["fluency"]
    io.write_json(out / "results.json", results)
    if saved:
        from ..reporting import finalize_run

        rows = [{"question": r.prompt, "answer": r.target_new} for r in requests]  # fingerprinted like rows
        finalize_run(out, results, cfg, rows, model_path, operation="edit", kind="edit")
    logger.info("%s: %d edits in %.1fs; outputs in %s", cfg.method, len(requests), timings.get("edit_seconds", 0), out)
    return EditRun(out, cfg.method, {k: results[k] for k in ("pre", "post") if k in results}, timings, model)


def _task_vector(cfg: EditConfig, model_path: str, out: Path) -> EditRun:
    """Negation: build (or take) θ_reinf and, with retain_weight β > 0, θ_retain; sweep λ; save
    θ_target − λ·τ, τ = (θ_reinf − θ_target) − β·(θ_retain − θ_target), and τ."""
    from .. import io
    from ..api import prepare_output_dir
    from ..data.readers import read_rows
    from ..models import load_model, load_tokenizer
    from ..selection import calibration_split
    from . import task_vectors as tv

    forget, retain = read_rows(cfg.forget), read_rows(cfg.retain)
    lambdas = [float(x) for x in cfg.lambdas.split(",")]
    prepare_output_dir(out, cfg.overwrite, False, model_path)
    t0 = time.perf_counter()

    # both fine-tunes take the steps of reinforce_epochs over the forget set (answers only, eos left out)
    steps = math.ceil(cfg.reinforce_epochs * math.ceil(len(forget) / cfg.reinforce_batch_size))

    def reinforce(rows, name):
        from ..finetune import finetune

        return finetune(model_path, rows, out / name, learning_rate=cfg.reinforce_lr, max_steps=steps,
                        batch_size=cfg.reinforce_batch_size, seed=cfg.seed, warmup_ratio=0.0,
                        lr_scheduler_type="constant", answer_eos=False, progress=False)["output_dir"]

    reinforced = cfg.reinforced or reinforce(forget, "reinforced")
    model = load_model(model_path, "float32")
    theta = model.state_dict()
    tau = tv.task_vector(theta, load_model(reinforced, "float32").state_dict())
    meta = {"target": cfg.model, "reinforced": reinforced, "retain_weight": cfg.retain_weight}
    if cfg.retain_weight > 0:
        retained = cfg.reinforced_retain or reinforce(retain, "reinforced_retain")
        tau = tv.combine(tau, tv.task_vector(theta, load_model(retained, "float32").state_dict()), -cfg.retain_weight)
        meta["reinforced_retain"] = retained
    t_reinforce = time.perf_counter() - t0
    split = calibration_split(forget, retain, None, cfg.select_rows, cfg.seed)  # λ is chosen on whole people
    cal, held = ([retain[i] for i in split[part].get("retain", [])] for part in ("calibration", "evaluation"))
    sw = tv.sweep(model_path, tau, lambdas, forget, cal, cfg.fraction, out_dir=out, utility=cfg.utility,
                  refine=cfg.lambda_refine, held_out=held)
    evaluation = sw.pop("evaluation")  # results.json keeps it beside the sweep, as the top-level "evaluation"
    if sw["chosen"] is not None and not held:
        logger.warning("the retain set has a single person/document: the chosen λ's utility is reported on the "
                       "rows that chose it (give a retain set with several people)")
    tv.save(tau, out / "task_vector.safetensors", meta)
    if sw["chosen"] is None:
        logger.warning("no λ keeps retain %s ≥ %g of the target's; nothing saved as model/", cfg.utility, cfg.fraction)
    elif cfg.save_model:
        model.load_state_dict(tv.apply(theta, tau, -sw["chosen"]["lambda"]))
        with io.atomic_dir(out / "model") as d:
            model.save_pretrained(d, safe_serialization=True)
            load_tokenizer(model_path).save_pretrained(d)
    import yaml

    from ..config import to_dict
    from ..evaluation.calibrated import calibration_hashes

    io.write_text(out / "recipe.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    timings = {"reinforce_seconds": t_reinforce, "total_seconds": time.perf_counter() - t0}
    rows = {**split, "calibration_rows": {"retain": calibration_hashes(retain, split["calibration"].get("retain", []))}}
    results = {"method": "task_vector", "model": cfg.model, "citation": tv.CITATION, "task_vector": meta, "sweep": sw,
               "evaluation": evaluation, "rows": rows, "timings": timings,
               "counts": {"forget": len(forget), "retain": len(retain), "retain_calibration": len(cal)}}
    if sw["chosen"] is not None:
        results["hyperparameters"] = {"lambda": sw["chosen"]["lambda"], "retain_weight": cfg.retain_weight,
                                      "fraction": cfg.fraction, "utility": cfg.utility}  # + the fine-tunes' settings
        ev = evaluation["chosen"] if evaluation else sw["chosen"]  # the card reports rows the choice never saw
        results["summary"] = {k: ev[k] for k in ("forget_perplexity", "forget_probability", "retain_perplexity",
                                                 "retain_probability")}
        results["notes"] = [f"retain numbers are on the {evaluation['retain_rows']} retain rows (whole people) that "
                            f"did not choose λ" if evaluation else "retain numbers are on the rows that chose λ "
                            "(the retain set has a single person/document)"]
    io.write_json(out / "results.json", results)
    if sw["chosen"] is not None and cfg.save_model:
        from ..reporting import finalize_run

        finalize_run(out, results, cfg, forget, model_path)  # ledger.jsonl + README.md model card
    return EditRun(out, "task_vector", {"sweep": sw, "evaluation": evaluation}, timings, None)


def layer_sweep(model, tokenizer, requests, layers, corpus: str, n_tokens: int = 20000, **cfg_overrides) -> list[dict]:
    """ROME at each layer in turn on `requests` (weights restored after each): efficacy and
    neighbourhood scores per layer, so users of a new model can choose where to edit."""
    from ..models import arch_for
    from .covariance import second_moments
    from .locate import context_prefixes
    from .metrics_counterfact import counterfact_metrics
    from .rome import rome_edit

    if not requests:
        raise UserError("layer_sweep needs at least one request")
    cfg = EditConfig(method="rome", output_dir="-", requests="-", **cfg_overrides)
    arch = arch_for(model, arch_overrides(cfg) or None)
    Cs = second_moments(model, tokenizer, layers, corpus, n_tokens, cfg.seq_len, arch=arch)
    kp = context_prefixes(model, tokenizer, cfg.n_key_prefixes, cfg.prefix_length, cfg.seed)
    rows = []
    for layer in layers:
        res = rome_edit(model, tokenizer, requests, layer, Cs[layer], kp, kp[: cfg.n_value_prefixes + 1], arch,
                        value_config(cfg), progress=False)
        m = counterfact_metrics(model, tokenizer, requests)["summary"] if any(r.target_true for r in requests) else {}
        from .metrics_zsre import zsre_metrics

        rows.append({"layer": layer, **{k: m[k] for k in ("efficacy_score", "paraphrase_score",
                                                             "neighbourhood_score") if k in m},
                     "reliability": zsre_metrics(model, tokenizer, requests)["summary"]["reliability"]})
        res.restore()
    return rows
