"""Load and save causal LMs and tokenizers, and the per-architecture module table.

Every architecture-specific fact lives in `ARCHITECTURES`, keyed by `config.model_type`
(never by the model's name). A user can pass overrides for a model type we do not list.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import UserError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Arch:
    """Where things are inside one architecture.

    layers: dotted path of the list of decoder blocks.
    mlp_out: dotted path, inside one block, of the MLP output projection (the
        "value" matrix that ROME/MEMIT edit and RMU trains).
    conv1d: True when that projection is a GPT-2 style Conv1D (weight is in x out).
    """

    layers: str
    mlp_out: str
    conv1d: bool = False


ARCHITECTURES: dict[str, Arch] = {
    "llama": Arch("model.layers", "mlp.down_proj"),
    "mistral": Arch("model.layers", "mlp.down_proj"),
    "qwen2": Arch("model.layers", "mlp.down_proj"),
    "qwen3": Arch("model.layers", "mlp.down_proj"),
    "gemma": Arch("model.layers", "mlp.down_proj"),
    "gemma2": Arch("model.layers", "mlp.down_proj"),
    "phi3": Arch("model.layers", "mlp.down_proj"),
    "gpt2": Arch("transformer.h", "mlp.c_proj", conv1d=True),
    "gpt_neox": Arch("gpt_neox.layers", "mlp.dense_4h_to_h"),
    "opt": Arch("model.decoder.layers", "fc2"),
    "gptj": Arch("transformer.h", "mlp.fc_out"),
}


def arch_for(model, overrides: dict | None = None) -> Arch:
    """The `Arch` of a model (peft-wrapped or not), with optional user overrides
    (keys: layers, mlp_out, conv1d)."""
    base = getattr(model, "get_base_model", lambda: model)()
    model_type = base.config.model_type
    arch = ARCHITECTURES.get(model_type)
    if arch is None:
        if not overrides or not {"layers", "mlp_out"} <= set(overrides):
            raise UserError(
                f"model type {model_type!r} is not in llm_forget's architecture table; "
                "set arch overrides 'layers' (e.g. model.layers) and 'mlp_out' (e.g. mlp.down_proj)"
            )
        return Arch(overrides["layers"], overrides["mlp_out"], bool(overrides.get("conv1d", False)))
    return replace(arch, **overrides) if overrides else arch


def get_layers(model, arch: Arch | None = None):
    """The list (ModuleList) of decoder blocks."""
    arch = arch or arch_for(model)
    base = getattr(model, "get_base_model", lambda: model)()
    return base.get_submodule(arch.layers)


def get_mlp_out(model, layer: int, arch: Arch | None = None):
    """The MLP output projection module of block `layer`."""
    arch = arch or arch_for(model)
    return get_layers(model, arch)[layer].get_submodule(arch.mlp_out)


def num_layers(model) -> int:
    return len(get_layers(model))


# ---------------------------------------------------------------------------- loading

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16", "auto": "auto"}


def accepts(model, name: str) -> bool:
    """Whether the model's forward (a peft wrapper's wrapped model) takes keyword `name`."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return name in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


def cache_kwarg(model) -> str | None:
    """The keyword a model's forward takes its KV cache by (`cache` in transformers >= 5.2x,
    `past_key_values` before), or None when it takes none."""
    return next((k for k in ("cache", "past_key_values") if accepts(model, k)), None)


def cache_of(out):
    """The KV cache a forward returned (`cache` in transformers >= 5.2x, else `past_key_values`)."""
    c = getattr(out, "cache", None)
    return c if c is not None else getattr(out, "past_key_values", None)


