"""Unlearning objectives, one per file. Add one: write the file, import it here."""

from .base import METHODS, Method, register  # noqa: F401
from . import gradient_ascent, grad_diff, kl, npo, simnpo, idk_po, rmu, swap_distill, row_target  # noqa: F401,E402
