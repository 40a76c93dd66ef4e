"""Reporting: the deletion ledger (ledger.py) and the Hub model card (card.py) of a run folder.

`finalize_run` is what `llm_forget.api.unlearn` calls once results.json is written: it appends
the run to the ledger (continuing the input model's chain) and writes README.md.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

TRAINING_KEYS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "lora_r", "seed")


def _described(results: dict) -> dict:
    """A described request's hashes (llm_forget/probe.py): the description's and the probes file's."""
    p = results.get("probes")
    return {"description_sha256": p["description_sha256"], "probes_sha256": p["sha256"]} if p else {}


def finalize_run(out, results: dict, cfg, forget_rows: list[dict], input_model_path: str | None,
                 operation: str = "unlearn") -> dict:
    """Append a ledger entry for this run to OUT/ledger.jsonl and write OUT/README.md.
    Returns the ledger entry."""
    from ..data.readers import row_hash
    from ..models import model_hash
    from . import card, ledger

    out = Path(out)
    before = None
    if input_model_path and Path(input_model_path).is_dir():
        before = model_hash(input_model_path)
    kind, request_id = "items", None
    if getattr(cfg, "request", None):
        from ..requests import describe

        kind, request_id = describe(cfg.request)
    hp = dict(results.get("hyperparameters") or {})
    hp.update({k: getattr(cfg, k) for k in TRAINING_KEYS if hasattr(cfg, k)})
    entry = ledger.new_entry(
        kind=kind, operation=operation, forgotten_hashes=[row_hash(r) for r in forget_rows],
        method=results.get("method", getattr(cfg, "method", "?")), hyperparameters=hp, model_before=before,
        model_after=model_hash(out / "model"), evaluation=results.get("summary"), counts=results.get("counts"),
        request_id=request_id, extra={"steps": results.get("steps"), **_described(results)})
    e = ledger.append(out, entry, parent=ledger.find_parent(input_model_path), fresh=True)
    card.write_card(out)
    logger.info("ledger entry %d (head %s…) and model card written", e["index"], e["hash"][:12])
    return e
