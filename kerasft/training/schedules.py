"""Learning-rate schedules: warmup then decay, and a schedule read at micro-batch counts."""

from __future__ import annotations

import math

from kerasft._compat import keras, tf


@keras.utils.register_keras_serializable(package="kerasft")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `peak` over `warmup_steps`, then `decay` down to 0 at `total_steps`.

    Args:
        peak: the learning rate at the end of warmup.
        total_steps: step at which the rate reaches 0 (linear, cosine).
        warmup_steps: steps of linear warmup. Defaults to 0.
        decay: `linear`, `cosine` or `constant` (stays at `peak`). Defaults to `linear`.
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0, decay: str = "linear"):
        super().__init__()
        if total_steps < 1:
            raise ValueError(
                f"Invalid value for `total_steps`. Received: total_steps={total_steps}. Expected >= 1."
            )
        if decay not in ("linear", "cosine", "constant"):
            raise ValueError(
                f"Invalid value for `decay`. Received: decay={decay!r}. Expected 'linear', 'cosine' or 'constant'."
            )
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(min(max(warmup_steps, 0), total_steps))
        self.decay = decay

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = tf.cast(max(self.warmup_steps, 1), tf.float32)
        rise = self.peak * (step + 1.0) / warm
        span = tf.cast(max(self.total_steps - self.warmup_steps, 1), tf.float32)
        progress = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
        if self.decay == "linear":
            after = self.peak * tf.maximum(0.0, (self.total_steps - step) / span)
        elif self.decay == "cosine":
            after = self.peak * 0.5 * (1.0 + tf.cos(math.pi * progress))
        else:
            after = tf.constant(self.peak)
        return tf.where(step < self.warmup_steps, rise, tf.minimum(after, self.peak))

    def get_config(self) -> dict:
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "decay": self.decay,
        }


@keras.utils.register_keras_serializable(package="kerasft")
class PerUpdate(keras.optimizers.schedules.LearningRateSchedule):
    """A schedule of applied updates, read at micro-batch counts: `schedule(step // steps)`."""

    def __init__(self, schedule, steps: int):
        super().__init__()
        if isinstance(schedule, dict):
            schedule = keras.optimizers.schedules.deserialize(schedule)
        self.schedule, self.steps = schedule, int(steps)

    def __call__(self, step):
        return self.schedule(step // self.steps)

    def get_config(self) -> dict:
        return {
            "schedule": keras.optimizers.schedules.serialize(self.schedule),
            "steps": self.steps,
        }
