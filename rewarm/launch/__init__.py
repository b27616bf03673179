"""Launching: SLURM batch scripts rendered from the shipped templates, and their submission.

Owns ``rewarm slurm`` (``cli``) and the rendering and sweep checks (``slurm``). May import: the config, errors and
``rewarm.resources``. Imports neither Lightning nor torch.
"""
