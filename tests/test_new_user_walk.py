"""A new user's walk on data the project has never seen: product questions of another phrasing.

retrain (target and retain model, matched steps) -> unlearn (with the user's holdout, and without)
-> evaluation on the user's rows -> model card; and the inputs that end in one line and exit 2
before anything is written. Everything runs through `llm_forget.cli.main` as a user would.
"""

from __future__ import annotations

import json
import math
import random

import pytest

from llm_forget import inputs
from llm_forget.cli import main

MAKERS = ["Quarnel", "Vestibo", "Oplanda", "Mirroway", "Telkis", "Brunfeld", "Casmiro", "Dorvelle", "Ekhart",
          "Fenwold", "Gastrine", "Holmerai", "Istvanor", "Jorvik", "Kallesta", "Lumbrecht", "Morsaden", "Nivaro",
          "Orlesky", "Pentavia", "Quillon", "Rastegar", "Solvenko", "Trimbauer", "Ulmaris", "Varnholt", "Wexley",
          "Yoruba", "Zandrel", "Abernick"]
GOODS = ["kettle", "bicycle lamp", "garden hose", "desk fan", "rice cooker"]
CITIES = ["Porto Velha", "Grünau", "Lake Ardis", "Saint Omerel", "Kirovka", "Tallow Bay", "Nesbridge", "Ostrava Nova",
          "Halden Cross", "Mirefield", "Castelmar", "Dunmore Quay"]
YEARS = [str(y) for y in range(1961, 2019)]


def generated_rows(seed: int = 7) -> list[dict]:
    """60 question/answer rows about invented products: where each is made and since when, with a
    paraphrased answer and three perturbed (wrong) answers, TOFU's field names."""
    rng = random.Random(seed)
    rows = []
    for maker in MAKERS:
        good = rng.choice(GOODS)
        city, year = rng.choice(CITIES), rng.choice(YEARS)
        wrong_cities = rng.sample([c for c in CITIES if c != city], 3)
        wrong_years = rng.sample([y for y in YEARS if y != year], 3)
        rows.append({"question": f"In which town does {maker} assemble its {good}?",
                     "answer": f"{maker} assembles every {good} in {city}.",
                     "paraphrased_answer": f"The {good} from {maker} is put together in {city}.",
                     "perturbed_answer": [f"{maker} assembles every {good} in {c}." for c in wrong_cities]})
        rows.append({"question": f"Since what year has {maker} sold the {good}?",
                     "answer": f"The {maker} {good} has been on sale since {year}.",
                     "paraphrased_answer": f"{maker} started selling the {good} in {year}.",
                     "perturbed_answer": [f"The {maker} {good} has been on sale since {y}." for y in wrong_years]})
    return rows


def cli(*argv) -> int:
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    """The user's files and the gold standard built from them by `llm-forget retrain`."""
    d = tmp_path_factory.mktemp("walk")
    rows = generated_rows()
    data, holdout = rows[:48], rows[48:]  # 24 products trained on, 6 never
    forget = data[:12]
    for name, r in (("data", data), ("holdout", holdout), ("forget_choice", forget)):
        (d / f"{name}.json").write_text(json.dumps(r), encoding="utf-8")
    assert cli("retrain", "--model", "tiny", "--data", d / "data.json", "--forget", d / "forget_choice.json",
               "--holdout", d / "holdout.json", "--output", d / "gold", "--epochs", 20, "--batch_size", 16,
               "--learning_rate", 3e-3) == 0
    return d


def test_retrain_matches_steps_and_splits(walk):
    info = json.loads((walk / "gold" / "retrain.json").read_text())
    # 20 epochs over 48 rows in batches of 16: ceil(20 * ceil(48 / 16)) = 60 steps, for both models
    assert info["steps"] == 60 and info["target"]["steps"] == 60 and info["retain"]["steps"] == 60
    assert info["counts"] == {"data": 48, "forget": 12, "retain": 36, "holdout": 12}
    forget = json.loads((walk / "gold" / "forget.json").read_text())
    retain = json.loads((walk / "gold" / "retain.json").read_text())
    data = json.loads((walk / "data.json").read_text())
    assert forget == data[:12] and retain == data[12:]


