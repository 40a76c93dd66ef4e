import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# A cache inside the checkout: built honestly on a fresh clone, reused on later local runs.
os.environ.setdefault("LLM_FORGET_CACHE", str(REPO / ".cache" / "llm_forget"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
SHARED = REPO.parent / "shared" / "data"


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
