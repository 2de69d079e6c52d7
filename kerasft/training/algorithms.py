"""The update rules: AdamW and SGD with per-variable rates, decoupled decay and accumulation.

Built on Keras' public optimizer hooks so one code path serves one device and every
distribution strategy; `kerasft.training.optimizers` builds them from the config.
"""

from __future__ import annotations

import re

from kerasft._compat import build_learning_rate, keras, tf
from kerasft.training.schedules import PerUpdate


class _PerVariable(keras.optimizers.Optimizer):
    """Base of kerasft's optimizers: per-variable rates, decoupled weight decay, accumulation.

    Everything runs through Keras' public optimizer hooks (`build`, `apply_gradients`,
    `aggregate_gradients`, `update_step`, `add_variable_from_reference`), so the same
    code runs on one device and under MirroredStrategy or MultiWorkerMirroredStrategy:

    - a variable's slots, rate multiplier and decay flag are found through an index that
      `build` fills for the variable and for each replica's copy of it
      (`strategy.experimental_local_results`), since under a strategy `update_step`
      receives one replica's copy;
    - decoupled weight decay is applied in `update_step`, scaled like the rate;
    - with `accumulation_steps` N > 1, `apply_gradients` adds each (all-reduced) gradient
      / N to a running total kept in a slot; `update_step` stores the total and, on every
      N-th call, applies it and clears the slot. The condition is evaluated per variable
      inside the strategy's update, where no cross-replica call may sit under a `tf.cond`.
      `iterations` counts calls (micro-batches, as in Keras); the schedule and Adam's
      bias correction count applied updates, `iterations // N`;
    - `clipnorm` clips the gradient that is applied (the accumulated mean) to that
      global norm.

    Args:
        learning_rate: a float or a `LearningRateSchedule` of applied updates.
        weight_decay: decoupled weight decay (times the variable's rate). Defaults to 0.
        lr_multipliers: variable name → multiplier of the rate; others get 1.
        accumulation_steps: micro-batches per applied update. Defaults to 1.
        clipnorm: clip the applied gradient to this global norm. Defaults to none.
    """

    def __init__(
        self,
        learning_rate=1e-3,
        weight_decay: float | None = 0.0,
        lr_multipliers: dict[str, float] | None = None,
        accumulation_steps: int = 1,
        clipnorm: float | None = None,
        no_decay: list[str] | None = None,
        name: str = "optimizer",
        **kwargs,
    ):
        kwargs.pop("global_clipnorm", None)
        # Keras' own decay (its default is 0, not None) would read and rewrite every
        # variable on every step for nothing: decay is applied in `_apply` instead.
        super().__init__(name=name, weight_decay=None, **kwargs)
        self.accumulation_steps = int(accumulation_steps)
        self.initial_learning_rate = learning_rate  # for get_config
        if self.accumulation_steps > 1 and isinstance(
            learning_rate, keras.optimizers.schedules.LearningRateSchedule
        ):
            learning_rate = PerUpdate(learning_rate, self.accumulation_steps)
        build_learning_rate(self, learning_rate)
        self.decay_rate = float(weight_decay or 0.0)
        self.lr_multipliers = dict(lr_multipliers or {})
        self.clipnorm_value = clipnorm
        self.no_decay = list(no_decay or [])
        self._slot_index = _SlotIndex()
        self._scalars_now = _Scalars()

    def exclude_from_weight_decay(self, var_list=None, var_names=None) -> None:
        """Variables (or names matching any of `var_names`) that get no weight decay."""
        self.no_decay = list(var_names or []) + [re.escape(v.name) for v in var_list or []]

    # -- slots -------------------------------------------------------------------------

    def slot_names(self) -> tuple[str, ...]:
        """The per-variable state of the algorithm (e.g. `m`, `v` for Adam)."""
        return ()

    def build(self, var_list):
        super().build(var_list)
        strategy = tf.distribute.get_strategy()
        for variable in var_list:
            if self._slot_index.has(variable):
                continue
            slots = {
                name: self.add_variable_from_reference(variable, name) for name in self.slot_names()
            }
            if self.accumulation_steps > 1:
                slots["accumulated"] = self.add_variable_from_reference(variable, "accumulated")
            decays = self.decay_rate > 0 and not any(
                re.search(pattern, variable.name) for pattern in self.no_decay
            )
            entry = _Slots(slots, self.lr_multipliers.get(variable.name, 1.0), decays)
            self._slot_index.add(variable, strategy.experimental_local_results(variable), entry)

    # -- one step ----------------------------------------------------------------------

    @property
    def updates_done(self):
        """Applied updates so far (`iterations // accumulation_steps`)."""
        return self.iterations // self.accumulation_steps

    def apply_gradients(
        self, grads_and_vars, name=None, skip_gradients_aggregation=False, **kwargs
    ):
        pairs = [(g, v) for g, v in grads_and_vars if g is not None]
        if not pairs:
            return self.iterations
        if not skip_gradients_aggregation and kwargs.pop("experimental_aggregate_gradients", True):
            pairs = self.aggregate_gradients(pairs)
        with tf.init_scope():
            self.build([v for _, v in pairs])
        grads = [g for g, _ in pairs]
        variables = [v for _, v in pairs]
        last = None
        if self.accumulation_steps > 1:
            # The running total, read on this replica (every replica holds the same one).
            grads = [
                self._slot_index.get(v).slots["accumulated"]
                + tf.convert_to_tensor(g) / self.accumulation_steps
                for g, v in pairs
            ]
            last = self._applies_now()
        if self.clipnorm_value:
            grads = _clip(grads, self.clipnorm_value, last)
        self._scalars_now = _Scalars()  # this update's, built by the first variable's update
        return super().apply_gradients(
            list(zip(grads, variables, strict=True)), name=name, skip_gradients_aggregation=True
        )

    def update_step(self, gradient, variable):
        entry = self._slot_index.get(variable)
        now = self._scalars(variable.dtype)  # outside the branch below: every variable's
        if self.accumulation_steps == 1:
            return self._apply(gradient, variable, entry, now)
        total = entry.slots["accumulated"]

        def apply():
            self._apply(tf.convert_to_tensor(gradient), variable, entry, now)
            total.assign(tf.zeros_like(total))
            return tf.constant(True)

        def keep():
            total.assign(tf.convert_to_tensor(gradient))
            return tf.constant(False)

        return tf.cond(self._applies_now(), apply, keep)

    def _applies_now(self):
        """Whether this call (micro-batch) is the last of an update."""
        return (self.iterations + 1) % self.accumulation_steps == 0

    def _scalars(self, dtype) -> dict:
        """This update's rate and the algorithm's scalars (`scalars`) in `dtype`.

        Built once per `apply_gradients` call and dtype, not once per variable: a hundred
        variables would otherwise each trace (and run) the same few dozen scalar ops.
        """
        built = self._scalars_now.by_dtype
        if dtype not in built:
            count = tf.cast(self.updates_done + 1, dtype)
            built[dtype] = {
                "rate": tf.cast(self.learning_rate, dtype),
                "decay": tf.cast(self.decay_rate, dtype),
                **self.scalars(count, dtype),
            }
        return built[dtype]

    def _apply(self, gradient, variable, entry: _Slots, now: dict):
        rate = now["rate"] if entry.multiplier == 1.0 else now["rate"] * entry.multiplier
        sparse = isinstance(gradient, tf.IndexedSlices)
        if entry.decays and not (sparse and self.sparse_rows()):
            variable.assign_sub(variable * (now["decay"] * rate))
        self.step(gradient, variable, entry, rate, now)

    def sparse_rows(self) -> bool:
        """Whether `step` decays and moves only the rows of a sparse gradient."""
        return False

    def scalars(self, count, dtype) -> dict:
        """Scalars `step` needs at update `count` (from 1), shared by every variable."""
        return {}

    def step(self, gradient, variable, entry: _Slots, rate, now: dict) -> None:
        """Moves `variable` by the algorithm's update at `rate` (decay has been applied)."""
        raise NotImplementedError

    def get_config(self) -> dict:
        config = super().get_config()
        rate = self.initial_learning_rate
        config.update(
            learning_rate=keras.optimizers.schedules.serialize(rate)
            if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule)
            else float(rate),
            weight_decay=self.decay_rate,
            lr_multipliers=self.lr_multipliers,
            accumulation_steps=self.accumulation_steps,
            clipnorm=self.clipnorm_value,
            no_decay=self.no_decay,
        )
        for key in ("global_clipnorm", "use_ema", "ema_momentum", "ema_overwrite_frequency"):
            config.pop(key, None)
        return config


