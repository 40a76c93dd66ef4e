"""The Python API. The CLI only parses arguments and calls these functions."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import UnlearnConfig, method_from_config, parse_config, to_dict
from .errors import UserError
from .inputs import check_sets, given_keys, is_unset, log_notes, refuse_mixed

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What one unlearning run produced."""

    output_dir: Path
    model_dir: Path
    method: str
    metrics: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


def prepare_output_dir(out: Path, overwrite: bool, resume: bool, model_path: str | None = None) -> None:
    """Refuse a non-empty output folder unless overwriting or resuming; never the model's own folder."""
    if model_path and Path(model_path).exists():
        mp = Path(model_path).resolve()
        if out.resolve() == mp or mp in out.resolve().parents:
            raise UserError(f"output_dir {out} is inside the input model folder; choose another folder")
    if out.exists() and any(out.iterdir()) and not resume:
        if not overwrite:
            raise UserError(f"output_dir {out} is not empty; pass --overwrite to replace it or --resume to continue")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def last_complete_checkpoint(out: Path) -> str | None:
    """The latest OUT/checkpoint-N that was written to the end (trainer_state.json is saved last);
    a checkpoint cut short by a crash is skipped, with a warning.

    Not transformers' `get_last_checkpoint`: it returns the newest checkpoint-N even when a crash
    cut it short (4.56 to 5.24 write checkpoints in place; tests/test_reliability.py asserts this),
    and 4.x has no `sort_checkpoints` to walk down from it."""
    import re

    found = sorted((int(m.group(1)), p) for p in Path(out).glob("checkpoint-*")
                   if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name)))
    for step, p in reversed(found):
        if (p / "trainer_state.json").exists():
            return str(p)
        logger.warning("checkpoint %s is incomplete (the run stopped while writing it); skipping it", p.name)
    return None


def frozen_names(names: list[str], patterns: str) -> list[str]:
    """The parameter names matching any comma-separated fnmatch pattern. A pattern that matches no name, or
    patterns that match every name (nothing left to train), is a UserError."""
    from fnmatch import fnmatchcase

    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    unmatched = [p for p in pats if not any(fnmatchcase(n, p) for n in names)]
    if unmatched:
        raise UserError(f"freeze pattern {unmatched[0]!r} matches no parameter of the model (names look like "
                        f"{names[0]!r})")
    frozen = [n for n in names if any(fnmatchcase(n, p) for p in pats)]
    if len(frozen) == len(names):
        raise UserError(f"freeze {patterns!r} matches every parameter: nothing would be trained")
    return frozen


