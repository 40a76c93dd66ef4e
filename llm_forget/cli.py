"""`llm-forget` entry point: a thin argument layer over the Python API.

Each subcommand is one module in llm_forget/commands/ with `add_parser(subparsers)` and
`run(args) -> int`. Modules import heavy libraries only inside `run`, so `--help` is fast.
User errors print one line and exit with status 2 (`--debug` shows the traceback). A command
with a `--threads` option gets its torch CPU threads set here (llm_forget/threads.py).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

COMMANDS = ["unlearn", "demo", "finetune", "retrain", "models", "card", "ledger", "eval", "compare", "sisa", "stream",
            "edit"]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="llm-forget", description="Make causal LMs forget, and prove it.")
    p.add_argument("--version", action="version", version=f"llm_forget {__version__}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.add_argument("--quiet", action="store_true", help="only warnings and errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"llm_forget.commands.{name.replace('-', '_')}").add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    debug = args.debug or os.environ.get("LLM_FORGET_DEBUG") == "1"
    from .logs import setup

    setup(logging.WARNING if args.quiet else logging.INFO, debug)
    from .errors import UserError

    try:
        if hasattr(args, "threads") and not getattr(args, "options", False):  # llm_forget/threads.py
            from .threads import use_threads

            use_threads(args.threads)
        return int(args.run(args) or 0)
    except UserError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def entry() -> None:  # pragma: no cover
    """The `llm-forget` console script and `python -m llm_forget(.cli)`: `main`, then a fast exit.

    Once the command has returned (its files written and closed), the exit handlers run and
    the output streams are flushed, but the interpreter does not tear down the modules it
    imported: for torch, transformers and nltk that teardown alone takes 0.5-1.3 s on a 2-core
    CPU, a tenth of a quick evaluation. An exception still exits the ordinary way."""
    fast_exit(main())


def fast_exit(code: int) -> None:  # pragma: no cover (it ends the process; tested in a subprocess)
    """Run the exit handlers, flush stdout/stderr and end the process without module teardown.
    The one place that uses CPython's private `atexit._run_exitfuncs` (what a normal exit runs,
    logging.shutdown among them); tests/test_reliability.py checks in a subprocess that handlers
    still run and output still arrives, so a Python that changes it fails there, not silently."""
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be written
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
