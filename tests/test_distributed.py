"""Two processes through `accelerate launch` equal one process; sharded evaluation equals unsharded.

The launches use accelerate_configs/cpu_ddp.yaml exactly as the README tells users to
(ACCELERATE_USE_CPU=1, MULTI_GPU, 2 processes, gloo). The single-process reference runs the same
recipe with half the per-device batch and gradient_accumulation_steps=2: the same global batch of
8 forget rows (each paired with its retain row), split into the same two halves of 4.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "accelerate_configs"
STEPS = 3
# parity and mechanics: every step is applied, none selected or stopped early (retain_budget none)
SGD = {"optim": "sgd", "learning_rate": "0.05", "max_steps": str(STEPS), "retain_budget": "none"}


def _env(port: int) -> dict:
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


def _launch_cmd(recipe: str, out: Path, port: int, **opts) -> list[str]:
    args = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "cpu_ddp.yaml"),
            "--main_process_port", str(port), "-m", "llm_forget", "unlearn", recipe,
            "--output_dir", str(out), "--overwrite", "--disable_tqdm", "true"]
    for k, v in opts.items():
        args += [f"--{k}", str(v)]
    return args


def launch2(recipe: str, out: Path, port: int, **opts) -> subprocess.CompletedProcess:
    p = subprocess.run(_launch_cmd(recipe, out, port, **opts), cwd=REPO, env=_env(port), capture_output=True,
                       text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


@contextlib.contextmanager
def launch_threads():
    """This process computes with the launched ranks' thread count (OMP_NUM_THREADS=1 in `_env`),
    whatever the suite runs under: another count takes other floating-point paths."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def single(recipe: str, out: Path, **opts):
    import llm_forget
    from llm_forget.recipes_index import resolve_recipe

    with launch_threads():
        return llm_forget.unlearn(str(resolve_recipe(recipe)), output_dir=str(out), overwrite="true",
                                  disable_tqdm="true", **opts)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    sd = {}
    for f in sorted(glob.glob(str(folder / "*.safetensors"))):
        sd.update(load_file(f))
    assert sd, f"no safetensors in {folder}"
    return sd


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def check_env(out: Path, world_size: int, batch: int):
    env = json.loads((out / "results.json").read_text())["environment"]
    assert env["world_size"] == world_size
    assert env["distributed_type"] in ("MULTI_CPU", "MULTI_GPU")
    assert env["effective_batch"] == 8 and batch == 8
    return env


# ---------------------------------------------------------------- fast checks


def test_accelerate_configs_are_complete():
    names = {"cpu_ddp", "single_gpu", "multi_gpu", "fsdp", "deepspeed_zero2", "deepspeed_zero3", "multi_node_example"}
    assert names <= {p.stem for p in CONFIGS.glob("*.yaml")}
    for n in names:
        text = (CONFIGS / f"{n}.yaml").read_text()
        assert "accelerate launch" in text.split("\ncompute_environment")[0], n  # header shows the command
        yaml.safe_load(text)
    cpu = yaml.safe_load((CONFIGS / "cpu_ddp.yaml").read_text())
    assert cpu["distributed_type"] == "MULTI_GPU" and cpu["num_processes"] == 2  # MULTI_CPU starts ONE process
    fsdp = yaml.safe_load((CONFIGS / "fsdp.yaml").read_text())
    assert fsdp["fsdp_config"]["fsdp_version"] == 2 and fsdp["fsdp_config"]["fsdp_reshard_after_forward"] is True
    for stage in (2, 3):
        ds = yaml.safe_load((CONFIGS / f"deepspeed_zero{stage}.yaml").read_text())
        assert ds["deepspeed_config"]["zero_stage"] == stage


def test_unsynchronised_launch_is_refused(tmp_path, monkeypatch):
    """A launcher that started 2 processes which did not form one group (accelerate's `use_cpu: true`
    without ACCELERATE_USE_CPU=1: each process trains alone) is refused with one clear line.
    (Checked end to end by hand: that launch exits with status 2 on both ranks before training.)"""
    from llm_forget.api import _check_processes
    from llm_forget.config import parse_config
    from llm_forget.errors import UserError

    cfg = parse_config(None, {"output_dir": str(tmp_path)})
    assert cfg.world_size == 1
    _check_processes(cfg)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="did not join one process group"):
        _check_processes(cfg)


