"""The Hub model card (`README.md`) of a run folder, built only from what is on disk.

Sources: `results.json` (method, hyperparameters, counts, evaluation summary), `recipe.yaml`
(base model, data specs, training settings), `ledger.jsonl` (request ids, kinds, set digests,
head hash, public keys). The YAML header carries a `model-index` with one result per evaluated
dataset (datasets.py files each metric under its set), `base_model` (a Hub id or zoo name, never
a local path) and `library_name` (peft for adapter folders; none for SISA folders, which peft
cannot load). No text from the forget set and no local path ever reaches a card.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

from ..errors import UserError
from .datasets import base_model_of, dataset_of, role_of, scrub

logger = logging.getLogger(__name__)

# metric key -> (display name, which direction is better)
METRICS = {
    "forget_quality": ("Forget quality", "KS-test p-value vs the retain model; higher = closer to retraining"),
    "forget_nll_quality": ("Forget NLL quality", "KS-test p-value of per-row answer NLLs vs the retain model; "
                           "higher = closer to retraining"),
    "model_utility": ("Model utility", "harmonic mean of retain-side scores; higher = more useful"),
    "mia_auc": ("MIA AUC", "forget members vs holdout non-members; 0.5 = indistinguishable (ideal after forgetting)"),
    "privleak": ("PrivLeak", "MUSE form: (AUC_retain - AUC_model)/(1 - AUC_retain) x 100; 0 = ideal, < 0 under-unlearned"),
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
    # model editing (llm_forget/editing), on the edit requests
    "efficacy_score": ("Efficacy score", "share of edit prompts where the new target beats the old; higher = edited"),
    "efficacy_magnitude": ("Efficacy magnitude", "mean P(new) - P(old) on the edit prompts; higher = edited"),
    "paraphrase_score": ("Paraphrase score", "the same on paraphrased prompts; higher = the edit generalises"),
    "neighbourhood_score": ("Neighbourhood score", "share of neighbour prompts keeping their answer; higher = kept"),
    "counterfact_score": ("CounterFact score", "harmonic mean of the three scores; higher = better"),
    "fluency": ("Fluency", "n-gram entropy of generations on edit prompts; higher = less repetitive"),
    "reliability": ("Reliability", "token accuracy of the new target on edit prompts; higher = edited"),
    "generalization": ("Generalization", "the same on paraphrased prompts; higher = the edit generalises"),
    "locality": ("Locality", "share of unrelated prompts' predictions unchanged; higher = kept"),
    "portability": ("Portability", "token accuracy on questions the edit implies; higher = carried over"),
}
EDIT_METHODS = ("rome", "memit", "alphaedit", "lora_edit")
SISA_CITATION = ("Bourtoule et al., Machine Unlearning, IEEE S&P 2021 "
                 "(SISA: Sharded, Isolated, Sliced, and Aggregated training)")
TRAINING_KEYS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "lr_scheduler_type", "lora_r", "lora_alpha", "seed",
                 "shards", "slices", "epochs_per_slice", "aggregation")
TASK_VECTOR_KEYS = ("reinforce_lr", "reinforce_epochs", "reinforce_batch_size", "seed")  # its fine-tunes' settings
LOCATE_KEYS = ("layers", "mode", "batch_size", "mom2_weight", "n_tokens", "v_steps", "v_lr", "seed")
LORA_EDIT_KEYS = ("layers", "mode", "batch_size", "lora_r", "lora_steps", "lora_lr", "lora_kl_weight",
                  "lora_target_modules", "seed")


def training_keys(method: str) -> tuple[str, ...]:
    """The recipe settings a card and a ledger entry list for `method`, beside the results' hyperparameters:
    the fine-tunes' of task vectors, the editing methods' own, else the training loop's (TRAINING_KEYS)."""
    return {"task_vector": TASK_VECTOR_KEYS, "rome": LOCATE_KEYS, "memit": LOCATE_KEYS, "alphaedit": LOCATE_KEYS,
            "lora_edit": LORA_EDIT_KEYS}.get(method, TRAINING_KEYS)


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


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def role_specs(method: str, recipe: dict, entries: list[dict]) -> dict:
    """Data spec of each evaluated set (datasets.dataset_of reads it): the recipe's forget / retain /
    holdout; a deletion request stands for the forget set of a request run and of SISA."""
    last_req = next((e.get("request_id") for e in reversed(entries) if (e.get("forgotten") or {}).get("count")), None)
    if method == "sisa":
        return {"retain": recipe.get("data"), "holdout": recipe.get("holdout"), "forget": f"request:{last_req}"}
    if method in EDIT_METHODS:  # its metrics are measured on the edit requests
        return {"evaluation": recipe.get("requests")}
    forget = f"request:{last_req}" if recipe.get("request") else recipe.get("forget")
    return {"forget": forget, "retain": recipe.get("retain"), "holdout": recipe.get("holdout")}


