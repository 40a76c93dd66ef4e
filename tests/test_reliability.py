"""Reliability: bad input fails with one line and exit status 2 and writes nothing; a killed run
resumes to bit-identical weights; the input model is never modified; forget-set text never leaks."""

import hashlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CANARY = "Zyxwq Canary Plinth"  # planted in forget rows; must never appear in any output or message


def _hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).iterdir()) if p.is_file()}


def _rows(n=4, canary=False):
    return [{"question": f"Who is person {i}?",
             "answer": f"Person {i} is a writer{' ' + CANARY if canary else ''}."} for i in range(n)]


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, target_path):
    """Every bad input of the matrix, built locally (no downloads)."""
    import torch
    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel

    d = tmp_path_factory.mktemp("bad")
    (d / "invalid.yaml").write_text("method: npo\nlearning_rate: [1e-4,\n")
    (d / "unknown_method.yaml").write_text("method: simpno\noutput_dir: x\n")
    (d / "unknown_key.yaml").write_text("method: npo\nbetta: 0.1\n")
    (d / "empty.json").write_text("[]")
    (d / "malformed.jsonl").write_text('{"question": "a", "answer": "b"}\n{"question": "c", \n')
    (d / "fields.json").write_text(json.dumps([{"q": "a", "a": "b"}]))
    (d / "latin1.json").write_bytes('[{"question": "Qui est Zoë?", "answer": "Zoë"}]'.encode("latin-1"))
    (d / "forget.json").write_text(json.dumps(_rows(4, canary=True)))
    (d / "retain.json").write_text(json.dumps([{"question": f"Who is r{i}?", "answer": "Ok."} for i in range(4)]
                                              + _rows(1, canary=True)))  # one row overlaps the forget set
    (d / "suite.yaml").write_text("name: broken\ndatasets:\n  forget: " + str(d / "nowhere.json")
                                  + "\nmetrics:\n  token: [forget]\n")
    (d / "suite_k.yaml").write_text("name: badk\ndatasets:\n  forget: builtin:forget\n  holdout: builtin:holdout\n"
                                    "metrics:\n  mia: {members: forget, nonmembers: holdout, ks: [0, 150]}\n")
    (d / "suite_gen.yaml").write_text("name: badgen\ndatasets:\n  forget: builtin:forget\n"
                                      "metrics:\n  generation: {sets: [forget], batch_size: 0}\n")
    (d / "edit.json").write_text(json.dumps([{"case_id": 7, "prompt": "The capital of France is",
                                              "subject": "Germany", "target_new": "Rome"}]))
    # an encoder (BERT), not a causal LM, with safetensors weights
    bert = BertModel(BertConfig(vocab_size=64, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=16, max_position_embeddings=32))
    bert.save_pretrained(d / "bert")
    # pickle weights: the tiny target's config and tokenizer with its weights as a torch pickle
    pk = d / "pickle_model"
    shutil.copytree(target_path, pk)
    torch.save(load_file(str(pk / "model.safetensors")), pk / "pytorch_model.bin")
    (pk / "model.safetensors").unlink()
    (d / "full").mkdir()
    (d / "full" / "keep.txt").write_text("precious")
    return d


