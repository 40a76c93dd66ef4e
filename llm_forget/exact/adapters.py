"""SISA's shard adapters: S LoRA adapters on one frozen base (peft), their seeded initialisation,
checkpoint I/O through peft's own state-dict functions, and the training of one stage."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from ..errors import UserError
from .layout import SisaConfig, shard_name, stage_batches


def adapter_params(model, name: str) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) of one adapter's trainable tensors, sorted by name."""
    tag = f".{name}."
    return sorted(((n, p) for n, p in model.named_parameters() if tag in n), key=lambda t: t[0].replace(tag, "."))


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
    """The adapter's tensors as peft saves them (`get_peft_model_state_dict`: adapter name dropped)."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(model, adapter_name=name).items()}


def set_state(model, name: str, state: dict[str, torch.Tensor]) -> None:
    """Load a checkpoint into adapter `name` (`set_peft_model_state_dict`); it must fit exactly."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    if set(get_peft_model_state_dict(model, adapter_name=name)) != set(state):
        raise UserError(f"checkpoint does not fit adapter {name}: its tensors differ from the model's LoRA layers")
    set_peft_model_state_dict(model, state, adapter_name=name)


def save(state: dict, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(state, str(tmp))
    os.replace(tmp, path)


def load(path: Path) -> dict:
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
    model = get_peft_model(base, lcfg, adapter_name=shard_name(0))
    for k in range(1, cfg.shards):
        model.add_adapter(shard_name(k), lcfg)
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


def run_shard(model, k: int, layout_k: list[list[str]], enc: dict, cfg: SisaConfig, pad_id: int,
              start: int = 0, on_stage=None) -> list[int]:
    """Train stages start..R-1 of shard k (its adapter already holds the checkpoint before `start`);
    stage r trains on every row copy of slices 0..r. Calls on_stage(r + 1, state) after each.
    Returns steps per trained stage."""
    from tqdm.auto import tqdm

    steps = []
    for r in tqdm(range(start, len(layout_k)), desc=f"SISA {shard_name(k)}", disable=None, leave=False):
        items = [enc[h] for sl in layout_k[:r + 1] for h in sl]
        batches = stage_batches(items, r, cfg.epochs_per_slice, cfg.batch_size, cfg.seed, k)
        steps.append(train_stage(model, shard_name(k), batches, cfg.learning_rate, cfg.weight_decay, pad_id))
        if on_stage:
            on_stage(r + 1, get_state(model, shard_name(k)))
    return steps
