"""`retain_pairing: similar`: each forget row trains beside the retain rows most like it (llm_forget/pairing.py),
the nearest first and the next ones each epoch, the same on every rank and after a resume."""

import json

import pytest
import yaml

from llm_forget.errors import UserError
from llm_forget.pairing import qa_text, similar_retain
from llm_forget.trainer import UnlearnDataset


def test_ranking_puts_the_rows_sharing_words_first_ties_by_index():
    forget = [{"question": "What is the favourite food of Wren Sorrell?", "answer": "Plum cake."},
              {"text": "Ada Quill was born in Oslo."}]
    retain = [{"question": "Where was Bo Lin born?", "answer": "Oslo."},                 # 0: shares "born", "oslo"
              {"question": "What is the favourite food of Bo Lin?", "answer": "Rice."},   # 1: shares the question
              {"question": "Which colour does Bo Lin like?", "answer": "Teal."},          # 2: nothing with either
              {"question": "What is the favourite food of Cy Moor?", "answer": "Plum jam."},  # 3: question + "plum"
              {"question": "Which colour does Cy Moor like?", "answer": "Red."}]          # 4: nothing either
    ranked = similar_retain(forget, retain)
    assert ranked[0][:2] == [3, 1] and ranked[0][-1] in (2, 4)
    assert ranked[1][0] == 0
    assert sorted(ranked[0]) == list(range(5))  # depth beyond the rows: every row, once
    assert similar_retain(forget, retain, depth=2) == [r[:2] for r in ranked]
    assert qa_text(forget[1]) == "Ada Quill was born in Oslo." and similar_retain(forget, []) == [[], []]


def test_epoch_e_takes_the_next_ranked_rows():
    forget, retain = [{"f": i} for i in range(3)], [{"r": j} for j in range(10)]
    ranked = [[9, 8, 7, 6], [0, 1], [5]]
    ds = UnlearnDataset(forget, retain, seed=0, ranked=ranked)
    assert [ds[i]["retain_index"] for i in range(3)] == [9, 0, 5]
    ds.set_epoch(1)
    assert [ds[i]["retain_index"] for i in range(3)] == [8, 1, 5]
    ds.set_epoch(2)
    assert [ds[i]["retain_index"] for i in range(3)] == [7, 0, 5]  # wraps around a short list
    two = UnlearnDataset(forget, retain, seed=0, retain_per_forget=2, ranked=ranked)
    two.set_epoch(1)
    assert two[0]["retain_index"] == [7, 6] and two[1]["retain_index"] == [0, 1]


def test_a_similar_run_trains_on_each_forget_rows_nearest_retain_rows(target_path, tmp_path):
    """A real kl run: the retain rows it trains on are exactly its forget rows' nearest ones per epoch."""
    from llm_forget import api
    from llm_forget.config import parse_config
    from llm_forget.data.readers import read_rows

    out = tmp_path / "run"
    api.unlearn(parse_config(None, {"method": "kl", "model": target_path, "output_dir": str(out),
                                    "retain_pairing": "similar", "num_train_epochs": 2,
                                    "per_device_train_batch_size": 8, "learning_rate": 1e-5, "eval_suite": "none",
                                    "disable_tqdm": True, "reverse_rows": "false"}))
    res = json.loads((out / "results.json").read_text())
    forget, retain = read_rows("builtin:forget"), read_rows("builtin:retain")
    ranked = similar_retain(forget, retain)
    # 6 full batches of 8 per epoch: 48 items (of 50), each with ranked[i][epoch]; the sampler shuffles which
    # 48, so the count is bounded by the rows any item could have taken
    could = {r[e] for r in ranked for e in range(2)}
    assert 0 < res["counts"]["retain_trained"] <= len(could) < 2 * 48
    assert yaml.safe_load((out / "recipe.yaml").read_text())["retain_pairing"] == "similar"


def test_idk_po_refuses_similar_pairing(target_path, tmp_path):
    from llm_forget import api
    from llm_forget.config import parse_config

    with pytest.raises(UserError, match="retain_pairing similar is not available for idk_po"):
        api.unlearn(parse_config(None, {"method": "idk_po", "model": target_path, "output_dir": str(tmp_path / "r"),
                                        "retain_pairing": "similar", "disable_tqdm": True}))
    assert not (tmp_path / "r").exists()
