"""The Hub model card (`README.md`) of a run folder, built only from what is on disk.

Sources: `results.json` (method, hyperparameters, counts, evaluation summary), `recipe.yaml`
(base model, training settings), `ledger.jsonl` (request ids, kinds, forgotten-row hashes,
head hash). The card's YAML header carries a `model-index` (huggingface_hub `EvalResult`s)
so the Hub renders the evaluation; the body says what was forgotten by counts and sha256
hashes only: no text from the forget set ever reaches a card.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

from ..errors import UserError

logger = logging.getLogger(__name__)

# metric key -> (display name, which direction is better)
METRICS = {
    "forget_quality": ("Forget quality", "KS-test p-value vs the retain model; higher = closer to retraining"),
    "model_utility": ("Model utility", "harmonic mean of retain-side scores; higher = more useful"),
    "mia_auc": ("MIA AUC", "forget members vs holdout non-members; 0.5 = indistinguishable (ideal after forgetting)"),
    "privleak": ("PrivLeak", "(AUC_model - AUC_retain)/AUC_retain x 100; 0 = ideal"),
    "forget_perplexity": ("Forget perplexity", "higher = more forgotten"),
    "retain_perplexity": ("Retain perplexity", "lower = more utility kept"),
    "holdout_perplexity": ("Holdout perplexity", "reference: data never trained on"),
    "holdout_probability": ("Holdout answer probability", "reference: data never trained on"),
    "holdout_exact_memorization": ("Holdout exact memorization", "reference: data never trained on"),
    "holdout_extraction_strength": ("Holdout extraction strength", "reference: data never trained on"),
    "forget_probability": ("Forget answer probability", "lower = more forgotten"),
    "retain_probability": ("Retain answer probability", "higher = more utility kept"),
    "forget_exact_memorization": ("Forget exact memorization", "lower = more forgotten"),
    "retain_exact_memorization": ("Retain exact memorization", "higher = more utility kept"),
    "forget_extraction_strength": ("Forget extraction strength", "lower = more forgotten"),
    "retain_extraction_strength": ("Retain extraction strength", "higher = more utility kept"),
}
SISA_CITATION = ("Bourtoule et al., Machine Unlearning, IEEE S&P 2021 "
                 "(SISA: Sharded, Isolated, Sliced, and Aggregated training)")
TRAINING_KEYS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "lr_scheduler_type", "lora_r", "lora_alpha", "seed",
                 "shards", "slices", "epochs_per_slice", "aggregation")


def card_metrics(summary: dict) -> dict:
    """The numbers of an evaluation summary that go into the model-index: every finite numeric
    value except set sizes (`*_n`) and timings (`*_seconds`)."""
    out = {}
    for k, v in (summary or {}).items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            continue
        if k.endswith("_n") or k.endswith("_seconds"):
            continue
        out[k] = v
    return out


def citation_of(method: str, results: dict) -> str:
    if results.get("citation"):
        return results["citation"]
    if method == "sisa":
        return SISA_CITATION
    try:
        from ..methods import METHODS

        if method in METHODS:
            return getattr(METHODS[method], "citation", "") or ""
    except Exception:  # a registry that fails to import must not block the card
        logger.debug("no citation for %s", method, exc_info=True)
    return ""


def _dataset(spec: str | None) -> tuple[str, str]:
    """(dataset_type, dataset_name) for the model-index, from a data spec; never a file's content."""
    spec = spec or ""
    if spec.startswith("builtin:"):
        return "llm_forget/builtin", "llm_forget built-in benchmark"
    if spec.startswith("hf:"):
        name = spec[3:].split("@")[0].split(":")[0]
        return name, name
    return "local", Path(spec).name or "local data"


