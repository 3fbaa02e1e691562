"""The small contract of long work: generators yield :class:`Progress` events and return a result."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Generator, Optional, TypeVar

T = TypeVar("T")


@dataclass
class Progress:
    """One progress event.

    Attributes:
        stage: what is running ("train", "predict", "evaluate", ...).
        step: steps done so far (1-based after the first step).
        total: steps planned.
        metrics: numbers worth showing (losses, learning rate, ...).
        eta_s: estimated seconds left, or None before it can be estimated.
    """

    stage: str
    step: int
    total: int
    metrics: Dict[str, float] = field(default_factory=dict)
    eta_s: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"stage": self.stage, "step": self.step, "total": self.total,
                "metrics": dict(self.metrics), "eta_s": self.eta_s}


class EtaClock:
    """Estimates the time left from the mean duration of the steps done since it started."""

    def __init__(self, total: int, start_step: int = 0) -> None:
        self.total = total
        self.start_step = start_step
        self.t0 = time.perf_counter()

    def eta(self, step: int) -> Optional[float]:
        done = step - self.start_step
        if done <= 0:
            return None
        return (time.perf_counter() - self.t0) / done * max(0, self.total - step)


def drain(gen: Generator[Progress, None, T], callback: Optional[Callable[[Progress], None]] = None) -> T:
    """Run a progress generator to the end, passing each event to ``callback``; return its result."""
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            callback(event)