def test_cached_reference_is_indexed_by_dataset_index(target_path):
    """The cached log-prob of forget row i is found through the batch's `index`, whatever the order."""
    from llm_forget.data.encode import Encoder
    from llm_forget.data.readers import read_rows
    from llm_forget.methods.base import sequence_logp
    from llm_forget.models import load_model, load_tokenizer
    from llm_forget.trainer import Batch, Collator, Reference, UnlearnDataset

    tok = load_tokenizer(target_path)
    model = load_model(target_path, "float32")
    enc = Encoder(tok, "Question: {question}\nAnswer:", False, 256, "truncate")
    forget = [enc.row(r) for r in read_rows("builtin:forget")[:10]]
    ds, collate = UnlearnDataset(forget, None), Collator(tok.pad_token_id)
    ref = Reference("cached")
    ref.cache_forget_logps(model, ds, collate, batch_size=3)
    batch = collate([ds[i] for i in (7, 2, 9)])
    got = Batch(model, batch, ref).ref_forget_logps
    with torch.no_grad():
        for j, i in enumerate((7, 2, 9)):
            one = collate([ds[i]])["forget"]
            want = sequence_logp(model(input_ids=one["input_ids"]).logits, one["labels"])[0][0]
            assert abs(float(got[j]) - float(want)) < 1e-4


# ---------------------------------------------------------------- launches


F32 = 1e-6  # float32 rounding: machine epsilon 1.19e-7, so a few roundings of a summed value (relative)
# absolute: a token's log-probability comes out of logits of magnitude ~10 (float32 spacing ~1e-6 there), which
# another batch shape rounds differently; a row's sum of several tokens moves by a few of those (the seed-3 zoo
# build: 1.07e-6 on an nll_sum of 0.87). A sharding fault (a wrong row, padding read) moves numbers by far more.
F32_ABS = 1e-5


def test_grad_diff_two_processes_equal_one_and_sharded_eval_is_exact(target_path, tmp_path):
    """GradDiff, SGD: 2 processes x 4 rows == 1 process x 4 rows x 2 accumulation steps, to 1e-5.
    The 2-process run also evaluates sharded (eval batch 16: 50 forget rows -> 32 + 18, 40 retain
    -> 32 + 8, 20 holdout -> 16 + 4); its gathered per-item numbers and its summary must equal a
    single-process evaluation of the saved weights, row by row, to float32 rounding (F32, F32_ABS). A
    standalone script reproduces them bit for bit; inside the suite's process the last bits of a few
    rows may differ, so the test holds rounding, not bits."""
    from llm_forget.data.benchmark import truth_ratio_correct_for
    from llm_forget.data.encode import Encoder
    from llm_forget.data.readers import read_rows
    from llm_forget.evaluation.quick import quick_eval
    from llm_forget.models import load_model, load_tokenizer

    two, one = tmp_path / "two", tmp_path / "one"
    sets = {"forget": read_rows("builtin:forget"), "retain": read_rows("builtin:retain")[:80],
            "holdout": read_rows("builtin:holdout")[:40]}
    for s in ("retain", "holdout"):  # small evaluation sets keep the test short
        (tmp_path / f"{s}.json").write_text(json.dumps(sets[s]))
    small = {"retain": str(tmp_path / "retain.json"), "holdout": str(tmp_path / "holdout.json")}
    launch2("grad_diff", two, 29611, model=target_path, per_device_train_batch_size=4,
            per_device_eval_batch_size=16, **small, **SGD)
    names = {x.name for x in two.iterdir()}
    assert {"model", "recipe.yaml", "results.json"} <= names
    assert not any(n.startswith(".") and n != ".ledger.lock" for n in names)  # no half-written files
    env = check_env(two, 2, 8)
    assert env["seed"] == 0
    single("grad_diff", one, model=target_path, per_device_train_batch_size="4", gradient_accumulation_steps="2",
           eval_suite="none", **small, **SGD)
    a, b, start = weights(two / "model"), weights(one / "model"), weights(Path(target_path))
    assert max_diff(a, start) > 1e-3  # training moved the weights
    assert max_diff(a, b) <= 1e-5

    res = json.loads((two / "results.json").read_text())
    tok = load_tokenizer(str(two / "model"))
    model = load_model(str(two / "model"), "float32")
    enc = Encoder(tok, "Question: {question}\nAnswer:", False, 256, "truncate")
    assert res["rows"]["evaluation"] == {}  # no selection: the run reports on every row
    with torch.no_grad(), launch_threads():
        ref = quick_eval(model, enc, sets, 16, truth_ratio_correct=truth_ratio_correct_for(sets["forget"]))
    for s in sets:
        assert len(res["per_item"][s]) == len(sets[s])
        for got, want in zip(res["per_item"][s], ref["per_item"][s]):  # item by item, in row order
            assert got["id"] == want["id"] and got.keys() == want.keys()
            for k in got:
                want_k = want[k] if isinstance(want[k], str) else pytest.approx(want[k], rel=F32, abs=F32_ABS)
                assert got[k] == want_k, (s, got["id"], k)
    summary = {k: v for k, v in ref["summary"].items() if k != "eval_seconds"}
    assert {"mia_auc", "forget_truth_ratio", "model_utility"} <= summary.keys()
    for k, v in summary.items():
        assert res["summary"][k] == (pytest.approx(v, rel=F32, abs=F32_ABS) if isinstance(v, float) else v), k


