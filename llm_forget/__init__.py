"""llm_forget: make Hugging Face causal LMs forget, edit what they got wrong, and prove it.

Public API (imports are lazy so `llm-forget --help` stays fast):
    llm_forget.unlearn(config) -> RunResult
    llm_forget.evaluate(model, suite="quick", ...) -> results dict
    llm_forget.edit(recipe_or_config, **overrides) -> EditRun
"""

__version__ = "0.1.0"


def __getattr__(name):
    if name in ("unlearn", "RunResult"):
        from . import api

        return getattr(api, name)
    if name == "evaluate":
        from .evaluation.suite import evaluate

        return evaluate
    if name in ("edit", "EditConfig"):
        from .editing import run

        return getattr(run, name)
    if name == "UnlearnConfig":
        from .config import UnlearnConfig

        return UnlearnConfig
    raise AttributeError(f"module 'llm_forget' has no attribute {name!r}")
