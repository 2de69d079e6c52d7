"""Optimizers and learning-rate schedules.

`build_optimizer(cfg.training, model, steps_per_epoch)` is the builder training
calls; `make_optimizer` builds one optimizer from plain arguments.
"""

from __future__ import annotations

import math
import re
from typing import Any

from kerasft._compat import keras, tf
from kerasft.config import TrainingConfig

# Decoupled weight decay is not applied to these (BERT's original recipe).
NO_DECAY = ["bias", "LayerNorm", "layer_norm", "LayerNormalization"]


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
    if t.gradient_accumulation_steps > 1:
        optimizer.prepare_accumulation(model.trainable_variables, t.gradient_accumulation_steps)
    if t.group_optimizers:
        specs = {g: spec.model_dump() for g, spec in t.group_optimizers.items()}
        optimizer = grouped_optimizer(model, specs, optimizer, updates, t.warmup_ratio)
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
            f"layer-wise learning-rate decay {t.layerwise_lr_decay}: multipliers from "
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
        lazy_sparse: AdamW updates only the embedding rows a batch uses (see `_Lazy`).
            Defaults to True.
        accumulation_steps: apply the mean gradient of this many micro-batches at once; call
            `optimizer.prepare_accumulation(variables, steps)` before training. Defaults to 1.
    """
    warmup = warmup_steps if warmup_steps is not None else round(warmup_ratio * total_steps)
    kwargs = {
        "learning_rate": WarmupDecay(learning_rate, total_steps, warmup, schedule),
        "weight_decay": weight_decay,
        "beta_1": 0.9,
        "beta_2": 0.999,
        "epsilon": 1e-6,
        "global_clipnorm": clipnorm,
    }
    if optimizer == "sgd":
        kwargs = {
            "learning_rate": kwargs["learning_rate"],
            "momentum": momentum,
            "global_clipnorm": clipnorm,
            "weight_decay": weight_decay or None,
        }
        cls = LayerwiseSGD if lr_multipliers else keras.optimizers.SGD
    else:
        cls = LayerwiseAdamW if lr_multipliers else AdamW
        kwargs["lazy_sparse"] = lazy_sparse
    if lr_multipliers:
        kwargs["lr_multipliers"] = lr_multipliers
    if accumulation_steps > 1:
        cls = accumulating(cls)
    built = cls(**kwargs)
    built.exclude_from_weight_decay(var_names=NO_DECAY)
    return built


_LAYER = re.compile(r"/layer_\._(\d+)/")


def layer_depths(model: keras.Model, variables: list | None = None) -> dict[str, int]:
    """Depth of every trainable variable: 0 for embeddings, i+1 for encoder layer i, top for the rest.

    Layers are found by Hugging Face's TF naming (`.../layer_._<i>/...`), which BERT, RoBERTa,
    DistilBERT, ELECTRA, XLM-R and MiniLM share; everything that is neither embedding nor
    encoder layer (pooler, task head) sits on top.

    Args:
        variables: the variables to place. Defaults to the model's trainable ones.
    """
    names = [v.name for v in (model.trainable_variables if variables is None else variables)]
    layers = [int(m.group(1)) for n in names if (m := _LAYER.search(n))]
    top = (max(layers) + 2) if layers else 1
    depths = {}
    for name in names:
        match = _LAYER.search(name)
        if match:
            depths[name] = int(match.group(1)) + 1
        elif "embeddings" in name:
            depths[name] = 0
        else:
            depths[name] = top
    return depths


def layerwise_multipliers(model: keras.Model, decay: float) -> dict[str, float]:
    """Learning-rate multipliers `decay ** (top - depth)`: the head at the full rate, lower layers less."""
    depths = layer_depths(model)
    top = max(depths.values(), default=0)
    return {name: float(decay ** (top - depth)) for name, depth in depths.items()}


class _Layerwise:
    """Mixin: scales the optimizer's learning rate (and so decoupled weight decay) per variable.

    Keras optimizers read `self.learning_rate` inside `update_step`; while a
    variable's update is traced, the property returns the rate times that
    variable's multiplier. Works for any tf_keras optimizer built on `update_step`.

    Args:
        lr_multipliers: variable name → multiplier of the learning rate; others get 1.
    """

    def __init__(self, lr_multipliers: dict[str, float] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.lr_multipliers = dict(lr_multipliers or {})
        self._scale = 1.0  # set per variable while its update is traced

    @property
    def learning_rate(self):
        rate = super().learning_rate
        return rate * self._scale if getattr(self, "_scale", 1.0) != 1.0 else rate

    @learning_rate.setter
    def learning_rate(self, value):
        super(_Layerwise, type(self)).learning_rate.fset(self, value)

    def update_step(self, gradient, variable):
        self._scale = self.lr_multipliers.get(variable.name, 1.0)
        try:
            return super().update_step(gradient, variable)
        finally:
            self._scale = 1.0

    def _apply_weight_decay(self, variables):
        if self.weight_decay is None:
            return
        for variable in variables:
            if self._use_weight_decay(variable):
                scale = self.lr_multipliers.get(variable.name, 1.0)
                lr = tf.cast(self.learning_rate, variable.dtype) * scale
                variable.assign_sub(variable * tf.cast(self.weight_decay, variable.dtype) * lr)

    def get_config(self) -> dict:
        return {**super().get_config(), "lr_multipliers": self.lr_multipliers}


class _Lazy:
    """Mixin for AdamW: sparse gradients (embedding lookups) update only the rows they touch.

    Keras' AdamW decays both moments and moves every row of an embedding matrix
    on every step, even rows of tokens absent from the batch: for a 30k x 384
    vocabulary that dense work is about a third of a MiniLM training step on CPU.
    Here, as in TF Addons' LazyAdam, a row's moments, weight decay and update are
    applied only when the row's token is in the batch; dense gradients are
    untouched. Rows of frequent tokens follow dense AdamW almost exactly.

    Args:
        lazy_sparse: update sparse gradients lazily. Defaults to True.
    """

    def __init__(self, lazy_sparse: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.lazy_sparse = lazy_sparse
        self._sparse_keys = frozenset()  # variables with sparse gradients in this step's trace

    def apply_gradients(self, grads_and_vars, *args, **kwargs):
        grads_and_vars = list(grads_and_vars)
        if self.lazy_sparse:
            self._sparse_keys = frozenset(
                self._var_key(v) for g, v in grads_and_vars if isinstance(g, tf.IndexedSlices)
            )
        return super().apply_gradients(grads_and_vars, *args, **kwargs)

    def _use_weight_decay(self, variable) -> bool:
        # Sparse rows are decayed in update_step, with their update.
        if self._var_key(variable) in getattr(self, "_sparse_keys", ()):
            return False
        return super()._use_weight_decay(variable)

    def update_step(self, gradient, variable):
        if not (self.lazy_sparse and isinstance(gradient, tf.IndexedSlices)):
            return super().update_step(gradient, variable)
        # Keras has merged duplicate indices by now (_deduplicate_sparse_grad).
        rows, grad = gradient.indices, gradient.values
        dtype = variable.dtype
        lr = tf.cast(self.learning_rate, dtype)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        alpha = lr * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))
        index = self._index_dict[self._var_key(variable)]
        m, v = self._momentums[index], self._velocities[index]
        m_rows = tf.gather(m, rows) * beta_1 + grad * (1 - beta_1)
        v_rows = tf.gather(v, rows) * beta_2 + tf.square(grad) * (1 - beta_2)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        weights = tf.gather(variable, rows)
        if self.weight_decay is not None and super()._use_weight_decay(variable):
            weights -= weights * tf.cast(self.weight_decay, dtype) * lr
        weights -= alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon)
        variable.scatter_update(tf.IndexedSlices(weights, rows))

    def get_config(self) -> dict:
        return {**super().get_config(), "lazy_sparse": self.lazy_sparse}


@keras.utils.register_keras_serializable(package="kerasft")
class AdamW(_Lazy, keras.optimizers.AdamW):
    """Keras' AdamW whose sparse (embedding) gradients update only the rows they touch."""


