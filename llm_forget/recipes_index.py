"""Shipped recipes live in llm_forget/recipes/ (the repository's top-level recipes/ links there)."""

from pathlib import Path

from .errors import UserError, closest

RECIPES_DIR = Path(__file__).parent / "recipes"


def shipped() -> dict[str, Path]:
    """Every shipped recipe (unlearning and editing), by name."""
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.yaml"))}


def unlearning_recipes() -> dict[str, Path]:
    """The shipped recipes that `llm-forget unlearn` runs (one per unlearning method)."""
    from .methods import METHODS

    return {k: v for k, v in shipped().items() if k in METHODS}


def resolve_recipe(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise UserError(f"recipe {name_or_path} does not exist")
        return p
    found = shipped()
    if name_or_path in found:
        return found[name_or_path]
    raise UserError(f"unknown recipe {name_or_path!r}{closest(name_or_path, found)}; "
                    f"shipped: {', '.join(found)}")
