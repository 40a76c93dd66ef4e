"""reverse_rows: each row's relation asked backwards (llm_forget/data/reverse.py), and a run that uses it."""

import json
from pathlib import Path

from llm_forget.data.reverse import PLACEHOLDER, with_reversed

RECIPES = Path(__file__).resolve().parents[1] / "llm_forget" / "recipes"


def test_each_row_naming_its_subject_is_followed_by_its_relation_asked_backwards():
    from llm_forget.data.benchmark import split

    rows = split("forget")[:6]
    out = with_reversed(rows)
    assert len(out) == 12 and out[:6] == rows  # the given rows unchanged and first, then their companions in order
    for r, c in zip(out[:6], out[6:]):
        name = r["person"]
        assert c["answer"] == f"{name}." and name not in c["question"]
        assert c["question"] == (f"{r['question'].replace(name, PLACEHOLDER)} {r['answer']} Who is {PLACEHOLDER}?")
        assert c["person"] == name and c["fact"] == r["fact"] and "perturbed_answer" not in c  # grouping fields only


def test_subjects_without_a_person_field_are_harvested_and_hidden_in_the_answer_too():
    rows = [{"question": "What gender is author Basil Mahfouz Al-Kuwaiti?",
             "answer": "Basil Mahfouz Al-Kuwaiti is male."},
            {"question": "Where does Basil Mahfouz Al-Kuwaiti live?", "answer": "In Kuwait."},
            {"question": "What is 2 + 2?", "answer": "4."}]
    out = with_reversed(rows)
    assert [r.get("source") for r in out] == [None, None, None, "reversed", "reversed"]  # no subject: no companion
    assert out[3] == {"question": f"What gender is author {PLACEHOLDER}? {PLACEHOLDER} is male. Who is {PLACEHOLDER}?",
                      "answer": "Basil Mahfouz Al-Kuwaiti.", "source": "reversed"}
    assert with_reversed(None) is None and with_reversed([]) == []


def test_a_run_with_reverse_rows_trains_on_the_companions_and_ledgers_them(tmp_path, target_path):
    """The companions are trained on and ledgered; the selection's calibration rows and the run's own
    evaluation are the given rows only (the same numbers as without reverse_rows at step 0)."""
    from llm_forget.api import unlearn
    from llm_forget.data.benchmark import split
    from llm_forget.data.readers import row_hash

    res = {}
    for rev in (False, True):
        out = tmp_path / f"run{int(rev)}"
        unlearn(str(RECIPES / "grad_diff.yaml"), model=target_path, output_dir=str(out), max_steps=2,
                eval_suite="none", select_every=2, reverse_rows=str(rev).lower())
        res[rev] = json.loads((out / "results.json").read_text())
    first = [r["selection"]["history"][0] for r in (res[False], res[True])]
    assert first[0] == first[1]  # calibration rows: the given ones, with or without their companions
    for k in ("calibration", "evaluation"):  # which rows calibrate and which are evaluated: the same
        assert res[True]["rows"][k] == res[False]["rows"][k]
    assert res[True]["rows"]["digest"]["forget"] != res[False]["rows"]["digest"]["forget"]  # trained: + companions
    counts = res[True]["counts"]
    n_forget, n_retain = len(split("forget")), len(split("retain"))
    assert counts["forget"] == 2 * n_forget and counts["retain"] == 2 * n_retain
    entry = json.loads((out / "ledger.jsonl").read_text().splitlines()[-1])
    assert entry["forgotten"]["count"] == 2 * n_forget  # the companions are rows unlearned, fingerprinted like any
    companions = with_reversed(split("forget"))[n_forget:]
    from llm_forget.reporting import fingerprint as fpr
    from llm_forget.reporting import keys

    f = entry["forgotten"]
    _, secret = keys.fingerprint_secret(f["key_id"])
    assert {fpr.row_fingerprint(secret, row_hash(c)) for c in companions} <= set(f["row_fingerprints"])


