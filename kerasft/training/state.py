"""The training state a backup restores: epochs done, and batches a mid-epoch restore skips."""

from __future__ import annotations

from kerasft._compat import tf


class TrainingState:
    """Where training is: finished epochs, and the batches a mid-epoch restore leaves out.

    `epochs_done` seeds each epoch's data order, so a resumed run sees the same
    batches as an uninterrupted one; `Backup` sets it from where a restore landed.
    `resume_skip` is set by `Backup` when it restores a mid-epoch backup; the
    training pipeline skips that many batches of the epoch. Create it under the
    distribution strategy's scope.
    """

    def __init__(self):
        self.epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
        self.resume_skip = tf.Variable(0, dtype=tf.int64, trainable=False, name="resume_skip")

    def steps_done(self, steps_per_epoch: int) -> int:
        """Training steps already taken (after a restore: the steps of the restored backup)."""
        return int(self.epochs_done.numpy()) * steps_per_epoch + int(self.resume_skip.numpy())
