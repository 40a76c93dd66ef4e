"""Reporting: the deletion ledger (ledger.py, signed with keys.py, rows named by fingerprint.py,
proofs.py) and the Hub model card (card.py, datasets.py) of a run folder.

`finalize_run` is what `llm_forget.api.unlearn` calls once results.json is written: it appends
the run to the ledger (continuing the input model's chain) and writes README.md.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def record(out, *, input_model: str | None, model_dir, parent=None, fresh: bool = False, signing_key=None,
           **entry) -> dict:
    """Append one entry to OUT/ledger.jsonl: `entry` holds ledger.new_entry's fields except the
    model fingerprints, computed here (model_before from the input model folder, None for a Hub id;
    plus its weights-only hash when the parent ledger's head is a version-1 entry)."""
    from . import ledger
    from .fingerprint import model_fingerprint, model_fingerprint_for

    before, legacy = None, {}
    if input_model and Path(input_model).is_dir():
        before = model_fingerprint(input_model)
        if parent is not None:
            prev = ledger.read(parent)
            if prev and prev[-1].get("version", 1) < 2:
                legacy = {"model_before_v1": model_fingerprint_for(input_model, 1)}
    e = ledger.new_entry(model_before=before, model_after=model_fingerprint(model_dir), **entry)
    e.update(legacy)
    return ledger.append(out, e, parent=parent, fresh=fresh, signing_key=signing_key)


def _described(results: dict) -> dict:
    """A described request's probes file hash (llm_forget/probe.py); the description itself enters the
    ledger only as a keyed fingerprint (ledger.keyed)."""
    p = results.get("probes")
    return {"probes_sha256": p["sha256"]} if p else {}


def _description_hash(description: str | list[str] | None) -> str | None:
    """sha256 of a described request's description (a list of names: of its JSON, in order)."""
    import hashlib
    import json

    if not description:
        return None
    text = description if isinstance(description, str) else json.dumps(description, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def finalize_run(out, results: dict, cfg, forget_rows: list[dict], input_model_path: str | None,
                 operation: str = "unlearn", description: str | list[str] | None = None,
                 kind: str | None = None) -> dict:
    """Append a ledger entry for this run to OUT/ledger.jsonl and write OUT/README.md. `description`:
    what a request by description named (kept in the ledger as a keyed fingerprint only). `forget_rows`: the rows
    the entry fingerprints (an edit's: its requests as prompt/new-target rows); `kind`: the entry's kind (default
    the run's request kind, else "items").
    Returns the ledger entry."""
    from ..data.readers import row_hash
    from . import card, ledger
    from .card import training_keys

    out = Path(out)
    request_id = None
    if getattr(cfg, "request", None):
        from ..requests import describe

        request_kind, request_id = describe(cfg.request)
        kind = kind or request_kind
    hp = dict(results.get("hyperparameters") or {})
    hp.update({k: getattr(cfg, k) for k in training_keys(results.get("method", "")) if hasattr(cfg, k)})
    e = record(out, input_model=input_model_path, model_dir=out / "model", parent=ledger.find_parent(input_model_path),
               fresh=True, signing_key=getattr(cfg, "signing_key", None),
               kind=kind or "items", operation=operation, forgotten_hashes=[row_hash(r) for r in forget_rows],
               method=results.get("method", getattr(cfg, "method", "?")), hyperparameters=hp,
               evaluation=results.get("summary"), counts=results.get("counts"), request_id=request_id,
               extra={"steps": results.get("steps"), **_described(results)},
               description_hash=_description_hash(description))
    card.write_card(out)
    logger.info("ledger entry %d (head %s…) and model card written", e["index"], e["hash"][:12])
    return e


def attach_evaluation(run_dir, summary: dict) -> None:
    """Put an evaluation made after the run (e.g. by the demo, against a shared retain reference)
    into RUN_DIR/results.json and rewrite the card, so the card carries it. The ledger entry keeps
    what was known when it was signed."""
    import json

    from .. import io
    from . import card

    p = Path(run_dir) / "results.json"
    results = json.loads(p.read_text(encoding="utf-8"))
    results["summary"] = {**(results.get("summary") or {}), **summary}
    io.write_json(p, results)
    card.write_card(run_dir)
