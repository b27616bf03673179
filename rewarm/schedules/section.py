"""The ``schedule.*`` section's dataclass and key names (the root config reaches it through
``rewarm.schedules.config``, which adds the check that needs the run's length).

Every duration (warmup, decay, cooldown, constant, anneal) can be given in exactly one of three units:
``<phase>_steps`` (optimizer steps), ``<phase>_fraction`` (of the run's ``trainer.max_steps``, rounded to
the nearest step) or ``<phase>_tokens`` (divided by the tokens per optimizer step, rounded to the
nearest step). ``zero_lr_steps`` is in steps only. Which family reads which key is listed in
the docs (docs/schedules.md, *Families*) and in ``rewarm.schedules.families.FAMILIES``.

``validate()`` checks what the section can check alone; run-dependent checks (phases longer than the
run) are in ``rewarm.schedules.config.validate_schedule``.
"""

from __future__ import annotations

from dataclasses import dataclass

from rewarm.errors import ConfigError

#: Schedule families, selectable by ``schedule.name`` (the registry is ``rewarm.schedules.families.FAMILIES``).
FAMILY_NAMES = ("cosine", "neox_cosine", "linear", "constant", "inverse_sqrt", "wsd", "infinite")
#: Cooldown shapes per family that has a cooldown; the first one is the family's default.
COOLDOWN_SHAPES = {
    "wsd": ("1-sqrt", "linear", "cosine", "exponential"),
    "infinite": ("cosine", "inverse_sqrt"),
}
#: Phases whose length can be given as ``<phase>_steps`` / ``<phase>_fraction`` / ``<phase>_tokens``.
DURATIONS = ("warmup", "decay", "cooldown", "constant", "anneal")