def eval_results(metrics: dict, specs: dict) -> list:
    """One huggingface_hub EvalResult per metric, filed under the dataset of the set it measures
    (one model-index result per evaluated dataset)."""
    from huggingface_hub import EvalResult

    ids: dict[str, tuple] = {}
    out = []
    for k, v in metrics.items():
        role = role_of(k)
        if role not in ids:
            dtype, dname, split = dataset_of(role, specs.get(role))
            config = role if any(i[0] == dtype and i[2] == split for i in ids.values()) else None
            ids[role] = (dtype, dname, split, config)
        dtype, dname, split, config = ids[role]
        out.append(EvalResult(task_type="text-generation", task_name="Unlearning evaluation", dataset_type=dtype,
                              dataset_name=dname, dataset_split=split, dataset_config=config, metric_type=k,
                              metric_name=METRICS.get(k, (k,))[0], metric_value=v))
    return out


def _evidence(entries: list[dict]) -> list[str]:
    """The card's account of what the ledger proves and what can be learned from it."""
    from .keys import key_id

    if not entries:
        return ["- no ledger"]
    head = entries[-1].get("hash")
    signers = list(dict.fromkeys(e["signer"] for e in entries if e.get("signer")))
    n = f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"
    lines = [f"- {n}; head hash `{head}` (an external anchor: `llm-forget ledger verify . --anchor {head}` "
             "fails if the history up to this card was rewritten)"]
    if signers:
        lines += [f"- signed with Ed25519; public key{'s' if len(signers) > 1 else ''} (also in `ledger.pub`): "
                  + ", ".join(f"`{s}` (id `{key_id(s)}`)" for s in signers),
                  "- check it: `llm-forget ledger verify . --trust KEY` (chain, signatures by that key, lineage "
                  "and the model on disk)"]
    else:
        lines += ["- **unsigned** (written before signing existed or with signing off): it shows naive edits "
                  "only; anyone who can write the file can rewrite it and re-hash the chain",
                  "- check it: `llm-forget ledger verify .`"]
    keyed = any((e.get("forgotten") or {}).get("key_id") for e in entries)
    plain = any("row_sha256" in (e.get("forgotten") or {}) for e in entries)
    lines += ["", "What can be learned from this card and the ledger: the number of rows each request removed "
              "(or edited), when, by which method, with which hyperparameters and evaluation, and the fingerprint "
              "of the model before and after each operation (weights, config, tokenizer and adapter files)."]
    if keyed:
        lines += ["What cannot: which rows were forgotten or edited. Rows are named by keyed fingerprints "
                  "(HMAC-SHA256 under a secret the operator keeps outside this folder), so nobody else can confirm "
                  "or rule out a guessed row. The operator can prove that one given row was forgotten to whoever "
                  "holds that row (`llm-forget ledger prove`, checked with `llm-forget ledger check-proof`); the "
                  "proof opens that row only."]
    if plain:
        lines += ["**Some entries name rows by plain sha256** of their content: anyone holding or guessing a row "
                  "can confirm that it was forgotten (`llm-forget ledger migrate` replaces them with keyed "
                  "fingerprints)."]
    return lines