MATRIX = [  # id, argv (after the command), expected message
    ("recipe_missing", ["unlearn", "B:no_such.yaml"], "recipe B:no_such.yaml does not exist"),
    ("invalid_yaml", ["unlearn", "B:invalid.yaml"], "is not valid YAML at line"),
    ("unknown_method_in_recipe", ["unlearn", "B:unknown_method.yaml"],
     "unknown method 'simpno' (did you mean 'simnpo'?)"),
    ("unknown_option_in_recipe", ["unlearn", "B:unknown_key.yaml"], "unknown option 'betta' (did you mean 'beta'?)"),
    ("wrong_type", ["unlearn", "npo", "--learning_rate", "fast"], "invalid float value: 'fast'"),
    ("negative_lr", ["unlearn", "npo", "--learning_rate", "-1e-4"], "learning_rate must be >= 0"),
    ("negative_beta", ["unlearn", "npo", "--beta", "-0.5"], "beta must be > 0"),
    ("divergence_unknown", ["unlearn", "swap_distill", "--divergence", "sideways"],
     "divergence must be forward, reverse, jeffreys or hinge"),
    ("teacher_names_unknown", ["unlearn", "swap_distill", "--teacher_names", "famous"],
     "teacher_names must be fabricated or neighbours"),
    ("negative_anchor", ["unlearn", "row_target", "--anchor", "-1"], "anchor must be >= 0"),
    ("negative_select_stall", ["unlearn", "row_target", "--select_stall", "-1"], "select_stall must be >= 0"),
    ("zero_retain_per_forget", ["unlearn", "kl", "--retain_per_forget", "0"], "retain_per_forget must be >= 1"),
    ("bad_retain_pairing", ["unlearn", "kl", "--retain_pairing", "nearest"], "retain_pairing must be stream or similar"),
    ("freeze_matches_nothing", ["unlearn", "kl", "--model", "tiny-target", "--freeze", "lm_head.*"],
     "freeze pattern 'lm_head.*' matches no parameter of the model"),
    ("freeze_everything", ["unlearn", "kl", "--model", "tiny-target", "--freeze", "*"],
     "freeze '*' matches every parameter: nothing would be trained"),
    ("freeze_with_lora", ["unlearn", "kl", "--lora_r", "4", "--freeze", "model.embed_tokens.*"],
     "freeze needs full training (lora_r 0)"),
    ("reverse_rows_unknown", ["unlearn", "npo", "--reverse_rows", "maybe"],
     "reverse_rows must be true, false or auto, not 'maybe'"),
    ("model_missing", ["unlearn", "npo", "--model", "B:no_model"], "model path B:no_model does not exist"),
    ("not_causal_lm", ["unlearn", "npo", "--model", "B:bert"], "is not a causal language model (bert, BertModel)"),
    ("pickle_weights", ["unlearn", "npo", "--model", "B:pickle_model"],
     "holds pickle weights (.bin/.pt), which can run code when loaded"),
    ("forget_empty", ["unlearn", "npo", "--forget", "B:empty.json"], "data B:empty.json is empty"),
    ("forget_malformed", ["unlearn", "npo", "--forget", "B:malformed.jsonl"], "is not valid JSON"),
    ("forget_fields", ["unlearn", "npo", "--forget", "B:fields.json"], "row 0 has neither question/answer nor text"),
    ("forget_not_utf8", ["unlearn", "npo", "--forget", "B:latin1.json"], "is not UTF-8 text (byte"),
    ("overlap", ["unlearn", "npo", "--forget", "B:forget.json", "--retain", "B:forget.json"],
     "4 of 4 forget rows also occur in the retain set; remove them or pass --allow_overlap"),
    ("overlong_error", ["unlearn", "npo", "--forget", "B:forget.json", "--max_length", "24", "--overlong", "error"],
     "a sequence has 44 tokens, more than max_length=24; raise max_length or set overlong: truncate"),
    ("output_not_empty", ["unlearn", "npo", "--output_dir", "B:full"],
     "is not empty; pass --overwrite to replace it or --resume to continue"),
    ("eval_suite_dataset_missing", ["eval", "--model", "tiny-target", "--suite", "B:suite.yaml", "--output", "OUT"],
     "data file B:nowhere.json does not exist"),
    ("eval_min_k_out_of_range", ["eval", "--model", "tiny-target", "--suite", "B:suite_k.yaml", "--output", "OUT"],
     "Min-K% k must be in (0, 100]"),
    ("eval_generation_batch_size_zero", ["eval", "--model", "tiny-target", "--suite", "B:suite_gen.yaml",
                                         "--output", "OUT"], "generation batch_size must be a positive integer"),
    ("eval_lanes_zero", ["eval", "--model", "tiny-target", "--lanes", "0", "--output", "OUT"], "--lanes must be >= 1"),
    ("edit_task_vector_utility_unknown", ["edit", "task_vector", "--utility", "accuracy", "--output_dir", "OUT"],
     "utility must be probability or perplexity"),
    ("edit_task_vector_negative_retain_weight", ["edit", "task_vector", "--retain_weight", "-1", "--output_dir", "OUT"],
     "retain_weight must be >= 0"),
    ("edit_task_vector_negative_lambda_refine", ["edit", "task_vector", "--lambda_refine", "-1", "--output_dir", "OUT"],
     "lambda_refine must be >= 0"),
    ("edit_task_vector_select_rows_zero", ["edit", "task_vector", "--select_rows", "0", "--output_dir", "OUT"],
     "select_rows must be > 0"),
    ("edit_task_vector_batch_size_zero", ["edit", "task_vector", "--reinforce_batch_size", "0", "--output_dir", "OUT"],
     "reinforce_batch_size must be > 0"),
    ("select_target_unknown", ["unlearn", "npo", "--select_target", "closest"],
     "select_target must be max, holdout, retrain or truth_ratio, not 'closest'"),
    ("select_target_holdout_without_holdout", ["unlearn", "npo", "--select_target", "holdout", "--holdout", "none"],
     "select_target holdout needs holdout rows"),
    ("edit_subject_not_in_prompt", ["edit", "rome", "--model", "tiny-target", "--requests", "B:edit.json",
                                    "--eval", "false"], "subject 'Germany' does not occur in its prompt"),
]


