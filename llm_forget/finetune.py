"""Plain supervised fine-tuning on question/answer or text rows (answer tokens only).

Builds the target model (trained on everything) and the retain model (trained without the
forget set) that unlearning is measured against; also the "reinforced" model of task-vector
negation. The inputs are checked here; the training loop is `sft.train` (transformers.Trainer).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

logger = logging.getLogger(__name__)


def finetune(model: str, data: str | list[dict], output_dir: str | Path, *, epochs: float = 10,
             learning_rate: float = 1e-3, batch_size: int = 32, seed: int = 0, max_length: int = 256,
             overwrite: bool | None = None, **kw) -> dict:
    """Fine-tune `model` (folder or zoo name) on `data` (rows or a data spec); save to `output_dir`.
    Other keywords are `sft.train`'s (prompt_template, chat_template, warmup_ratio, weight_decay,
    lora_r, dtype, progress, max_steps, lr_scheduler_type, answer_eos). With `overwrite` True/False a
    non-empty `output_dir` is replaced/refused once the inputs are checked (None: the folder is
    replaced at the end). Returns {"output_dir", "train_seconds", "steps", "final_loss"}."""
    from .data.readers import read_rows
    from .models import check_model
    from .sft import train
    from .zoo import resolve_model_path

    check_settings(epochs=epochs, max_steps=kw.get("max_steps", -1), learning_rate=learning_rate,
                   batch_size=batch_size, max_length=max_length)
    rows = read_rows(data) if isinstance(data, str) else data
    path = resolve_model_path(model)
    check_model(path)
    if overwrite is not None:
        from .api import prepare_output_dir

        prepare_output_dir(Path(output_dir), overwrite, False, path)
    return train(path, rows, output_dir, epochs=epochs, learning_rate=learning_rate, batch_size=batch_size,
                 seed=seed, max_length=max_length, name=model, **kw)


def check_settings(*, epochs: float, max_steps: int | None, learning_rate: float, batch_size: int,
                   max_length: int = 256) -> None:
    """Range checks of the fine-tuning settings (UserError), before any work."""
    from .errors import UserError

    if not (epochs > 0 or (max_steps or 0) > 0):
        raise UserError("epochs or max_steps must be > 0")
    if not learning_rate >= 0:
        raise UserError("learning_rate must be >= 0")
    if batch_size < 1 or max_length < 1:
        raise UserError("batch_size and max_length must be >= 1")


def matched_steps(n_rows: int, batch_size: int, epochs: float) -> int:
    """The optimisation steps of `epochs` over `n_rows` in batches of `batch_size`:
    ceil(epochs · ceil(n_rows / batch_size)), as transformers.Trainer counts them."""
    return math.ceil(epochs * math.ceil(n_rows / batch_size))


def split_forget(rows: list[dict], forget, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(forget rows, the other rows) of `rows`: `forget` is a fraction in (0, 1) (a seeded random
    sample), a data spec or a list of rows that must all occur in `rows` (compared by row_hash)."""
    import random

    from .data.readers import read_rows, row_hash
    from .errors import UserError

    if isinstance(forget, (int, float)) or (isinstance(forget, str) and _is_fraction(forget)):
        f = float(forget)
        if not 0 < f < 1:
            raise UserError(f"forget fraction {forget} must be between 0 and 1")
        k = max(1, round(f * len(rows)))
        if k >= len(rows):
            raise UserError(f"forget fraction {forget} of {len(rows)} rows leaves nothing to retain")
        picked = set(random.Random(seed).sample(range(len(rows)), k))
        return [r for i, r in enumerate(rows) if i in picked], [r for i, r in enumerate(rows) if i not in picked]
    frows = read_rows(forget) if isinstance(forget, str) else forget
    hashes = {row_hash(r) for r in frows}
    present = {row_hash(r) for r in rows}
    missing = len(hashes - present)
    if missing:
        raise UserError(f"{missing} of {len(frows)} forget rows are not in the data; the forget split must be "
                        "a part of the data both models are built from")
    rest = [r for r in rows if row_hash(r) not in hashes]
    if not rest:
        raise UserError("every row of the data is in the forget split; nothing is left to retain")
    return [r for r in rows if row_hash(r) in hashes], rest


def _is_fraction(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return not Path(s).exists()


def retrain(model: str, data, forget, output_dir: str | Path, *, holdout=None, allow_overlap: bool = False,
            epochs: float = 10, max_steps: int = -1, batch_size: int = 32, seed: int = 0, overwrite: bool = False,
            **kw) -> dict:
    """The gold standard in one call: the target (fine-tuned on all of `data`) and the retain model
    (on `data` without the `forget` split, see `split_forget`), with the same number of optimisation
    steps, the same schedule and seed: `max_steps` when > 0, else the target's
    `matched_steps(len(data), batch_size, epochs)`. A `holdout` (data spec, never trained on) is
    checked to share no row with `data` unless `allow_overlap`. Everything is checked before anything
    is written. Writes OUT/target/, OUT/retain/, OUT/forget.json, OUT/retain.json (the two splits, to
    pass to `llm-forget unlearn`) and OUT/retrain.json. Other keywords go to `finetune`."""
    from . import io
    from .api import prepare_output_dir
    from .data.readers import read_rows
    from .inputs import check_disjoint
    from .models import check_model
    from .zoo import resolve_model_path

    check_settings(epochs=epochs, max_steps=max_steps, learning_rate=kw.get("learning_rate", 1e-3),
                   batch_size=batch_size, max_length=kw.get("max_length", 256))
    rows = read_rows(data) if isinstance(data, str) else data
    forget_rows, retain_rows = split_forget(rows, forget, seed)
    holdout_rows = read_rows(holdout) if isinstance(holdout, str) else holdout
    if holdout_rows:
        check_disjoint({"holdout": holdout_rows, "data": rows}, allow_overlap)
    path = resolve_model_path(model)
    check_model(path)
    out = Path(output_dir)
    prepare_output_dir(out, overwrite, False, path)
    steps = max_steps if max_steps and max_steps > 0 else matched_steps(len(rows), batch_size, epochs)
    io.write_json(out / "forget.json", forget_rows)
    io.write_json(out / "retain.json", retain_rows)
    common = dict(max_steps=steps, batch_size=batch_size, seed=seed, **kw)
    target = finetune(path, rows, out / "target", **common)
    retain = finetune(path, retain_rows, out / "retain", **common)
    info = {"model": model, "steps": steps, "batch_size": batch_size, "seed": seed,
            "counts": {"data": len(rows), "forget": len(forget_rows), "retain": len(retain_rows),
                       "holdout": len(holdout_rows or [])},
            "target": target, "retain": retain, "settings": {k: v for k, v in kw.items()
                                                            if isinstance(v, (int, float, str, bool))}}
    io.write_json(out / "retrain.json", info)
    logger.info("target and retain model, %d steps each: %s", steps, out)
    return info
