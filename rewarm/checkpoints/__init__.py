"""Checkpoints: atomic saves, validation, preemption signals, resume points and Hugging Face export.

Owns ``rewarm export`` (``cli``), the checkpoint store and signal watcher (``store``), what a resume may change
(``resume``) and export / loading a checkpoint's model (``export``).

May import: the config, errors, model, data and faults. Never imports training. Nothing heavy at package level.
"""
