"""Evaluation: validation loss and perplexity exactly as defined, and ``rewarm eval`` on a model or checkpoint.

Owns ``rewarm eval`` (``cli``), the perplexity arithmetic (``perplexity``) and evaluating a model directory,
run or checkpoint on the configured validation sets and tasks (``checkpoint``).

May import: the config, errors, checkpoints, tasks, data, model and faults. Never imports training.
"""
