"""The optimizers a config describes: AdamW or SGD on a schedule, per-layer rates, per-group optimizers.

`build_optimizer(cfg.training, model, steps_per_epoch)` is the builder training
calls; `make_optimizer` builds one optimizer from plain arguments. The update rules
themselves are in `kerasft.training.algorithms`.
"""

from __future__ import annotations

import math
from typing import Any

from kerasft._compat import keras
from kerasft.config import TrainingConfig
from kerasft.errors import ConfigError
from kerasft.training.algorithms import SGD, AdamW
from kerasft.training.layer_groups import depth_groups, group_multipliers, layerwise_multipliers
from kerasft.training.schedules import WarmupDecay

# Decoupled weight decay is not applied to these (BERT's original recipe).
NO_DECAY = ["bias", "LayerNorm", "layer_norm", "LayerNormalization"]


def build_optimizer(training: TrainingConfig, model: keras.Model, steps_per_epoch: int):
    """The optimizer the `training:` section describes, for `model`'s trainable variables.

    AdamW (or SGD) on a warmup-then-decay schedule over the run's updates, with
    per-variable rates for `group_learning_rates` or `layerwise_lr_decay`, gradient
    accumulation, and one optimizer per group for `group_optimizers`. Call it before
    freezing anything: with gradual unfreezing, it builds slots for every variable
    while all are trainable.
    """
    t = training
    planned = steps_per_epoch * t.epochs
    updates = math.ceil(min(planned, t.max_steps or planned) / t.gradient_accumulation_steps)
    optimizer = make_optimizer(
        t.learning_rate,
        t.weight_decay,
        updates,
        t.warmup_ratio,
        _multipliers(t, model),
        warmup_steps=t.warmup_steps,
        schedule=t.schedule,
        clipnorm=t.clipnorm,
        accumulation_steps=t.gradient_accumulation_steps,
        optimizer=t.optimizer,
        momentum=t.momentum,
        lazy_sparse=t.lazy_embedding_updates,
    )
    if t.group_optimizers:
        specs = {g: spec.model_dump() for g, spec in t.group_optimizers.items()}
        optimizer = grouped_optimizer(
            model, specs, optimizer, updates, t.warmup_ratio, t.gradient_accumulation_steps
        )
        shown = ", ".join(
            f"{g} {s['optimizer']} lr {s['learning_rate']:g}" for g, s in specs.items()
        )
        print(f"separate optimizers: {shown}")
    if t.unfreeze_every_epochs or t.unfreeze_every_steps:
        # Slots for every variable now, while all are trainable, so blocks unfrozen later
        # get Adam state and the ones already training keep theirs.
        optimizer.build(model.trainable_variables)
    return optimizer


def _multipliers(t: TrainingConfig, model: keras.Model) -> dict[str, float] | None:
    """Per-variable learning-rate multipliers for per-group rates or layer-wise decay, else None."""
    if t.group_learning_rates:
        multipliers = group_multipliers(model, t.group_learning_rates, t.learning_rate)
        shown = ", ".join(f"{g} {r:g}" for g, r in t.group_learning_rates.items())
        print(f"learning rates per group: {shown}")
        return multipliers
    if t.layerwise_lr_decay < 1.0:
        multipliers = layerwise_multipliers(model, t.layerwise_lr_decay)
        print(
            f"layer-wise learning-rate decay {t.layerwise_lr_decay:.4g}: multipliers from "
            f"{min(multipliers.values()):.3g} (embeddings) to 1 (head)"
        )
        return multipliers
    return None


def make_optimizer(
    learning_rate: float,
    weight_decay: float,
    total_steps: int,
    warmup_ratio: float,
    lr_multipliers: dict[str, float] | None = None,
    *,
    warmup_steps: int | None = None,
    schedule: str = "linear",
    clipnorm: float | None = None,
    accumulation_steps: int = 1,
    optimizer: str = "adamw",
    momentum: float = 0.0,
    lazy_sparse: bool = True,
):
    """AdamW with decoupled weight decay (biases and LayerNorm excluded) on a warmup-then-decay schedule.

    Args:
        lr_multipliers: per-variable learning-rate multipliers (layer-wise decay). Defaults to none.
        warmup_steps: warmup length in steps; overrides `warmup_ratio`. Defaults to none.
        schedule: `linear`, `cosine` or `constant` after warmup. Defaults to `linear`.
        clipnorm: clip gradients to this global norm. Defaults to none.
        optimizer: `adamw`, or `sgd` (with `momentum`). Defaults to `adamw`.
        lazy_sparse: AdamW updates only the embedding rows a batch uses (see `AdamW`).
            Defaults to True.
        accumulation_steps: apply the mean gradient of this many micro-batches at once.
            Defaults to 1.
    """
    warmup = warmup_steps if warmup_steps is not None else round(warmup_ratio * total_steps)
    common = {
        "learning_rate": WarmupDecay(learning_rate, total_steps, warmup, schedule),
        "weight_decay": weight_decay,
        "lr_multipliers": lr_multipliers,
        "accumulation_steps": accumulation_steps,
        "clipnorm": clipnorm,
        "no_decay": NO_DECAY,
    }
    if optimizer == "sgd":
        return SGD(momentum=momentum, **common)
    return AdamW(beta_1=0.9, beta_2=0.999, epsilon=1e-6, lazy_sparse=lazy_sparse, **common)