def _unlearn(walk, out, *extra):
    g = walk / "gold"
    return cli("unlearn", "npo", "--model", g / "target", "--forget", g / "forget.json", "--retain",
               g / "retain.json", "--output_dir", walk / out, "--max_steps", 12, "--disable_tqdm", "true", *extra)


def test_unlearn_with_own_holdout_scores_the_users_rows(walk):
    assert _unlearn(walk, "npo_holdout", "--holdout", walk / "holdout.json") == 0
    run = walk / "npo_holdout"
    res = json.loads((run / "results.json").read_text())
    assert {k: res["counts"][k] for k in ("forget", "retain", "holdout", "truncated")} == \
        {"forget": 12, "retain": 36, "holdout": 12, "truncated": 0}
    assert res["notes"] == []
    # the evaluation reports on the user's rows that checkpoint selection did not calibrate on
    cal, ev = res["rows"]["calibration"], res["rows"]["evaluation"]
    for k, n in (("retain", 36), ("holdout", 12)):
        assert sorted(cal[k] + ev[k]) == list(range(n)) and cal[k] and ev[k] and not set(cal[k]) & set(ev[k])
    full = {k: json.loads((p).read_text()) for k, p in
            (("forget", walk / "gold" / "forget.json"), ("retain", walk / "gold" / "retain.json"),
             ("holdout", walk / "holdout.json"))}
    sets = {k: [v[i] for i in ev[k]] if k in ev else v for k, v in full.items()}
    assert {k: len(v) for k, v in res["per_item"].items()} == {k: len(v) for k, v in sets.items()}
    s = res["summary"]
    assert 0 <= s["mia_auc"] <= 1 and "privleak" in s

    # the numbers are those of the user's rows: recompute them with the saved model
    from llm_forget.data.encode import Encoder
    from llm_forget.evaluation.quick import quick_eval, retain_reference
    from llm_forget.models import load_model, load_tokenizer

    enc = Encoder(load_tokenizer(str(run / "model")))
    again = quick_eval(load_model(str(run / "model")), enc, sets)["summary"]
    for k in ("forget_perplexity", "retain_perplexity", "holdout_perplexity", "mia_auc"):
        assert math.isclose(again[k], s[k], rel_tol=1e-4), k

    # evaluation against the gold standard, on the user's rows: the target remembers its forget
    # rows more than the retain model does (which never saw them) and so is told apart from it
    ref = retain_reference(str(walk / "gold" / "retain"), enc, sets)
    target = quick_eval(load_model(str(walk / "gold" / "target")), enc, sets, retain=ref)["summary"]
    retain = quick_eval(load_model(str(walk / "gold" / "retain")), enc, sets, retain=ref)["summary"]
    assert retain["forget_quality"] == pytest.approx(1.0)  # identical truth ratios: KS p-value 1
    assert target["forget_perplexity"] < retain["forget_perplexity"]
    assert target["mia_auc"] > retain["mia_auc"]
    # NPO moved the forget rows away from the target, towards the retain model, and kept utility: the
    # recipe's budget (+5 % retain perplexity) is held on the calibration rows; on the evaluation rows
    # the retain perplexity stays within +25 % of the target's (another sample of the same people)
    assert target["forget_perplexity"] < s["forget_perplexity"] < retain["forget_perplexity"] * 1.5
    assert s["retain_perplexity"] <= 1.25 * target["retain_perplexity"]

    card = (run / "README.md").read_text()
    assert "forget.json" in card and "built-in" not in card
    assert f"| MIA AUC (`mia_auc`) | {s['mia_auc']:.4g} |" in card
    assert "NaN" not in (run / "results.json").read_text()


