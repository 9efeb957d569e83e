"""The schema of a config's ``tune:`` section: per model label, a search space mapping dotted
hyper-parameter keys to a range or a list of values (searched by ``cdrec.tune``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Range(BaseModel):
    """``low``..``high``; integers when both bounds are integers (``step`` optional)."""

    model_config = ConfigDict(extra="forbid")
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self

    def is_int(self) -> bool:
        return all(float(v).is_integer() for v in (self.low, self.high, self.step or 1))


SearchSpace = dict[str, Range | list[Any]]
