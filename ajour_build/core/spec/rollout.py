"""``spec.rollout`` of an Application: cohort, waves, criteria and deadlines.

```yaml
rollout:
  cohort: {matchLabels: {region: eu}}       # default: every device of the application
  waves:
    - selector: {matchLabels: {canary: "true"}}
      dwell: 10m
    - {percent: 10, dwell: 1h, approval: manual}
    - {percent: 100}
  # or, instead of waves: ramp: {start: 1, factor: 10, dwell: 10m}  (1 -> 10 -> 100 %)
  criteria:
    - {outcome: reverted, threshold: 0.1, minFinished: 10}
  confirmDeadline: 10m
  stallDeadline: 10m
```
"""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from ajour_build.core.spec.fields import _DURATION_PART, _UNIT_SECONDS, Text, text

MAX_DURATION_S = 30 * 86_400
MAX_WAVES = 100


def parse_seconds(value: str) -> float:
    """Seconds of a Go duration such as ``10m``, ``1h30m``, ``200ms`` or ``0.5s`` (0 allowed)."""
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(value):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(value) or not value:
        raise ValueError(f"{value!r} is not a duration; write for example 10m, 1h30m, 90s or 500ms")
    if total > MAX_DURATION_S:
        raise ValueError(f"the duration {value!r} is longer than the 30-day limit")
    return total


def _duration(value: str) -> str:
    parse_seconds(value)
    return value


RolloutDuration = Annotated[str, BeforeValidator(text), AfterValidator(_duration)]


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Selector(Strict):
    """A label selector: every label in ``matchLabels`` must be on the device, equal."""

    match_labels: dict[Text, Text] = Field(alias="matchLabels", min_length=1)

    def matches(self, labels: dict[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in self.match_labels.items())


class Wave(Strict):
    """One wave: a cumulative ``percent`` of the cohort, or the devices a ``selector`` picks."""

    percent: int | None = Field(default=None, ge=1, le=100)
    selector: Selector | None = None
    dwell: RolloutDuration = "0s"
    approval: Literal["auto", "manual"] = "auto"

    @model_validator(mode="after")
    def _one_kind(self) -> Wave:
        if (self.percent is None) == (self.selector is None):
            raise ValueError(
                "a wave needs exactly one of percent (a cumulative share of the cohort, 1..100)"
                " or selector ({matchLabels: {...}})"
            )
        return self

    @property
    def dwell_seconds(self) -> float:
        return parse_seconds(self.dwell)


class Ramp(Strict):
    """Exponential waves: ``start`` %, times ``factor`` each wave, ending at 100 %."""

    start: int = Field(default=1, ge=1, le=100)
    factor: int = Field(default=10, ge=2, le=100)
    dwell: RolloutDuration = "0s"

    def waves(self) -> tuple[Wave, ...]:
        shares, share = [], self.start
        while share < 100:
            shares.append(share)
            share *= self.factor
        shares.append(100)
        return tuple(Wave(percent=p, dwell=self.dwell) for p in shares)


Outcome = Literal["reverted", "timed_out", "failed_download", "failed"]


class Criterion(Strict):
    """Pause when ``outcome`` (``failed``: any failure) reaches ``threshold`` of the wave's
    finished devices, once at least ``minFinished`` of them finished."""

    outcome: Outcome
    threshold: float = Field(ge=0.0, le=1.0)
    min_finished: int = Field(default=1, ge=1, alias="minFinished")


class RolloutPolicy(Strict):
    cohort: Selector | None = None
    waves_: tuple[Wave, ...] | None = Field(default=None, alias="waves")
    ramp: Ramp | None = None
    criteria: tuple[Criterion, ...] = ()
    confirm_deadline: RolloutDuration = Field(default="10m", alias="confirmDeadline")
    stall_deadline: RolloutDuration = Field(default="10m", alias="stallDeadline")

    @model_validator(mode="after")
    def _waves(self) -> RolloutPolicy:
        if (self.waves_ is None) == (self.ramp is None):
            raise ValueError("a rollout needs exactly one of waves (a list) or ramp")
        if self.waves_ is not None:
            if not self.waves_:
                raise ValueError("waves is empty; give at least one wave, e.g. {percent: 100}")
            if len(self.waves_) > MAX_WAVES:
                raise ValueError(f"at most {MAX_WAVES} waves, got {len(self.waves_)}")
            last = 0
            for i, wave in enumerate(self.waves_):
                if wave.percent is None:
                    continue
                if wave.percent <= last:
                    raise ValueError(
                        f"wave {i + 1} has percent {wave.percent}, not more than the"
                        f" {last} before it: percents are cumulative and must grow"
                    )
                last = wave.percent
        return self

    @cached_property
    def waves(self) -> tuple[Wave, ...]:
        """The waves, a ramp expanded."""
        if self.waves_ is not None:
            return self.waves_
        assert self.ramp is not None
        return self.ramp.waves()

    @property
    def confirm_seconds(self) -> float:
        return parse_seconds(self.confirm_deadline)

    @property
    def stall_seconds(self) -> float:
        return parse_seconds(self.stall_deadline)
