"""Weight averaging: checkpoint averaging (``rewarm average``: ``checkpoints`` and ``cli``).

May import: the config, errors, checkpoints, model and faults. Nothing heavy at package level.
"""
