"""Which of the papers' findings a demo study reproduces, computed from its runs' metrics against seed noise.

Nothing here is decided in advance: every verdict compares final validation losses (``val/<set>/loss``
of the last evaluation in ``metrics.csv``) between runs of the study, and a difference counts only when it
is larger than the *noise threshold*: ``NOISE_FACTOR`` x the largest final-loss difference between the
two seeds of the reference setting (with a floor of ``MIN_NOISE`` nats, so two runs that happen to agree
exactly do not make every difference significant). Each finding is "reproduced", "not reproduced"
(the numbers point the other way or do not separate) with the numbers that decided it.

Findings (DESIGN.md §2, Gupta et al. 2023 and Ibrahim et al. 2024):

1. a higher max LR gives a lower downstream and a higher upstream loss;
2. the constant LR forgets least but adapts least, and rewarm + decay wins downstream by the end;
3. replaying 5 % upstream data reduces forgetting;
4. every rewarmed model (warmup + decay from the base, with or without replay) beats training from scratch
   on both sets;
5. rewarming on the upstream data itself still costs loss (upstream loss rises above its start);
6. the warmup length barely matters (0 % vs 1 % differ by no more than the seed noise);
7. (when the study has the run) continuing from an earlier checkpoint of the base does not end better downstream
   than continuing from the final one (Gupta et al.: "earlier checkpoints do not adapt faster");
8. (when the study has the run) the EMA of the weights taken just before a WSD run's cooldown recovers part, not
   all, of the cooldown's downstream gain (Hägele et al. 2024): the fraction (raw − EMA before the cooldown) /
   (raw before − raw after the cooldown), from the ``val/`` and ``val_avg/`` columns (``rewarm.averaging``); its
   differences are paired (one run, the same tokens), so they count above ``MIN_NOISE``, not the seed noise.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

NOISE_FACTOR = 2.0
MIN_NOISE = 0.005  # nats/token


@dataclass(frozen=True)
class Curve:
    """One run's losses on one validation set: at step 0, at the last evaluation, and the highest after step 0."""

    start: float
    final: float
    peak_after_start: float


@dataclass(frozen=True)
class Finding:
    title: str
    reproduced: bool
    evidence: str


@dataclass
class StudyNumbers:
    """Final losses per run and set, the sets' roles, and the seed pair that measures the noise."""

    curves: dict[str, dict[str, Curve]]
    upstream: str
    downstream: str
    seed_pair: tuple[str, str]
    notes: list[str] = field(default_factory=list)

    def final(self, run: str, role: str) -> float:
        return self.curves[run][self.upstream if role == "upstream" else self.downstream].final

    @property
    def seed_noise(self) -> float:
        """Largest |final loss difference| between the two seeds, over both sets (nats/token)."""
        a, b = self.seed_pair
        return max(abs(self.final(a, r) - self.final(b, r)) for r in ("upstream", "downstream"))

    @property
    def threshold(self) -> float:
        return max(NOISE_FACTOR * self.seed_noise, MIN_NOISE)