def _clip(gradients: list, clipnorm: float, when=None) -> list:
    """`gradients` scaled to a global norm of at most `clipnorm` (only where `when` holds, if given)."""
    norm = tf.linalg.global_norm(gradients)
    factor = clipnorm / tf.maximum(norm, clipnorm)
    if when is not None:
        factor = tf.where(when, factor, 1.0)
    scaled = []
    for g in gradients:
        f = tf.cast(factor, g.dtype)
        if isinstance(g, tf.IndexedSlices):
            scaled.append(tf.IndexedSlices(g.values * f, g.indices, g.dense_shape))
        else:
            scaled.append(g * f)
    return scaled


class _Slots:
    """One variable's optimizer state: its slots, rate multiplier and whether it decays."""

    def __init__(self, slots: dict, multiplier: float, decays: bool):
        self.slots, self.multiplier, self.decays = slots, float(multiplier), decays


class _Scalars:
    """dtype → one update's shared scalars (a plain object: Keras tracks dicts it is given)."""

    def __init__(self):
        self.by_dtype: dict = {}


class _SlotIndex:
    """Variable (or any replica's copy of it) → its `_Slots`. Not tracked: the slots are."""

    def __init__(self):
        self._entries: dict = {}

    def has(self, variable) -> bool:
        return variable.ref() in self._entries

    def add(self, variable, copies, entry: _Slots) -> None:
        for each in (variable, *copies):
            self._entries[each.ref()] = entry

    def get(self, variable) -> _Slots:
        try:
            return self._entries[variable.ref()]
        except KeyError:
            raise KeyError(
                f"The optimizer has no state for {variable.name}; call `optimizer.build(variables)` "
                "with every variable that will train before training."
            ) from None


