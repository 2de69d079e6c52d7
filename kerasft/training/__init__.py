"""Training: one stack for fine-tuning, distillation and masked-LM pretraining.

runner        `run(cfg)`: a training run from config to export, step by step
exports       rebuilding a finished run's model and exporting it
optimizers    AdamW/SGD on public Keras hooks: schedules, per-layer rates, accumulation
callbacks     validation metrics, checkpoints, backups, budgets, step logs
state         the training state a backup restores (epochs done, batches to skip)
distillation  the teacher, its cached outputs, and the Distiller model
strategies    distribution strategies (one device, mirrored, multi-worker, TPU)
hardware      precision and XLA choices for this machine
rundir        run directories: locks, leftovers, writability, how a run ends
"""
