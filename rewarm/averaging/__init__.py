"""Weight averaging: an exponential moving average (EMA) of the weights kept in the training loop, and averages of
saved checkpoints.

Owns the ``averaging.*`` config section (``config``), the EMA arithmetic on lists of fp32 tensors (``ema``), where
the EMA's shards come from and how averaged weights are swapped in for an evaluation under each strategy (single
process, DDP, FSDP2, DeepSpeed ZeRO-1/2/3: ``sources``), the in-loop averager the LightningModule calls
(``averager``) and the EMA's checkpoint format with its weights-only reader (``state``); checkpoint averaging and
the export of a checkpoint's EMA (``checkpoints``) with their commands, ``rewarm average`` and ``rewarm export``
(``cli``: ``--averaged`` is added here to the checkpoints package's export command).

May import: the config, errors, evaluation, checkpoints, model, data and faults. Imported by: training (and the
commands above it). Never imports training. Nothing heavy at package level.
"""
