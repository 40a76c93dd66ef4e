"""Which data sets a run uses, decided and checked before anything is written or computed.

Built-in sets (`builtin:forget`, `builtin:retain`, `builtin:holdout`) are the shipped recipes'
defaults for the built-in benchmark of fictitious people. Once the forget set (or a deletion
request) or the retain set is the user's own data, a built-in set the user did not name
never meets it:

- holdout: dropped, and said so; membership metrics (MIA AUC, privleak) need non-members from
  the user's own distribution, so without `--holdout FILE` they are not computed and
  results.json (`notes`) and the model card say why;
- forget / retain: an error, since training would mix the user's rows with fictitious people:
  the user names the other set (or `--retain none`).

A built-in holdout named explicitly next to the user's own forget or retain rows is an error too.
Forget, retain and holdout must be disjoint (rows compared by `row_hash`) unless
`--allow_overlap`: a holdout that overlaps the training rows turns membership inference into
noise, a forget row in the retain set is trained both ways.
"""

from __future__ import annotations

import dataclasses
import logging

from .errors import UserError

logger = logging.getLogger(__name__)

NO_HOLDOUT_NOTE = ("membership metrics (mia_auc, privleak) not computed: no holdout set; the recipe's built-in "
                   "holdout was dropped because forget/retain are your data. Pass --holdout FILE with rows of the "
                   "same kind that no model was trained on")


def is_builtin(spec) -> bool:
    return isinstance(spec, str) and spec.startswith("builtin:")


def is_unset(spec) -> bool:
    return spec is None or (isinstance(spec, str) and spec.lower() in ("none", "null", ""))


def given_keys(config, overrides: dict) -> set[str]:
    """The options the user set: `overrides`, the keys of a dict config, and the fields of a
    config object that differ from the class default (values from a recipe file are not counted)."""
    given = set(overrides)
    if isinstance(config, dict):
        given |= set(config)
    elif dataclasses.is_dataclass(config):
        for f in dataclasses.fields(config):
            if f.init and f.default is not dataclasses.MISSING and getattr(config, f.name) != f.default:
                given.add(f.name)
    return given


def resolve_data_specs(cfg, given: set[str]) -> list[str]:
    """Apply the module's rule to `cfg` (forget, request, retain, holdout) in place; returns the
    notes to record (empty on the built-in benchmark). Raises UserError on a mix it refuses."""
    own_forget = bool(cfg.request) or not is_builtin(cfg.forget)
    own_retain = not is_unset(cfg.retain) and not is_builtin(cfg.retain)
    if not (own_forget or own_retain):
        return []
    if own_forget and is_builtin(cfg.retain) and "retain" not in given:
        raise UserError(f"the forget rows are your data but the retain set is the recipe's {cfg.retain} (fictitious "
                        "people); pass --retain FILE (rows to keep), or --retain none --retain_budget none")
    if own_retain and not cfg.request and is_builtin(cfg.forget) and "forget" not in given:
        raise UserError(f"the retain rows are your data but the forget set is the recipe's {cfg.forget}; "
                        "pass --forget FILE")
    notes = []
    if is_builtin(cfg.holdout):
        if "holdout" in given:
            raise UserError(f"--holdout {cfg.holdout} is the built-in benchmark, unrelated to your forget/retain "
                            "rows: membership results against it would be meaningless; pass --holdout FILE "
                            "(rows never trained on) or --holdout none")
        logger.warning("not using the recipe's holdout %s with your data: %s", cfg.holdout, NO_HOLDOUT_NOTE)
        cfg.holdout = None
        notes.append(NO_HOLDOUT_NOTE)
    elif is_unset(cfg.holdout):
        notes.append("membership metrics (mia_auc, privleak) not computed: no holdout set (--holdout FILE)")
    return notes


def check_disjoint(sets: dict[str, list[dict] | None], allow: bool = False) -> list[str]:
    """Refuse rows shared by two of `sets` (name -> rows, None for absent), compared by
    `row_hash`; with `allow`, warn and return notes instead."""
    from .data.readers import row_hash

    hashes = {k: {row_hash(r) for r in rows} for k, rows in sets.items() if rows}
    names = list(hashes)
    notes = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            n = sum(row_hash(r) in hashes[b] for r in sets[a])
            if not n:
                continue
            msg = f"{n} of {len(sets[a])} {a} rows also occur in the {b} set"
            if not allow:
                raise UserError(f"{msg}; remove them or pass --allow_overlap")
            logger.warning("%s (allowed by --allow_overlap)", msg)
            notes.append(f"{msg} (allowed by --allow_overlap)")
    return notes