def build_card(run_dir: str | Path):
    """A `huggingface_hub.ModelCard` for RUN_DIR (nothing is written)."""
    import yaml
    from huggingface_hub import ModelCard, ModelCardData

    from . import ledger as L

    run = Path(run_dir)
    if not (run / "results.json").is_file():
        raise UserError(f"{run_dir} is not a run folder (no results.json)")
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    recipe = yaml.safe_load((run / "recipe.yaml").read_text(encoding="utf-8")) if (run / "recipe.yaml").is_file() else {}
    recipe = recipe or {}
    entries = L.read(run) if (run / L.LEDGER).is_file() else []
    method = results.get("method", recipe.get("method", "?"))
    base = base_model_of(results.get("model") or recipe.get("model"))
    shown = base or "a local model"
    metrics = card_metrics(results.get("summary") or {})
    evals = eval_results(metrics, role_specs(method, recipe, entries))
    adapter = (run / "model" / "adapter_config.json").is_file()
    library = None if method == "sisa" else ("peft" if adapter else "transformers")
    editing = method in EDIT_METHODS
    title = f"{run.resolve().name}: {method} " + ("(exact unlearning)" if method == "sisa" else
                                                   "editing" if editing else "unlearning")
    data = ModelCardData(base_model=base, library_name=library,
                         tags=["llm_forget", "model-editing" if editing else "unlearning", method],
                         model_name=title, eval_results=evals or None, pipeline_tag="text-generation")
    cite = citation_of(method, results)
    lines = [f"# {title}", "",
             (f"This model is `{shown}` with one LoRA adapter per SISA shard (**sisa**: deletions are exact, "
              "by retraining only the affected shards)" if method == "sisa" else
              f"This model is `{shown}` after {'editing' if editing else 'unlearning'} with **{method}**"
              + (" (a LoRA adapter; load it with peft)" if adapter else ""))
             + ", made with llm_forget. Every number below comes from this "
             "folder's `results.json`; every deletion and edit is recorded in the signed, hash-chained "
             "`ledger.jsonl`.", "",
             "## Base model", "", f"- `{shown}`", ""]
    hp = {k: scrub(v) for k, v in (results.get("hyperparameters") or {}).items()}
    train = {k: scrub(recipe[k]) for k in training_keys(method) if k in recipe and recipe[k] not in (None, -1)}
    lines += ["## Method", "", f"- **{method}**" + (f": {cite}" if cite else "")]
    if hp:
        lines += ["- hyperparameters: " + ", ".join(f"`{k}={_fmt(v)}`" for k, v in sorted(hp.items()))]
    if train:
        lines += ["- training: " + ", ".join(f"`{k}={_fmt(v)}`" for k, v in train.items())]
    if results.get("steps") is not None:
        lines += [f"- optimisation steps: {results['steps']}"]
    lines += ["", "## What was forgotten", "", "Rows are named by fingerprints in `ledger.jsonl`, never by their "
              "text; what the fingerprints reveal is stated under Ledger.", ""]
    forgetting = [e for e in entries if e.get("forgotten", {}).get("count") and e.get("operation") != "edit"]
    edits = [e for e in entries if e.get("operation") == "edit"]
    if forgetting:
        lines += ["| entry | request | kind | rows | set digest |", "|---|---|---|---|---|"]
        for e in forgetting:
            f = e["forgotten"]
            lines.append(f"| {e.get('index')} | `{e.get('request_id')}` | {e.get('kind')} | {f.get('count')} | "
                         f"`{f.get('set_digest') or f.get('set_sha256')}` |")
    elif editing:
        lines += ["- nothing (deletions earlier in this model's history would be listed here)"]
    else:
        counts = results.get("counts") or {}
        lines += [f"- {counts.get('forget', 0)} rows (no ledger entries)"]
    if edits:  # edit requests (prompt + new target) are fingerprinted like rows
        lines += ["", "## What was edited", "", "| entry | request | method | edits | set digest |", "|---|---|---|---|---|"]
        lines += [f"| {e.get('index')} | `{e.get('request_id')}` | {e.get('method')} | {e['forgotten'].get('count')} | "
                  f"`{e['forgotten'].get('set_digest') or e['forgotten'].get('set_sha256')}` |" for e in edits]
    pr = results.get("probes")
    if pr:  # a request by description (llm_forget/probe.py)
        lines += ["", f"Requested by description (kept in the ledger as a keyed fingerprint): {pr['forget']} forget rows "
                  f"({pr['examples']} given as examples, the rest the model's own answers to {pr['templates']} "
                  f"question templates) and {pr['retain']} answers about {pr['neighbours']} neighbours kept; "
                  f"all in `probes.jsonl` (sha256 `{pr['sha256']}`)."]
    counts = results.get("counts") or {}
    if counts:
        lines += ["", "Set sizes: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + "."]
    lines += ["", "## Ledger", ""] + _evidence(entries)
    lines += ["", "## Evaluation", ""]
    if metrics:
        lines += ["| dataset | metric | value | which direction is better |", "|---|---|---|---|"]
        for e in evals:
            name, how = METRICS.get(e.metric_type, (e.metric_type, ""))
            lines.append(f"| {e.dataset_split} | {name} (`{e.metric_type}`) | {_fmt(e.metric_value)} | {how} |")
    else:
        lines += ["No evaluation was run (`eval_suite: none`)."]
    for note in results.get("notes") or []:  # what was not computed, and why (llm_forget/inputs.py)
        lines += ["", f"Note: {note}."]
    lines += ["", "## Use", "", "```python"]
    if method == "sisa":
        lines += ["from llm_forget.exact.sisa import SisaModel", "model = SisaModel.from_pretrained(\"model\")"]
    elif adapter:
        lines += ["from peft import AutoPeftModelForCausalLM", "from transformers import AutoTokenizer",
                  "model = AutoPeftModelForCausalLM.from_pretrained(\"model\")",
                  "tok = AutoTokenizer.from_pretrained(\"model\")"]
    else:
        lines += ["from transformers import AutoModelForCausalLM, AutoTokenizer",
                  "model = AutoModelForCausalLM.from_pretrained(\"model\")",
                  "tok = AutoTokenizer.from_pretrained(\"model\")"]
    command = "sisa train" if method == "sisa" else "edit" if editing or method == "task_vector" else "unlearn"
    lines += ["```", "", f"Reproduce: `llm-forget {command}"
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


def public_results(run_dir: str | Path) -> dict:
    """results.json as it is published: per-item ids (plain sha256 of each row, which anyone could
    confirm by guessing) replaced by the ledger's keyed fingerprints, and local paths scrubbed."""
    import re

    from . import ledger as L
    from .fingerprint import row_fingerprint

    run = Path(run_dir)
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    _, secret = L.fingerprint_key(L.read(run) if (run / L.LEDGER).is_file() else [])

    def clean(x, key=None):
        if isinstance(x, dict):
            return {k: clean(v, k) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        if key == "id" and isinstance(x, str) and re.fullmatch(r"[0-9a-f]{64}", x):
            return row_fingerprint(secret, x)
        return scrub(x)

    return clean(results)


def push_to_hub(run_dir: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload the model files, README.md, ledger.jsonl, ledger.pub and `public_results` to a Hub model repo.
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
        for name in ("README.md", "ledger.jsonl", "ledger.pub"):
            if (run / name).is_file():
                api.upload_file(path_or_fileobj=str(run / name), path_in_repo=name, repo_id=repo_id,
                                commit_message=f"llm_forget: {name}")
        api.upload_file(path_or_fileobj=json.dumps(public_results(run), indent=1).encode(), path_in_repo="results.json",
                        repo_id=repo_id, commit_message="llm_forget: results.json (row ids keyed)")
    except Exception as e:  # network, auth, permissions: the user's to fix
        raise UserError(f"push to {repo_id} failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    return f"https://huggingface.co/{repo_id}"
