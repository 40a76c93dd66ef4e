"""Which data sets a run uses, decided and checked before anything is written or computed.

Built-in sets (`builtin:forget`, `builtin:retain`, `builtin:holdout`) are the shipped recipes'
defaults for the built-in benchmark of fictitious people. Once the forget rows (from `--forget`
or a deletion request) or the retain rows are the user's own (some row is not in the built-in
benchmark, compared by `row_hash`), a built-in set the user did not name never meets them:

- holdout: dropped, and said so; membership metrics (MIA AUC, privleak) need non-members from
  the user's own distribution, so without `--holdout FILE` they are not computed, and
  results.json (`notes`) and the model card say why;
- forget / retain: an error, since training would mix the user's rows with fictitious people:
  the user names the other set (or `--retain none`).

A built-in holdout named explicitly next to the user's own rows is an error too. Forget, retain
and holdout must be disjoint (by `row_hash`) unless `--allow_overlap`: a holdout that overlaps
the training rows turns membership inference into noise; a forget row in the retain set is
trained both ways.
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


def own_rows(*sets: list[dict] | None) -> bool:
    """Whether any row of `sets` is not in the built-in benchmark (by row_hash)."""
    from .data import benchmark
    from .data.readers import row_hash

    builtin = {row_hash(r) for r in benchmark.split("all")}
    return any(row_hash(r) not in builtin for rows in sets if rows for r in rows)


BENCHMARK_MODELS = ("tiny-target", "tiny-retain")  # zoo models fine-tuned on the built-in benchmark


def resolve_defaults(cfg, given: set[str], own: bool) -> list[str]:
    """The module's rule for the holdout (applied to `cfg.holdout` in place, before it is read) and
    the model: `own` says the forget or retain rows are the user's (`own_rows`). Returns the notes
    to record (and to log once every input is checked: `log_notes`)."""
    if not own:
        return []
    notes = []
    if cfg.model in BENCHMARK_MODELS and "model" not in given:
        notes.append(f"the model is the recipe's {cfg.model}, fine-tuned on the built-in benchmark rather than on "
                     "your rows; pass --model (e.g. OUT/target of `llm-forget retrain`)")
    return notes + _holdout(cfg, given)


def _holdout(cfg, given: set[str]) -> list[str]:
    if is_builtin(cfg.holdout):
        if "holdout" in given:
            raise UserError(f"--holdout {cfg.holdout} is the built-in benchmark, unrelated to your forget/retain "
                            "rows: membership results against it would be meaningless; pass --holdout FILE "
                            "(rows never trained on) or --holdout none")
        cfg.holdout = None
        return [NO_HOLDOUT_NOTE]
    if is_unset(cfg.holdout):
        return ["membership metrics (mia_auc, privleak) not computed: no holdout set (--holdout FILE)"]
    return []


def refuse_mixed(cfg, given: set[str], own_forget: bool, own_retain: bool) -> None:
    """UserError when the user's forget rows would train next to the recipe's built-in retain set,
    or the user's retain rows next to its built-in forget set."""
    if own_forget and is_builtin(cfg.retain) and "retain" not in given:
        raise UserError(f"the forget rows are your data but the retain set is the recipe's {cfg.retain} (fictitious "
                        "people); pass --retain FILE (rows to keep), or --retain none --retain_budget none")
    if own_retain and not cfg.request and is_builtin(cfg.forget) and "forget" not in given:
        raise UserError(f"the retain rows are your data but the forget set is the recipe's {cfg.forget}; "
                        "pass --forget FILE")


def check_disjoint(sets: dict[str, list[dict] | None], allow: bool = False) -> list[str]:
    """Refuse rows shared by two of `sets` (name -> rows, None for absent), compared by
    `row_hash`; with `allow`, return them as notes instead."""
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
            notes.append(f"{msg} (allowed by --allow_overlap)")
    return notes


def check_sets(cfg, given: set[str], forget: list[dict] | None, retain: list[dict] | None):
    """The checks every run (`unlearn`, each `stream`) applies to its rows, in order: whose rows they are
    (`own_rows`), the holdout and model rule (`resolve_defaults`, which may drop `cfg.holdout`), reading the
    holdout, and disjointness (`check_disjoint`). Returns (holdout rows or None, (own forget, own retain),
    notes). `refuse_mixed` is left to the caller, after its own checks of the files (their errors first)."""
    from .data.readers import read_rows

    own = (own_rows(forget), own_rows(retain))
    notes = resolve_defaults(cfg, given, any(own))  # no built-in holdout meets the user's rows
    holdout = read_rows(cfg.holdout) if not is_unset(cfg.holdout) else None
    notes += check_disjoint({"forget": forget, "retain": retain, "holdout": holdout}, cfg.allow_overlap)
    return holdout, own, notes


def log_notes(notes: list[str]) -> None:
    """Warn of each note, once all inputs passed (a refused run prints its one error line only)."""
    for note in notes:
        logger.warning("%s", note)
