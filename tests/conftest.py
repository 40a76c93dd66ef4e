import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# A cache inside the checkout: built honestly on a fresh clone, reused on later local runs.
os.environ.setdefault("LLM_FORGET_CACHE", str(REPO / ".cache" / "llm_forget"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models run fastest on one thread, and a 2-core machine is never oversubscribed this way.
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
SHARED = REPO.parent / "shared" / "data"
if SHARED.exists():  # the local mirror of the Hub datasets that recipes and suites name
    os.environ.setdefault("LLM_FORGET_DATA_DIR", str(SHARED))


@pytest.fixture(scope="session")
def tiny_path():
    from llm_forget import zoo

    return str(zoo.get("tiny"))


@pytest.fixture(scope="session")
def target_path():
    from llm_forget import zoo

    return str(zoo.get("tiny-target"))


@pytest.fixture(scope="session")
def retain_path():
    from llm_forget import zoo

    return str(zoo.get("tiny-retain"))


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED.exists():
        pytest.skip("../shared/data is not present")
    return SHARED
