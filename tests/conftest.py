import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# A cache inside the checkout: built honestly on a fresh clone, reused on later local runs.
os.environ.setdefault("LLM_FORGET_CACHE", str(REPO / ".cache" / "llm_forget"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Signing keys and fingerprint secrets of test runs go to a throwaway folder, never ~/.config.
os.environ["LLM_FORGET_CONFIG"] = tempfile.mkdtemp(prefix="llm_forget_config_")
atexit.register(shutil.rmtree, os.environ["LLM_FORGET_CONFIG"], ignore_errors=True)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# torch's thread count comes from OMP_NUM_THREADS (1 when unset: tiny models run fastest on one
# thread). `make test` runs the suite under 1 thread and the `numeric` tests again under 2: another
# count takes other floating-point paths, and every bar must hold on both.
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

THREADS = int(os.environ["OMP_NUM_THREADS"])
torch.set_num_threads(THREADS)
SHARED = REPO.parent / "shared" / "data"
if SHARED.exists():  # the local mirror of the Hub datasets that recipes and suites name
    os.environ.setdefault("LLM_FORGET_DATA_DIR", str(SHARED))

# Modules whose tests compare floating-point results computed in this process with a reference
# (a hand-computed value, the target or retain model, another code path) under a tolerance or a bar.
# Left out: launches and subprocesses that set their own thread count, hashing, signing, file I/O.
NUMERIC = {"test_methods", "test_eval_metrics", "test_editing_formulas", "test_editing_models",
           "test_editing_task_vectors", "test_eval_suite", "test_robustness", "test_unlearn", "test_demo", "test_sisa",
           "test_real_model"}


# The longest test files (by `pytest --durations=0`), run first: `make test` hands whole files to its workers
# in collection order (--dist loadfile --no-loadscope-reorder), so a long file started last would leave the
# other worker idle at the end. Only the order changes, never what runs.
LONGEST_FIRST = ["test_demo", "test_calibration_split", "test_distributed", "test_unlearn", "test_editing_task_vectors",
                 "test_real_model", "test_new_user_walk", "test_reliability", "test_eval_suite", "test_swap_distill"]


def _module(item) -> str:
    return item.module.__name__.rpartition(".")[2]


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _module(item) in NUMERIC:
            item.add_marker(pytest.mark.numeric)
    rank = {m: i for i, m in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(_module(item), len(rank)))  # stable: each file keeps its own order


@pytest.fixture(autouse=True)
def suite_threads():
    """Every test starts with the suite's thread count, whatever the test before it set."""
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(THREADS)


@pytest.fixture(scope="session")
def tiny_path():
    from llm_forget import zoo

    return str(zoo.get("tiny"))


@pytest.fixture(scope="session")
def zoo_pair():
    """tiny-target and tiny-retain; on a fresh cache built side by side (two processes of one thread), the
    way the demo builds them; a second test worker waits for them (zoo's build lock)."""
    from llm_forget import zoo

    return [str(p) for p in zoo.get_side_by_side(["tiny-target", "tiny-retain"], jobs=2, threads=1)]


@pytest.fixture(scope="session")
def target_path(zoo_pair):
    return zoo_pair[0]


@pytest.fixture(scope="session")
def retain_path(zoo_pair):
    return zoo_pair[1]


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED.exists():
        pytest.skip("../shared/data is not present")
    return SHARED
