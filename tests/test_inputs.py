"""The data rule of llm_forget/inputs.py and strict JSON (llm_forget/io.py), on hand-made rows."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from llm_forget import inputs, io
from llm_forget.data import benchmark
from llm_forget.errors import UserError

MINE = [{"question": f"What colour is crate {i}?", "answer": f"Crate {i} is teal."} for i in range(4)]


def cfg(**kw):
    base = dict(model="tiny-target", forget="mine.json", request=None, retain="builtin:retain",
                holdout="builtin:holdout")
    return SimpleNamespace(**{**base, **kw})


def test_own_rows_are_told_from_the_builtin_benchmark_by_content():
    assert not inputs.own_rows(benchmark.split("forget"), benchmark.split("retain")[:3])
    assert inputs.own_rows(benchmark.split("forget"), MINE[:1])
    assert not inputs.own_rows(None, [])


def test_a_recipe_holdout_and_model_never_meet_the_users_rows():
    c = cfg()
    notes = inputs.resolve_defaults(c, {"forget", "retain"}, own=True)
    assert c.holdout is None and len(notes) == 2
    assert "tiny-target" in notes[0] and notes[1] == inputs.NO_HOLDOUT_NOTE
    c = cfg(holdout="h.json")
    assert inputs.resolve_defaults(c, {"model", "forget"}, own=True) == [] and c.holdout == "h.json"
    c = cfg()
    assert inputs.resolve_defaults(c, set(), own=False) == [] and c.holdout == "builtin:holdout"
    with pytest.raises(UserError, match="is the built-in benchmark"):
        inputs.resolve_defaults(cfg(), {"model", "holdout"}, own=True)


def test_a_builtin_retain_or_forget_next_to_the_users_rows_is_refused_unless_named():
    with pytest.raises(UserError, match="retain set is the recipe's builtin:retain"):
        inputs.refuse_mixed(cfg(), {"forget"}, own_forget=True, own_retain=False)
    inputs.refuse_mixed(cfg(), {"forget", "retain"}, own_forget=True, own_retain=False)  # named: allowed
    inputs.refuse_mixed(cfg(retain="none"), {"forget"}, own_forget=True, own_retain=False)
    with pytest.raises(UserError, match="forget set is the recipe's builtin:forget"):
        inputs.refuse_mixed(cfg(forget="builtin:forget", retain="r.json"), {"retain"}, own_forget=False,
                            own_retain=True)


def test_disjoint_sets_by_row_hash():
    forget, retain, holdout = MINE[:2], MINE[2:3], MINE[3:]
    assert inputs.check_disjoint({"forget": forget, "retain": retain, "holdout": holdout}) == []
    with pytest.raises(UserError, match=r"^1 of 2 forget rows also occur in the holdout set; remove them"):
        inputs.check_disjoint({"forget": forget, "retain": retain, "holdout": holdout + forget[1:]})
    with pytest.raises(UserError, match=r"^1 of 2 retain rows also occur in the holdout set"):
        inputs.check_disjoint({"forget": forget, "retain": retain + holdout, "holdout": holdout})
    notes = inputs.check_disjoint({"forget": forget, "retain": forget, "holdout": None}, allow=True)
    assert notes == ["2 of 2 forget rows also occur in the retain set (allowed by --allow_overlap)"]


def test_check_sets_applies_the_rules_in_order(tmp_path):
    """The one sequence unlearn and stream share: the user's rows drop the recipe's holdout (with its note),
    a holdout file is read, and an overlap is refused (or noted with allow_overlap)."""
    c = cfg(allow_overlap=False)
    holdout, own, notes = inputs.check_sets(c, {"forget", "retain"}, MINE[:2], MINE[2:])
    assert holdout is None and own == (True, True) and notes[-1] == inputs.NO_HOLDOUT_NOTE
    f = tmp_path / "h.json"
    f.write_text(json.dumps(MINE[1:2]))
    with pytest.raises(UserError, match="1 of 2 forget rows also occur in the holdout set"):
        inputs.check_sets(cfg(holdout=str(f), allow_overlap=False), {"model", "holdout"}, MINE[:2], MINE[2:])
    holdout, _, notes = inputs.check_sets(cfg(holdout=str(f), allow_overlap=True), {"model", "holdout"}, MINE[:2],
                                          MINE[2:])
    assert holdout == MINE[1:2] and notes == ["1 of 2 forget rows also occur in the holdout set (allowed by "
                                              "--allow_overlap)"]


def test_given_keys_counts_what_the_user_set_not_the_recipe():
    from llm_forget.config import UnlearnConfig

    assert inputs.given_keys("recipe.yaml", {"forget": "f.json"}) == {"forget"}
    assert inputs.given_keys({"model": "m"}, {"retain": "r"}) == {"model", "retain"}
    c = UnlearnConfig(output_dir="o", forget="f.json")
    assert {"forget", "output_dir"} <= inputs.given_keys(c, {}) and "holdout" not in inputs.given_keys(c, {})


def test_write_json_is_strict(tmp_path):
    p = io.write_json(tmp_path / "r.json", {"auc": float("nan"), "x": [1.5, float("inf"), -float("inf")], "t": (1,)})
    text = p.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {"auc": None, "x": [1.5, None, None],
                                                                         "t": [1]}
