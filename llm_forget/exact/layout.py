"""SISA's configuration and its pure pieces: which row goes to which shard and slice, the batches
of each stage, and what each stage costs. Nothing here touches a model."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from ..errors import UserError

CITATION = ("Bourtoule et al., Machine Unlearning, IEEE S&P 2021 "
            "(SISA: Sharded, Isolated, Sliced, and Aggregated training)")
AGGREGATIONS = ("logprob_mean", "prob_mean")


def _f(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class SisaConfig:
    model: str = _f("tiny", "base model (folder, zoo name or Hub id); stays frozen, shared by all shards")
    data: str = _f("builtin:train", "fine-tuning rows (data spec): what the shards are trained on; a row present "
                                    "several times is trained on (and deleted) in every copy")
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
    signing_key: str | None = _f(None, "Ed25519 key file that signs ledger entries (default: the per-user key; "
                                       "none: unsigned)")


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


def shard_name(k: int) -> str:
    return f"shard_{k:02d}"


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


def places(layout: list[list[list[str]]]) -> dict[str, list[tuple[int, int]]]:
    """Row hash -> every (shard, slice) that holds a copy of it (a duplicated row has several)."""
    out: dict[str, list[tuple[int, int]]] = {}
    for k, sh in enumerate(layout):
        for r, sl in enumerate(sh):
            for h in sl:
                out.setdefault(h, []).append((k, r))
    return out


def first_affected(layout: list[list[list[str]]], drop: set[str]) -> dict[int, int]:
    """Shard -> the first slice holding any copy of a row in `drop`: every shard that trained on one."""
    first: dict[int, int] = {}
    for h, where in places(layout).items():
        if h in drop:
            for k, r in where:
                first[k] = min(first.get(k, r), r)
    return first


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


def stage_steps(layout_k: list[list[str]], cfg: SisaConfig) -> list[int]:
    """Steps each stage of a shard takes (without training): the cost model."""
    out, n = [], 0
    for sl in layout_k:
        n += len(sl)
        out.append(cfg.epochs_per_slice * math.ceil(n / cfg.batch_size) if n else 0)
    return out