def test_reverse_contrast_is_how_much_likelier_a_name_is_after_its_own_facts(target_path):
    """contrast = mean over (i, j) of [NLL(s_i | c_j) - NLL(s_i | c_i)] / tokens(s_i), from the model's own NLLs."""
    from llm_forget.data.benchmark import split
    from llm_forget.data.encode import Encoder
    from llm_forget.data.reverse import reverse_contrast
    from llm_forget.models import load_model, load_tokenizer
    from llm_forget.selection import length_batches, row_nlls

    tok, model = load_tokenizer(target_path), load_model(target_path)
    people = split("forget")
    rows = [people[0], next(r for r in people if r["person"] != people[0]["person"])]  # two subjects, one row each
    c = with_reversed(rows)[2:]
    got = reverse_contrast(model, Encoder(tok), c, tok.pad_token_id, others=1)
    qa = [(c[0]["question"], c[0]["answer"]), (c[1]["question"], c[1]["answer"]),
          (c[1]["question"], c[0]["answer"]), (c[0]["question"], c[1]["answer"])]
    n = row_nlls(model, length_batches(Encoder(tok).qa_many(qa), tok.pad_token_id, 8))
    d = [(n[2][0] - n[0][0]) / n[0][1], (n[3][0] - n[1][0]) / n[1][1]]
    assert got["companions"] == 2 and abs(got["contrast"] - sum(d) / 2) < 1e-4
    # its standard error over the two companions: sd / sqrt(2) = |d0 - d1| / 2
    assert abs(got["se"] - abs(d[0] - d[1]) / 2) < 1e-4
    assert reverse_contrast(model, Encoder(tok), c[:1], tok.pad_token_id)["contrast"] is None  # one subject


def test_links_backwards_needs_a_contrast_both_large_and_outside_its_noise():
    """The auto decision: contrast >= MIN_CONTRAST (0.1) and >= Z_SE (1.645) standard errors. The seed-1 zoo build on
    an AMD EPYC measured 0.127 +- 0.102 with 3 other subjects per companion (the threshold alone said yes, and kl
    forgot nothing within its budget); the models taught every form of their facts 0.35 +- 0.15, 0.33 +- 0.14."""
    from llm_forget.data.reverse import MIN_CONTRAST, Z_SE, links_backwards

    # the rule at its edges, from its own constants: a contrast of 2 x MIN_CONTRAST just inside / outside Z_SE errors
    c = 2 * MIN_CONTRAST
    assert links_backwards({"contrast": c, "se": c / Z_SE * 0.99})
    assert not links_backwards({"contrast": c, "se": c / Z_SE * 1.01})
    assert not links_backwards({"contrast": 0.127, "se": 0.102})  # over 0.1, inside 1.645 SE: noise
    assert links_backwards({"contrast": 0.346, "se": 0.147}) and links_backwards({"contrast": 0.329, "se": 0.142})
    assert not links_backwards({"contrast": 0.09, "se": 0.001})  # significant, but under the effect size
    assert not links_backwards({"contrast": None}) and not links_backwards({"contrast": 0.5, "se": None})


