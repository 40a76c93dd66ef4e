"""The command line's logging set-up, shared by the CLI and the processes the demo spawns."""

from __future__ import annotations

import logging

NOISY = ("transformers", "accelerate", "datasets", "httpx", "urllib3", "filelock")


def setup(level: int, debug: bool = False, timestamps: bool = False) -> None:
    """Root logger at `level` ("LEVEL name: message", or "TIME name: message" with `timestamps`, as the long
    benchmarks log); the libraries in NOISY at WARNING (INFO with `debug`)."""
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s" if timestamps
                        else "%(levelname)s %(name)s: %(message)s")
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.INFO if debug else logging.WARNING)
