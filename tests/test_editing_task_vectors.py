"""Task-vector negation on the built-in benchmark with tiny-target, through `llm_forget.edit`.

Measured here (tiny-target, θ_reinf = 5 epochs at lr 1e-3 on the forget set; `llm-forget edit
task_vector`): forget / retain perplexity 1.130 / 1.129 at λ = 0; λ = 0.5: 2.11 (1.87x) / 1.41
(1.25x); λ = 0.75: 3.00 (2.65x) / 1.82 (1.61x); λ = 1: 4.65 (4.1x) / 2.41 (2.1x). The issue's bar (forget ≥ 3x with retain ≤ 1.5x)
is NOT reached by plain negation on this model: forgetting and retain damage grow together.
The test pins what negation does achieve: forget perplexity rises clearly faster than retain.
"""

import json


def test_task_vector_negation_forgets_faster_than_it_damages_retain(target_path, tmp_path):
    import llm_forget
    from llm_forget.editing.task_vectors import load

    out = tmp_path / "tv"
    run = llm_forget.edit("task_vector", model=target_path, output_dir=str(out), lambdas="0.5,1",
                          reinforce_epochs=5, reinforce_lr=1e-3, fraction=0.8)
    rows = {r["lambda"]: r for r in run.metrics["sweep"]["rows"]}
    base, half = rows[0.0], rows[0.5]
    forget_x = half["forget_perplexity"] / base["forget_perplexity"]
    retain_x = half["retain_perplexity"] / base["retain_perplexity"]
    assert forget_x >= 1.6, forget_x
    assert retain_x <= 1.35, retain_x
    assert forget_x - 1 >= 2 * (retain_x - 1)  # forgetting grows at least twice as fast
    assert rows[1.0]["forget_perplexity"] / base["forget_perplexity"] >= 3.0
    # the chosen λ keeps retain probability ≥ 0.8 x the target's, and its model and τ are saved
    chosen = run.metrics["sweep"]["chosen"]
    assert chosen["lambda"] == 0.5
    assert chosen["retain_probability"] >= 0.8 * base["retain_probability"]
    assert (out / "model" / "model.safetensors").exists() and (out / "sweep.png").exists()
    tau = load(out / "task_vector.safetensors")
    assert tau and all(t.is_floating_point() for t in tau.values())
    table = (out / "sweep.md").read_text()
    assert "chosen λ = 0.5" in table
    assert json.loads((out / "results.json").read_text())["method"] == "task_vector"


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