@pytest.mark.parametrize("argv, message", [m[1:] for m in MATRIX], ids=[m[0] for m in MATRIX])
def test_bad_input_one_line_exit_2_nothing_written(argv, message, bad_inputs, target_path, tmp_path, capsys,
                                                   monkeypatch):
    from llm_forget.cli import main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    sub = lambda s: s.replace("B:", str(bad_inputs) + "/").replace("OUT", str(out))  # noqa: E731
    argv = [sub(a) for a in argv]
    if argv[0] in ("unlearn", "edit") and "--output_dir" not in argv:
        argv += ["--output_dir", str(out)]
    before, full_before = _hashes(target_path), _hashes(bad_inputs / "full")
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert sub(message) in lines[0], lines[0]
    assert CANARY not in err  # the refused forget rows are never quoted
    assert not out.exists(), "a refused command wrote its output folder"
    assert _hashes(bad_inputs / "full") == full_before and _hashes(target_path) == before


def test_pickle_weights_load_when_allowed(bad_inputs, target_path):
    import torch

    from llm_forget.models import load_model

    a, b = load_model(str(bad_inputs / "pickle_model"), allow_pickle=True), load_model(target_path)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_no_pad_token_fixed_with_warning_and_truncation_counted(bad_inputs, target_path, tmp_path, caplog):
    """A tokenizer without pad token is fixed (eos pads) with a warning; overlong rows are cut and
    counted in results.json; --allow_overlap true accepts a retain set sharing a forget row; the
    canary in the forget rows appears in no output and no log."""
    from llm_forget.cli import main
    from llm_forget.data.encode import Encoder
    from llm_forget.models import load_tokenizer

    model = tmp_path / "nopad"
    shutil.copytree(target_path, model)
    tc = json.loads((model / "tokenizer_config.json").read_text())
    tc.pop("pad_token")
    (model / "tokenizer_config.json").write_text(json.dumps(tc))
    before = _hashes(model)
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        rc = main(["unlearn", "grad_diff", "--model", str(model), "--forget", str(bad_inputs / "forget.json"),
                   "--retain", str(bad_inputs / "retain.json"), "--allow_overlap", "true", "--per_device_train_batch_size", "2",
                   "--output_dir", str(out), "--max_steps", "1", "--max_length", "24", "--eval_suite", "none",
                   "--retain_budget", "none", "--disable_tqdm", "true"])
    assert rc == 0
    assert "tokenizer has no pad token; using its eos token" in caplog.text
    tok = load_tokenizer(str(model))
    enc = Encoder(tok, "Question: {question}\nAnswer:", False, 24, "truncate")
    for r in json.loads((bad_inputs / "retain.json").read_text()):
        enc.row(r)
    assert enc.truncated == 1  # the short retain rows fit; the forget rows (44 tokens with eos) do not
    results = json.loads((out / "results.json").read_text())
    assert results["counts"]["truncated"] == 4 + 1 and results["counts"]["retain"] == 5
    assert CANARY not in caplog.text
    for p in out.rglob("*"):
        if p.is_file() and p.suffix in (".json", ".jsonl", ".md", ".yaml", ".txt"):
            assert CANARY not in p.read_text(errors="replace"), p
    assert _hashes(model) == before


def _unlearn_cmd(model, out, *extra):
    return [sys.executable, "-m", "llm_forget", "unlearn", "grad_diff", "--model", model, "--output_dir", str(out),
            "--max_steps", "12", "--save_strategy", "steps", "--save_steps", "2", "--retain_budget", "none",
            "--eval_suite", "none", "--optim", "adamw_torch", "--lr_scheduler_type", "cosine",
            "--per_device_train_batch_size", "4", "--disable_tqdm", "true", *extra]


