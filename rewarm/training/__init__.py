"""Training: the Trainer assembly, the LightningModule, strategies, callbacks and the metrics row.

Owns ``rewarm train`` and ``rewarm check`` (``cli``), the run plan (``plan``), one run's steps (``run``), the
LightningModule (``module``), DDP / DeepSpeed / FSDP2 strategies (``strategies``), progress and signal callbacks
(``callbacks``), ``metrics.csv`` (``metrics``) and FLOPs / MFU (``perf``).

May import: the config, errors, averaging, checkpoints, evaluation, tasks, data, model, schedules and faults.
Imported by: the study, the demo and the command line. Nothing heavy at package level.
"""
