"""EditConfig: every option of `llm-forget edit` (a recipe YAML + `--key value` overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UserError

METHODS = ("rome", "memit", "alphaedit", "lora_edit", "task_vector")


def _f(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class EditConfig:
    method: str = _f("memit", "rome, memit, alphaedit, lora_edit or task_vector")
    model: str = _f("tiny-target", "model folder or zoo name")
    output_dir: str | None = _f(None, "run folder: model/, recipe.yaml, results.json")
    overwrite: bool = _f(False, "replace an existing non-empty output_dir")
    save_model: bool = _f(True, "save the edited model (or adapter) under output_dir/model")
    restore: bool = _f(False, "put the original weights back after measuring (nothing edited is saved)")
    # requests
    requests: str | None = _f(None, "edit requests: a CounterFact or zsRE file (EasyEdit or ROME layout) "
                                         "or Hub dataset (hf:azhx/counterfact@train)")
    format: str = _f("auto", "requests format: counterfact, zsre or auto")
    n_requests: int | None = _f(None, "use only the first N requests")
    mode: str = _f("batch", "batch (all requests at once) or sequential (batches of batch_size, one after another)")
    batch_size: int = _f(1, "requests per step in sequential mode")
    batch_eval: bool = _f(False, "sequential MEMIT/AlphaEdit: measure after every batch (results.json per_batch: "
                                 "efficacy on the latest, earlier and first batch, neighbourhood, fluency)")
    # locate-then-edit
    layers: str = _f("4,5,6,7,8", "edited layers: ROME uses the first; MEMIT/AlphaEdit the range (comma list or a-b)")
    corpus: str = _f("hf:Salesforce/wikitext:wikitext-2-v1@validation",
                      "text for the key statistics C = E[kkᵀ]: a data spec (file, hf:NAME[:CONFIG][@SPLIT])")
    n_tokens: int = _f(20000, "corpus tokens used for C")
    seq_len: int = _f(256, "corpus sequence length")
    mom2_weight: float = _f(15000.0, "MEMIT λ (weight of C₀ against the new keys)")
    nullspace_threshold: float = _f(2e-2, "AlphaEdit: singular values of C₀ below this span the null space")
    l2: float = _f(10.0, "AlphaEdit ridge term")
    n_key_prefixes: int = _f(20, "random prefixes the key k* is averaged over")
    n_value_prefixes: int = _f(5, "random prefixes used while optimising v*")
    prefix_length: int = _f(10, "tokens per random prefix")
    v_steps: int = _f(25, "Adam steps for v*")
    v_lr: float = _f(0.5, "Adam learning rate for v*")
    targets_cache: bool = _f(True, "MEMIT/AlphaEdit: read and write the on-disk cache of v* targets")
    v_batch_size: int = _f(32, "MEMIT/AlphaEdit: requests whose v* are optimised together (1 = one by one)")
    kl_factor: float = _f(0.0625, "weight of the KL term on '{subject} is a' while optimising v*")
    v_weight_decay: float | None = _f(None, "weight decay on δ (default 1e-3 ROME, 0.5 MEMIT/AlphaEdit)")
    clamp_norm: float | None = _f(None, "‖δ‖ ≤ clamp·‖h‖ (default 4 ROME, 0.75 MEMIT/AlphaEdit)")
    arch_layers: str | None = _f(None, "architecture override: dotted path of the decoder blocks")
    arch_mlp_out: str | None = _f(None, "architecture override: MLP output projection inside a block")
    arch_conv1d: bool | None = _f(None, "architecture override: the projection is a GPT-2 Conv1D")
    # LoRA editing
    lora_r: int = _f(8, "LoRA editing: rank")
    lora_steps: int = _f(40, "LoRA editing: optimisation steps")
    lora_lr: float = _f(1e-3, "LoRA editing: learning rate")
    lora_kl_weight: float = _f(1.0, "LoRA editing: weight of the KL locality term on neighbour prompts")
    lora_target_modules: str = _f("mlp_out", "LoRA editing: mlp_out, all-linear or a comma list")
    # task vectors
    reinforced: str | None = _f(None, "task_vector: fine-tuned model (θ_reinf); built from the forget set if unset")
    reinforced_retain: str | None = _f(None, "task_vector: the target fine-tuned on the retain set (θ_retain); "
                                             "built like θ_reinf (as many steps) if unset and retain_weight > 0")
    retain_weight: float = _f(1.0, "task_vector: β in τ = (θ_reinf − θ_target) − β·(θ_retain − θ_target); "
                                   "0 = plain negation")
    forget: str = _f("builtin:forget", "task_vector: forget set (reinforcement and validation)")
    retain: str = _f("builtin:retain", "task_vector: retain set (its own task vector and validation of utility)")
    lambdas: str = _f("0.5,1,1.25,1.5,1.75,2,2.5,3", "task_vector: λ grid")
    lambda_refine: int = _f(3, "task_vector: bisections between the chosen λ of the grid and the next one, which "
                                "keeps too little retain utility (each halves the gap; 0 = the grid alone)")
    select_rows: int = _f(200, "task_vector: retain rows (whole people/documents) that choose λ; the others "
                               "are kept out of the choice and report the chosen model's utility")
    fraction: float = _f(0.95, "task_vector: keep retain utility ≥ fraction × the target's")
    utility: str = _f("probability", "task_vector: retain utility for choosing λ: probability (mean answer "
                                     "probability) or perplexity (its inverse: fraction 0.667 = at most 1.5x)")
    reinforce_epochs: float = _f(40.0, "task_vector: epochs of reinforcement on the forget set "
                                         "(the retain fine-tune takes as many steps)")
    reinforce_lr: float = _f(2e-4, "task_vector: learning rate of the reinforcement (constant, Adam)")
    reinforce_batch_size: int = _f(10, "task_vector: batch size of the reinforcement")
    # misc
    eval: bool = _f(True, "measure both metric families before and after editing")
    fluency_prompts: int = _f(0, "CounterFact fluency: generations on this many edit prompts")
    dtype: str = _f("float32", "weights dtype (statistics and solves are fp32/fp64 regardless)")
    seed: int = _f(0, "seed")


def parse_layers(spec: str) -> list[int]:
    """'4,5,6' or '4-8' -> [4, 5, 6, ...]."""
    try:
        out = []
        for part in str(spec).split(","):
            part = part.strip()
            if "-" in part:
                a, b = part.split("-")
                out += list(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise UserError(f"layers must look like 4,5,6 or 4-8, not {spec!r}") from None
    if not out:
        raise UserError("layers is empty")
    return sorted(set(out))


def validate(cfg: EditConfig) -> None:
    from ..errors import closest

    if cfg.method not in METHODS:
        raise UserError(f"unknown edit method {cfg.method!r}{closest(cfg.method, METHODS)}; "
                        f"choose one of {', '.join(METHODS)}")
    if cfg.output_dir is None:
        raise UserError("output_dir is not set; pass --output_dir DIR or set it in the recipe")
    if cfg.method != "task_vector" and not cfg.requests:
        raise UserError(f"{cfg.method} needs requests: a CounterFact or zsRE file (--requests FILE)")
    checks = [(cfg.mode in ("batch", "sequential"), "mode must be batch or sequential"),
              (cfg.batch_size > 0, "batch_size must be > 0"), (cfg.v_batch_size > 0, "v_batch_size must be > 0"), (cfg.n_tokens > 0, "n_tokens must be > 0"),
              (cfg.v_steps >= 0, "v_steps must be >= 0"), (0 < cfg.fraction <= 1, "fraction must be in (0, 1]"),
              (cfg.lambda_refine >= 0, "lambda_refine must be >= 0"),
              (cfg.select_rows > 0, "select_rows must be > 0"),
              (cfg.mom2_weight >= 0, "mom2_weight must be >= 0"),
              (cfg.utility in ("probability", "perplexity"), "utility must be probability or perplexity"),
              (cfg.retain_weight >= 0, "retain_weight must be >= 0"),
              (cfg.reinforce_batch_size > 0, "reinforce_batch_size must be > 0"),
              (cfg.n_requests is None or cfg.n_requests > 0, "n_requests must be > 0")]
    for ok, msg in checks:
        if not ok:
            raise UserError(msg)
    parse_layers(cfg.layers)