def test_sigkill_then_resume_is_bit_identical(target_path, tmp_path):
    """SIGKILL a run right after a random checkpoint; --resume true finishes it with exactly the
    weights of an uninterrupted run (CPU, AdamW, cosine schedule). The killed run leaves only
    checkpoints behind (no model/ or results.json), and the input model is never modified."""
    import torch
    from safetensors.torch import load_file

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    before = _hashes(target_path)
    full = tmp_path / "full"
    p = subprocess.run(_unlearn_cmd(target_path, full), capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert _hashes(target_path) == before

    kill_at = random.Random().choice([2, 4, 6, 8])
    run = tmp_path / "killed"
    proc = subprocess.Popen(_unlearn_cmd(target_path, run), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    deadline = time.time() + 120
    while not (run / f"checkpoint-{kill_at}" / "trainer_state.json").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before the checkpoint appeared"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "model").exists() and not (run / "results.json").exists()
    assert {q.name for q in run.iterdir()} <= {f"checkpoint-{s}" for s in range(2, 13, 2)}
    assert _hashes(target_path) == before

    p = subprocess.run(_unlearn_cmd(target_path, run, "--resume", "true"), capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert _hashes(target_path) == before
    a, b = load_file(str(full / "model" / "model.safetensors")), load_file(str(run / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"killed at step {kill_at}"
    assert json.loads((run / "results.json").read_text())["steps"] == 12


def test_infinite_gradient_norm_stops_before_the_step(target_path, tmp_path):
    """A finite loss with an infinite gradient (fault injected into one weight's gradient at the
    second step) stops the run naming the step and what to change; the weights are untouched
    by that step (the optimizer never ran on the bad gradient)."""
    import torch
    from transformers import TrainerCallback

    from llm_forget.config import method_from_config, parse_config
    from llm_forget.data.encode import Encoder
    from llm_forget.data.readers import read_rows
    from llm_forget.models import load_model, load_tokenizer
    from llm_forget.trainer import Collator, Reference, TrainingDiverged, UnlearnDataset, UnlearnTrainer

    cfg = parse_config(None, {"method": "gradient_ascent", "output_dir": str(tmp_path / "o"), "max_steps": 3,
                              "per_device_train_batch_size": 4, "optim": "sgd", "learning_rate": 1e-3,
                              "disable_tqdm": True, "save_strategy": "no"})
    tok, model = load_tokenizer(target_path), load_model(target_path)
    enc = Encoder(tok, cfg.prompt_template, False, cfg.max_length)
    rows = [enc.row(r) for r in read_rows("builtin:forget")[:12]]
    method = method_from_config(cfg)
    method.setup(model)
    trainer = UnlearnTrainer(model=model, args=cfg, train_dataset=UnlearnDataset(rows, None), data_collator=Collator(
        tok.pad_token_id), processing_class=tok, method=method, reference=Reference("none", model))
    w = model.get_input_embeddings().weight
    calls = []
    w.register_hook(lambda g: (calls.append(1), g * float("inf") if len(calls) == 2 else g)[1])
    snapshot = {}

    class Snap(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            snapshot.update({k: v.clone() for k, v in model.state_dict().items()})

    trainer.add_callback(Snap())
    with pytest.raises(TrainingDiverged, match=r"gradient norm became (inf|nan) at step 2; lower learning_rate"):
        trainer.train()
    assert len(calls) == 2 and snapshot  # one good step ran, the bad one was refused
    assert all(torch.equal(v, snapshot[k]) and torch.isfinite(v).all() for k, v in model.state_dict().items())


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    """--debug (or LLM_FORGET_DEBUG=1) lets the error propagate with its traceback."""
    from llm_forget.cli import main
    from llm_forget.errors import UserError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="recipe missing.yaml does not exist"):
        main(["--debug", "unlearn", "missing.yaml", "--output_dir", str(tmp_path / "o")])


def test_resume_skips_a_checkpoint_cut_short(tmp_path):
    """A kill while a checkpoint is being written leaves it without trainer_state.json (saved last):
    --resume continues from the previous, complete one."""
    from llm_forget.api import last_complete_checkpoint

    assert last_complete_checkpoint(tmp_path) is None
    for step, complete in [(2, True), (10, True), (12, False)]:
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"x")
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-99.tmp").mkdir()
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
    # why transformers' own lookup is not enough: it returns the checkpoint cut short
    from transformers.trainer_utils import get_last_checkpoint

    assert get_last_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-12")


def test_fast_exit_runs_exit_handlers_and_flushes(tmp_path):
    """The console script's exit skips module teardown through CPython's private
    atexit._run_exitfuncs: registered handlers must still run and buffered output still arrive."""
    import subprocess
    import sys

    code = ("import atexit, sys; from llm_forget.cli import fast_exit; "
            "atexit.register(lambda: open(sys.argv[1], 'w').write('ran')); "
            "sys.stdout.write('buffered'); fast_exit(3)")
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "h")], capture_output=True, text=True, timeout=120)
    assert (p.returncode, p.stdout, (tmp_path / "h").read_text()) == (3, "buffered", "ran")
