"""Every retain row is used: forget item i meets a retain row drawn afresh per epoch, the same on
every rank and after a resume."""

import json

import pytest

from llm_forget.errors import UserError
from llm_forget.trainer import Collator, EpochCallback, Reference, UnlearnDataset, UnlearnTrainer, retain_draw


class _Recording(Collator):
    """The real collator, noting which retain rows (by identity) each batch carries."""

    def __init__(self, pad_id, retain):
        super().__init__(pad_id)
        self.where = {id(r): j for j, r in enumerate(retain)}
        self.seen = []

    def __call__(self, items):
        self.seen += [self.where[id(x["retain"])] for x in items]
        return super().__call__(items)


def test_a_run_trains_on_a_fresh_retain_row_per_forget_item_and_epoch(target_path, tmp_path):
    from llm_forget.config import method_from_config, parse_config
    from llm_forget.data.encode import Encoder
    from llm_forget.data.readers import read_rows
    from llm_forget.models import load_model, load_tokenizer

    tok = load_tokenizer(target_path)
    enc = Encoder(tok)
    forget, retain = enc.rows(read_rows("builtin:forget")), enc.rows(read_rows("builtin:retain"))
    cfg = parse_config(None, {"method": "grad_diff", "model": target_path, "output_dir": str(tmp_path),
                              "learning_rate": 1e-5, "num_train_epochs": 4, "per_device_train_batch_size": 8,
                              "disable_tqdm": True, "logging_steps": 100})
    collate = _Recording(tok.pad_token_id, retain)
    ds = UnlearnDataset(forget, retain, seed=0)
    trainer = UnlearnTrainer(model=load_model(target_path), args=cfg, train_dataset=ds, data_collator=collate,
                             method=method_from_config(cfg), reference=Reference("none"))
    trainer.train()
    steps_per_epoch = len(forget) // 8  # 6: the incomplete last batch is dropped
    trained = 4 * steps_per_epoch * 8  # 192 forget items, each with its own retain row
    assert len(collate.seen) == trained
    # a cyclic pairing would train on 48 retain rows; a fresh draw per epoch uses 192 distinct ones
    # (the stream visits all 400 retain rows before it repeats one)
    assert len(set(collate.seen)) == trained, len(set(collate.seen))
    assert trainer.retain_seen == set(collate.seen)


def test_the_draw_is_a_function_of_seed_epoch_and_item():
    """Ranks build their own dataset and a resumed run starts mid-epoch: both must draw the same rows."""
    forget, retain = [{"f": i} for i in range(5)], [{"r": j} for j in range(12)]
    a, b = UnlearnDataset(forget, retain, seed=3), UnlearnDataset(forget, retain, seed=3)
    b.set_epoch(2)
    b.set_epoch(0)
    assert [a[i]["retain_index"] for i in range(5)] == [b[i]["retain_index"] for i in range(5)]
    # positions 0..11 of the stream are a permutation: every retain row once before any repeats
    assert sorted(retain_draw(3, p, 12) for p in range(12)) == list(range(12))
    assert [retain_draw(3, p, 12) for p in range(12, 24)] != [retain_draw(3, p, 12) for p in range(12)]
    other = UnlearnDataset(forget, retain, seed=4)
    assert [other[i]["retain_index"] for i in range(5)] != [a[i]["retain_index"] for i in range(5)]

    class State:
        epoch = 2.6  # resumed in the middle of epoch 2

    cb = EpochCallback(a)
    cb.on_epoch_begin(None, State(), None)
    assert a.epoch == 2
    assert [a[i]["retain_index"] for i in range(5)] == [retain_draw(3, 10 + i, 12) for i in range(5)]
    State.epoch = 3.0  # the end of epoch 2 (steps / steps_in_epoch is exactly 1)
    cb.on_epoch_begin(None, State(), None)
    assert a.epoch == 3
    State.epoch = 0
    cb.on_epoch_begin(None, State(), None)
    assert a.epoch == 0


@pytest.mark.parametrize("n_forget", [40])
def test_tofu_forget01_sized_run_covers_far_more_than_forget_many_rows(n_forget):
    """TOFU forget01 against 3,920 retain rows: 10 epochs meet 400 distinct retain rows, not 40."""
    ds = UnlearnDataset([{}] * n_forget, [{}] * 3920, seed=0)
    seen = set()
    for e in range(10):
        ds.set_epoch(e)
        seen |= {ds.retain_index(i) for i in range(n_forget)}
    assert len(seen) == 10 * n_forget


def test_retain_per_forget_trains_k_fresh_retain_rows_per_forget_row(target_path, tmp_path):
    """`retain_per_forget: 3`: every step's retain part holds 3 rows per forget row, all distinct across the run
    until the stream wraps, and k = 1 draws the very rows of the one-row stream."""
    from llm_forget import api
    from llm_forget.config import parse_config
    from llm_forget.data.encode import Encoder
    from llm_forget.data.readers import read_rows
    from llm_forget.models import load_tokenizer

    forget, retain = [{"f": i} for i in range(5)], [{"r": j} for j in range(40)]
    one, three = UnlearnDataset(forget, retain, seed=2), UnlearnDataset(forget, retain, seed=2, retain_per_forget=3)
    assert [one[i]["retain_index"] for i in range(5)] == [retain_draw(2, i, 40) for i in range(5)]
    assert [three[i]["retain_index"] for i in range(5)] == [[retain_draw(2, 3 * i + j, 40) for j in range(3)]
                                                          for i in range(5)]
    three.set_epoch(1)
    assert three[0]["retain_index"] == [retain_draw(2, 15 + j, 40) for j in range(3)]
    with pytest.raises(UserError, match="retain_per_forget"):
        UnlearnDataset(forget, retain, retain_per_forget=0)

    tok = load_tokenizer(target_path)
    enc = Encoder(tok)
    batch = Collator(tok.pad_token_id)([UnlearnDataset(enc.rows(read_rows("builtin:forget")),
                                                       enc.rows(read_rows("builtin:retain")), retain_per_forget=3)[i]
                                        for i in range(4)])
    assert batch["forget"]["input_ids"].shape[0] == 4 and batch["retain"]["input_ids"].shape[0] == 12
    assert batch["retain_index"].tolist() == [retain_draw(0, p, 400) for p in range(12)]

    out = tmp_path / "run"
    api.unlearn(parse_config(None, {"method": "kl", "model": target_path, "output_dir": str(out),
                                    "retain_per_forget": 3, "num_train_epochs": 2, "per_device_train_batch_size": 8,
                                    "learning_rate": 1e-5, "eval_suite": "none", "disable_tqdm": True,
                                    "reverse_rows": "false"}))
    res = json.loads((out / "results.json").read_text())
    # 2 epochs × 6 full batches × 8 forget rows × 3 = 288 retain rows drawn, all distinct (400 in the stream)
    assert res["counts"]["retain_trained"] == 288, res["counts"]
