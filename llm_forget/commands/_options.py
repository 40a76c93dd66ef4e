"""`--options` of the commands: every option with its default and the first line of its help."""

from __future__ import annotations

import argparse
import dataclasses


def default_of(f: dataclasses.Field):
    """A dataclass field's default as shown to users: its value, its factory's value, or None."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def dataclass_options(cls) -> list[str]:
    """One line per init field of `cls` that has help: `--name (default X): help`."""
    return [f"--{f.name} (default {default_of(f)!r}): {f.metadata['help'].strip().splitlines()[0]}"
            for f in dataclasses.fields(cls) if f.init and f.metadata.get("help")]


THREADS = "--threads (default: CPUs other processes leave free): torch CPU threads"


def recipe_options(cls) -> str:
    """`--options` of a recipe command (unlearn, edit): --threads, then every field of its config dataclass."""
    return "\n".join([THREADS, *dataclass_options(cls)])


def parser_options(parser: argparse.ArgumentParser) -> list[str]:
    """One line per option of an argparse parser (not --help / --options)."""
    lines = []
    for a in parser._actions:
        if not a.option_strings or a.dest in ("help", "options"):
            continue
        name = max(a.option_strings, key=len)
        how = "required" if a.required else f"default {a.default!r}"
        lines.append(f"{name} ({how}): {(a.help or '').splitlines()[0]}")
    return lines