@keras.utils.register_keras_serializable(package="kerasft")
class LayerwiseAdamW(_Layerwise, AdamW):
    """AdamW with a learning-rate multiplier per variable (layer-wise decay, per-group rates)."""


@keras.utils.register_keras_serializable(package="kerasft")
class LayerwiseSGD(_Layerwise, keras.optimizers.SGD):
    """SGD with a learning-rate multiplier per variable (layer-wise decay, per-group rates)."""


def group_of(depth: int, top: int) -> str:
    """The name of a depth group: `embeddings`, `layer_<i>` or `head`."""
    return "embeddings" if depth == 0 else "head" if depth == top else f"layer_{depth - 1}"


def variable_groups(model: keras.Model) -> dict[str, str]:
    """Every weight of the model (frozen ones too) → its group: `embeddings`, `layer_<i>` or `head`."""
    depths = layer_depths(model, model.weights)
    top = max(depths.values(), default=0)
    return {name: group_of(depth, top) for name, depth in depths.items()}


def current_rates(optimizer, groups: dict[str, str], trainable: set[str]) -> dict[str, float]:
    """The learning rate each group's last update used; 0 for a group with nothing trainable.

    A group's rate is the schedule's current value times the mean multiplier of its
    trainable variables (layer-wise decay, per-group rates), or its own optimizer's
    rate under `group_optimizers`.

    Args:
        groups: variable name → group, from `variable_groups`.
        trainable: names of the variables that train now (frozen and not yet unfrozen ones
            are left out).
    """
    subs = getattr(optimizer, "optimizers", None)
    base = _value(optimizer.learning_rate) if subs is None else None
    multipliers = getattr(optimizer, "lr_multipliers", {})
    members: dict[str, list[str]] = {}
    for name, group in groups.items():
        members.setdefault(group, []).append(name)
    rates = {}
    for group, names in members.items():
        live = [n for n in names if n in trainable]
        if not live:
            rates[group] = 0.0
        elif subs is not None:
            rates[group] = _value(subs.get(group, subs["default"]).learning_rate)
        else:
            rates[group] = base * sum(multipliers.get(n, 1.0) for n in live) / len(live)
    return rates


