"""`llm-forget eval --forget F --retain R [--holdout H]`: metric groups planned from the rows' fields,
what cannot be computed said before any work, overlap and bad input ending in one line and exit 2
before anything is written, and strict JSON results."""

import json
import math

import pytest

from llm_forget.errors import UserError
from llm_forget.evaluation.plan import check_overlap, plan


def _qa(i, **extra):
    return {"question": f"What is item {i}?", "answer": f"Item {i} is a thing.", **extra}


def _full(i):
    return _qa(i, paraphrased_answer=f"A thing is item {i}.", perturbed_answer=[f"Item {i} is a cat.", "No."])


def test_plan_enables_each_group_by_what_the_rows_support():
    full = {"forget": [_full(i) for i in range(3)], "retain": [_full(i) for i in range(3, 6)],
            "holdout": [_full(i) for i in range(6, 9)]}
    cfg, notes = plan(full, retain_model=True)
    m = cfg["metrics"]
    assert m["token"] == ["forget", "retain", "holdout"]
    assert m["truth_ratio"] == {"forget": ["forget"], "retain": ["retain"], "correct": "paraphrased_answer"}
    assert m["forget_quality"] == {"set": "forget"} and m["consistency"] == {"sets": ["forget", "retain"]}
    assert m["mia"]["members"] == "forget" and m["mia"]["nonmembers"] == "holdout"
    assert m["mia"]["privleak"] == "mink_40" and 40 in m["mia"]["ks"]
    assert m["generation"]["sets"] == ["forget", "retain"]
    assert m["model_utility"] == ["retain_probability", "retain_truth_ratio", "retain_rougeL_recall"]
    assert notes == {}

    # plain question/answer rows, no holdout, no retain model: token metrics and ROUGE only
    plain = {"forget": [_qa(i) for i in range(3)], "retain": [_qa(i) for i in range(3, 6)]}
    cfg, notes = plan(plain)
    m = cfg["metrics"]
    assert set(m) == {"token", "generation", "model_utility"}
    assert m["model_utility"] == ["retain_probability", "retain_rougeL_recall"]
    assert "perturbed_answer" in notes["forget_quality"] and "0 of 3" in notes["forget_truth_ratio"]
    assert notes["forget_quality"] == "no forget truth ratios: " + notes["forget_truth_ratio"]
    assert "--holdout" in notes["mia_auc"] and "--holdout" in notes["privleak"]
    assert "--retain-model" in notes["consistency"]

    # perturbed answers without paraphrases: the answer is the truth ratio's denominator, and said so
    some = {"forget": [_qa(i, perturbed_answer=["x"]) for i in range(3)], "retain": [_qa(9)]}
    cfg, notes = plan(some, retain_model=True)
    assert cfg["metrics"]["truth_ratio"] == {"forget": ["forget"], "correct": "answer"}
    assert "forget_quality" in cfg["metrics"] and "paraphrased_answer" in notes["truth_ratio_correct"]
    assert "1 of 1" not in notes["retain_truth_ratio"] and "0 of 1" in notes["retain_truth_ratio"]

    # text rows: token metrics and membership, no generation (greedy agreement included)
    text = {"forget": [{"text": "a b c"}], "retain": [{"text": "d e f"}], "holdout": [{"text": "g h"}]}
    cfg, notes = plan(text, retain_model=True)
    assert set(cfg["metrics"]) == {"token", "mia", "model_utility"}
    assert "text rows" in notes["forget_rougeL_recall"] and "question/answer" in notes["consistency"]
    mixed = {"forget": [{"text": "a b c"}], "retain": [_qa(1)]}
    assert plan(mixed, retain_model=True)[0]["metrics"]["consistency"] == {"sets": ["retain"]}


def test_plan_and_overlap_errors():
    with pytest.raises(UserError, match="mixes question/answer rows"):
        plan({"forget": [_qa(1), {"text": "x"}], "retain": [_qa(2)]})
    with pytest.raises(UserError, match="holdout rows are text rows but forget rows are qa rows"):
        plan({"forget": [_qa(1)], "retain": [_qa(2)], "holdout": [{"text": "x"}]})
    rows = {"forget": [_qa(1), _qa(2)], "retain": [_qa(3)], "holdout": [_qa(4), _qa(2, fact="other fields")]}
    with pytest.raises(UserError) as e:
        check_overlap(rows)
    assert str(e.value) == "1 of 2 forget rows also occur in the holdout set; remove them or pass --allow_overlap"
    check_overlap(rows, allow_overlap=True)
    check_overlap({"forget": [_qa(1)], "retain": [_qa(2)]})