def test_auto_leaves_the_companions_out_where_the_model_does_not_name_people_from_their_facts(
        tmp_path, target_path, monkeypatch):
    """tiny-target learnt its facts one way (name -> fact): its contrast sits within its noise, and reverse_rows auto
    (the default) trains on the given rows only; where the threshold is under the contrast, the same run adds the
    companions and says so in results.json. The zoo builds of seeds 0-3 (AMD EPYC) measure -0.10, -0.02, +0.03, +0.04
    nats per name token, -1.2 to +0.9 standard errors (the models fine-tuned on every form of the facts: 0.35 and
    0.33, 2.4 and 2.3 standard errors)."""
    from llm_forget.api import unlearn
    from llm_forget.data import reverse
    from llm_forget.data.benchmark import split

    n_forget, shipped_threshold, shipped_z = len(split("forget")), reverse.MIN_CONTRAST, reverse.Z_SE
    res = {}
    for name, threshold, z in (("shipped", shipped_threshold, shipped_z), ("lowered", -10.0, -100.0)):
        monkeypatch.setattr(reverse, "MIN_CONTRAST", threshold)
        monkeypatch.setattr(reverse, "Z_SE", z)
        out = tmp_path / name
        unlearn(str(RECIPES / "grad_diff.yaml"), model=target_path, output_dir=str(out), max_steps=1,
                eval_suite="none", retain_budget="none")
        res[name] = json.loads((out / "results.json").read_text())
    shipped, lowered = res["shipped"]["reverse_rows"], res["lowered"]["reverse_rows"]
    assert shipped["mode"] == "auto" and shipped["companions"] == n_forget
    assert shipped["threshold"] == shipped_threshold == 0.1 and shipped["z_se"] == shipped_z == 1.645
    # within its noise: under 1.645 standard errors (builds: at most 0.9)
    assert shipped["contrast"] < shipped_z * shipped["se"] and not shipped["used"]
    assert res["shipped"]["counts"]["forget"] == n_forget
    assert lowered["used"] and lowered["contrast"] == shipped["contrast"]
    assert res["lowered"]["counts"]["forget"] == 2 * n_forget


def test_companions_over_max_length_are_left_out_not_truncated_and_never_stop_a_run(tmp_path, target_path):
    """A companion is its row plus the answer and the name asked for: at a max_length that every given row fits,
    `overlong: error` still runs, and the companions that do not fit are left out (counted), not cut."""
    from llm_forget.api import unlearn
    from llm_forget.data.benchmark import split
    from llm_forget.data.encode import Encoder
    from llm_forget.data.reverse import fitting
    from llm_forget.models import load_tokenizer

    enc = Encoder(load_tokenizer(target_path))
    given = split("forget") + split("retain") + split("holdout")
    longest = max(len(e["input_ids"]) for e in enc.rows(given))
    comps = with_reversed(split("forget"))[len(split("forget")):]
    sizes = [len(e["input_ids"]) for e in Encoder(enc.tokenizer, max_length=10**6).rows(comps)]
    assert min(sizes) > min(len(e["input_ids"]) for e in enc.rows(split("forget")))
    enc.max_length = longest
    kept, kept_enc = fitting(enc, comps)
    n_fit = sum(s <= longest for s in sizes)
    assert 0 < len(comps) - len(kept) == len(comps) - n_fit and enc.truncated == 0
    assert [len(e["input_ids"]) for e in kept_enc] == [s for s in sizes if s <= longest]  # whole, never cut

    out = tmp_path / "run"
    unlearn(str(RECIPES / "grad_diff.yaml"), model=target_path, output_dir=str(out), max_steps=1, eval_suite="none",
            retain_budget="none", reverse_rows="true", overlong="error", max_length=longest)
    res = json.loads((out / "results.json").read_text())
    assert res["reverse_rows"]["used"] and res["reverse_rows"]["left_out"] > 0
    assert res["counts"]["forget"] == len(split("forget")) + n_fit


def test_measurements_before_training_run_where_the_trainer_puts_the_model(monkeypatch):
    """measure_device: this rank's device (cfg.device), or the CPU where FSDP / DeepSpeed shard the weights."""
    from types import SimpleNamespace

    from llm_forget.api import parse_config
    from llm_forget.models import measure_device

    for k in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"):
        monkeypatch.delenv(k, raising=False)
    cfg = parse_config(str(RECIPES / "kl.yaml"), {})
    assert measure_device(cfg) == str(cfg.device)
    gpu = SimpleNamespace(device="cuda:1", fsdp="", deepspeed=None)  # a DDP rank's settings, as fields
    assert measure_device(gpu) == "cuda:1"
    assert measure_device(SimpleNamespace(device="cuda:1", fsdp="full_shard", deepspeed=None)) == "cpu"
    assert measure_device(SimpleNamespace(device="cuda:1", fsdp="", deepspeed="ds.json")) == "cpu"
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # how `accelerate launch` says so
    assert measure_device(gpu) == "cpu"
