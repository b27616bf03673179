"""The ``forecast.*`` section of the run config (standard library only: ``rewarm check`` imports it).

Both keys are harmless on resume (``rewarm.checkpoints.resume.HARMLESS``): they change what is forecast, not the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rewarm.errors import ConfigError

ROLES = ("upstream", "downstream")
"""The validation sets' roles (``data.val.<set>.role``) the objective weighs."""


def _downstream_only() -> dict[str, float]:
    return {"upstream": 0.0, "downstream": 1.0}


@dataclass
class ForecastConfig:
    fit: str | None = None
    """FIT.json of ``rewarm forecast fit``: a running job then logs forecast/<set>/final_loss (and _low, _high) at
    every validation, refitting only its own offset on its curve so far."""
    objective: dict[str, float] = field(default_factory=_downstream_only)
    """Weights of the final losses by validation-set role (upstream | downstream) in the one number recipes are
    ranked by (predict's table, sweep pruning): sum over sets of weight[role] x final loss. Default downstream only."""

    def validate(self) -> None:
        for role, weight in self.objective.items():
            if role not in ROLES:
                raise ConfigError(f"objective.{role}", f"is not a role; roles: {', '.join(ROLES)}")
            if not weight >= 0:
                raise ConfigError(f"objective.{role}", f"must be >= 0, got {weight}")
        if not sum(self.objective.values()) > 0:
            raise ConfigError("objective", "the weights sum to 0: give upstream and/or downstream a weight > 0")
        if self.fit is not None and not self.fit:
            raise ConfigError("fit", "must name a FIT.json (rewarm forecast fit ... --out FIT.json) or be left out")
