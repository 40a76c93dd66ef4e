"""RMU: under LoRA the saved adapter carries the update; the steering coefficient comes from the
answer tokens of fixed forget rows, before any update."""

import json

import pytest
import torch

import llm_forget
from llm_forget.recipes_index import shipped


def _forget_batch(path, n=None):
    from llm_forget.data.encode import Encoder, pad
    from llm_forget.data.readers import read_rows
    from llm_forget.models import load_tokenizer

    tok = load_tokenizer(path)
    rows = Encoder(tok).rows(read_rows("builtin:forget"))[:n]
    return rows, pad(rows, tok.pad_token_id)


def test_rmu_under_lora_saves_what_it_trained(target_path, tmp_path):
    """The run's own evaluation (of the model in memory) and the saved adapter on the base model
    agree: no trained weight is left out of what save_pretrained writes."""
    from peft import PeftModel

    from llm_forget.data.encode import Encoder
    from llm_forget.data.readers import read_rows
    from llm_forget.evaluation.quick import quick_eval
    from llm_forget.models import load_model, load_tokenizer

    res = llm_forget.unlearn(str(shipped()["rmu"]), model=target_path, output_dir=str(tmp_path / "rmu_lora"),
                             lora_r=8, learning_rate=3e-2, max_steps=10, retain_budget="none", disable_tqdm=True)
    assert (res.model_dir / "adapter_model.safetensors").exists()
    ran = json.loads((res.output_dir / "results.json").read_text())["summary"]["forget_perplexity"]
    enc = Encoder(load_tokenizer(target_path))
    forget = read_rows("builtin:forget")
    base = quick_eval(load_model(target_path), enc, {"forget": forget})["summary"]["forget_perplexity"]
    model = PeftModel.from_pretrained(load_model(target_path), str(res.model_dir))
    with torch.no_grad():
        saved = quick_eval(model, enc, {"forget": forget})["summary"]["forget_perplexity"]
    assert ran > 1.05 * base, (ran, base)  # the run changed the model
    assert saved == pytest.approx(ran, rel=1e-4)


def test_rmu_under_lora_without_an_adapter_on_the_trained_layers_is_refused(target_path, tmp_path):
    from llm_forget.errors import UserError

    with pytest.raises(UserError, match="has no LoRA adapter; add it to lora_target_modules"):
        llm_forget.unlearn(str(shipped()["rmu"]), model=target_path, output_dir=str(tmp_path / "x"), lora_r=4,
                           lora_target_modules="q_proj,v_proj", max_steps=1, eval_suite="none")


def test_rmu_steering_coefficient_from_answer_tokens_of_fixed_rows(target_path, tmp_path):
    from llm_forget.models import load_model

    res = llm_forget.unlearn(str(shipped()["rmu"]), model=target_path, output_dir=str(tmp_path / "rmu_c"),
                             steering_coeff="none", max_steps=1, retain_budget="none", eval_suite="none",
                             disable_tqdm=True)
    got = json.loads((res.output_dir / "results.json").read_text())["hyperparameters"]["steering_coeff"]
    rows, _ = _forget_batch(target_path, 32)
    model = load_model(target_path)
    norms = []
    with torch.no_grad():  # each row alone: no padding at all, answer positions only
        for r in rows:
            ids = torch.tensor([r["input_ids"]])
            h = model(input_ids=ids, output_hidden_states=True).hidden_states[2 + 1]  # recipe: rmu_layer 2
            norms.append(h[0].norm(dim=-1)[torch.tensor(r["labels"]) != -100])
    assert got == pytest.approx(4.0 * float(torch.cat(norms).mean()), rel=1e-4)