def _base_model(model: str | None) -> str | None:
    """A Hub id for `base_model` when the model was one; None for local folders and zoo names."""
    if not model:
        return None
    if Path(model).expanduser().exists() or model.startswith((".", "/", "~")):
        return None
    try:
        from ..zoo import SOURCES

        if model in SOURCES:
            return None
    except Exception:
        pass
    return model if model.count("/") == 1 else None


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def build_card(run_dir: str | Path):
    """A `huggingface_hub.ModelCard` for RUN_DIR (nothing is written)."""
    import yaml
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from . import ledger as L

    run = Path(run_dir)
    if not (run / "results.json").is_file():
        raise UserError(f"{run_dir} is not a run folder (no results.json)")
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    recipe = yaml.safe_load((run / "recipe.yaml").read_text(encoding="utf-8")) if (run / "recipe.yaml").is_file() else {}
    recipe = recipe or {}
    entries = L.read(run) if (run / L.LEDGER).is_file() else []
    method = results.get("method", recipe.get("method", "?"))
    model = results.get("model") or recipe.get("model")
    summary = results.get("summary") or {}
    metrics = card_metrics(summary)
    dtype, dname = _dataset(recipe.get("forget") if not recipe.get("request") else None)
    if recipe.get("request"):
        dtype, dname = "local", "deletion request"
    if method == "sisa":
        dtype, dname = _dataset(recipe.get("data"))
    evals = [EvalResult(task_type="text-generation", task_name="Unlearning evaluation", dataset_type=dtype,
                        dataset_name=dname, metric_type=k, metric_name=METRICS.get(k, (k,))[0], metric_value=v)
             for k, v in metrics.items()]
    title = f"{Path(str(run)).resolve().name}: {method} " + ("(exact unlearning)" if method == "sisa" else "unlearning")
    data = ModelCardData(base_model=_base_model(model), library_name="peft" if method == "sisa" else "transformers",
                         tags=["llm_forget", "unlearning", method], model_name=title,
                         eval_results=evals or None, pipeline_tag="text-generation")
    cite = citation_of(method, results)
    lines = [f"# {title}", "",
             (f"This model is `{model}` with one LoRA adapter per SISA shard (**sisa**: deletions are exact, "
              "by retraining only the affected shards)" if method == "sisa" else
              f"This model is `{model}` after unlearning with **{method}**")
             + ", made with llm_forget. Every number below comes from this "
             "folder's `results.json`; every deletion is recorded in the hash-chained `ledger.jsonl`.", "",
             "## Base model", "", f"- `{model}`", ""]
    hp = dict(results.get("hyperparameters") or {})
    train = {k: recipe[k] for k in TRAINING_KEYS if k in recipe and recipe[k] not in (None, -1)}
    lines += ["## Method", "", f"- **{method}**" + (f": {cite}" if cite else "")]
    if hp:
        lines += ["- hyperparameters: " + ", ".join(f"`{k}={_fmt(v)}`" for k, v in sorted(hp.items()))]
    if train:
        lines += ["- training: " + ", ".join(f"`{k}={_fmt(v)}`" for k, v in train.items())]
    if results.get("steps") is not None:
        lines += [f"- optimisation steps: {results['steps']}"]
    lines += ["", "## What was forgotten", "",
              "Rows are named by the sha256 of their content (`llm_forget.data.readers.row_hash`); "
              "the text itself is not stored here.", ""]
    forgetting = [e for e in entries if e.get("forgotten", {}).get("count")]
    if forgetting:
        lines += ["| entry | request | kind | rows | set sha256 |", "|---|---|---|---|---|"]
        for e in forgetting:
            f = e["forgotten"]
            lines.append(f"| {e.get('index')} | `{e.get('request_id')}` | {e.get('kind')} | {f.get('count')} | "
                         f"`{f.get('set_sha256')}` |")
        lines += ["", "Per-row hashes are listed in `ledger.jsonl`."]
    else:
        counts = results.get("counts") or {}
        lines += [f"- {counts.get('forget', 0)} rows (no ledger entries)"]
    pr = results.get("probes")
    if pr:  # a request by description (llm_forget/probe.py)
        lines += ["", f"Requested by description (sha256 `{pr['description_sha256']}`): {pr['forget']} forget rows "
                  f"({pr['examples']} given as examples, the rest the model's own answers to {pr['templates']} "
                  f"question templates) and {pr['retain']} answers about {pr['neighbours']} neighbours kept; "
                  f"all in `probes.jsonl` (sha256 `{pr['sha256']}`)."]
    counts = results.get("counts") or {}
    if counts:
        lines += ["", "Set sizes: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + "."]
    lines += ["", "## Ledger", ""]
    if entries:
        lines += [f"- {len(entries)} entries; head hash `{entries[-1].get('hash')}`",
                  "- check it: `llm-forget ledger verify .` (chain intact and weights unchanged)"]
    else:
        lines += ["- no ledger"]
    lines += ["", "## Evaluation", ""]
    if metrics:
        lines += ["| metric | value | which direction is better |", "|---|---|---|"]
        for k, v in metrics.items():
            name, how = METRICS.get(k, (k, ""))
            lines.append(f"| {name} (`{k}`) | {_fmt(v)} | {how} |")
    else:
        lines += ["No evaluation was run (`eval_suite: none`)."]
    lines += ["", "## Use", "", "```python"]
    if method == "sisa":
        lines += ["from llm_forget.exact.sisa import SisaModel", "model = SisaModel.from_pretrained(\"model\")"]
    else:
        lines += ["from transformers import AutoModelForCausalLM, AutoTokenizer",
                  "model = AutoModelForCausalLM.from_pretrained(\"model\")  # a LoRA adapter folder loads with peft",
                  "tok = AutoTokenizer.from_pretrained(\"model\")"]
    lines += ["```", "", "Reproduce: `llm-forget " + ("sisa train" if method == "sisa" else "unlearn")
              + " recipe.yaml` with this folder's `recipe.yaml`.", ""]
    if cite:
        lines += ["## Citation", "", cite, ""]
    text = "---\n" + data.to_yaml() + "\n---\n\n" + "\n".join(lines)
    return ModelCard(text, ignore_metadata_errors=False)


def write_card(run_dir: str | Path) -> Path:
    """Build the card and write RUN_DIR/README.md atomically."""
    from .. import io

    card = build_card(run_dir)
    return io.write_text(Path(run_dir) / "README.md", str(card))


def push_to_hub(run_dir: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload the model files, README.md, ledger.jsonl and results.json to a Hub model repo.
    Raises UserError offline or when the Hub refuses."""
    from huggingface_hub import constants

    run = Path(run_dir)
    if os.environ.get("HF_HUB_OFFLINE") == "1" or constants.HF_HUB_OFFLINE:
        raise UserError("cannot push to the Hub: offline mode (HF_HUB_OFFLINE=1); unset it and log in first")
    model = run / "model"
    if not model.is_dir():
        raise UserError(f"{run_dir} has no model/ folder to upload")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(folder_path=str(model), repo_id=repo_id, commit_message="llm_forget: model")
        for name in ("README.md", "ledger.jsonl", "results.json"):
            if (run / name).is_file():
                api.upload_file(path_or_fileobj=str(run / name), path_in_repo=name, repo_id=repo_id,
                                commit_message=f"llm_forget: {name}")
    except Exception as e:  # network, auth, permissions: the user's to fix
        raise UserError(f"push to {repo_id} failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    return f"https://huggingface.co/{repo_id}"