@dataclass
class ScheduleConfig:
    name: str = "cosine"
    """Schedule family: cosine | neox_cosine | linear | constant | inverse_sqrt | wsd | infinite."""
    max_lr: float = 3e-4
    """Peak learning rate, reached at the end of warmup (the constant LR of ``constant``)."""
    min_lr: float = 3e-5
    """Floor / final LR of the decay (Gupta et al.: 0.1 x max_lr). Unused by ``constant``."""
    warmup_start_lr: float = 0.0
    """LR at the first warmup step; warmup rises linearly from it to max_lr (reaching max_lr at the warmup's end)."""
    zero_lr_steps: int = 0
    """Optimizer steps at LR 0 before everything else, so Adam's moments fill before the first real update
    (released checkpoints carry no optimizer state). Counted in the run's steps; all other phases start after it."""

    warmup_steps: int | None = None
    """Linear warmup length in optimizer steps (default 0). At most one of warmup_steps / _fraction / _tokens."""
    warmup_fraction: float | None = None
    """Warmup length as a fraction of trainer.max_steps (Gupta et al.: 0, 0.005, 0.01, 0.02)."""
    warmup_tokens: float | None = None
    """Warmup length in training tokens, e.g. 3e9 (divided by the tokens per optimizer step, rounded)."""

    decay_steps: int | None = None
    """cosine / linear: decay length after warmup (default: the rest of the run; if shorter, the LR stays at
    min_lr afterwards). neox_cosine: the T of its formula (GPT-NeoX lr_decay_iters; default: the run's steps
    after zero_lr_steps, warmup included, as Pythia trained)."""
    decay_fraction: float | None = None
    """Decay length as a fraction of trainer.max_steps."""
    decay_tokens: float | None = None
    """Decay length in training tokens."""

    cooldown_steps: int | None = None
    """wsd: cooldown at the end of the run (default 20 % of the run). infinite: cooldown from max_lr to
    constant_lr right after warmup (required)."""
    cooldown_fraction: float | None = None
    """Cooldown length as a fraction of trainer.max_steps."""
    cooldown_tokens: float | None = None
    """Cooldown length in training tokens."""
    cooldown_shape: str | None = None
    """wsd: 1-sqrt (default) | linear | cosine | exponential. infinite: cosine (default) | inverse_sqrt."""

    constant_lr: float | None = None
    """infinite: the constant LR (eta_const) held between cooldown and anneal (required for infinite)."""
    constant_steps: int | None = None
    """infinite: length of the constant phase (default: the rest of the run before the anneal)."""
    constant_fraction: float | None = None
    """Constant phase length as a fraction of trainer.max_steps."""
    constant_tokens: float | None = None
    """Constant phase length in training tokens."""
    anneal_steps: int | None = None
    """infinite: exponential anneal from constant_lr to min_lr at the end (default 0: no anneal)."""
    anneal_fraction: float | None = None
    """Anneal length as a fraction of trainer.max_steps."""
    anneal_tokens: float | None = None
    """Anneal length in training tokens."""
    inv_sqrt_alpha: float = 10.0
    """infinite with cooldown_shape=inverse_sqrt: the alpha of g(x) = 1/sqrt(1 + alpha x) - 1 (larger = faster drop)."""

    timescale_steps: int | None = None
    """inverse_sqrt: lr = max_lr / sqrt((s + timescale) / timescale), s = steps after warmup
    (default: the warmup length, or 10000 without warmup, as transformers.get_inverse_sqrt_schedule)."""

    def validate(self) -> None:
        """Check the section alone; raise ConfigError with the key relative to ``schedule``."""
        if self.name not in FAMILY_NAMES:
            raise ConfigError("name", f"unknown schedule {self.name!r}; known: {', '.join(FAMILY_NAMES)}")
        self._check_lrs()
        if self.zero_lr_steps < 0:
            raise ConfigError("zero_lr_steps", f"must be >= 0, got {self.zero_lr_steps}")
        for phase in DURATIONS:
            self._check_duration(phase)
        self._check_shape()
        if self.inv_sqrt_alpha <= 0:
            raise ConfigError("inv_sqrt_alpha", f"must be > 0, got {self.inv_sqrt_alpha}")
        if self.timescale_steps is not None and self.timescale_steps <= 0:
            raise ConfigError("timescale_steps", f"must be > 0, got {self.timescale_steps}")

    def _check_lrs(self) -> None:
        if self.max_lr <= 0:
            raise ConfigError("max_lr", f"must be > 0, got {self.max_lr}")
        if self.min_lr < 0:
            raise ConfigError("min_lr", f"must be >= 0, got {self.min_lr}")
        if self.name != "constant" and self.min_lr > self.max_lr:
            raise ConfigError("min_lr", f"{self.min_lr} is larger than schedule.max_lr={self.max_lr}")
        if not 0 <= self.warmup_start_lr <= self.max_lr:
            raise ConfigError("warmup_start_lr", f"must be in [0, max_lr={self.max_lr}], got {self.warmup_start_lr}")
        if self.constant_lr is not None and self.constant_lr < 0:
            raise ConfigError("constant_lr", f"must be >= 0, got {self.constant_lr}")

    def _check_duration(self, phase: str) -> None:
        given = [k for k in duration_keys(phase) if getattr(self, k) is not None]
        if len(given) > 1:
            raise ConfigError(given[1], f"give only one of {', '.join(given)} (they set the same length)")
        for key in given:
            value = getattr(self, key)
            if value < 0:
                raise ConfigError(key, f"must be >= 0, got {value}")
            if key.endswith("_fraction") and value > 1:
                raise ConfigError(key, f"is a fraction of the run and must be <= 1, got {value}")

    def _check_shape(self) -> None:
        shapes = COOLDOWN_SHAPES.get(self.name)
        if self.cooldown_shape is None or shapes is None:
            return
        if self.cooldown_shape not in shapes:
            raise ConfigError(
                "cooldown_shape", f"schedule {self.name!r} knows {', '.join(shapes)}; got {self.cooldown_shape!r}"
            )


def duration_keys(phase: str) -> tuple[str, str, str]:
    """The three keys that can set one phase's length, e.g. ``warmup_steps, warmup_fraction, warmup_tokens``."""
    return f"{phase}_steps", f"{phase}_fraction", f"{phase}_tokens"