def parameter_names(model_path: str, trust_remote_code: bool) -> list[str]:
    """The model's parameter names without loading its weights (built on the meta device from its config)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read model config in {model_path}: {str(e).splitlines()[0]}") from e
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return [n for n, _ in model.named_parameters()]


def choose_reference(requested: str, needs: set[str], lora: bool) -> str:
    """none when the method needs no reference; `cached` when it needs only forget log-probs;
    the adapter-disabled base under LoRA; otherwise a frozen copy. Explicit choices are checked."""
    if not needs:
        return "none"
    if requested == "auto":
        if needs <= {"forget_logps"}:
            return "cached"
        return "adapter" if lora else "copy"
    if requested == "cached" and not needs <= {"forget_logps"}:
        raise UserError(f"reference: cached provides only forget log-probs, but this method needs {sorted(needs)}; "
                        "use copy or adapter")
    return requested


def environment(trainer=None) -> dict:
    """The evaluation suite's environment record plus the training libraries and, given a trainer,
    world size, distributed type, device, effective batch and seed."""
    import accelerate
    import peft
    import trl

    from .evaluation.suite import environment as base_environment

    env = {**base_environment(), "peft": peft.__version__, "accelerate": accelerate.__version__,
           "trl": trl.__version__}
    if trainer is not None:
        a = trainer.args
        env.update(world_size=a.world_size, distributed_type=str(trainer.accelerator.distributed_type).split(".")[-1],
                   device=str(a.device), effective_batch=a.per_device_train_batch_size * a.gradient_accumulation_steps
                   * a.world_size, seed=a.seed)
    return env


def _check_processes(cfg) -> None:
    """Refuse processes started by a launcher that did not join one process group (e.g. an accelerate
    config with `use_cpu: true` but MULTI_GPU launched without ACCELERATE_USE_CPU=1): each would train
    alone on the full data and race to write the same folder."""
    import os

    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and cfg.world_size != launched:
        raise UserError(f"the launcher started {launched} processes but they did not join one process group "
                        f"(world size {cfg.world_size}); on CPU launch with ACCELERATE_USE_CPU=1 and a MULTI_GPU "
                        "config such as accelerate_configs/cpu_ddp.yaml")


def _lora_config(cfg: UnlearnConfig):
    """The peft LoraConfig of a recipe's lora_* options (used for our trainer and for trl's)."""
    from peft import LoraConfig

    targets = cfg.lora_target_modules
    targets = targets if targets == "all-linear" else [t.strip() for t in targets.split(",")]
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")


def _log_to_logger(trainer) -> None:
    """Trainer prints its logs when progress bars are off; send them to `logging` instead."""
    from transformers.trainer_callback import PrinterCallback, TrainerCallback

    class _LogCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if state.is_world_process_zero and logs:
                logger.info("step %d: %s", state.global_step,
                            ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items()))

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(_LogCallback())


def _reverse_decision(cfg, model, encoder, forget_companions, pad_id) -> dict:
    """{"mode", "used", and with auto "contrast", "companions"}: whether the rows' relations asked backwards
    join training (`reverse_rows`; auto: the starting model names the forget subjects from their facts,
    `data.reverse.links_backwards`: the contrast >= MIN_CONTRAST and >= Z_SE standard errors). Same rows and
    weights on every rank, so the same answer."""
    out = {"mode": cfg.reverse_rows, "used": cfg.reverse_rows == "true"}
    if cfg.reverse_rows == "auto":
        from .data.reverse import MIN_CONTRAST, Z_SE, links_backwards, reverse_contrast
        from .models import measure_device

        model.to(measure_device(cfg))  # where the Trainer puts it next (a no-op on CPU)
        m = reverse_contrast(model, encoder, forget_companions, pad_id, seed=cfg.seed,
                             batch_size=cfg.per_device_eval_batch_size)
        out.update(m, used=links_backwards(m), threshold=MIN_CONTRAST, z_se=Z_SE)
        if m["contrast"] is not None:
            logger.info("reverse_rows auto: the model's name contrast is %.3f ± %.3f nats per token (needs >= %.2f "
                        "and >= %g standard errors): relations asked backwards %s", m["contrast"], m["se"] or 0.0,
                        MIN_CONTRAST, Z_SE, "trained on too" if out["used"] else "left out")
    return out


def unlearn(config: UnlearnConfig | dict | str, **overrides) -> RunResult:
    """Run one unlearning recipe: `config` is an UnlearnConfig, a dict of options, or a recipe path;
    `overrides` replace recipe keys. Writes OUTPUT_DIR/{model/, recipe.yaml, results.json}."""
    import torch
    from transformers import set_seed

    from . import io
    from .data.encode import Encoder
    from .data.readers import read_rows
    from .models import check_model, load_model, load_tokenizer
    from .zoo import resolve_model_path
    from .trainer import Collator, Reference, TrainingDiverged, UnlearnDataset, UnlearnTrainer

    if isinstance(config, UnlearnConfig):
        cfg = config
    elif isinstance(config, dict):
        cfg = parse_config(None, {**config, **overrides})
    else:
        cfg = parse_config(config, overrides)
    t_start = time.perf_counter()
    out = Path(cfg.output_dir)
    # read and check all inputs before anything is built or written (a missing dataset stops here)
    described = None  # a request naming what to forget by description: probed below (llm_forget/probe.py)
    if cfg.request:  # a deletion request file names the forget rows (llm_forget/requests.py)
        from .requests import select

        req = select(cfg.request)
        described = req if req.description is not None else None
        forget_rows = req.resolve() if described is None else []
    else:
        forget_rows = read_rows(cfg.forget)
    retain_rows = None if is_unset(cfg.retain) else read_rows(cfg.retain)

    given = given_keys(config, overrides)
    holdout_rows, own, notes = check_sets(cfg, given, forget_rows, retain_rows)
    if cfg.retain_budget is not None and cfg.select_target == "holdout" and not holdout_rows:
        raise UserError("select_target holdout needs holdout rows (--holdout FILE): people or documents never "
                        "trained on, whose perplexity the forget set should reach")
    avoid = {str(r.get("question", "")).strip() for r in read_rows(cfg.select_avoid)} if cfg.select_avoid else None
    method = method_from_config(cfg)
    if cfg.retain_pairing == "similar" and getattr(method, "trainer", None) == "trl_dpo":
        raise UserError(f"retain_pairing similar is not available for {cfg.method} (its retain rows are drawn by "
                        "its DPO trainer); use stream")
    with cfg.main_process_first(local=False, desc="model"):  # a zoo model is built once, by rank 0
        model_path = resolve_model_path(cfg.model)
    check_model(model_path, cfg.trust_remote_code, cfg.allow_pickle)
    from .reporting.ledger import check_parent

    check_parent(model_path)  # a history that does not verify stops the run here, not after training
    tok = load_tokenizer(model_path, cfg.trust_remote_code)
    encoder = Encoder(tok, cfg.prompt_template, cfg.chat_template, cfg.max_length, cfg.overlong)
    probes = None
    if described is not None:
        from . import probe

        probes = probe.probe_request(described, model_path, cfg, tok, encoder, retain_rows)
        forget_rows, retain_rows = probes.forget, (retain_rows or []) + probes.retain
    given_forget, given_retain = forget_rows, retain_rows  # what calibration and evaluation measure
    from .selection import calibration_split

    # indices into the given rows, which stay the first rows of forget_rows / retain_rows
    split = calibration_split(given_forget, given_retain, holdout_rows, cfg.select_rows, cfg.seed, avoid) \
        if cfg.retain_budget is not None else {"calibration": {}, "evaluation": {}}
    ev_sets = {k: [rows[i] for i in split["evaluation"][k]] if k in split["evaluation"] else rows or []
               for k, rows in (("forget", given_forget), ("retain", given_retain), ("holdout", holdout_rows))}
    forget_enc = encoder.rows(forget_rows)
    retain_enc = encoder.rows(retain_rows) if retain_rows else None
    companions = None  # each row's relation asked backwards; those over max_length left out, never an error
    if cfg.reverse_rows != "false":
        from .data.reverse import fitting, with_reversed

        fc = with_reversed(forget_rows)[len(forget_rows):]
        rc = with_reversed(retain_rows)[len(retain_rows):] if retain_rows else []
        companions = (fc, rc, *fitting(encoder, fc))  # the forget ones fitted here: auto measures on them
    frozen = set(frozen_names(parameter_names(model_path, cfg.trust_remote_code), cfg.freeze)) \
        if not is_unset(cfg.freeze) else set()
    refuse_mixed(cfg, given, *own)  # last: a file's own errors come first
    log_notes(notes)
    _check_processes(cfg)
    with cfg.main_process_first(local=False, desc="output folder"):  # rank 0 clears it; the others then see it empty
        prepare_output_dir(out, cfg.overwrite, cfg.resume, model_path)

    set_seed(cfg.seed)
    model = load_model(model_path, cfg.dtype, cfg.trust_remote_code, cfg.allow_pickle)
    reverse = _reverse_decision(cfg, model, encoder, companions[2] if companions else [], tok.pad_token_id)
    if reverse["used"]:  # + the companions, after the given rows: trained on only (llm_forget/data/reverse.py)
        fc, rc, fc_fit, fc_enc = companions
        rc_fit, rc_enc = fitting(encoder, rc)  # encoded only now: under auto most runs never need them
        reverse["left_out"] = len(fc) - len(fc_fit) + len(rc) - len(rc_fit)
        if reverse["left_out"]:
            logger.warning("%d relations asked backwards are longer than max_length=%d and were left out",
                           reverse["left_out"], cfg.max_length)
        forget_rows, forget_enc = forget_rows + fc_fit, forget_enc + fc_enc
        if retain_rows:
            retain_rows, retain_enc = retain_rows + rc_fit, retain_enc + rc_enc
    if encoder.truncated:
        logger.warning("%d sequences were longer than max_length=%d and were truncated", encoder.truncated,
                       cfg.max_length)
    effective = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * cfg.world_size
    if cfg.dataloader_drop_last and len(forget_rows) < effective:
        logger.warning("the forget set (%d rows) is smaller than the effective batch (%d); keeping the "
                       "incomplete batch", len(forget_rows), effective)
        cfg.dataloader_drop_last = False
    lora = cfg.lora_r > 0
    if frozen:  # left untrained: the optimizer and the selection skip parameters without gradients
        for n, p in model.named_parameters():
            if n in frozen:
                p.requires_grad_(False)
        logger.info("freeze: %d of %d parameter tensors left untrained", len(frozen), len(list(model.parameters())))
    if lora and getattr(method, "trainer", None) != "trl_dpo":
        from peft import get_peft_model

        model = get_peft_model(model, _lora_config(cfg))
    method.setup(model)
    cfg.output_dir = str(out)

    if getattr(method, "trainer", None) == "trl_dpo":
        from .idk import build_dpo_trainer

        trainer = build_dpo_trainer(cfg, method, model, tok, encoder, forget_rows, _lora_config(cfg) if lora else None,
                                    retain_enc=retain_enc)
        ref_kind = "trl"
    else:
        ranked = None
        if cfg.retain_pairing == "similar" and retain_rows:
            from .pairing import similar_retain

            ranked = similar_retain(forget_rows, retain_rows)
        ds = UnlearnDataset(forget_enc, retain_enc, seed=cfg.seed, retain_per_forget=cfg.retain_per_forget,
                            ranked=ranked)
        collate = Collator(tok.pad_token_id)
        ref_kind = choose_reference(cfg.reference, method.reference_needs(), lora)
        reference = Reference(ref_kind, model)
        trainer = UnlearnTrainer(model=model, args=cfg, train_dataset=ds, data_collator=collate,
                                 processing_class=tok, method=method, reference=reference)
        if ref_kind == "cached":  # after the Trainer placed the model on its device; same on every rank
            reference.cache_forget_logps(trainer.model, ds, collate, cfg.per_device_eval_batch_size)
        if hasattr(method, "calibrate"):  # e.g. RMU's steering coefficient, from fixed forget rows, rank 0's
            method.calibrate(trainer.model, collate([{"index": i, "forget": forget_enc[i]}
                                                     for i in range(min(32, len(forget_enc)))])["forget"])
        if hasattr(method, "prepare_teacher"):  # e.g. swap_distill's teacher log-probs, from the starting model
            method.prepare_teacher(trainer.model, encoder, forget_rows, (retain_rows or []) + (holdout_rows or []),
                                   tok.pad_token_id, cfg.per_device_eval_batch_size, known_rows=retain_rows or [])
        if hasattr(method, "prepare_targets"):  # e.g. row_target's per-row levels: never-seen = calibration rows only
            from .selection import swapped_rows

            cal = split["calibration"]
            never = [holdout_rows[i] for i in cal["holdout"]] if holdout_rows and cal.get("holdout") else \
                swapped_rows([given_forget[i] for i in cal.get("forget", range(len(given_forget)))], cfg.seed)
            method.prepare_targets(trainer.model, encoder, forget_rows, never, retain_rows or [], tok.pad_token_id,
                                   cfg.per_device_eval_batch_size)
            ds.alternatives = method.alternatives
    _log_to_logger(trainer)
    selector = None
    if cfg.retain_budget is not None:  # calibration rows only; the evaluation reports on the others (`split`)
        from .selection import RetainBudgetSelector, swapped_rows

        cal = split["calibration"]
        reference, ref_enc, variants = "holdout", None, None
        if cfg.select_target in ("holdout", "retrain", "truth_ratio") and holdout_rows:
            ref_rows = [holdout_rows[i] for i in cal["holdout"]]
            ref_enc = encoder.rows(ref_rows)
            if cfg.select_target == "truth_ratio":  # truth ratios too, where both sides have perturbed answers
                from .data.benchmark import truth_ratio_correct_for
                from .selection import truth_ratio_variants

                correct = truth_ratio_correct_for(forget_rows)
                variants = [truth_ratio_variants(encoder, rs, correct)
                            for rs in ([forget_rows[i] for i in cal["forget"]], ref_rows)]
                variants = variants if all(variants) else None
                if variants is None:
                    logger.warning("select_target truth_ratio: not every calibration forget and holdout row has "
                                   "perturbed_answer; selecting on perplexity alone, as select_target retrain")
        elif cfg.select_target in ("retrain", "truth_ratio"):
            reference, ref_enc = "swapped", encoder.rows(swapped_rows([forget_rows[i] for i in cal["forget"]],
                                                                      cfg.seed)) or None
        selector = RetainBudgetSelector([forget_enc[i] for i in cal["forget"]], [retain_enc[i] for i in cal["retain"]],
                                        tok.pad_token_id, cfg.retain_budget, cfg.select_every, cfg.select_patience,
                                        cfg.per_device_eval_batch_size, holdout_items=ref_enc, reference=reference,
                                        auto_lr=cfg.select_lr == "auto", truth_ratio=variants,
                                        stall=cfg.select_stall, settle=method.fixed_point)
        trainer.add_callback(selector)
    resume_from = last_complete_checkpoint(out) if cfg.resume else None
    if cfg.resume and resume_from is None:
        logger.warning("no checkpoint in %s; starting from the beginning", out)
    if resume_from and selector is not None:
        logger.warning("retain_budget selection restarts at %s (its state is not in checkpoints); pass "
                       "--retain_budget none for a resume that matches an uninterrupted run exactly", resume_from)
    t0 = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=resume_from)
    except TrainingDiverged as e:
        if trainer.is_world_process_zero():
            with io.atomic_dir(out / "last_good") as d:
                trainer.model.save_pretrained(d, safe_serialization=True)
                tok.save_pretrained(d)
        raise TrainingDiverged(f"{e}; weights before that step are in {out / 'last_good'}") from None
    train_seconds = time.perf_counter() - t0
    model = trainer.model
    model_dir = out / "model"
    result = RunResult(out, model_dir, cfg.method, timings={"train_seconds": train_seconds})
    if selector is not None:  # part of train_seconds: the selection's measurements
        result.timings["select_seconds"] = round(selector.seconds, 3)
    ev = None
    sharded = trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled  # weights split over the ranks
    if not is_unset(cfg.eval_suite):  # every rank scores its shard; all get the result
        from .data.benchmark import truth_ratio_correct_for
        from .evaluation.quick import sharded_quick_eval

        with torch.no_grad():
            ev = sharded_quick_eval(model, encoder, ev_sets, cfg.per_device_eval_batch_size,
                                    shard=not sharded, truth_ratio_correct=truth_ratio_correct_for(forget_rows))
    state_dict = trainer.accelerator.get_state_dict(trainer.model_wrapped) if sharded else None  # collective
    if not trainer.is_world_process_zero():
        return result

    to_save = model.merge_and_unload() if (lora and cfg.merge and not sharded) else model
    with io.atomic_dir(model_dir) as d:
        to_save.save_pretrained(d, safe_serialization=True, **({"state_dict": state_dict} if sharded else {}))
        tok.save_pretrained(d)
    recipe = to_dict(cfg)
    import yaml

    from .selection import digest

    io.write_text(out / "recipe.yaml", yaml.safe_dump(recipe, sort_keys=False))
    if probes is not None:
        probe_text = probe.jsonl(probes)
        io.write_text(out / "probes.jsonl", probe_text)
    results = {"method": cfg.method, "model": cfg.model, "reference": ref_kind,
               "hyperparameters": {k: v for k, v in vars(method).items() if isinstance(v, (int, float, str))},
               "counts": {"forget": len(forget_rows), "retain": len(retain_rows or []),
                          "holdout": len(holdout_rows or []), "truncated": encoder.truncated},
               "steps": trainer.state.global_step, "notes": notes,
               "rows": {**split, "digest": {k: digest(v or []) for k, v in (("forget", forget_rows),
                                            ("retain", retain_rows), ("holdout", holdout_rows))}}}
    results["reverse_rows"] = reverse
    from .evaluation.calibrated import calibration_hashes

    results["rows"]["calibration_rows"] = {  # what `llm-forget eval` checks its rows against
        k: calibration_hashes(rows, split["calibration"][k]) for k, rows in (("retain", given_retain),
                                                                              ("holdout", holdout_rows))
        if rows and k in split["calibration"]}
    seen = getattr(trainer, "retain_seen", None)
    if seen is not None:
        results["counts"]["retain_trained"] = len(seen)
    if probes is not None:
        results["probes"] = probe.summary(probes, probe_text)
    if selector is not None:
        results["selection"] = selector.summary()
    if ev is not None:
        results["summary"] = ev["summary"]
        results["per_item"] = ev["per_item"]
        result.metrics = ev["summary"]
        result.timings["eval_seconds"] = ev["summary"]["eval_seconds"]
    result.timings["total_seconds"] = time.perf_counter() - t_start
    results["timings"] = result.timings
    results["environment"] = environment(trainer)
    io.write_json(out / "results.json", results)
    from .reporting import finalize_run

    finalize_run(out, results, cfg, forget_rows, model_path,  # ledger.jsonl + README.md model card
                 description=described.description if described is not None else None)
    logger.info("unlearned with %s in %.1fs; outputs in %s", cfg.method, train_seconds, out)
    return result
