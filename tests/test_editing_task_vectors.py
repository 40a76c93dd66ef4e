"""Task-vector negation on the built-in benchmark with tiny-target, through `llm_forget.edit`.

The shipped recipe (recipes/task_vector.yaml) fine-tunes the target on the forget set and, with
the same settings and steps, on the retain set, and negates τ = τ_forget − τ_retain. Measured
through `llm-forget edit recipes/task_vector.yaml` (forget ×, retain × at the chosen λ, the grid then three
bisections towards the 1.5x limit), on the zoo built from seeds 0, 1, 2 (LLM_FORGET_SEED) under 1 thread:
3.69x / 1.47x, 3.66x / 1.45x, 3.56x / 1.49x; plain negation of τ_forget alone (retain_weight 0), same fine-tune:
2.69x, 2.55x, 2.62x. With the grid alone the seed-2 build stopped at λ 1.75: 2.82x / 1.28x (λ 2 gave 3.85x / 1.59x).
"""

import json


def _ratios(sweep):
    base = sweep["target"]
    return {r["lambda"]: (r["forget_perplexity"] / base["forget_perplexity"],
                          r["retain_perplexity"] / base["retain_perplexity"]) for r in sweep["rows"]}


def test_task_vector_recipe_forgets_3x_within_1_5x_retain_and_beats_plain_negation(target_path, tmp_path):
    """Forget perplexity ≥ 3x with retain perplexity ≤ 1.5x at the chosen λ (both relative to the target model),
    where plain negation of the same θ_reinf gets less forgetting within the same retain cost."""
    import yaml

    import llm_forget
    from llm_forget.editing.task_vectors import load
    from llm_forget.recipes_index import shipped

    out = tmp_path / "tv"
    run = llm_forget.edit(str(shipped()["task_vector"]), model=target_path, output_dir=str(out))
    sweep = run.metrics["sweep"]
    forget_x, retain_x = _ratios(sweep)[sweep["chosen"]["lambda"]]
    assert forget_x >= 3.0 and retain_x <= 1.5, (forget_x, retain_x)
    # the grid's choice refined by three bisections: the nearest λ measured above the choice keeps too little
    # retain utility and lies within 1/8 of the grid step that holds the choice
    ran = yaml.safe_load((out / "recipe.yaml").read_text())  # the run's own grid and bisections
    grid = sorted(float(x) for x in str(ran["lambdas"]).split(","))
    lam, measured = sweep["chosen"]["lambda"], sorted(_ratios(sweep))
    assert ran["lambda_refine"] == 3 and len(measured) == len(grid) + 1 + ran["lambda_refine"]
    above = min(x for x in measured if x > lam)
    step = min(g for g in grid if g > lam) - max([0.0] + [g for g in grid if g <= lam])
    assert _ratios(sweep)[above][1] > 1.5 and above - lam <= step / 8 + 1e-9, (lam, above, step)
    plain = llm_forget.edit(str(shipped()["task_vector"]), model=target_path, output_dir=str(tmp_path / "plain"),
                            reinforced=str(out / "reinforced"), retain_weight=0.0).metrics["sweep"]
    best_plain = max(f for f, r in _ratios(plain).values() if r <= 1.5)
    # beats plain negation: zoo seeds 0-2, 1 and 2 threads alike, 1.37x, 1.43x, 1.36x (both sweeps bisected)
    assert forget_x > best_plain, (best_plain, forget_x)
    # the chosen model, τ (with where it came from) and the sweep's table and plot are saved
    assert (out / "model" / "model.safetensors").exists() and (out / "sweep.png").exists()
    tau = load(out / "task_vector.safetensors")
    assert tau and all(t.is_floating_point() for t in tau.values())
    assert f"chosen λ = {sweep['chosen']['lambda']:g}" in (out / "sweep.md").read_text()
    res = json.loads((out / "results.json").read_text())
    assert res["method"] == "task_vector" and res["task_vector"]["retain_weight"] == 1.0
    assert res["task_vector"]["reinforced_retain"] == str(out / "reinforced_retain")


def test_lora_adapter_negated_without_merging(tiny_path):
    """scale_lora(-1) makes a new adapter whose delta is exactly minus the original's."""
    import torch
    from peft import LoraConfig, get_peft_model

    from llm_forget.editing.task_vectors import scale_lora
    from llm_forget.models import load_model

    model = get_peft_model(load_model(tiny_path, "float32"),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["down_proj"], init_lora_weights=False))
    x = torch.randint(5, 100, (1, 8))
    with torch.no_grad():
        with model.disable_adapter():
            base = model(input_ids=x).logits
        lin = model.base_model.model.model.layers[0].mlp.down_proj
        h = torch.randn(1, 3, lin.in_features)
        d_pos = lin(h) - lin.base_layer(h)
        name = scale_lora(model, "default", -1.0)
        d_neg = lin(h) - lin.base_layer(h)
    assert name in model.peft_config and model.active_adapter == name
    assert torch.allclose(d_neg, -d_pos, atol=1e-5)
    assert not hasattr(lin, "merged") or not lin.merged
    assert base.shape[-1] > 0