def _value(rate) -> float:
    """A learning rate (a float, tensor, or a variable that may be mirrored across replicas) as a float."""
    return float(keras.backend.get_value(rate))


def group_multipliers(model: keras.Model, rates: dict[str, float], base: float) -> dict[str, float]:
    """Multipliers that give each named group its own learning rate (others keep `base`).

    Raises:
        ConfigError: a group name the model does not have.
    """
    from kerasft.errors import ConfigError

    depths = layer_depths(model)
    top = max(depths.values(), default=0)
    names = sorted(
        {group_of(d, top) for d in depths.values()},
        key=lambda g: (g != "embeddings", g == "head", g),
    )
    unknown = sorted(set(rates) - set(names))
    if unknown:
        raise ConfigError(
            f"`training.group_learning_rates`: no group `{unknown[0]}` in this model; groups: {', '.join(names)}."
        )
    return {name: rates.get(group_of(d, top), base) / base for name, d in depths.items()}


class _Accumulating:
    """Mixin: sums gradients over `accumulation_steps` calls of `apply_gradients`, then applies their mean once.

    The optimizer's step counter (and so the schedule) advances once per applied
    update, and weight decay is applied once per update, exactly as with one batch
    `accumulation_steps` times larger.
    """

    def prepare_accumulation(self, variables, steps: int) -> None:
        with tf.init_scope():
            self.accumulation_steps = int(steps)
            self._micro_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="micro_step")
            self._accumulators = {
                self._var_key(v): tf.Variable(
                    tf.zeros_like(v), trainable=False, name="accumulated_gradient"
                )
                for v in variables
            }

    def apply_gradients(self, grads_and_vars, *args, **kwargs):
        grads_and_vars = [(g, v) for g, v in grads_and_vars if g is not None]
        scale = 1.0 / self.accumulation_steps
        for gradient, variable in grads_and_vars:
            self._accumulators[self._var_key(variable)].assign_add(
                tf.convert_to_tensor(gradient) * scale
            )
        self._micro_step.assign_add(1)

        def apply():
            pairs = [
                (self._accumulators[self._var_key(v)].read_value(), v) for _, v in grads_and_vars
            ]
            with tf.control_dependencies(
                [super(_Accumulating, self).apply_gradients(pairs, *args, **kwargs)]
            ):
                resets = [
                    self._accumulators[self._var_key(v)].assign(tf.zeros_like(v))
                    for _, v in grads_and_vars
                ]
            with tf.control_dependencies(resets):
                return tf.identity(self.iterations)

        return tf.cond(
            self._micro_step % self.accumulation_steps == 0,
            apply,
            lambda: tf.identity(self.iterations),
        )


_ACCUMULATING: dict[type, type] = {}


def accumulating(cls: type) -> type:
    """The optimizer class `cls` with gradient accumulation (call `prepare_accumulation` before training)."""
    if cls not in _ACCUMULATING:
        _ACCUMULATING[cls] = type(f"Accumulating{cls.__name__}", (_Accumulating, cls), {})
    return _ACCUMULATING[cls]


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

    def build(self, var_list):
        super().build(var_list)
        for group, optimizer in self.optimizers.items():
            optimizer.build([v for v in var_list if self._group(v) == group])

    def apply_gradients(
        self, grads_and_vars, name=None, skip_gradients_aggregation=False, **kwargs
    ):
        split: dict[str, list] = {group: [] for group in self.optimizers}
        for gradient, variable in grads_and_vars:
            if gradient is not None:
                split[self._group(variable)].append((gradient, variable))
        for group, pairs in split.items():
            if pairs:
                self.optimizers[group].apply_gradients(
                    pairs, skip_gradients_aggregation=skip_gradients_aggregation
                )
        return self.iterations.assign_add(1)

    def update_step(self, gradient, variable):  # never called: apply_gradients delegates
        raise NotImplementedError

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "assignment": self.assignment,
            "optimizers": {g: keras.optimizers.serialize(o) for g, o in self.optimizers.items()},
        }


def grouped_optimizer(
    model: keras.Model, per_group: dict[str, dict], default, total_steps: int, warmup_ratio: float
) -> GroupedOptimizer:
    """A `GroupedOptimizer` with `default` for unlisted groups and one optimizer per entry of `per_group`.

    Args:
        per_group: group (`embeddings`, `layer_<i>`, `head`) → `{optimizer, learning_rate, momentum,
            weight_decay}`.

    Raises:
        ConfigError: a group name the model does not have.
    """
    from kerasft.errors import ConfigError

    depths = layer_depths(model)
    top = max(depths.values(), default=0)
    assignment = {name: group_of(depth, top) for name, depth in depths.items()}
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
        )
    return GroupedOptimizer(optimizers, assignment)