def cache_from_kv(kv) -> object:
    """A transformers `DynamicCache` holding the given per-layer (keys, values), filled through the
    public `Cache.update` (not the `DynamicCache(ddp_cache_data=)` argument kept for DDP)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    for i, (k, v) in enumerate(kv):
        cache.update(k, v, i)
    return cache


def model_source(name_or_path: str, other: str = "a zoo name") -> str:
    """A local model folder (checked: a folder with config.json) or a Hub id (only when online).
    Zoo names are resolved one layer up (`zoo.resolve_model_path`); `other` names them in the error."""
    p = Path(name_or_path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise UserError(f"model path {name_or_path} is a file; pass the folder that holds config.json")
        if not (p / "config.json").exists():
            raise UserError(f"model folder {name_or_path} has no config.json; is it a Hugging Face model folder?")
        return str(p)
    if name_or_path.startswith((".", "/", "~")) or os.sep in name_or_path.strip("/").split("/", 1)[-1]:
        raise UserError(f"model path {name_or_path} does not exist")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise UserError(f"model {name_or_path!r} is neither a local folder nor {other} "
                        "and HF_HUB_OFFLINE=1 forbids downloading it")
    return name_or_path


def _check_weights(path: str, allow_pickle: bool) -> None:
    p = Path(path)
    if not p.is_dir():
        return  # a Hub id: transformers prefers safetensors; use_safetensors below enforces it
    if any(p.glob("*.safetensors")) or (p / "adapter_config.json").exists():
        return
    if any(p.glob("*.bin")) or any(p.glob("*.pt")) or any(p.glob("*.pth")):
        if not allow_pickle:
            raise UserError(
                f"{path} holds pickle weights (.bin/.pt), which can run code when loaded; "
                "convert them to safetensors or pass --allow_pickle true if you trust the source"
            )
        return
    raise UserError(f"model folder {path} has no weights (*.safetensors)")


def check_model(name_or_path: str, trust_remote_code: bool = False, allow_pickle: bool = False) -> None:
    """Refuse, before anything is written, a folder that load_model would refuse: pickle weights
    (unless allowed), no weights, an unreadable config, or a model that is not a causal LM."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    path = model_source(name_or_path)
    _check_weights(path, allow_pickle)
    if not Path(path).is_dir() or Path(path, "adapter_config.json").exists():
        return
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except ValueError as e:
        raise UserError(f"cannot read model config in {path}: {str(e).splitlines()[0]}") from e
    if getattr(config, "auto_map", None):
        return  # remote code: its own classes
    heads = {c for v in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values() for c in ((v,) if isinstance(v, str) else v)}
    archs = getattr(config, "architectures", None) or []
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or (archs and not set(archs) & heads):
        what = f"{config.model_type}, {'/'.join(archs)}" if archs else config.model_type
        raise UserError(f"{path} is not a causal language model ({what}); give a folder saved from a "
                        "...ForCausalLM model")


def measure_device(cfg) -> str:
    """Where a run measures before training (probing a described request, `reverse_rows: auto`'s contrast):
    the device the Trainer puts the model on (this rank's accelerator, or the CPU), except when the weights
    are to be sharded over the ranks (FSDP, DeepSpeed), where no rank may hold them whole: then the CPU."""
    import os

    sharded = bool(cfg.fsdp) or bool(cfg.deepspeed) or any(
        os.environ.get(k, "").lower() in ("1", "true") for k in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"))
    return "cpu" if sharded else str(cfg.device)


def load_model(name_or_path: str, dtype: str = "auto", trust_remote_code: bool = False,
               allow_pickle: bool = False, device: str | None = None):
    """Load a causal LM. Only safetensors unless `allow_pickle`; no remote code unless asked.

    Adapter folders (adapter_config.json) load as a peft model on top of their base."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    path = model_source(name_or_path)
    _check_weights(path, allow_pickle)
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    torch_dtype = "auto" if DTYPES[dtype] == "auto" else getattr(torch, DTYPES[dtype])
    if Path(path, "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(path, dtype=torch_dtype, is_trainable=False)
    else:
        try:
            config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        except ValueError as e:  # unknown model type or remote code refused
            raise UserError(f"cannot read model config in {path}: {str(e).splitlines()[0]}") from e
        try:
            model = AutoModelForCausalLM.from_pretrained(
                path, config=config, dtype=torch_dtype, trust_remote_code=trust_remote_code,
                use_safetensors=None if allow_pickle else True,
            )
        except ValueError as e:
            if "Unrecognized configuration class" in str(e):
                raise UserError(f"{path} is not a causal language model ({config.model_type})") from e
            raise
    if torch_dtype == "auto" and model.dtype == torch.float16 and (device or "cpu") == "cpu":
        model = model.float()  # fp16 matmuls on CPU are slow and inexact
    if device:
        model.to(device)
    return model


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    """Load a tokenizer; give it a pad token (eos) when it has none, and say so."""
    from transformers import AutoTokenizer

    path = model_source(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as e:
        raise UserError(f"cannot load a tokenizer from {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                        ) from e
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise UserError(f"tokenizer in {path} has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
        logger.warning("tokenizer has no pad token; using its eos token %r as padding", tok.eos_token)
    return tok


def save_model(model, tokenizer, out_dir: str | Path, merge: bool = True) -> Path:
    """Save a model (merging a LoRA adapter when `merge`) and its tokenizer as safetensors."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if merge and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(out, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


def model_hash(path: str | Path) -> str:
    """sha256 over a model folder's weight files (names and bytes, sorted): the model's identity."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(list(p.glob("*.safetensors")) + list(p.glob("*.bin")))
    if not files:
        raise UserError(f"no weight files in {p}")
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