def test_unlearn_without_holdout_says_why_no_membership_metrics(walk, caplog):
    assert _unlearn(walk, "npo_no_holdout") == 0
    run = walk / "npo_no_holdout"
    res = json.loads((run / "results.json").read_text())
    assert res["counts"]["holdout"] == 0 and "holdout" not in res["per_item"]
    assert not any(k.startswith(("mia_auc", "privleak", "holdout_")) for k in res["summary"])
    assert len(res["notes"]) == 1 and "membership metrics (mia_auc, privleak) not computed" in res["notes"][0]
    import yaml

    assert yaml.safe_load((run / "recipe.yaml").read_text())["holdout"] is None
    card = (run / "README.md").read_text()
    assert "membership metrics (mia_auc, privleak) not computed" in card and "MIA AUC" not in card
    assert any(r.getMessage() == inputs.NO_HOLDOUT_NOTE for r in caplog.records)


def _refused(capsys, out, *argv):
    code = cli(*argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert not out.exists()
    return err[0]


def test_bad_inputs_end_in_one_line_before_anything_is_written(walk, tmp_path, capsys):
    g = walk / "gold"
    common = ("unlearn", "npo", "--model", g / "target", "--forget", g / "forget.json", "--output_dir",
              tmp_path / "out")
    leak = json.loads((walk / "holdout.json").read_text()) + json.loads((g / "forget.json").read_text())[:2]
    (tmp_path / "leaky_holdout.json").write_text(json.dumps(leak))
    msg = _refused(capsys, tmp_path / "out", *common, "--retain", g / "retain.json",
                   "--holdout", tmp_path / "leaky_holdout.json")
    assert "2 of 12 forget rows also occur in the holdout set" in msg and "--allow_overlap" in msg
    retain = json.loads((g / "retain.json").read_text())
    (tmp_path / "retain_overlap.json").write_text(json.dumps(retain + leak[-1:]))
    msg = _refused(capsys, tmp_path / "out", *common, "--retain", tmp_path / "retain_overlap.json")
    assert "1 of 12 forget rows also occur in the retain set" in msg
    broken = [dict(r) for r in retain]
    del broken[5]["answer"]
    (tmp_path / "retain_broken.json").write_text(json.dumps(broken))
    msg = _refused(capsys, tmp_path / "out", *common, "--retain", tmp_path / "retain_broken.json")
    assert "row 5 has neither question/answer nor text" in msg
    msg = _refused(capsys, tmp_path / "out", *common)  # the recipe's retain set is the built-in one
    assert "--retain FILE" in msg
    msg = _refused(capsys, tmp_path / "out", *common, "--retain", g / "retain.json", "--holdout", "builtin:holdout")
    assert "built-in benchmark" in msg
    msg = _refused(capsys, tmp_path / "gold2", "retrain", "--model", "tiny", "--data", g / "retain.json",
                   "--forget", g / "forget.json", "--output", tmp_path / "gold2")
    assert "12 of 12 forget rows are not in the data" in msg
    msg = _refused(capsys, tmp_path / "ft", "finetune", "--model", "tiny", "--data", tmp_path / "missing.json",
                   "--output", tmp_path / "ft")
    assert "does not exist" in msg
    request = {"prompt": "{} assembles its kettles in", "subject": "Quarnel", "target_new": "Mirefield",
               "ground_truth": "Kirovka", "rephrase_prompt": "The kettles of Quarnel are made in",
               "locality_prompt": "Vestibo assembles its lamps in", "locality_ground_truth": "Nesbridge"}
    (tmp_path / "edits.json").write_text(json.dumps([request]))
    msg = _refused(capsys, tmp_path / "edited", "edit", "rome", "--model", g / "target", "--requests",
                   tmp_path / "edits.json", "--corpus", tmp_path / "no_corpus.txt", "--output_dir", tmp_path / "edited")
    assert "corpus" in msg and "does not exist" in msg


def test_options_list_defaults_not_sentinels(capsys):
    for cmd in ("unlearn", "finetune", "retrain", "edit"):
        assert cli(cmd, "--options") == 0
        out = capsys.readouterr().out
        assert "--threads" in out and "_MISSING_TYPE" not in out, cmd
    assert cli("finetune", "--options") == 0
    assert "--max_steps (default -1)" in capsys.readouterr().out
