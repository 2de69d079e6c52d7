"""Optimizers and learning-rate schedules."""

from __future__ import annotations

from kerasft._compat import keras, tf

# Decoupled weight decay is not applied to these (BERT's original recipe).
NO_DECAY = ["bias", "LayerNorm", "layer_norm", "LayerNormalization"]


@keras.utils.register_keras_serializable(package="kerasft")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `peak` over `warmup_steps`, then linear decay to 0 at `total_steps`.

    Args:
        peak: the learning rate at the end of warmup.
        warmup_steps: steps of linear warmup. Defaults to 0.
        total_steps: step at which the rate reaches 0.
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0):
        super().__init__()
        if total_steps < 1:
            raise ValueError(
                f"Invalid value for `total_steps`. Received: total_steps={total_steps}. Expected >= 1."
            )
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(min(max(warmup_steps, 0), total_steps))

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = tf.cast(max(self.warmup_steps, 1), tf.float32)
        rise = self.peak * (step + 1.0) / warm
        decay_span = tf.cast(max(self.total_steps - self.warmup_steps, 1), tf.float32)
        fall = self.peak * tf.maximum(0.0, (self.total_steps - step) / decay_span)
        return tf.where(step < self.warmup_steps, rise, tf.minimum(fall, self.peak))

    def get_config(self) -> dict:
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
        }


def build_optimizer(
    learning_rate: float, weight_decay: float, total_steps: int, warmup_ratio: float
):
    """AdamW with decoupled weight decay (biases and LayerNorm excluded) on a warmup-then-linear schedule."""
    schedule = WarmupLinearDecay(learning_rate, total_steps, round(warmup_ratio * total_steps))
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule, weight_decay=weight_decay, beta_1=0.9, beta_2=0.999, epsilon=1e-6
    )
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer
