"""Exact unlearning with SISA (Bourtoule et al., IEEE S&P 2021) over LoRA adapters.

Training (`train`): the fine-tuning rows are split into S shards, each shard into R slices.
Shard k gets its own LoRA adapter on one shared, frozen base model. Stage r (r = 0..R-1) of
shard k trains its adapter on slices 0..r of that shard (`epochs_per_slice` epochs, a fresh
AdamW, batch order seeded by (seed, shard, stage, epoch)), and the adapter is checkpointed
after every stage (`stage_00` is the seeded initialisation). Which row (by content hash)
lives in which shard and slice is recorded in `sisa_state.json` (deleted rows by number only);
a row present several times in the data keeps every copy, each where `assign` put it
(possibly in several shards).

Forgetting (`forget`): for every shard that holds a copy of a deleted row, restart from the
checkpoint taken before the first slice that held one and retrain the remaining stages without the
deleted rows. Shards without deleted rows are not touched. Because a stage depends only on
(the previous checkpoint, the rows of its slices, the seed), and CPU training is
deterministic, the result equals training that shard from scratch without the deleted rows
(`retrain_shard` recomputes that for audits; the tests check bit equality).

Modules: layout.py (config, shard/slice assignment, batches, cost), adapters.py (peft adapters,
checkpoints, one stage of training), model.py (`SisaModel`, `aggregate_logprobs`: the shards'
next-token distributions combined), this file (train, forget, retrain_shard).

Run folder: model/ (sisa.json, shard_KK.safetensors, tokenizer), shards/shard_KK/stage_RR.safetensors,
sisa_state.json, recipe.yaml, results.json, ledger.jsonl, README.md.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from ..errors import UserError
from ..inputs import is_unset
from .adapters import build_model, get_state, init_adapter, load, run_shard, save, set_state
from .layout import (AGGREGATIONS, CITATION, SisaConfig, assign, first_affected, shard_name, shard_seed,  # noqa: F401
                     stage_batches, stage_steps, validate)
from .model import SisaModel, aggregate_logprobs  # noqa: F401

logger = logging.getLogger(__name__)


def _ckpt(run: Path, k: int, r: int) -> Path:
    return run / "shards" / shard_name(k) / f"stage_{r:02d}.safetensors"


def _encode(cfg: SisaConfig, tok, rows: list[dict]) -> dict:
    from ..data.encode import Encoder
    from ..data.readers import row_hash

    encoder = Encoder(tok, cfg.prompt_template, cfg.chat_template, cfg.max_length)
    return dict(zip(map(row_hash, rows), encoder.rows(rows))), encoder


def _evaluate(model: SisaModel, encoder, sets: dict, batch: int) -> dict:
    from ..evaluation.quick import quick_eval

    with torch.no_grad():
        return quick_eval(model, encoder, sets, batch)


def _meta(cfg: SisaConfig) -> dict:
    return {"model": cfg.model, "lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha,
            "lora_target_modules": cfg.lora_target_modules, "format": "llm_forget.sisa/1"}


def _deleted(state: dict) -> int:
    """Rows deleted so far. The state keeps their number only: a list of their plain sha256 (as
    written before llm_forget.sisa/2 state files) would let anyone holding it confirm a guess."""
    d = state.get("deleted", 0)
    return d if isinstance(d, int) else len(d)


def _results(cfg, state, summary, per_item, timings, extra=None) -> dict:
    from ..api import environment

    res = {"method": "sisa", "model": cfg.model, "citation": CITATION,
           "hyperparameters": {k: getattr(cfg, k) for k in ("shards", "slices", "epochs_per_slice", "learning_rate",
                                                            "batch_size", "lora_r", "lora_alpha", "aggregation", "seed")},
           "counts": {"train": sum(len(s) for sh in state["layout"] for s in sh), "deleted": _deleted(state),
                      "shards": cfg.shards, "slices": cfg.slices},
           "steps": sum(sum(s) for s in state["steps"]), "timings": timings, "environment": environment()}
    if summary is not None:
        res["summary"], res["per_item"] = summary, per_item
    if extra:
        res.update(extra)
    return res


def train(config: SisaConfig | str | dict | None = None, **overrides) -> dict:
    """`llm-forget sisa train`: train S shard adapters in R slices; write the run folder.
    Returns {"output_dir", "steps", "train_seconds", "summary"}."""
    import yaml

    from .. import io
    from ..api import prepare_output_dir
    from ..config import build_config, load_yaml, to_dict
    from ..data.readers import read_rows, row_hash
    from ..models import load_tokenizer
    from ..zoo import resolve_model_path
    from ..reporting import card, ledger, record

    if isinstance(config, SisaConfig):
        cfg = config
    else:
        values = load_yaml(config) if isinstance(config, (str, Path)) else dict(config or {})
        values.update(overrides)
        cfg = build_config(SisaConfig, values)
    validate(cfg)
    t0 = time.perf_counter()
    model_path = resolve_model_path(cfg.model)
    rows = read_rows(cfg.data)
    holdout = [] if is_unset(cfg.holdout) else read_rows(cfg.holdout)
    if len(rows) < cfg.shards * cfg.slices:
        raise UserError(f"{len(rows)} rows cannot fill {cfg.shards} shards x {cfg.slices} slices")
    hashes = [row_hash(r) for r in rows]
    layout = [[[hashes[i] for i in sl] for sl in shard] for shard in assign(len(rows), cfg.shards, cfg.slices, cfg.seed)]
    tok = load_tokenizer(model_path)
    enc, encoder = _encode(cfg, tok, rows)
    out = Path(cfg.output_dir)
    prepare_output_dir(out, cfg.overwrite, False, model_path)
    torch.manual_seed(cfg.seed)
    model = build_model(model_path, cfg)
    steps = []
    for k in range(cfg.shards):
        init_adapter(model, shard_name(k), shard_seed(cfg.seed, k))
        save(get_state(model, shard_name(k)), _ckpt(out, k, 0))
        steps.append(run_shard(model, k, layout[k], enc, cfg, tok.pad_token_id,
                               on_stage=lambda r, s, k=k: save(s, _ckpt(out, k, r))))
    train_seconds = time.perf_counter() - t0
    agg = SisaModel(model, cfg.shards, cfg.aggregation, _meta(cfg))
    agg.save_pretrained(out / "model", tok)
    state = {"layout": layout, "deleted": 0, "steps": steps, "operations": []}
    io.write_json(out / "sisa_state.json", state)
    io.write_text(out / "recipe.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    summary = per_item = None
    if not is_unset(cfg.eval_suite):
        ev = _evaluate(agg, encoder, {"retain": rows, "holdout": holdout}, 2 * cfg.batch_size)
        summary, per_item = ev["summary"], ev["per_item"]
    results = _results(cfg, state, summary, per_item, {"train_seconds": train_seconds})
    io.write_json(out / "results.json", results)
    record(out, input_model=model_path, model_dir=out / "model", parent=ledger.find_parent(model_path),
           signing_key=cfg.signing_key, kind="train", operation="sisa_train", forgotten_hashes=[], method="sisa",
           hyperparameters=results["hyperparameters"], evaluation=summary, counts=results["counts"],
           extra={"steps": results["steps"], "layout_sha256": ledger.set_digest(hashes)})
    card.write_card(out)
    logger.info("SISA: %d shards x %d slices, %d steps in %.1fs; outputs in %s", cfg.shards, cfg.slices,
                results["steps"], train_seconds, out)
    return {"output_dir": str(out), "steps": results["steps"], "train_seconds": train_seconds, "summary": summary}


def load_run(run_dir: str | Path) -> tuple[SisaConfig, dict]:
    import yaml

    from ..config import build_config

    run = Path(run_dir)
    if not (run / "sisa_state.json").is_file() or not (run / "recipe.yaml").is_file():
        raise UserError(f"{run_dir} is not a SISA run folder (no sisa_state.json / recipe.yaml)")
    cfg = build_config(SisaConfig, yaml.safe_load((run / "recipe.yaml").read_text(encoding="utf-8")) or {})
    return cfg, json.loads((run / "sisa_state.json").read_text(encoding="utf-8"))


def _training_encodings(cfg, state, tok):
    """(encodings by row hash, encoder, rows) of the training data, read again; every row still
    in the layout must be there."""
    from ..data.readers import read_rows

    rows = read_rows(cfg.data)
    enc, encoder = _encode(cfg, tok, rows)
    missing = {h for sh in state["layout"] for sl in sh for h in sl} - set(enc)
    if missing:
        raise UserError(f"{len(missing)} training rows of this SISA run are no longer in {cfg.data}; "
                        "the training data changed, so shards cannot be retrained exactly")
    return enc, encoder, rows


def retrain_shard(run_dir: str | Path, k: int) -> dict[str, torch.Tensor]:
    """Shard k trained from scratch (seeded initialisation, every stage) on the rows its layout
    holds now: what `forget` must equal. Writes nothing."""
    from ..models import load_tokenizer
    from ..zoo import resolve_model_path

    cfg, state = load_run(run_dir)
    path = resolve_model_path(cfg.model)
    tok = load_tokenizer(path)
    enc, _, _ = _training_encodings(cfg, state, tok)
    torch.manual_seed(cfg.seed)
    model = build_model(path, cfg)
    init_adapter(model, shard_name(k), shard_seed(cfg.seed, k))
    run_shard(model, k, state["layout"][k], enc, cfg, tok.pad_token_id)
    return get_state(model, shard_name(k))


def forget(run_dir: str | Path, request: str, signing_key: str | None = None) -> dict:
    """`llm-forget sisa forget RUN_DIR --request FILE`: delete the request's rows exactly, in place:
    every copy of each row, in every shard that holds one. The ledger entry is signed with
    `signing_key` (default: the run's recipe setting, else the per-user key).
    Returns the cost: shards retrained, steps retrained, steps a full retraining would take."""
    from .. import io
    from ..data.readers import read_rows, row_hash
    from ..models import load_tokenizer
    from ..zoo import resolve_model_path
    from ..reporting import card, ledger
    from ..reporting.fingerprint import model_fingerprint, model_fingerprint_for
    from ..requests import select

    run = Path(run_dir)
    cfg, state = load_run(run)
    req = select(request)
    want = {row_hash(r) for r in req.resolve()}
    layout = state["layout"]
    found = sorted(want & {h for sh in layout for sl in sh for h in sl})
    if not found:
        raise UserError(f"none of the {len(want)} requested rows is in this SISA run's remaining training data")
    if len(found) < len(want):
        logger.warning("%d of %d requested rows are not in the training data (or already deleted)",
                       len(want) - len(found), len(want))
    drop = set(found)
    first = first_affected(layout, drop)  # every shard holding a copy of a deleted row
    copies = sum(h in drop for sh in layout for sl in sh for h in sl)
    new_layout = [[[h for h in sl if h not in drop] for sl in sh] for sh in layout]
    path = resolve_model_path(cfg.model)
    tok = load_tokenizer(path)
    enc, encoder, rows = _training_encodings(cfg, state, tok)
    before = model_fingerprint(run / "model")
    prev = ledger.read(run) if (run / ledger.LEDGER).is_file() else []
    legacy = ({"model_before_v1": model_fingerprint_for(run / "model", 1)}
              if prev and prev[-1].get("version", 1) < 2 else {})
    t0 = time.perf_counter()
    model = build_model(path, cfg)
    new_ckpts: dict[Path, dict] = {}
    retrained = 0
    new_steps = [list(s) for s in state["steps"]]
    for k in sorted(first):
        r0 = first[k]
        set_state(model, shard_name(k), load(_ckpt(run, k, r0)))
        steps = run_shard(model, k, new_layout[k], enc, cfg, tok.pad_token_id, start=r0,
                          on_stage=lambda r, s, k=k: new_ckpts.__setitem__(_ckpt(run, k, r), s))
        retrained += sum(steps)
        new_steps[k][r0:] = steps
    seconds = time.perf_counter() - t0
    full = sum(sum(stage_steps(sh, cfg)) for sh in new_layout)
    # everything computed: now write (checkpoints, model, state, results, ledger, card)
    for p, s in new_ckpts.items():
        save(s, p)
    for k in range(cfg.shards):
        if k not in first:
            set_state(model, shard_name(k), load(_ckpt(run, k, cfg.slices)))
    model.eval()
    agg = SisaModel(model, cfg.shards, cfg.aggregation, _meta(cfg))
    agg.save_pretrained(run / "model", tok)
    cost = {"shards_retrained": sorted(first), "steps_retrained": retrained, "full_retrain_steps": full,
            "fraction_of_full": retrained / full if full else 0.0, "seconds": seconds}
    state.update(layout=new_layout, deleted=_deleted(state) + len(found), steps=new_steps)
    state["operations"].append({"request_id": req.id, "deleted": len(found), "copies_deleted": copies, **cost})
    io.write_json(run / "sisa_state.json", state)
    summary = per_item = None
    if not is_unset(cfg.eval_suite):
        remaining = {h for sh in new_layout for sl in sh for h in sl}
        keep = [r for r in rows if row_hash(r) in remaining]
        gone = [r for r in rows if row_hash(r) in drop]
        holdout = [] if is_unset(cfg.holdout) else read_rows(cfg.holdout)
        ev = _evaluate(agg, encoder, {"forget": gone, "retain": keep, "holdout": holdout}, 2 * cfg.batch_size)
        summary, per_item = ev["summary"], ev["per_item"]
    results = _results(cfg, state, summary, per_item, {"forget_seconds": seconds}, {"sisa_forget": cost})
    io.write_json(run / "results.json", results)
    entry = ledger.new_entry(kind=req.kind, operation="sisa_forget", forgotten_hashes=found, method="sisa",
                             hyperparameters=results["hyperparameters"], model_before=before,
                             model_after=model_fingerprint(run / "model"), evaluation=summary,
                             counts={"deleted": len(found), "copies_deleted": copies, "requested": len(want)},
                             request_id=req.id, extra={"cost": cost, **legacy})
    ledger.append(run, entry, signing_key=signing_key or cfg.signing_key)
    card.write_card(run)
    logger.info("SISA forget: %d rows, shards %s retrained, %d of %d steps (%.0f%% of full retraining)",
                len(found), cost["shards_retrained"], retrained, full, 100 * cost["fraction_of_full"])
    return cost