class GroupedOptimizer(keras.optimizers.Optimizer):
    """One optimizer per layer group: each variable's gradient goes to its group's optimizer.

    Every sub-optimizer keeps its own slots, schedule and step counter; all are
    tracked, so checkpoints and backups hold every group's state.

    Args:
        optimizers: group name → optimizer (a `default` entry handles unlisted groups).
        assignment: variable name → group name.
    """

    def __init__(
        self,
        optimizers: dict[str, Any],
        assignment: dict[str, str],
        name: str = "grouped",
        **kwargs,
    ):
        super().__init__(name=name, jit_compile=False, **kwargs)
        self.optimizers = dict(optimizers)
        self.assignment = dict(assignment)

    def _group(self, variable) -> str:
        group = self.assignment.get(variable.name, "default")
        return group if group in self.optimizers else "default"

    @property
    def learning_rate(self):
        return self.optimizers["default"].learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        self.optimizers["default"].learning_rate = value

    @property
    def iterations(self):
        """The step count of a group that trains (all groups step together)."""
        return self.optimizers[getattr(self, "counting_group", "default")].iterations

    @iterations.setter
    def iterations(self, variable):  # Keras' constructor sets its own counter: unused here
        pass

    def build(self, var_list):
        super().build(var_list)
        for group, optimizer in self.optimizers.items():
            members = [v for v in var_list if self._group(v) == group]
            optimizer.build(members)
            if members and getattr(self, "counting_group", None) is None:
                self.counting_group = group

    def apply_gradients(
        self, grads_and_vars, name=None, skip_gradients_aggregation=False, **kwargs
    ):
        pairs = [(g, v) for g, v in grads_and_vars if g is not None]
        if not skip_gradients_aggregation and kwargs.pop("experimental_aggregate_gradients", True):
            pairs = self.aggregate_gradients(pairs)  # once, for every group
        split: dict[str, list] = {group: [] for group in self.optimizers}
        for gradient, variable in pairs:
            split[self._group(variable)].append((gradient, variable))
        for group, group_pairs in split.items():
            if group_pairs:
                self.optimizers[group].apply_gradients(group_pairs, skip_gradients_aggregation=True)
        return self.iterations

    def update_step(self, gradient, variable):  # never called: apply_gradients delegates
        raise NotImplementedError

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "assignment": self.assignment,
            "optimizers": {g: keras.optimizers.serialize(o) for g, o in self.optimizers.items()},
        }


def grouped_optimizer(
    model: keras.Model,
    per_group: dict[str, dict],
    default,
    total_steps: int,
    warmup_ratio: float,
    accumulation_steps: int = 1,
) -> GroupedOptimizer:
    """A `GroupedOptimizer` with `default` for unlisted groups and one optimizer per entry of `per_group`.

    Args:
        per_group: group (`embeddings`, `layer_<i>`, `head`) → `{optimizer, learning_rate, momentum,
            weight_decay}`.
        accumulation_steps: micro-batches per update, for every group (`default` has its own).
            Defaults to 1.

    Raises:
        ConfigError: a group name the model does not have.
    """
    assignment = depth_groups(model)
    known = sorted(set(assignment.values()))
    unknown = sorted(set(per_group) - set(known))
    if unknown:
        raise ConfigError(
            f"`training.group_optimizers`: no group `{unknown[0]}` in this model; groups: {', '.join(known)}."
        )
    optimizers = {"default": default}
    for group, spec in per_group.items():
        optimizers[group] = make_optimizer(
            spec["learning_rate"],
            spec.get("weight_decay", 0.0),
            total_steps,
            warmup_ratio,
            optimizer=spec.get("optimizer", "adamw"),
            momentum=spec.get("momentum", 0.0),
            accumulation_steps=accumulation_steps,
        )
    return GroupedOptimizer(optimizers, assignment)
