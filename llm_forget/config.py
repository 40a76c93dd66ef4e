"""Configs: dataclasses whose `help` metadata doubles as CLI help; YAML recipe + `--key value` overrides.

`UnlearnConfig` extends `transformers.TrainingArguments`, so every Trainer option (learning_rate,
num_train_epochs, per_device_train_batch_size, gradient_accumulation_steps, bf16,
gradient_checkpointing, report_to, seed, save_strategy, ...) works in a recipe and on the
command line. Method hyperparameters are flat fields (`beta`, `alpha`, ...); a field left at
None takes the chosen method's own default.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser, TrainingArguments

from .errors import UserError, closest
from .inputs import is_unset


def _f(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


def has_accelerator() -> bool:
    """Whether torch sees a GPU (or another accelerator): page-locked batches help only then, and without one
    torch warns on every run that pinning was asked for."""
    import torch

    acc = getattr(torch, "accelerator", None)
    return bool(acc.is_available()) if acc is not None else torch.cuda.is_available()


@dataclass
class UnlearnConfig(TrainingArguments):
    # what to forget, from what
    method: str = _f("npo", "unlearning objective: gradient_ascent, grad_diff, kl, npo, simnpo, idk_po, rmu, "
                            "swap_distill, row_target")
    model: str = _f("tiny", "model folder, zoo name (tiny, smollm2-135m) or Hub id")
    forget: str = _f("builtin:forget", "forget set: builtin:forget, a .json/.jsonl/.csv/.txt file, a saved dataset")
    request: str | None = _f(None, "deletion request file (kind items, concept or task; see README); replaces "
                                   "forget. FILE (one request) or FILE#N / FILE#ID")
    reverse_rows: str = _f("auto", "also train on each forget and retain row's relation asked backwards (facts -> "
                                   "name), so that the reversed relation is forgotten too: true, false, or auto (when "
                                   "the model names the forget subjects from their facts; llm_forget/data/reverse.py)")
    probe_templates: int = _f(32, "a request by description: question templates asked about each name (and each "
                                  "neighbour); more cover more of what the model knows, at more generation time")
    probe_neighbours: int = _f(8, "a request by description: neighbours (names of the same kind) probed as retain rows")
    retain: str | None = _f("builtin:retain", "retain set (same forms as forget); none for no retain term")
    holdout: str | None = _f("builtin:holdout", "holdout set (never trained on): non-members for membership tests; "
                                                "a built-in one is dropped when forget/retain are your data")
    allow_overlap: bool = _f(False, "allow rows shared by two of forget, retain and holdout (compared by content hash)")
    # method hyperparameters (None: the method's default)
    gamma: float | None = _f(None, "weight of the forget term γ")
    alpha: float | None = _f(None, "weight of the retain term α")
    beta: float | None = _f(None, "inverse temperature β of NPO / SimNPO / DPO (> 0)")
    delta: float | None = _f(None, "SimNPO margin δ")
    retain_loss: str | None = _f(None, "retain term: nll or kl (KL(π_ref‖π_θ) on answer tokens)")
    forget_loss: str | None = _f(None, "forget term of the kl method: ga or npo")
    divergence: str | None = _f(None, "swap_distill: forward KL(teacher‖θ), reverse KL(θ‖teacher), jeffreys (both) or hinge "
                                            "(the answer token down to the teacher's probability)")
    teacher_names: str | None = _f(None, "swap_distill: the subject renamed to fabricated names, or to `neighbours` "
                                         "(people of the retain rows; the teacher is the mean over them)")
    neighbours: int | None = _f(None, "swap_distill, row_target: how many neighbours the teacher averages over")
    anchor: float | None = _f(None, "row_target: weight of the term that keeps other people's answers to each forget "
                                    "question at least as likely as at the start (>= 0)")
    rmu_layer: int | None = _f(None, "RMU: layer whose output is steered")
    rmu_train_layers: str | None = _f(None, "RMU: comma-separated layers whose MLP output projection is trained")
    steering_coeff: float | None = _f(None, "RMU: steering coefficient c (default: 4x the mean hidden norm)")
    idk: str | None = _f(None, "idk_po: refusal answers (data spec), default builtin:refusals")
    reference: str = _f("auto", "reference model: auto, copy (frozen copy), adapter (LoRA disabled), cached "
                                "(forget log-probs computed once up front)")
    # checkpoint selection (llm_forget/selection.py)
    retain_budget: float | None = _f(None, "keep the most-forgetting state whose retain perplexity is at most "
                                           "(1 + retain_budget) x the start; stop early past it (e.g. 0.2)")
    select_every: int = _f(5, "with retain_budget: measure forget/retain perplexity every N steps")
    select_patience: int = _f(3, "with retain_budget: stop after N measurements over budget in a row")
    select_stall: int = _f(0, "with retain_budget: stop once N measurements in a row kept no new state (0: never; "
                              "for losses with a fixed point, which neither overshoot nor leave the budget)")
    select_rows: int = _f(100, "with retain_budget: rows of each set used for the measurements")
    select_target: str = _f("max", "with retain_budget: max (the most forgetting within budget), holdout (forget "
                                   "perplexity closest to the holdout's: forget rows look never seen; needs holdout) "
                                   "retrain (holdout if given, else forget questions with swapped answers) or "
                                   "truth_ratio (as retrain, matching the holdout's truth ratios and answer losses "
                                   "too where both have perturbed answers)")
    select_avoid: str | None = _f(None, "with retain_budget: rows (data spec) another evaluation will report on; "
                                        "their people/documents are kept out of the calibration rows")
    select_lr: str = _f("fixed", "with retain_budget: fixed, or auto (double the learning rate while forgetting "
                                 "stalls, halve it past the retain budget)")
    # data encoding
    prompt_template: str = _f("Question: {question}\nAnswer:", "prompt for question/answer rows")
    chat_template: bool = _f(False, "wrap questions in the tokenizer's chat template")
    max_length: int = _f(256, "longest sequence in tokens")
    overlong: str = _f("truncate", "sequences over max_length: truncate (and count them) or error")
    # model handling
    dtype: str = _f("auto", "weights dtype: auto, float32, bfloat16, float16")
    trust_remote_code: bool = _f(False, "run model code from the model folder (off: safer)")
    allow_pickle: bool = _f(False, "allow pickle (.bin) weights; they can run code when loaded")
    lora_r: int = _f(0, "LoRA rank; 0 trains the full model")
    lora_alpha: int = _f(16, "LoRA alpha")
    lora_dropout: float = _f(0.0, "LoRA dropout")
    lora_target_modules: str = _f("all-linear", "LoRA target modules (comma list or all-linear)")
    merge: bool = _f(False, "with LoRA: save a merged model instead of the adapter")
    freeze: str | None = _f(None, "parameters left untrained: comma-separated name patterns (fnmatch), e.g. "
                            "'model.embed_tokens.*,lm_head.*'; full training only (lora_r 0)")
    # run handling
    overwrite: bool = _f(False, "replace an existing non-empty output_dir")
    resume: bool = _f(False, "resume from the latest checkpoint in output_dir")
    eval_suite: str | None = _f("quick", "evaluation after unlearning: quick, a suite YAML path, or none")
    signing_key: str | None = _f(None, "Ed25519 key file that signs the ledger entry (default: the per-user key, "
                                       "created on first use; none: unsigned)")
    # TrainingArguments defaults that suit unlearning
    output_dir: str | None = _f(None, "run folder: model/, results.json, README.md, ledger.jsonl, checkpoints")
    learning_rate: float = _f(1e-4, "peak learning rate")
    num_train_epochs: float = _f(5.0, "epochs over the forget set")
    per_device_train_batch_size: int = _f(8, "forget rows per device per step (each paired with retain_per_forget "
                                             "retain rows)")
    retain_per_forget: int = _f(1, "retain rows drawn per forget row and step (more: a lower-variance retain term, "
                                   "at a longer forward pass)")
    retain_pairing: str = _f("stream", "which retain rows a forget row is paired with: stream (a seeded walk through "
                                       "every retain row) or similar (its most similar retain rows by TF-IDF, the "
                                       "next ones each epoch; not idk_po)")
    lr_scheduler_type: str = _f("constant", "learning-rate schedule")
    logging_steps: float = _f(5, "log every N steps")
    save_strategy: str = _f("no", "checkpoint strategy: no, steps or epoch")
    report_to: None | str | list[str] = _f("none", "trackers: none, tensorboard, wandb, ...")
    remove_unused_columns: bool = _f(False, "keep False: batches carry forget and retain parts")
    dataloader_drop_last: bool = _f(True, "drop each epoch's incomplete last batch, so every step has the recipe's "
                                          "effective batch whatever the number of processes")
    disable_tqdm: bool | None = _f(None, "hide progress bars")
    dataloader_pin_memory: bool = _f(has_accelerator(), "page-locked batches for faster copies to the device "
                                                        "(default: only when torch sees an accelerator)")


METHOD_FIELDS = ("gamma", "alpha", "beta", "delta", "retain_loss", "forget_loss", "divergence", "teacher_names",
                 "neighbours", "anchor", "rmu_layer",
                 "rmu_train_layers", "steering_coeff", "idk")


class _Parser(HfArgumentParser):
    def error(self, message):  # argparse would print usage and exit; we want one line
        raise UserError(message)


def load_yaml(path: str | Path) -> dict:
    import yaml

    p = Path(path)
    if not p.exists():
        raise UserError(f"recipe {path} does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"recipe {path} is not valid YAML{where}: {getattr(e, 'problem', e)}") from e
    except UnicodeDecodeError as e:
        raise UserError(f"recipe {path} is not UTF-8 text") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"recipe {path} must be a mapping of option: value")
    return data


def parse_overrides(args: list[str]) -> dict:
    """`--key value`, `--key=value`, and bare `--flag` (true) into a dict (values as strings)."""
    out, i = {}, 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--"):
            raise UserError(f"unexpected argument {a!r}; options look like --key value")
        key = a[2:].replace("-", "_")
        if "=" in key:
            key, val = key.split("=", 1)
            i += 1
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            val, i = args[i + 1], i + 2
        else:
            val, i = "true", i + 1
        out[key] = val
    return out


def _to_argv(d: dict) -> list[str]:
    argv = []
    for k, v in d.items():
        if v is None:
            continue
        if isinstance(v, bool):
            argv += [f"--{k}", str(v).lower()]
        elif isinstance(v, (list, tuple)):
            argv += [f"--{k}", *map(str, v)]
        elif isinstance(v, dict):
            argv += [f"--{k}", json.dumps(v)]
        else:  # --key=value: a value such as -1e-4 is not mistaken for an option
            argv += [f"--{k}={v}"]
    return argv


def build_config(cls, values: dict):
    """Validate keys against `cls` and build it through HfArgumentParser (types converted)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = set(fields)
    for k in values:
        if k not in names:
            raise UserError(f"unknown option {k!r}{closest(k, names)}")
    # `--key none` unsets an option whose default is None (e.g. a recipe's retain_budget)
    values = {k: v for k, v in values.items()
              if not (isinstance(v, str) and v.lower() in ("none", "null") and fields[k].default is None)}
    parser = _Parser(cls)
    try:
        (cfg,) = parser.parse_args_into_dataclasses(args=_to_argv(values), look_for_args_file=False)
    except (ValueError, TypeError) as e:
        raise UserError(f"invalid option: {str(e).splitlines()[0]}") from e
    return cfg


