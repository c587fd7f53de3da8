"""What a time-limited run should reach on this machine, read off the recipe's measured curve.

A recipe with `train.time_limit` trains for minutes, not epochs, so a faster machine trains more
epochs and ends higher. The recipe's `expected_top1` maps epochs reached to the test top-1 that
runs reaching them ended with (measured on the machines its header names). After the first
seconds of training, the run's own speed gives the epochs that fit, and the curve what to expect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def top1_at(curve: dict[float, float], epochs: float) -> float:
    """The curve's top-1 at `epochs`: linear in log(epochs) between measured points, flat beyond them."""
    points = sorted(curve.items())
    if epochs <= points[0][0]:
        return points[0][1]
    for (e0, a0), (e1, a1) in zip(points, points[1:]):
        if epochs <= e1:
            share = math.log(epochs / e0) / math.log(e1 / e0)
            return a0 + share * (a1 - a0)
    return points[-1][1]


@dataclass
class Expectation:
    curve: dict[float, float]
    budget_seconds: float
    epoch_images: int  # images in one epoch, over all processes
    max_epochs: int
    measure_seconds: float = 20.0  # of training before the forecast (at most 5% of the budget)
    told: bool = False

    def forecast(self, images: int, seconds: float, machine: str) -> str | None:
        """Once, after `measure_seconds` of training: the epochs that fit and the top-1 expected."""
        if self.told or seconds < min(self.measure_seconds, 0.05 * self.budget_seconds) or images == 0:
            return None
        self.told = True
        rate = images / seconds
        epochs = min(self.max_epochs, rate * self.budget_seconds / self.epoch_images)
        return (f"this machine ({machine}) trains {rate:.0f} img/s: about {epochs:.1f} epochs fit in "
                f"{self.budget_seconds / 60:g} minutes, for which the recipe's measured runs ended "
                f"{self._near(epochs)} ({self._measured()})")

    def verdict(self, epochs: float, top1: float) -> str:
        low = min(self.curve)
        if epochs < 0.9 * low:  # a run cut far shorter than any measured one: its curve says nothing here
            return (f"reached {epochs:.1f} epochs and {top1:.2f}% top-1; the recipe's measured runs all trained longer "
                    f"(the shortest, {low:g} epochs, ended at {self.curve[low]:.2f}%), so there is no figure to compare with")
        expected = top1_at(self.curve, epochs)
        return (f"reached {epochs:.1f} epochs and {top1:.2f}% top-1; the recipe's measured runs give "
                f"{expected:.2f}% at {epochs:.1f} epochs ({top1 - expected:+.2f})")

    def _near(self, epochs: float) -> str:
        low, high = min(self.curve), max(self.curve)
        if epochs < low:
            return f"below {self.curve[low]:.1f}% top-1 (fewer epochs than any measured run)"
        if epochs > high:
            return f"near {self.curve[high]:.1f}% top-1 or above (more epochs than any measured run)"
        return f"near {top1_at(self.curve, epochs):.1f}% top-1"

    def _measured(self) -> str:
        return "measured: " + ", ".join(f"{a:g}% at {e:g}" for e, a in sorted(self.curve.items())) + " epochs"