def _write(path, rows):
    path.write_text(json.dumps(rows), encoding="utf-8")
    return str(path)


def _strict(path):
    def no_constant(x):
        raise ValueError(f"non-strict JSON constant {x}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=no_constant)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The built-in benchmark's rows as a user's files (the tiny target was trained on forget and
    retain, never on holdout), 12 of each, and the same rows without their TOFU-style fields."""
    from llm_forget.data.readers import read_rows

    d = tmp_path_factory.mktemp("own")
    out = {}
    for s in ("forget", "retain", "holdout"):
        rows = read_rows(f"builtin:{s}")[:12]
        out[s] = _write(d / f"{s}.json", rows)
        out[f"{s}_plain"] = _write(d / f"{s}_plain.json", [{"question": r["question"], "answer": r["answer"]}
                                                         for r in rows])
    return out


def test_eval_own_files_every_number_from_the_users_rows(tmp_path, files, target_path, retain_path, capsys):
    import llm_forget
    from llm_forget.cli import main
    from llm_forget.data.readers import read_rows, row_hash

    out = tmp_path / "ev"
    rc = main(["eval", "--model", target_path, "--forget", files["forget"], "--retain", files["retain"],
               "--holdout", files["holdout"], "--retain-model", retain_path, "--output", str(out)])
    assert rc == 0
    res = _strict(out / "results.json")
    assert {k: v["data"] for k, v in res["suite"]["config"]["datasets"].items()} == \
        {s: files[s] for s in ("forget", "retain", "holdout")}
    for s in ("forget", "retain", "holdout"):
        assert [x["id"] for x in res["per_item"][s]] == [row_hash(r) for r in read_rows(files[s])]
    s = res["summary"]
    assert res["not_computed"] == {}
    retain = _strict(out / "retain" / "results.json")["summary"]
    a, r = s["mia_auc_mink_40"], retain["mia_auc_mink_40"]
    assert s["privleak_attack"] == "mink_40"
    assert s["privleak"] == pytest.approx(((1 - a) - (1 - r)) / (1 - r) * 100)
    assert s["privleak"] < -50  # the target still tells its forget rows from unseen ones (MUSE's sign)
    assert s["forget_quality"] < 0.05 and s["mia_auc"] > 0.9  # 12 memorised rows vs the retain model
    # their answer NLLs too (12 rows at NLL ~0.05 against the retain model's ~1.5: D = 1, p = 2 / C(24, 12) ≈ 7e-7)
    assert s["forget_nll_quality"] < 0.05
    # the same rows through the built-in suite: identical per-item numbers where both compute them
    ref = llm_forget.evaluate(target_path, "quick", limit=12, progress=False)
    for name in ("forget", "holdout"):
        for mine, theirs in zip(res["per_item"][name], ref["per_item"][name]):
            for k in ("nll", "exact_memorization", "extraction_strength", "mink_40", "truth_ratio"):
                if k in theirs:
                    # float32 sums over other batch shapes: 1e-6 relative was measured on a zoo built with
                    # LLM_FORGET_SEED=1 (0.18752605 vs 0.18752624), so 1e-5
                    assert mine[k] == pytest.approx(theirs[k], rel=1e-5, abs=1e-9), (name, k)
    assert "forget_quality" in capsys.readouterr().out


def test_eval_own_files_without_holdout_or_perturbed_answers_says_what_is_missing(tmp_path, files, target_path,
                                                                                  capsys):
    from llm_forget.cli import main

    out = tmp_path / "ev"
    rc = main(["eval", "--model", target_path, "--forget", files["forget_plain"], "--retain", files["retain_plain"],
               "--output", str(out)])
    assert rc == 0
    err = capsys.readouterr().err
    assert "not computed: mia_auc: membership metrics need --holdout" in err
    assert ("not computed: forget_quality: no forget truth ratios: needs perturbed_answer on every forget row "
            "(0 of 12 have one)") in err
    res = _strict(out / "results.json")
    s = res["summary"]
    assert not any(k.startswith(("mia_auc", "privleak")) for k in s) and "holdout" not in res["per_item"]
    assert "forget_truth_ratio" not in s and "forget_quality" not in s
    assert s["forget_exact_memorization"] > 0.9 and s["forget_rougeL_recall"] > 0.5  # what the rows support
    assert set(res["not_computed"]) >= {"mia_auc", "privleak", "forget_quality", "forget_truth_ratio", "consistency"}


def test_eval_bad_input_one_line_exit_2_nothing_written(tmp_path, files, target_path, capsys):
    from llm_forget.cli import main

    out = tmp_path / "ev"
    no_answer = _write(tmp_path / "bad.json", [{"question": "q?"}])
    no_truth_ratios = tmp_path / "retain_results.json"
    no_truth_ratios.write_text(json.dumps({"per_item": {"forget": []}, "summary": {}}))
    cases = [
        (["--forget", files["forget"], "--retain", files["forget"]],
         "12 of 12 forget rows also occur in the retain set; remove them or pass --allow_overlap"),
        (["--forget", files["forget"], "--retain", files["retain"], "--holdout", files["retain_plain"]],
         "12 of 12 retain rows also occur in the holdout set; remove them or pass --allow_overlap"),
        (["--forget", no_answer, "--retain", files["retain"]], "row 0 has neither question/answer nor text"),
        ([], "what to evaluate on? your data: --forget F --retain R [--holdout H]; or a benchmark: --suite"),
        (["--forget", files["forget"]], "your data needs both --forget and --retain"),
        (["--forget", files["forget"], "--retain", files["retain"], "--suite", "quick"],
         "give your data (--forget --retain) or --suite quick, not both"),
        (["--forget", files["forget"], "--retain", files["retain"], "--retain-model", str(no_truth_ratios)],
         "its results have no truth ratios on dataset forget"),
    ]
    for extra, want in cases:
        rc = main(["eval", "--model", target_path, "--output", str(out), *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and want in err[0], (extra, err)
        assert not out.exists(), extra
    # the overlap check gives way to --allow_overlap
    assert main(["eval", "--model", target_path, "--forget", files["forget"], "--retain", files["forget"],
                 "--allow_overlap", "--limit", "2"]) == 0


def test_strict_json_writes_null_and_says_why():
    from llm_forget.evaluation.suite import strict_json

    got = strict_json({"summary": {"a": math.nan, "b": 1.5, "c": "x"}, "per_item": {"f": [{"v": math.inf}, {"v": 2.0}]},
                       "not_computed": {"mia_auc": "needs --holdout"}})
    assert got["summary"] == {"a": None, "b": 1.5, "c": "x"} and got["per_item"]["f"] == [{"v": None}, {"v": 2.0}]
    assert got["not_computed"]["mia_auc"] == "needs --holdout"
    assert "nan" in got["not_computed"]["summary.a"] and "inf" in got["not_computed"]["per_item.f[0].v"]
    json.dumps(got, allow_nan=False)  # strict readers accept it


def test_suites_check_fields_and_overlap_before_any_model_loads(tmp_path, files):
    """A suite's rows are checked right after reading: the model path is never opened here."""
    import llm_forget

    def suite(metrics, **datasets):
        return {"name": "s", "datasets": datasets, "metrics": metrics}

    never = tmp_path / "no_model_needed"  # an error before loading would name it if it got that far
    cases = [
        (suite({"token": ["forget", "holdout"], "mia": {"members": "forget", "nonmembers": "holdout"}},
               forget=files["forget"], holdout=files["forget_plain"]),
         "12 of 12 forget rows also occur in the holdout set; remove them or pass --allow_overlap"),
        (suite({"truth_ratio": {"forget": ["forget"]}}, forget=files["forget_plain"]),
         "truth ratio on dataset forget needs question rows with perturbed_answer; 0 of 12 have them"),
        (suite({"generation": {"sets": ["t"]}}, t=_write(tmp_path / "t.json", [{"text": "a b"}])),
         "generation on dataset t needs question/answer rows"),
    ]
    for cfg, want in cases:
        with pytest.raises(UserError) as e:
            llm_forget.evaluate(str(never), cfg, progress=False)
        assert want in str(e.value)