def parse_config(recipe: str | None, overrides: list[str] | dict | None = None, cls=UnlearnConfig):
    """Recipe YAML (optional) + overrides -> validated config. Overrides win."""
    values = load_yaml(recipe) if recipe else {}
    if isinstance(overrides, dict):
        values.update(overrides)
    elif overrides:
        values.update(parse_overrides(overrides))
    cfg = build_config(cls, values)
    if isinstance(cfg, UnlearnConfig):
        validate(cfg)
    return cfg


def validate(cfg: UnlearnConfig) -> None:
    """Range checks that argparse's types cannot express. Raises UserError."""
    from .methods import METHODS

    if cfg.method not in METHODS:
        raise UserError(f"unknown method {cfg.method!r}{closest(cfg.method, METHODS)}; "
                        f"choose one of {', '.join(METHODS)}")
    if cfg.output_dir is None:
        raise UserError("output_dir is not set; pass --output_dir DIR or set it in the recipe")
    cfg.reverse_rows = str(cfg.reverse_rows).lower()  # a YAML true/false arrives as a bool
    checks = [
        (cfg.learning_rate >= 0 and math.isfinite(cfg.learning_rate), "learning_rate must be >= 0"),
        (cfg.beta is None or cfg.beta > 0, "beta must be > 0"),
        (cfg.alpha is None or cfg.alpha >= 0, "alpha must be >= 0"),
        (cfg.gamma is None or cfg.gamma >= 0, "gamma must be >= 0"),
        (cfg.max_length > 0, "max_length must be > 0"),
        (cfg.per_device_train_batch_size > 0, "per_device_train_batch_size must be > 0"),
        (cfg.num_train_epochs > 0 or cfg.max_steps > 0, "num_train_epochs or max_steps must be > 0"),
        (cfg.retain_loss in (None, "nll", "kl"), "retain_loss must be nll or kl"),
        (cfg.forget_loss in (None, "ga", "npo"), "forget_loss must be ga or npo"),
        (cfg.divergence in (None, "forward", "reverse", "jeffreys", "hinge"), "divergence must be forward, reverse, jeffreys or hinge"),
        (cfg.teacher_names in (None, "fabricated", "neighbours"), "teacher_names must be fabricated or neighbours"),
        (cfg.neighbours is None or cfg.neighbours > 0, "neighbours must be > 0"),
        (cfg.anchor is None or cfg.anchor >= 0, "anchor must be >= 0"),
        (cfg.reference in ("auto", "copy", "adapter", "cached"), "reference must be auto, copy, adapter or cached"),
        (cfg.overlong in ("truncate", "error"), "overlong must be truncate or error"),
        (cfg.lora_r >= 0, "lora_r must be >= 0"),
        (cfg.retain_budget is None or cfg.retain_budget >= 0, "retain_budget must be >= 0"),
        (cfg.retain_per_forget >= 1, "retain_per_forget must be >= 1"),
        (cfg.retain_pairing in ("stream", "similar"), f"retain_pairing must be stream or similar, not "
                                                      f"{cfg.retain_pairing!r}"),
        (cfg.retain_budget is None or not is_unset(cfg.retain),
         "retain_budget needs a retain set"),
        (cfg.select_every > 0 and cfg.select_rows > 0, "select_every and select_rows must be > 0"),
        (cfg.select_stall >= 0, f"select_stall must be >= 0 (0: never), not {cfg.select_stall}"),
        (cfg.probe_templates > 0 and cfg.probe_neighbours >= 0,
         "probe_templates must be > 0 and probe_neighbours >= 0"),
        (cfg.select_target in ("max", "holdout", "retrain", "truth_ratio"),
         f"select_target must be max, holdout, retrain or truth_ratio, not {cfg.select_target!r}"),
        (cfg.select_lr in ("fixed", "auto"), f"select_lr must be fixed or auto, not {cfg.select_lr!r}"),
        (cfg.reverse_rows in ("auto", "true", "false"), f"reverse_rows must be true, false or auto, not "
                                                         f"{cfg.reverse_rows!r}"),
        (cfg.reference != "adapter" or cfg.lora_r > 0, "reference: adapter needs lora_r > 0"),
        (is_unset(cfg.freeze) or cfg.lora_r == 0,
         "freeze needs full training (lora_r 0): LoRA trains its adapters only"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UserError(msg)


def method_from_config(cfg: UnlearnConfig):
    """The method instance: its dataclass defaults, overridden by the config's non-None fields."""
    from .methods import METHODS

    cls = METHODS[cfg.method]
    own = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: getattr(cfg, k) for k in METHOD_FIELDS if getattr(cfg, k) is not None and k in own}
    if "seed" in own:
        kwargs["seed"] = cfg.seed
    ignored = [k for k in METHOD_FIELDS if getattr(cfg, k) is not None and k not in own]
    if ignored:
        import logging

        logging.getLogger(__name__).warning("%s does not use %s; ignored", cfg.method, ", ".join(ignored))
    return cls(**kwargs)


def to_dict(cfg) -> dict:
    """The fully resolved config as plain YAML-able values (what a run folder's recipe.yaml holds)."""
    out = {}
    for f in dataclasses.fields(cfg):
        if not f.init:
            continue
        v = getattr(cfg, f.name)
        if hasattr(v, "value"):  # enums
            v = v.value
        if isinstance(v, (str, int, float, bool, type(None))) or (
                isinstance(v, (list, dict)) and json.dumps(v, default=lambda _: None)):
            out[f.name] = v
    return out
