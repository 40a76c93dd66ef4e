"""The SISA shards as one causal LM (`SisaModel`), and how their next-token distributions combine
(`aggregate_logprobs`). A SISA model folder holds sisa.json, shard_KK.safetensors (each shard's
adapter as peft's `get_peft_model_state_dict` gives it) and the tokenizer; peft alone cannot load
it (one folder, S adapters), `SisaModel.from_pretrained` does."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import UserError
from .adapters import build_model, get_state, load, save, set_state
from .layout import AGGREGATIONS, SisaConfig, shard_name


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
            self.peft.set_adapter(shard_name(k))
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
                save(get_state(self.peft, shard_name(k)), d / f"{shard_name(k)}.safetensors")
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
        from ..zoo import resolve_model_path

        model = build_model(resolve_model_path(meta["model"]), cfg)
        for k in range(cfg.shards):
            set_state(model, shard_name(k), load(p / f"{shard_name(k)}.safetensors"))
        model.eval()
        return cls(model, cfg.shards, aggregation or meta.get("aggregation", "logprob_mean"), meta)
