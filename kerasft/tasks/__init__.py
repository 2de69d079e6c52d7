"""What a task is: its spec (head shape, loss, metrics, serving outputs), its metrics and evaluation.

specs        TaskSpec and TASKS: classification, multi_label, regression, token classification
metrics      accuracy, F1, MCC, ECE, correlations ... as people quote them
ner          entity-level precision, recall and F1 (seqeval's rules)
evaluation   saved predictions, per-slice metrics, label distributions
"""

from kerasft.tasks.specs import (
    IGNORE_INDEX,
    TASKS,
    SparseFocalCrossentropy,
    TaskSpec,
    class_counts,
    collect,
    evaluate,
    forget_forward,
    monitor_mode,
    tune_thresholds,
)

__all__ = [
    "IGNORE_INDEX",
    "TASKS",
    "SparseFocalCrossentropy",
    "TaskSpec",
    "class_counts",
    "collect",
    "evaluate",
    "forget_forward",
    "monitor_mode",
    "tune_thresholds",
]