def test_npo_and_lora_two_processes_equal_one(target_path, tmp_path):
    """NPO with cached reference log-probs (computed on every rank, broadcast from rank 0), and
    NPO on a LoRA adapter with the adapter-disabled model as the live reference."""
    cases = {"npo": {}, "lora": {"lora_r": "4", "reference": "adapter"}}
    for port, (name, extra) in zip((29621, 29631), cases.items()):
        two, one = tmp_path / f"{name}2", tmp_path / f"{name}1"
        launch2("npo", two, port, model=target_path, per_device_train_batch_size=4, eval_suite="none",
                **SGD, **extra)
        res = json.loads((two / "results.json").read_text())
        assert res["reference"] == ("adapter" if extra else "cached")
        check_env(two, 2, 8)
        single("npo", one, model=target_path, per_device_train_batch_size="4", gradient_accumulation_steps="2",
               eval_suite="none", **SGD, **extra)
        a, b = weights(two / "model"), weights(one / "model")
        if extra:  # LoRA B matrices start at zero
            assert max(float(v.abs().max()) for k, v in a.items() if "lora_B" in k) > 1e-4
        else:
            assert max_diff(a, weights(Path(target_path))) > 1e-3
        assert max_diff(a, b) <= 1e-5, name
        if extra:
            assert (two / "model" / "adapter_config.json").exists()


def test_row_target_two_processes_equal_one(target_path, tmp_path):
    """row_target's alternatives ride in the one forward pass with the forget and retain rows: every rank computes the
    same targets and draws the same alternative per row, so two processes equal one with accumulation 2."""
    two, one = tmp_path / "rt2", tmp_path / "rt1"
    launch2("row_target", two, 29651, model=target_path, per_device_train_batch_size=4, eval_suite="none", **SGD)
    check_env(two, 2, 8)
    single("row_target", one, model=target_path, per_device_train_batch_size="4", gradient_accumulation_steps="2",
           eval_suite="none", **SGD)
    a, b = weights(two / "model"), weights(one / "model")
    assert max_diff(a, weights(Path(target_path))) > 1e-3
    assert max_diff(a, b) <= 1e-5


def _children(pid: int) -> list[int]:
    out = []
    for task in glob.glob(f"/proc/{pid}/task/*/children"):
        for c in Path(task).read_text().split():
            out += [int(c)] + _children(int(c))
    return out


def _rank_of(pid: int) -> str | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for e in env:
        if e.startswith(b"RANK="):
            return e[5:].decode()
    return None


def test_killed_rank_ends_the_job_nonzero_within_60s(target_path, tmp_path):
    """SIGKILL rank 1 once training is logging steps; the launcher must exit non-zero in < 60 s."""
    port = 29641
    proc = subprocess.Popen(_launch_cmd("grad_diff", tmp_path / "k", port, model=target_path, max_steps=100000,
                                        per_device_train_batch_size=4, logging_steps=1, eval_suite="none",
                                        retain_budget="none"),
                            cwd=REPO, env=_env(port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, training = [], threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if "step 2:" in line or "'loss'" in line:  # our log line, or Trainer's own printed dict
                training.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert training.wait(150), "training never started:\n" + "".join(lines[-40:])
        victims = [c for c in _children(proc.pid) if _rank_of(c) == "1"]
        assert victims, "rank 1 not found"
        os.kill(victims[0], signal.SIGKILL)
        t0 = time.monotonic()
        rc = proc.wait(timeout=60)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:  # the launcher hung: end what this test started, then fail below
            for c in _children(proc.pid):
                os.kill(c, signal.SIGKILL)
            proc.kill()
            proc.wait()
    print(f"launcher exited with status {rc} {took:.1f} s after rank 1 was killed")
    assert rc != 0 and took < 60
    assert not (tmp_path / "k" / "results.json").exists()
