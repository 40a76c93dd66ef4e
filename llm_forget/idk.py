"""IdkPO through trl's DPOTrainer: the refusal is `chosen`, the forget answer `rejected`.

trl owns the DPO loss, the reference model (a frozen copy, or the adapter disabled under
peft) and the tokenisation of prompt/completion pairs; we only build the preference data.
"""

from __future__ import annotations

import dataclasses

from transformers import TrainingArguments

from .data.readers import read_rows


def preference_rows(forget_rows: list[dict], refusals: list[dict], encoder) -> list[dict]:
    """One preference pair per forget row; refusals are assigned round-robin."""
    out = []
    for i, r in enumerate(forget_rows):
        idk = refusals[i % len(refusals)]["answer"]
        out.append({"prompt": encoder.prompt_text(r["question"]), "chosen": " " + idk.strip(),
                    "rejected": " " + r["answer"].strip()})
    return out


def build_dpo_trainer(cfg, method, model, tokenizer, encoder, forget_rows, peft_config=None):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    if any("question" not in r for r in forget_rows):
        from .errors import UserError

        raise UserError("idk_po needs question/answer rows in the forget set")
    refusals = read_rows(method.idk)
    data = Dataset.from_list(preference_rows(forget_rows, refusals, encoder))
    base = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
    base["remove_unused_columns"] = True
    args = DPOConfig(**base, beta=method.beta, max_length=cfg.max_length)
    return DPOTrainer(model=model, ref_model=None, args=args, train_dataset=data,
                      processing_class=tokenizer, peft_config=peft_config)
