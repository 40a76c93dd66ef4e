"""Rows an evaluation reports on that the run which made the model measured to stop itself.

An `llm-forget unlearn` run's selector measures calibration rows (whole retain and holdout people) to
choose its stopping point, learning rate and checkpoint, and its results.json names them by a prefix of
their content hash (`rows.calibration_rows`, `data.readers.row_hash`). A number computed on those rows
was tuned, not measured, so `suite.evaluate` warns and records, per dataset, how many of its rows are
among them (`calibrated_rows` in the evaluation's results.json). The run is found beside the model:
OUTPUT_DIR/results.json for a model at OUTPUT_DIR/model. Forget rows are not counted: the selector
measures the forget set by definition, and every evaluation of forgetting reports on it.
"""

from __future__ import annotations

import json
from pathlib import Path

HASH_CHARS = 16  # of sha256: enough to tell a few thousand rows apart, short enough for results.json


def calibration_hashes(rows: list[dict], indices: list[int]) -> list[str]:
    """The prefixes results.json keeps of the calibration rows `rows[i]`, i in `indices`."""
    from ..data.readers import row_hash

    return [row_hash(rows[i])[:HASH_CHARS] for i in indices]


def run_results(model_path: str | Path) -> tuple[Path, dict] | None:
    """(path, results) of the unlearning run that wrote the model at `model_path`, if it names its calibration
    rows; None for any other model."""
    p = Path(model_path)
    f = p.parent / "results.json"
    if p.name != "model" or not f.is_file():
        return None
    try:
        res = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    cal = res.get("rows", {}).get("calibration_rows") if isinstance(res, dict) else None
    return (f, cal) if isinstance(cal, dict) else None


def calibrated_rows(model_path: str | Path, rows: dict[str, list[dict]]) -> dict:
    """{"run": results.json path, "datasets": {name: rows of that dataset the run calibrated on}} for the datasets
    with any; {} when the model was not made by an unlearning run, or nothing is shared."""
    from ..data.readers import row_hash

    found = run_results(model_path)
    if found is None:
        return {}
    path, cal = found
    seen = {h for hashes in cal.values() for h in hashes}
    hits = {name: n for name, rs in rows.items()
            if name != "forget" and (n := sum(row_hash(r)[:HASH_CHARS] in seen for r in rs))}
    return {"run": str(path), "datasets": hits} if hits else {}
