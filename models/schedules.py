"""Learning-rate schedules for ``models train``.

``plateau`` (halve the rate when the monitored score stalls) never fires inside a short time
budget if the score still rises a little every epoch; ``cosine`` anneals the rate to zero by
the end of the phase's epochs or of ``--time-budget``, whichever comes first, so a budgeted
run ends at a small rate instead of being cut off at a large one.
"""

from __future__ import annotations

import math
import time
from typing import Any

LR_SCHEDULES = ("plateau", "cosine")
#: The lowest share of the rate during warm-up: the first step must still move.
WARMUP_FLOOR = 0.1


def cosine_rate(base: float, progress: float, warmup: float = 1.0) -> float:
    """The rate at ``progress`` in [0, 1] of a cosine annealing from ``base`` to 0, scaled by
    ``warmup`` (the share of warm-up done, 1 when over; at least :data:`WARMUP_FLOOR`)."""
    p = min(max(progress, 0.0), 1.0)
    return base * max(min(warmup, 1.0), WARMUP_FLOOR) * 0.5 * (1.0 + math.cos(math.pi * p))


def phase_progress(
    step: int, total_steps: int, now: float, start: float, deadline: float | None
) -> float:
    """How far a phase is, in [0, 1]: the further of its steps and of its time to
    ``deadline`` (``time.perf_counter`` values; None: steps only)."""
    by_steps = step / total_steps if total_steps > 0 else 0.0
    if deadline is None or deadline <= start:
        return min(by_steps, 1.0)
    return min(max(by_steps, (now - start) / (deadline - start)), 1.0)


class CosineAnnealing:
    """Keras callback: :func:`cosine_rate` per batch over one ``model.fit`` call of
    ``epochs`` epochs (with ``warmup``, linear warm-up over its first epoch)."""

    def __new__(
        cls, base: float, epochs: int, deadline: float | None = None, warmup: bool = False
    ) -> Any:
        import keras

        class Cosine(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.step = 0
                self.steps_per_epoch = 1
                self.start = 0.0

            def on_train_begin(self, logs: Any = None) -> None:
                self.steps_per_epoch = int(self.params.get("steps") or 1)
                self.start = time.perf_counter()

            def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
                total = epochs * self.steps_per_epoch
                progress = phase_progress(
                    self.step, total, time.perf_counter(), self.start, deadline
                )
                done = (self.step + 1) / self.steps_per_epoch if warmup else 1.0
                self.model.optimizer.learning_rate.assign(cosine_rate(base, progress, done))
                self.step += 1

        return Cosine()