@keras.utils.register_keras_serializable(package="kerasft")
class AdamW(_PerVariable):
    """AdamW (decoupled weight decay) whose sparse (embedding) gradients update only their rows.

    Keras' AdamW decays both moments and moves every row of an embedding matrix
    on every step, even rows of tokens absent from the batch: for a 30k x 384
    vocabulary that dense work is about a third of a MiniLM training step on CPU.
    Here, as in TF Addons' LazyAdam, a row's moments, weight decay and update are
    applied only when the row's token is in the batch; dense gradients follow
    Keras' AdamW exactly. Rows of frequent tokens follow dense AdamW almost exactly.

    Args:
        beta_1, beta_2, epsilon: Adam's. Defaults to 0.9, 0.999, 1e-7 (Keras').
        lazy_sparse: update sparse gradients lazily. Defaults to True.
        **kwargs: see `_PerVariable`.
    """

    def __init__(
        self,
        learning_rate=1e-3,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        lazy_sparse: bool = True,
        name: str = "AdamW",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.lazy_sparse = lazy_sparse

    def slot_names(self) -> tuple[str, ...]:
        return ("m", "v")

    def sparse_rows(self) -> bool:
        return self.lazy_sparse

    def scalars(self, count, dtype) -> dict:
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        power_1, power_2 = tf.pow(beta_1, count), tf.pow(beta_2, count)
        return {
            "beta_1": beta_1,
            "beta_2": beta_2,
            "power_1": power_1,
            "power_2": power_2,
            "correction": tf.sqrt(1 - power_2) / (1 - power_1),  # times the rate: Adam's alpha
            "epsilon": tf.cast(self.epsilon, dtype),
        }

    def step(self, gradient, variable, entry: _Slots, rate, now: dict) -> None:
        if isinstance(gradient, tf.IndexedSlices):
            sparse = self._lazy_rows if self.lazy_sparse else self._dense_moments
            sparse(gradient, variable, entry, rate, now)
            return
        m, v = entry.slots["m"], entry.slots["v"]
        beta_1, beta_2 = now["beta_1"], now["beta_2"]
        # Dense: TensorFlow's fused Adam kernel, Keras' formula exactly (bias-corrected rate,
        # epsilon outside the root), in one pass over the variable, its moments and the
        # gradient instead of the eight element-wise passes the same update takes as tensor
        # ops (memory-bound on a CPU). Under a strategy, `handle` is this replica's copy.
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=m.handle,
            v=v.handle,
            beta1_power=now["power_1"],
            beta2_power=now["power_2"],
            lr=rate,
            beta1=beta_1,
            beta2=beta_2,
            epsilon=now["epsilon"],
            grad=tf.convert_to_tensor(gradient),
            use_locking=False,
        )

    def _lazy_rows(self, gradient, variable, entry: _Slots, rate, now: dict) -> None:
        """Moments, decay and update of the gradient's rows only (Keras has merged duplicates)."""
        m, v = entry.slots["m"], entry.slots["v"]
        beta_1, beta_2 = now["beta_1"], now["beta_2"]
        rows, grad = gradient.indices, gradient.values
        m_rows = tf.gather(m, rows) * beta_1 + grad * (1 - beta_1)
        v_rows = tf.gather(v, rows) * beta_2 + tf.square(grad) * (1 - beta_2)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        weights = tf.gather(variable, rows)
        if entry.decays:
            weights -= weights * (now["decay"] * rate)
        weights -= rate * now["correction"] * m_rows / (tf.sqrt(v_rows) + self.epsilon)
        variable.scatter_update(tf.IndexedSlices(weights, rows))

    def _dense_moments(self, gradient, variable, entry: _Slots, rate, now: dict) -> None:
        """Keras' sparse update: every row's moments decay, the gradient's rows are added."""
        m, v = entry.slots["m"], entry.slots["v"]
        rows, grad = gradient.indices, gradient.values
        m.assign_add(-m * (1 - self.beta_1))
        m.scatter_add(tf.IndexedSlices(grad * (1 - self.beta_1), rows))
        v.assign_add(-v * (1 - self.beta_2))
        v.scatter_add(tf.IndexedSlices(tf.square(grad) * (1 - self.beta_2), rows))
        variable.assign_sub((m * (rate * now["correction"])) / (tf.sqrt(v) + self.epsilon))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
            "lazy_sparse": self.lazy_sparse,
        }


@keras.utils.register_keras_serializable(package="kerasft")
class SGD(_PerVariable):
    """SGD with optional momentum (Keras' form: `m = momentum * m - rate * g; w += m`).

    Args:
        momentum: Defaults to 0 (no momentum slot).
        **kwargs: see `_PerVariable`.
    """

    def __init__(self, learning_rate=0.01, momentum: float = 0.0, name: str = "SGD", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = float(momentum)

    def slot_names(self) -> tuple[str, ...]:
        return ("momentum",) if self.momentum else ()

    def step(self, gradient, variable, entry: _Slots, rate, now: dict) -> None:
        sparse = isinstance(gradient, tf.IndexedSlices)
        if not self.momentum:
            if sparse:
                variable.scatter_sub(tf.IndexedSlices(gradient.values * rate, gradient.indices))
            else:
                variable.assign_sub(gradient * rate)
            return
        m = entry.slots["momentum"]
        m.assign(m * tf.cast(self.momentum, variable.dtype))
        if sparse:
            m.scatter_add(tf.IndexedSlices(-gradient.values * rate, gradient.indices))
        else:
            m.assign_sub(gradient * rate)
        variable.assign_add(m)

    def get_config(self) -> dict:
        return {**super().get_config(), "momentum": self.momentum}
