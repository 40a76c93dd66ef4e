"""Exact unlearning: SISA over LoRA adapters (sisa.py)."""
