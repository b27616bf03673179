"""Launching: SLURM batch scripts rendered from the shipped templates, and their submission.

Owns ``rewarm slurm`` (``cli``), the rendering and sweep checks (``slurm``) and the check that the partition's
nodes can hold the job (``capacity``, through ``scontrol``). May import: the config, errors and
``rewarm.resources``. Imports neither Lightning nor torch.
"""