def read_curves(run_dir: Path) -> dict[str, Curve]:
    """``val/<set>/loss`` of a run's metrics.csv as a Curve per set (rows without a value are skipped)."""
    values: dict[str, list[tuple[int, float]]] = {}
    with (Path(run_dir) / "metrics.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            for key, text in row.items():
                parts = (key or "").split("/")
                if len(parts) == 3 and parts[0] == "val" and parts[2] == "loss" and text not in (None, ""):
                    values.setdefault(parts[1], []).append((int(float(row["step"])), float(text)))
    out = {}
    for name, pts in values.items():
        pts.sort()
        later = [v for s, v in pts if s > pts[0][0]] or [pts[0][1]]
        out[name] = Curve(pts[0][1], pts[-1][1], max(later))
    return out


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def higher_lr(n: StudyNumbers, lr_runs: list[tuple[float, str]]) -> Finding:
    """1: across max LRs (ascending), downstream final loss falls and upstream final loss rises."""
    runs = [r for _, r in sorted(lr_runs)]
    down = [n.final(r, "downstream") for r in runs]
    up = [n.final(r, "upstream") for r in runs]
    t = n.threshold
    down_ok, up_ok = _monotone(down, -1, t), _monotone(up, +1, t)
    ev = (f"max LR {', '.join(f'{x:g}' for x, _ in sorted(lr_runs))}: downstream {', '.join(map(_fmt, down))} "
          f"({'falls' if down_ok else 'does not fall'} by more than {_fmt(t)} at each step), upstream "
          f"{', '.join(map(_fmt, up))} ({'rises' if up_ok else 'does not rise'} by more than {_fmt(t)} at each step)")
    ok = down_ok and up_ok
    return Finding("Higher max LR: lower downstream loss, higher upstream loss", ok, ev)


def _monotone(values: list[float], sign: int, threshold: float) -> bool:
    """Each consecutive change has the given sign and is larger than the threshold."""
    return all(sign * (b - a) > threshold for a, b in zip(values, values[1:], strict=False))


def constant_lr(n: StudyNumbers, constant: str, rewarmed: list[str], main: str) -> Finding:
    """2: constant LR has the lowest upstream (forgets least) and highest downstream loss of the no-replay runs."""
    t = n.threshold
    c_up, c_down = n.final(constant, "upstream"), n.final(constant, "downstream")
    forgets_least = all(n.final(r, "upstream") - c_up > t for r in rewarmed)
    adapts_least = all(c_down - n.final(r, "downstream") > t for r in rewarmed)
    ev = (f"constant: upstream {_fmt(c_up)}, downstream {_fmt(c_down)}; rewarmed runs: upstream "
          f"{_range(n, rewarmed, 'upstream')}, downstream {_range(n, rewarmed, 'downstream')} "
          f"(main rewarm {main}: downstream {_fmt(n.final(main, 'downstream'))}); threshold {_fmt(t)}")
    return Finding("Constant LR forgets least but adapts least; rewarm + decay wins downstream", forgets_least and adapts_least, ev)


def _range(n: StudyNumbers, runs: list[str], role: str) -> str:
    vals = [n.final(r, role) for r in runs]
    return f"{_fmt(min(vals))}..{_fmt(max(vals))}"


def replay(n: StudyNumbers, replay_run: str, main: str) -> Finding:
    """3: the replay run's upstream final loss is lower than the same setting's without replay."""
    gain = n.final(main, "upstream") - n.final(replay_run, "upstream")
    cost = n.final(replay_run, "downstream") - n.final(main, "downstream")
    ev = (f"upstream {_fmt(n.final(replay_run, 'upstream'))} with replay vs {_fmt(n.final(main, 'upstream'))} without "
          f"(forgetting reduced by {_fmt(gain)}; downstream cost {cost:+.3f}); threshold {_fmt(n.threshold)}")
    return Finding("Replaying 5 % upstream data reduces forgetting", gain > n.threshold, ev)


def beats_scratch(n: StudyNumbers, scratch: str, rewarmed: list[str]) -> Finding:
    """4: every rewarmed run ends below the from-scratch run on both sets."""
    t = n.threshold
    margins = [min(n.final(scratch, role) - n.final(r, role) for role in ("upstream", "downstream")) for r in rewarmed]
    ev = (f"scratch: upstream {_fmt(n.final(scratch, 'upstream'))}, downstream {_fmt(n.final(scratch, 'downstream'))}; "
          f"smallest margin of a rewarmed run {_fmt(min(margins))}; threshold {_fmt(t)}")
    return Finding("Every rewarmed model beats training from scratch", min(margins) > t, ev)


def same_data(n: StudyNumbers, upstream_run: str) -> Finding:
    """5: rewarming on the upstream data raises its upstream loss above the starting model's."""
    c = n.curves[upstream_run][n.upstream]
    rise = c.peak_after_start - c.start
    ev = (f"upstream loss: start {_fmt(c.start)}, highest after the rewarm {_fmt(c.peak_after_start)} "
          f"(+{_fmt(rise)}), final {_fmt(c.final)} ({c.final - c.start:+.3f}); threshold {_fmt(n.threshold)}")
    return Finding("Rewarming on the same (upstream) data still costs loss", rise > n.threshold, ev)


def warmup(n: StudyNumbers, no_warmup: str, main: str) -> Finding:
    """6: 0 % vs 1 % warmup end within the noise threshold on both sets."""
    diffs = {role: n.final(no_warmup, role) - n.final(main, role) for role in ("upstream", "downstream")}
    ok = all(abs(d) <= n.threshold for d in diffs.values())
    ev = (f"warmup 0 % minus 1 %: upstream {diffs['upstream']:+.3f}, downstream {diffs['downstream']:+.3f}; "
          f"threshold {_fmt(n.threshold)}")
    return Finding("Warmup length barely matters", ok, ev)


def earlier_checkpoint(n: StudyNumbers, earlier: str, main: str, revision: str) -> Finding:
    """7: the run from an earlier revision vs the same run from the final revision, both sets, computed."""
    t = n.threshold
    diff = n.final(earlier, "downstream") - n.final(main, "downstream")
    verdict = "worse than" if diff > t else "better than" if diff < -t else "level with"
    adapt = {r: n.curves[r][n.downstream].start - n.final(r, "downstream") for r in (earlier, main)}
    ev = (f"from {revision}, the run ends {verdict} the final-revision rewarm downstream: "
          f"{_fmt(n.final(earlier, 'downstream'))} vs {_fmt(n.final(main, 'downstream'))} ({diff:+.3f}); upstream "
          f"{_fmt(n.final(earlier, 'upstream'))} vs {_fmt(n.final(main, 'upstream'))}; adaptation (start - final "
          f"downstream) {_fmt(adapt[earlier])} vs {_fmt(adapt[main])}; threshold {_fmt(t)}")
    return Finding("An earlier checkpoint does not end better than the final one", diff >= -t, ev)


@dataclass(frozen=True)
class Cooldown:
    """A WSD run's losses on one set: raw and averaged (EMA) weights at the last evaluation before its cooldown
    (the step where the LR first falls from its peak), and raw at the end."""

    step: int
    raw_before: float
    averaged_before: float
    raw_end: float
    end_step: int

    @property
    def recovered(self) -> float:
        """The share of the cooldown's gain the averaged weights had before it (nan: the cooldown gained nothing)."""
        gain = self.raw_before - self.raw_end
        return (self.raw_before - self.averaged_before) / gain if gain > 0 else math.nan


def read_cooldown(run_dir: Path, val_set: str) -> Cooldown:
    """The ``Cooldown`` of a run's metrics.csv (``optim/lr``, ``val/<set>/loss``, ``val_avg/<set>/loss``)."""
    lrs: list[tuple[int, float]] = []
    evals: list[tuple[int, float, float | None]] = []
    with (Path(run_dir) / "metrics.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            step = int(float(row["step"]))
            if row.get("optim/lr") not in (None, ""):
                lrs.append((step, float(row["optim/lr"])))
            raw, avg = row.get(f"val/{val_set}/loss"), row.get(f"val_avg/{val_set}/loss")
            if raw not in (None, ""):
                evals.append((step, float(raw), float(avg) if avg not in (None, "") else None))
    peak = max(lr for _, lr in lrs)
    top = max(s for s, lr in lrs if lr >= peak * (1 - 1e-9))  # the last step at the peak LR
    before = [e for e in evals if e[0] <= top and e[2] is not None]
    if not before:
        raise ValueError(f"{run_dir}: no evaluation of the averaged weights before the cooldown (step {top})")
    step, raw_before, averaged = before[-1]
    return Cooldown(step, raw_before, float(averaged), evals[-1][1], evals[-1][0])  # type: ignore[arg-type]


def ema_before_cooldown(n: StudyNumbers, c: Cooldown, run: str) -> Finding:
    """8: the EMA before the cooldown is better than the raw weights there, and the cooldown still ends lower (the
    EMA recovers part of its gain, not all). Both are paired differences (one run, the same validation tokens), so
    the seed noise between runs does not apply: a difference counts above the floor ``MIN_NOISE``."""
    t = MIN_NOISE
    ema_gain, gain = c.raw_before - c.averaged_before, c.raw_before - c.raw_end
    ok = ema_gain > t and c.averaged_before - c.raw_end > t
    share = f"{100 * c.recovered:.0f} %" if math.isfinite(c.recovered) else "n/a (the cooldown gained nothing)"
    ev = (f"{run}, {n.downstream} before the cooldown (step {c.step}): raw {_fmt(c.raw_before)}, EMA "
          f"{_fmt(c.averaged_before)}; after the cooldown (step {c.end_step}): raw {_fmt(c.raw_end)}. The EMA "
          f"recovers {share} of the cooldown's gain ({ema_gain:+.3f} of {gain:+.3f} nats/token); threshold {_fmt(t)} "
          "(paired differences: one run, the same tokens)")
    return Finding("An EMA of the weights before the cooldown recovers part of the cooldown's gain", ok, ev)


def render(findings: list[Finding], n: StudyNumbers) -> str:
    """Markdown: the noise measurement, then one line per finding."""
    a, b = n.seed_pair
    lines = ["", "## Findings of the papers reproduced by this run", "",
             f"Seed noise: the largest final-loss difference between `{a}` and `{b}` (same setting, another data order) "
             f"is {_fmt(n.seed_noise)} nats/token; a difference counts when it exceeds "
             f"max({NOISE_FACTOR:g} x noise, {MIN_NOISE}) = {_fmt(n.threshold)}.", ""]
    for f in findings:
        lines.append(f"- **{'reproduced' if f.reproduced else 'NOT reproduced'}**: {f.title}. {f.evidence}.")
    lines += [f"- note: {note}" for note in n.notes]
    k = sum(f.reproduced for f in findings)
    lines += ["", f"{k} of {len(findings)} findings reproduced.", ""]
    return "\n".join(lines)


def finite(n: StudyNumbers) -> bool:
    """All final losses are finite numbers (a diverged run makes every comparison meaningless)."""
    return all(math.isfinite(c.final) for sets in n.curves.values() for c in sets.values())
