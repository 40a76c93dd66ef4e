"""IdkDPO = γ·DPO + α·NLL(retain): the retain term is part of idk_po's loss (Maini et al. 2024)."""

import pytest
import torch


def test_idk_po_loss_is_gamma_dpo_plus_alpha_retain_nll(target_path, tmp_path):
    from llm_forget.config import method_from_config, parse_config
    from llm_forget.data.encode import Encoder, pad
    from llm_forget.data.readers import read_rows
    from llm_forget.idk import build_dpo_trainer
    from llm_forget.methods.base import nll
    from llm_forget.models import load_model, load_tokenizer
    from llm_forget.trainer import retain_draw

    cfg = parse_config(None, {"method": "idk_po", "model": target_path, "output_dir": str(tmp_path),
                              "gamma": 0.5, "alpha": 2.0, "per_device_train_batch_size": 4, "seed": 7,
                              "disable_tqdm": True})
    method = method_from_config(cfg)
    assert (method.gamma, method.alpha) == (0.5, 2.0)
    tok = load_tokenizer(target_path)
    enc = Encoder(tok)
    forget, retain = read_rows("builtin:forget"), enc.rows(read_rows("builtin:retain"))
    trainer = build_dpo_trainer(cfg, method, load_model(target_path), tok, enc, forget, retain_enc=retain)
    model = trainer.model.train()
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    with torch.no_grad():
        full = float(trainer.compute_loss(model, batch))
        rows = [retain_draw(7, k, len(retain)) for k in range(4)]  # step 0, micro-batch 0, rank 0
        assert trainer.retain_seen == set(rows)
        b = pad([retain[j] for j in rows], tok.pad_token_id)
        r = float(nll(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"]))
        trainer.alpha, trainer.gamma = 0.0, 1.0
        dpo = float(trainer.compute_loss(model, batch))
    assert r > 0.01 and dpo > 0.01
    assert full == pytest.approx(0.5 * dpo + 2.0 * r, rel=1e-5)
    # the next micro-batch of the same step draws the next rows of the stream, not the same ones
    assert trainer.retain_indices(4) == [retain_draw(7, k, len(retain)) for k in range(4, 8)]


def test_idk_po_draws_retain_per_forget_rows_per_forget_row(target_path, tmp_path):
    from llm_forget.config import method_from_config, parse_config
    from llm_forget.data.encode import Encoder
    from llm_forget.data.readers import read_rows
    from llm_forget.idk import build_dpo_trainer
    from llm_forget.models import load_model, load_tokenizer
    from llm_forget.trainer import retain_draw

    cfg = parse_config(None, {"method": "idk_po", "model": target_path, "output_dir": str(tmp_path),
                              "per_device_train_batch_size": 4, "retain_per_forget": 2, "seed": 7,
                              "disable_tqdm": True})
    tok = load_tokenizer(target_path)
    enc = Encoder(tok)
    retain = enc.rows(read_rows("builtin:retain"))
    trainer = build_dpo_trainer(cfg, method_from_config(cfg), load_model(target_path), tok, enc,
                                read_rows("builtin:forget"), retain_enc=retain)
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    with torch.no_grad():
        trainer.compute_loss(trainer.model.train(), batch)
    assert trainer.retain_seen == {retain_draw(7, k, len(retain)) for k in range(8)}
