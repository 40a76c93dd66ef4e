"""The supervised fine-tuning loop on question/answer or text rows (answer tokens only), on a model
folder already resolved: what `finetune.finetune` runs after checking its inputs, and what the zoo
builds its tiny models with. A thin layer over `transformers.Trainer`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


class _Rows(torch.utils.data.Dataset):
    def __init__(self, enc):
        self.enc = enc

    def __len__(self):
        return len(self.enc)

    def __getitem__(self, i):
        return self.enc[i]


def train(path: str, rows: list[dict], output_dir: str | Path, *, epochs: float = 10, learning_rate: float = 1e-3,
          batch_size: int = 32, seed: int = 0, max_length: int = 256,
          prompt_template: str = "Question: {question}\nAnswer:", chat_template: bool = False,
          warmup_ratio: float = 0.05, weight_decay: float = 0.0, lora_r: int = 0, dtype: str = "auto",
          progress: bool = True, max_steps: int = -1, lr_scheduler_type: str = "cosine",
          answer_eos: bool = True, name: str | None = None) -> dict:
    """Fine-tune the model in folder `path` on `rows`; save it (LoRA merged) to `output_dir` in one
    rename. `max_steps` > 0 overrides `epochs`; `answer_eos=False` leaves the eos closing each answer
    out of the loss. Returns {"output_dir", "train_seconds", "steps", "final_loss"}."""
    from transformers import Trainer, TrainingArguments, set_seed

    from . import io
    from .config import has_accelerator
    from .data.encode import Encoder, pad, without_eos_labels
    from .models import load_model, load_tokenizer

    tok = load_tokenizer(path)
    enc = Encoder(tok, prompt_template, chat_template, max_length)
    items = enc.rows(rows)
    if not answer_eos:
        items = without_eos_labels(items, tok.eos_token_id)
    set_seed(seed)
    m = load_model(path, dtype)
    if lora_r:
        from peft import LoraConfig, get_peft_model

        m = get_peft_model(m, LoraConfig(r=lora_r, lora_alpha=2 * lora_r, target_modules="all-linear",
                                         task_type="CAUSAL_LM"))
    out = Path(output_dir)
    import tempfile

    scratch = tempfile.mkdtemp(prefix="llm_forget_ft.")
    args = TrainingArguments(output_dir=scratch, num_train_epochs=epochs, learning_rate=learning_rate,
                             per_device_train_batch_size=batch_size, warmup_steps=warmup_ratio,
                             weight_decay=weight_decay, lr_scheduler_type=lr_scheduler_type, save_strategy="no",
                             max_steps=max_steps,
                             report_to="none", logging_steps=50, seed=seed, disable_tqdm=not progress,
                             remove_unused_columns=False, dataloader_pin_memory=has_accelerator())
    trainer = Trainer(model=m, args=args, train_dataset=_Rows(items),
                      data_collator=lambda b: pad(b, tok.pad_token_id))
    if not progress:  # no bar, and no loss dicts printed to stdout either (the log line below sums it up)
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    t = time.perf_counter()
    res = trainer.train()
    secs = time.perf_counter() - t
    if trainer.is_world_process_zero():
        final = trainer.model.merge_and_unload() if lora_r else trainer.model
        with io.atomic_dir(out) as d:
            final.save_pretrained(d, safe_serialization=True)
            tok.save_pretrained(d)
    import shutil

    shutil.rmtree(scratch, ignore_errors=True)
    logger.info("fine-tuned %s on %d rows in %.1fs (loss %.3f)", name or path, len(rows), secs, res.training_loss)
    return {"output_dir": str(out), "train_seconds": secs, "steps": res.global_step, "final_loss": res.training_loss}
