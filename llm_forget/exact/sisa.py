"""Exact unlearning with SISA (Bourtoule et al., IEEE S&P 2021) over LoRA adapters.

Training (`train`): the fine-tuning rows are split into S shards, each shard into R slices.
Shard k gets its own LoRA adapter on one shared, frozen base model. Stage r (r = 0..R-1) of
shard k trains its adapter on slices 0..r of that shard (`epochs_per_slice` epochs, a fresh
AdamW, batch order seeded by (seed, shard, stage, epoch)), and the adapter is checkpointed
after every stage (`stage_00` is the seeded initialisation). Which row (by content hash)
lives in which shard and slice is recorded in `sisa_state.json`.

Forgetting (`forget`): for every shard that holds a deleted row, restart from the checkpoint
taken before the first slice that held one and retrain the remaining stages without the
deleted rows. Shards without deleted rows are not touched. Because a stage depends only on
(the previous checkpoint, the rows of its slices, the seed), and CPU training is
deterministic, the result equals training that shard from scratch without the deleted rows
(`retrain_shard` recomputes that for audits; the tests check max |diff| <= 1e-6).

Inference (`SisaModel`): the shards' next-token distributions are aggregated
(`aggregate_logprobs`): `logprob_mean` (default) averages the shards' log-probabilities and
renormalises (a product of experts); `prob_mean` averages the probabilities (a mixture).

Run folder: model/ (sisa.json, shard_KK.safetensors, tokenizer), shards/shard_KK/stage_RR.safetensors,
sisa_state.json, recipe.yaml, results.json, ledger.jsonl, README.md.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import UserError

logger = logging.getLogger(__name__)

CITATION = ("Bourtoule et al., Machine Unlearning, IEEE S&P 2021 "
            "(SISA: Sharded, Isolated, Sliced, and Aggregated training)")
AGGREGATIONS = ("logprob_mean", "prob_mean")


def _f(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class SisaConfig:
    model: str = _f("tiny", "base model (folder, zoo name or Hub id); stays frozen, shared by all shards")
    data: str = _f("builtin:train", "fine-tuning rows (data spec): what the shards are trained on")
    holdout: str | None = _f("builtin:holdout", "rows never trained on (membership non-members); none to skip")
    output_dir: str | None = _f(None, "run folder")
    shards: int = _f(4, "S: number of shards (one LoRA adapter each)")
    slices: int = _f(4, "R: slices per shard (a checkpoint after each)")
    epochs_per_slice: int = _f(2, "epochs over slices 0..r at stage r")
    learning_rate: float = _f(1e-3, "AdamW learning rate")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    batch_size: int = _f(8, "rows per step")
    lora_r: int = _f(8, "LoRA rank")
    lora_alpha: int = _f(16, "LoRA alpha")
    lora_target_modules: str = _f("all-linear", "LoRA target modules (comma list or all-linear)")
    aggregation: str = _f("logprob_mean", "logprob_mean (average log-probs, renormalised) or prob_mean (mixture)")
    seed: int = _f(0, "seed of the shard assignment, adapter initialisation and batch order")
    max_length: int = _f(256, "longest sequence in tokens")
    prompt_template: str = _f("Question: {question}\nAnswer:", "prompt for question/answer rows")
    chat_template: bool = _f(False, "wrap questions in the tokenizer's chat template")
    eval_suite: str | None = _f("quick", "evaluation after training / forgetting: quick or none")
    overwrite: bool = _f(False, "replace an existing non-empty output_dir")


def validate(cfg: SisaConfig) -> None:
    checks = [(cfg.output_dir is not None, "output_dir is not set; pass --output_dir DIR"),
              (cfg.shards >= 1, "shards must be >= 1"), (cfg.slices >= 1, "slices must be >= 1"),
              (cfg.epochs_per_slice >= 1, "epochs_per_slice must be >= 1"),
              (cfg.batch_size >= 1, "batch_size must be >= 1"), (cfg.lora_r >= 1, "lora_r must be >= 1"),
              (cfg.learning_rate > 0 and math.isfinite(cfg.learning_rate), "learning_rate must be > 0"),
              (cfg.aggregation in AGGREGATIONS, f"aggregation must be one of {', '.join(AGGREGATIONS)}")]
    for ok, msg in checks:
        if not ok:
            raise UserError(msg)


# ------------------------------------------------------------------------------------ pure pieces

def aggregate_logprobs(logps: torch.Tensor, how: str = "logprob_mean") -> torch.Tensor:
    """Combine S shards' next-token log-probabilities, logps (S, ..., V), into one normalised
    log-distribution (..., V).

    logprob_mean: log p(v) = m(v) − logsumexp_u m(u),  m(v) = (1/S) Σ_k log p_k(v)
                  (normalised geometric mean: a token must be likely under every shard)
    prob_mean:    log p(v) = logsumexp_k log p_k(v) − log S  (the mixture (1/S) Σ_k p_k(v))
    Neither is "better": logprob_mean is sharper, prob_mean keeps every shard's mass."""
    if how == "logprob_mean":
        return F.log_softmax(logps.mean(0), dim=-1)
    if how == "prob_mean":
        return torch.logsumexp(logps, dim=0) - math.log(logps.shape[0])
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, not {how!r}")


