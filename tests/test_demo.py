"""The demo meets the core bar: the best recipe raises forget perplexity >= 5x over the target
while retain perplexity stays within 1.5x."""

import json


def test_demo_meets_the_bar(target_path, retain_path, tmp_path):
    from llm_forget.demo import run_demo

    r = run_demo("tiny", tmp_path / "demo")
    s = r["summary"]
    assert set(s) == {"target", "retain", "gradient_ascent", "grad_diff", "kl", "npo", "simnpo", "idk_po", "rmu"}
    assert r["best"] is not None and r["best_ratio"] >= 5.0, r["report"]
    best = s[r["best"]]
    assert best["retain_perplexity"] <= 1.5 * s["target"]["retain_perplexity"]
    # the retain model (never saw the forget people) is the gold standard: it does not know them
    assert s["retain"]["forget_perplexity"] > 5 * s["target"]["forget_perplexity"]
    assert s["target"]["mia_auc"] > 0.9
    out = tmp_path / "demo"
    assert json.loads((out / "summary.json").read_text()).keys() == s.keys()
    assert (out / "report.md").read_text().startswith("# llm_forget demo")
    assert (out / "tradeoff.png").stat().st_size > 1000
