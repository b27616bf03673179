"""The ``schedule.*`` section of the run config, as the root config (``rewarm.config``) assembles it.

The dataclass and its key names live in ``rewarm.schedules.section`` (the families read them); this module adds
``validate_schedule``, the checks that need the run's length (phases longer than the run, keys a family
requires), which the root config runs once the trainer section has fixed that length. Standard library only.
"""

from __future__ import annotations

from rewarm.schedules.families import plan_phases
from rewarm.schedules.section import COOLDOWN_SHAPES, DURATIONS, FAMILY_NAMES, ScheduleConfig, duration_keys

__all__ = ["COOLDOWN_SHAPES", "DURATIONS", "FAMILY_NAMES", "ScheduleConfig", "duration_keys", "validate_schedule"]


def validate_schedule(cfg: ScheduleConfig, total_steps: int, tokens_per_step: int) -> None:
    """Checks that need the run's length (phases longer than the run, required keys of the family...)."""
    plan_phases(cfg, total_steps, tokens_per_step)