def assign(n: int, shards: int, slices: int, seed: int) -> list[list[list[int]]]:
    """Row indices 0..n-1 -> layout[shard][slice] = list of indices. A seeded permutation is cut
    into `shards` contiguous near-equal parts, each cut into `slices` parts (sizes differ by <= 1)."""
    perm = list(range(n))
    random.Random(seed).shuffle(perm)

    def cut(xs, k):
        q, r = divmod(len(xs), k)
        out, s = [], 0
        for i in range(k):
            e = s + q + (1 if i < r else 0)
            out.append(xs[s:e])
            s = e
        return out

    return [cut(part, slices) for part in cut(perm, shards)]


def stage_batches(items: list, stage: int, epochs: int, batch_size: int, seed: int, shard: int) -> list[list]:
    """The batches of one stage: `epochs` passes over `items` (the rows of slices 0..stage, in
    layout order), each shuffled by a Random seeded with (seed, shard, stage, epoch) only, so a
    stage's batches do not depend on what happened before it."""
    out = []
    for e in range(epochs):
        order = list(items)
        random.Random(f"sisa-{seed}-{shard}-{stage}-{e}").shuffle(order)
        out += [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    return out


def shard_seed(seed: int, shard: int) -> int:
    return seed * 1_000_003 + shard


# ------------------------------------------------------------------------------------ adapters

def _name(k: int) -> str:
    return f"shard_{k:02d}"


def adapter_params(model, name: str) -> list[tuple[str, torch.nn.Parameter]]:
    """(neutral name, parameter) of one adapter, sorted; the neutral name drops the adapter name."""
    tag = f".{name}."
    return sorted((n.replace(tag, "."), p) for n, p in model.named_parameters() if tag in n)


def init_adapter(model, name: str, seed: int) -> None:
    """Seeded LoRA initialisation, a pure function of (seed, shapes): A ~ U(−1/√fan_in, 1/√fan_in)
    (peft's kaiming-uniform default), B = 0, so the adapter starts as the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in adapter_params(model, name):
            if ".lora_A." in n:
                bound = 1.0 / math.sqrt(p.shape[1])
                p.copy_(torch.rand(p.shape, generator=g, dtype=torch.float32).to(p.dtype) * 2 * bound - bound)
            elif ".lora_B." in n:
                p.zero_()


def get_state(model, name: str) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone().contiguous() for n, p in adapter_params(model, name)}


def set_state(model, name: str, state: dict[str, torch.Tensor]) -> None:
    params = dict(adapter_params(model, name))
    if set(params) != set(state):
        raise UserError(f"checkpoint does not fit adapter {name}: its tensors differ from the model's LoRA layers")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(state[n])


def _save(state: dict, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(state, str(tmp))
    os.replace(tmp, path)


def _load(path: Path) -> dict:
    from safetensors.torch import load_file

    if not path.is_file():
        raise UserError(f"missing SISA checkpoint {path}")
    return load_file(str(path))


def build_model(model_path: str, cfg: SisaConfig, dtype: str = "float32"):
    """The shared frozen base with S (uninitialised) LoRA adapters shard_00..shard_{S-1}."""
    from peft import LoraConfig, get_peft_model

    from ..models import load_model

    base = load_model(model_path, dtype)
    t = cfg.lora_target_modules
    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=t if t == "all-linear" else [x.strip() for x in t.split(",")])
    model = get_peft_model(base, lcfg, adapter_name=_name(0))
    for k in range(1, cfg.shards):
        model.add_adapter(_name(k), lcfg)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def train_stage(model, name: str, batches: list[list[dict]], lr: float, weight_decay: float, pad_id: int) -> int:
    """One stage: a fresh AdamW over the adapter's parameters, one step per batch of token-mean
    answer NLL. Returns the number of steps."""
    from ..data.encode import pad
    from ..methods.base import nll

    if not batches:
        return 0
    model.set_adapter(name)
    params = [p for _, p in adapter_params(model, name)]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    model.train()
    for b in batches:
        x = pad(b, pad_id)
        logits = model(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).logits
        loss = nll(logits, x["labels"])
        if not torch.isfinite(loss):
            raise UserError(f"SISA training of {name} diverged (loss {loss.item()}); lower learning_rate")
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    for p in params:
        p.requires_grad_(False)
    model.eval()
    return len(batches)


def _stage_items(layout_k: list[list[str]], stage: int, enc: dict) -> list[dict]:
    return [enc[h] for sl in layout_k[:stage + 1] for h in sl]


def run_shard(model, k: int, layout_k: list[list[str]], enc: dict, cfg: SisaConfig, pad_id: int,
              start: int = 0, on_stage=None) -> list[int]:
    """Train stages start..R-1 of shard k (its adapter already holds the checkpoint before `start`).
    Calls on_stage(stage + 1, state) after each. Returns steps per trained stage."""
    from tqdm.auto import tqdm

    steps = []
    for r in tqdm(range(start, len(layout_k)), desc=f"SISA {_name(k)}", disable=None, leave=False):
        items = _stage_items(layout_k, r, enc)
        batches = stage_batches(items, r, cfg.epochs_per_slice, cfg.batch_size, cfg.seed, k)
        steps.append(train_stage(model, _name(k), batches, cfg.learning_rate, cfg.weight_decay, pad_id))
        if on_stage:
            on_stage(r + 1, get_state(model, _name(k)))
    return steps


def stage_steps(layout_k: list[list[str]], cfg: SisaConfig) -> list[int]:
    """Steps each stage of a shard takes (without training): the cost model."""
    out, n = [], 0
    for sl in layout_k:
        n += len(sl)
        out.append(cfg.epochs_per_slice * math.ceil(n / cfg.batch_size) if n else 0)
    return out


# ------------------------------------------------------------------------------------ the aggregate model

class SisaModel(torch.nn.Module):
    """The shards as one causal LM: `forward` returns aggregated log-probabilities as logits
    (so any code that takes log_softmax of logits gets the aggregate), `generate` decodes
    greedily from them; `save_pretrained` / `from_pretrained` use a folder of sisa.json +
    shard_KK.safetensors (+ tokenizer)."""

    def __init__(self, peft_model, shards: int, aggregation: str = "logprob_mean", meta: dict | None = None):
        super().__init__()
        self.peft = peft_model
        self.shards = shards
        self.aggregation = aggregation
        self.meta = dict(meta or {})
        self.config = peft_model.get_base_model().config

    @property
    def device(self):
        return next(self.parameters()).device

    def shard_logprobs(self, input_ids, attention_mask=None, **kw) -> torch.Tensor:
        """(S, B, T, V) log-probabilities of every shard."""
        out = []
        for k in range(self.shards):
            self.peft.set_adapter(_name(k))
            logits = self.peft(input_ids=input_ids, attention_mask=attention_mask, **kw).logits
            out.append(F.log_softmax(logits.float(), dim=-1))
        return torch.stack(out)

    def forward(self, input_ids, attention_mask=None, labels=None, **kw):
        from transformers.modeling_outputs import CausalLMOutput

        kw.pop("output_hidden_states", None)
        logits = aggregate_logprobs(self.shard_logprobs(input_ids, attention_mask, **kw), self.aggregation)
        loss = None
        if labels is not None:
            from ..methods.base import nll

            loss = nll(logits, labels)
        return CausalLMOutput(loss=loss, logits=logits)

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, max_new_tokens: int = 32, eos_token_id: int | None = None,
                 pad_token_id: int | None = None, **unused) -> torch.Tensor:
        """Greedy decoding from the aggregate (prompts may be left-padded). Recomputes the full
        forward pass at each step (no KV cache): simple and exact, O(n²) in length."""
        eos = eos_token_id if eos_token_id is not None else self.config.eos_token_id
        pad = pad_token_id if pad_token_id is not None else (eos if eos is not None else 0)
        ids = input_ids
        mask = attention_mask if attention_mask is not None else torch.ones_like(ids)
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        for _ in range(max_new_tokens):
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            nxt = self(ids, attention_mask=mask, position_ids=pos).logits[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            ids = torch.cat([ids, nxt[:, None]], 1)
            mask = torch.cat([mask, (~done).long()[:, None]], 1)
            if eos is not None:
                done |= nxt == eos
            if bool(done.all()):
                break
        return ids

    def save_pretrained(self, path: str | Path, tokenizer=None) -> Path:
        from .. import io

        with io.atomic_dir(path) as d:
            for k in range(self.shards):
                _save(get_state(self.peft, _name(k)), d / f"{_name(k)}.safetensors")
            io.write_json(d / "sisa.json", {**self.meta, "shards": self.shards, "aggregation": self.aggregation})
            if tokenizer is not None:
                tokenizer.save_pretrained(d)
        return Path(path)

    @classmethod
    def from_pretrained(cls, path: str | Path, aggregation: str | None = None):
        p = Path(path)
        if not (p / "sisa.json").is_file():
            raise UserError(f"{path} is not a SISA model folder (no sisa.json)")
        meta = json.loads((p / "sisa.json").read_text(encoding="utf-8"))
        cfg = SisaConfig(**{k: meta[k] for k in ("model", "shards", "lora_r", "lora_alpha", "lora_target_modules")
                            if k in meta}, output_dir=str(p))
        from ..models import resolve_model_path

        model = build_model(resolve_model_path(meta["model"]), cfg)
        for k in range(cfg.shards):
            set_state(model, _name(k), _load(p / f"{_name(k)}.safetensors"))
        model.eval()
        return cls(model, cfg.shards, aggregation or meta.get("aggregation", "logprob_mean"), meta)


# ------------------------------------------------------------------------------------ train / forget

def _ckpt(run: Path, k: int, r: int) -> Path:
    return run / "shards" / _name(k) / f"stage_{r:02d}.safetensors"


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


def _results(cfg, state, summary, per_item, timings, extra=None) -> dict:
    from ..api import environment

    res = {"method": "sisa", "model": cfg.model, "citation": CITATION,
           "hyperparameters": {k: getattr(cfg, k) for k in ("shards", "slices", "epochs_per_slice", "learning_rate",
                                                            "batch_size", "lora_r", "lora_alpha", "aggregation", "seed")},
           "counts": {"train": sum(len(s) for sh in state["layout"] for s in sh), "deleted": len(state["deleted"]),
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
    from ..models import load_tokenizer, model_hash, resolve_model_path
    from ..reporting import card, ledger

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
    holdout = read_rows(cfg.holdout) if cfg.holdout and cfg.holdout.lower() != "none" else []
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
        init_adapter(model, _name(k), shard_seed(cfg.seed, k))
        _save(get_state(model, _name(k)), _ckpt(out, k, 0))
        steps.append(run_shard(model, k, layout[k], enc, cfg, tok.pad_token_id,
                               on_stage=lambda r, s, k=k: _save(s, _ckpt(out, k, r))))
    train_seconds = time.perf_counter() - t0
    agg = SisaModel(model, cfg.shards, cfg.aggregation, _meta(cfg))
    agg.save_pretrained(out / "model", tok)
    state = {"layout": layout, "deleted": [], "steps": steps, "operations": []}
    io.write_json(out / "sisa_state.json", state)
    io.write_text(out / "recipe.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    summary = per_item = None
    if cfg.eval_suite and cfg.eval_suite.lower() != "none":
        ev = _evaluate(agg, encoder, {"retain": rows, "holdout": holdout}, 2 * cfg.batch_size)
        summary, per_item = ev["summary"], ev["per_item"]
    results = _results(cfg, state, summary, per_item, {"train_seconds": train_seconds})
    io.write_json(out / "results.json", results)
    before = model_hash(model_path) if Path(model_path).is_dir() else None
    entry = ledger.new_entry(kind="train", operation="sisa_train", forgotten_hashes=[], method="sisa",
                             hyperparameters=results["hyperparameters"], model_before=before,
                             model_after=model_hash(out / "model"), evaluation=summary,
                             counts=results["counts"], extra={"steps": results["steps"],
                                                              "layout_sha256": ledger.set_digest(hashes)})
    ledger.append(out, entry, parent=ledger.find_parent(model_path))
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
    from ..models import load_tokenizer, resolve_model_path

    cfg, state = load_run(run_dir)
    path = resolve_model_path(cfg.model)
    tok = load_tokenizer(path)
    enc, _, _ = _training_encodings(cfg, state, tok)
    torch.manual_seed(cfg.seed)
    model = build_model(path, cfg)
    init_adapter(model, _name(k), shard_seed(cfg.seed, k))
    run_shard(model, k, state["layout"][k], enc, cfg, tok.pad_token_id)
    return get_state(model, _name(k))


def forget(run_dir: str | Path, request: str) -> dict:
    """`llm-forget sisa forget RUN_DIR --request FILE`: delete the request's rows exactly, in place.
    Returns the cost: shards retrained, steps retrained, steps a full retraining would take."""
    from .. import io
    from ..data.readers import read_rows, row_hash
    from ..models import load_tokenizer, model_hash, resolve_model_path
    from ..reporting import card, ledger
    from ..requests import select

    run = Path(run_dir)
    cfg, state = load_run(run)
    req = select(request)
    want = {row_hash(r) for r in req.resolve()}
    layout = state["layout"]
    where = {h: (k, r) for k, sh in enumerate(layout) for r, sl in enumerate(sh) for h in sl}
    found = sorted(want & set(where))
    if not found:
        raise UserError(f"none of the {len(want)} requested rows is in this SISA run's remaining training data")
    if len(found) < len(want):
        logger.warning("%d of %d requested rows are not in the training data (or already deleted)",
                       len(want) - len(found), len(want))
    first: dict[int, int] = {}
    for h in found:
        k, r = where[h]
        first[k] = min(first.get(k, r), r)
    drop = set(found)
    new_layout = [[[h for h in sl if h not in drop] for sl in sh] for sh in layout]
    path = resolve_model_path(cfg.model)
    tok = load_tokenizer(path)
    enc, encoder, rows = _training_encodings(cfg, state, tok)
    before = model_hash(run / "model")
    t0 = time.perf_counter()
    model = build_model(path, cfg)
    new_ckpts: dict[Path, dict] = {}
    retrained = 0
    new_steps = [list(s) for s in state["steps"]]
    for k in sorted(first):
        r0 = first[k]
        set_state(model, _name(k), _load(_ckpt(run, k, r0)))
        steps = run_shard(model, k, new_layout[k], enc, cfg, tok.pad_token_id, start=r0,
                          on_stage=lambda r, s, k=k: new_ckpts.__setitem__(_ckpt(run, k, r), s))
        retrained += sum(steps)
        new_steps[k][r0:] = steps
    seconds = time.perf_counter() - t0
    full = sum(sum(stage_steps(sh, cfg)) for sh in new_layout)
    # everything computed: now write (checkpoints, model, state, results, ledger, card)
    for p, s in new_ckpts.items():
        _save(s, p)
    for k in range(cfg.shards):
        if k not in first:
            set_state(model, _name(k), _load(_ckpt(run, k, cfg.slices)))
    model.eval()
    agg = SisaModel(model, cfg.shards, cfg.aggregation, _meta(cfg))
    agg.save_pretrained(run / "model", tok)
    cost = {"shards_retrained": sorted(first), "steps_retrained": retrained, "full_retrain_steps": full,
            "fraction_of_full": retrained / full if full else 0.0, "seconds": seconds}
    state.update(layout=new_layout, deleted=state["deleted"] + found, steps=new_steps)
    state["operations"].append({"request_id": req.id, "deleted": len(found), **cost})
    io.write_json(run / "sisa_state.json", state)
    summary = per_item = None
    if cfg.eval_suite and cfg.eval_suite.lower() != "none":
        deleted = set(state["deleted"])
        keep = [r for r in rows if row_hash(r) not in deleted]
        gone = [r for r in rows if row_hash(r) in drop]
        holdout = read_rows(cfg.holdout) if cfg.holdout and cfg.holdout.lower() != "none" else []
        ev = _evaluate(agg, encoder, {"forget": gone, "retain": keep, "holdout": holdout}, 2 * cfg.batch_size)
        summary, per_item = ev["summary"], ev["per_item"]
    results = _results(cfg, state, summary, per_item, {"forget_seconds": seconds}, {"sisa_forget": cost})
    io.write_json(run / "results.json", results)
    entry = ledger.new_entry(kind=req.kind, operation="sisa_forget", forgotten_hashes=found, method="sisa",
                             hyperparameters=results["hyperparameters"], model_before=before,
                             model_after=model_hash(run / "model"), evaluation=summary,
                             counts={"deleted": len(found), "requested": len(want)}, request_id=req.id,
                             extra={"cost": cost})
    ledger.append(run, entry)
    card.write_card(run)
    logger.info("SISA forget: %d rows, shards %s retrained, %d of %d steps (%.0f%% of full retraining)",
                len(found), cost["shards_retrained"], retrained, full, 100 * cost["fraction_of_full"])
    return cost
