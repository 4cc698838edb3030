"""Progress lines of long loops (training, Hessian, gradient noise, landscape).

Torch-free: a start line, then at most one line every ``every`` seconds with
the units done of the total, the rate and the time left, and an end line. In
a workflow job they go through the stage's ``log`` into the rule's log file
(``results/logs/...``), where ``tail -f`` follows them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Progress:
    """Progress lines of a long loop through ``log``: one at the start, then at
    most one every ``every`` seconds (0: after every unit), and one at the end.
    Each says the units done of ``total`` (``at_most``: ``total`` is a bound,
    e.g. Lanczos steps before convergence), the rate in this process (units
    resumed from a checkpoint do not count) and the time left at that rate.
    ``clock`` (seconds) is injectable for tests. :meth:`update` only reads the
    clock unless a line is due, so it is cheap enough to call after every step."""

    def __init__(
        self,
        what: str,
        total: int,
        unit: str,
        log: Callable[[str], None],
        every: float = 30.0,
        done: int = 0,
        at_most: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.what, self.total, self.unit, self.log, self.every = what, int(total), unit, log, float(every)
        self.first, self.at_most, self.clock = int(done), at_most, clock
        self.t0 = self.last = clock()
        bound = "at most " if at_most else ""
        resumed = f", resumed after {done}" if done else ""
        log(f"{what}: started ({bound}{self.total} {unit}{resumed})")

    def update(self, done: int, note: str = "") -> None:
        """After ``done`` units: a line if ``every`` seconds passed since the last one."""
        now = self.clock()
        if now - self.last >= self.every:
            self.last = now
            rate = self._rate(done, now)
            left = (self.total - done) / rate if rate > 0 else math.nan
            bound = " at most" if self.at_most else ""
            self.log(
                f"{self.what}: {done}/{self.total} {self.unit}, {rate:.3g} {self.unit}/s,"
                f"{bound} {_duration(left)} left{note}"
            )

    def end(self, done: int, note: str = "") -> None:
        now = self.clock()
        self.log(
            f"{self.what}: done, {done} {self.unit} in {_duration(now - self.t0)} "
            f"({self._rate(done, now):.3g} {self.unit}/s){note}"
        )

    def _rate(self, done: int, now: float) -> float:
        elapsed = now - self.t0
        return (done - self.first) / elapsed if elapsed > 0 else math.nan
