"""Distillation: a smaller student taught by a finished run (`python -m kerasft.distill`).

A distillation run is a training run (same config sections, run directory,
metrics, checkpoints and raw-text export) whose `distill:` section names a
teacher run. Before training, the teacher's outputs on every training example
are computed once (and cached beside the token ids); the student then learns
from both:

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * task loss

per label (sigmoids) for multi_label, per labelled word for token
classification, and for regression `alpha * (student - teacher)^2 + (1 - alpha) * (student - y)^2`.
The task term is plain cross-entropy (binary for multi_label) or squared error.

The student is either the teacher's own fine-tuned backbone cut to
`distill.student_layers` layers (every k-th layer kept, the top one included,
DistilBERT-style) with the teacher's head, or `model.backbone` if it shares the
teacher's tokenizer. `distill.unlabeled` adds unlabelled in-domain texts that
only the teacher labels; without them, `distill.transfer_copies` augmented copies
of the training texts (EDA) play that part, the transfer set of DistilBERT and TinyBERT.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np

from kerasft._compat import keras, tf
from kerasft.config import Config
from kerasft.data.cache import read_or_forget, write_whole
from kerasft.data.pipeline import eval_dataset, eval_order
from kerasft.data.prepared import Data
from kerasft.data.splits import Split
from kerasft.data.tokenize import Encoded, encode
from kerasft.errors import ConfigError, DataError, check_stop, stop_between_steps
from kerasft.tasks import TASKS, TaskSpec

UNLABELED = -1.0  # the label channel of texts only the teacher labels (NaN for regression)


@dataclasses.dataclass(frozen=True)
class Teacher:
    """A finished run, rebuilt in float32 from its best checkpoint."""

    run_dir: Path
    model: keras.Model
    cfg: Config
    labels: tuple[str, ...]
    backbone_dir: Path
    tokenizer: Any
    weights: Path


def load_teacher(run_dir: str | Path) -> Teacher:
    """The teacher run's model.

    Raises:
        ConfigError: not a finished kerasft run.
    """
    from kerasft.serving import ExportInfo
    from kerasft.training.callbacks import best_checkpoint
    from kerasft.training.exports import rebuild

    run_dir = Path(run_dir)
    model, backbone, cfg = rebuild(run_dir)
    info = ExportInfo.read(run_dir)
    weights = best_checkpoint(run_dir / "checkpoints")
    return Teacher(
        run_dir, model, cfg, info.labels, backbone.directory, backbone.tokenizer, Path(weights)
    )


def student_config(cfg: Config, teacher: Teacher) -> Config:
    """The run's config with the student's backbone made explicit, so the run can be re-exported.

    With `distill.student_layers`, the student is the teacher's backbone with that many
    layers: `model.backbone` and `model.num_layers` say so in the run's config.yaml.

    Raises:
        ConfigError: the task differs from the teacher's, or the student cannot be cut that small.
    """
    d = cfg.distill
    if cfg.task != teacher.cfg.task:
        raise ConfigError(
            f"`task: {cfg.task}` but the teacher {teacher.run_dir} was trained for `{teacher.cfg.task}`."
        )
    if d.student_layers is None:
        return cfg
    total = teacher_layers(teacher)
    if d.student_layers >= total:
        raise ConfigError(
            f"`distill.student_layers: {d.student_layers}` must be below the teacher's {total} layers."
        )
    model = cfg.model.model_copy(
        update={"backbone": teacher.cfg.model.backbone, "num_layers": d.student_layers}
    )
    return cfg.model_copy(update={"model": model})


def teacher_layers(teacher: Teacher) -> int:
    return int(teacher.cfg.model.num_layers or _backbone_config(teacher.model).num_hidden_layers)


def _backbone_config(model: keras.Model) -> Any:
    for layer in model.layers:
        if hasattr(layer, "config") and hasattr(layer.config, "num_hidden_layers"):
            return layer.config
    raise ConfigError("the teacher has no transformer backbone kerasft can cut.")


def kept_layers(teacher: int, student: int) -> list[int]:
    """Which teacher layers the student's start from: evenly spaced, ending at the top one.

    E.g. 6 → 3 keeps layers 1, 3, 5; 12 → 6 keeps 1, 3, 5, 7, 9, 11; 2 → 1 keeps 1.
    """
    step = teacher / student
    return [teacher - 1 - round((student - 1 - i) * step) for i in range(student)]


def init_from_teacher(student: keras.Model, teacher: keras.Model, keep: list[int]) -> int:
    """Copies the teacher's weights into the student: embeddings, head and the `keep` layers.

    Returns:
        The number of weight tensors copied.

    Raises:
        ConfigError: a student weight has no teacher weight of the same name and shape.
    """
    by_name = {_canonical(w.name): w for w in teacher.weights}
    copied = 0
    for weight in student.weights:
        name = _canonical(weight.name)
        name = re.sub(r"layer_\._(\d+)/", lambda m: f"layer_._{keep[int(m.group(1))]}/", name)
        source = by_name.get(name)
        if source is None or tuple(source.shape) != tuple(weight.shape):
            raise ConfigError(
                f"the student's weight `{weight.name}` has no counterpart in the teacher; "
                "cut students need the teacher's own backbone."
            )
        weight.assign(source)
        copied += 1
    return copied


def _canonical(name: str) -> str:
    """A weight name without the unique suffix Keras gives a second model's layers (`tf_bert_model_1`)."""
    return re.sub(r"^(tf_\w+?_model)(_\d+)?/", r"\1/", name)


def check_labels(data: Data, teacher: Teacher) -> None:
    """Raises a DataError unless the student's label names are the teacher's, in the same order."""
    if tuple(data.label_names) != tuple(teacher.labels):
        raise DataError(
            f"{data.splits.train.source}: labels {list(data.label_names)} differ from the teacher's "
            f"{list(teacher.labels)}; distil on data with the teacher's label set."
        )


def check_tokenizer(tokenizer: Any, teacher: Teacher) -> None:
    """Raises a ConfigError unless the student tokenizes exactly as the teacher does."""
    if tokenizer.get_vocab() != teacher.tokenizer.get_vocab():
        raise ConfigError(
            f"`model.backbone`'s tokenizer differs from the teacher's ({teacher.backbone_dir}); the student "
            "must read the teacher's token ids. Use `distill.student_layers` or a backbone with its vocabulary."
        )


def teacher_logits(
    teacher: Teacher, encoded: Encoded, pad_id: int, spec: TaskSpec, cache_dir: str | None
) -> np.ndarray:
    """The teacher's float32 logits for every example of `encoded`, in its order.

    `[N, C]` (or `[N]` for regression); for per-token tasks flat `[tokens, C]`, aligned
    with `encoded.features`. Cached under `cache_dir/teacher/` by teacher weights and token ids.
    """
    path = None
    if cache_dir:
        key = hashlib.sha256()
        key.update(teacher.weights.with_suffix(".index").read_bytes())
        for name in sorted(encoded.features):
            key.update(encoded.features[name].tobytes())
        key.update(encoded.lengths.tobytes())
        path = Path(cache_dir) / "teacher" / f"{key.hexdigest()[:24]}.npy"
        cached = read_or_forget(path, np.load)
        if cached is not None:
            print(f"teacher outputs: {len(encoded)} examples from the cache ({path})")
            return cached
    out = _run_teacher(teacher.model, encoded, pad_id, spec)
    if path is not None:
        write_whole(path, functools.partial(_save_array, array=out))
    return out


def _save_array(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as handle:
        np.save(handle, array)


def _run_teacher(model: keras.Model, encoded: Encoded, pad_id: int, spec: TaskSpec) -> np.ndarray:
    from kerasft.progress import bar as progress

    order = eval_order(encoded)
    ds = eval_dataset(encoded, 64, pad_id)
    rows: list[np.ndarray] = []
    # Ctrl-C stops between batches: labelling thousands of texts takes minutes.
    with progress(len(encoded), "ex", "teacher outputs") as bar, stop_between_steps():
        for x, _ in ds:
            check_stop()
            logits = model(x, training=False).numpy().astype(np.float32)
            if spec.per_token:  # each example's own tokens, without the batch's padding
                start = len(rows)
                rows += [logits[b, : encoded.lengths[order[start + b]]] for b in range(len(logits))]
            else:
                rows += list(logits)
            bar.update(len(logits))
    if not spec.per_token:
        out = (
            np.empty((len(encoded), *rows[0].shape), np.float32)
            if rows
            else np.zeros(0, np.float32)
        )
        out[order] = np.stack(rows)
        return out
    in_order: list[np.ndarray] = [None] * len(encoded)  # type: ignore[list-item]
    for position, index in enumerate(order):
        in_order[index] = rows[position]
    return np.concatenate(in_order).astype(np.float32)


def pack_targets(encoded: Encoded, logits: np.ndarray, spec: TaskSpec) -> Encoded:
    """`encoded` whose targets carry the true target and the teacher's logits side by side.

    Classification and per-token: `[label, logits...]`; multi_label: `[multi-hot..., logits...]`;
    regression: `[target, teacher score]`. `DistillationLoss` unpacks them.
    """
    targets = encoded.targets.astype(np.float32)
    if targets.ndim == 1:
        targets = targets[:, None]
    if logits.ndim == 1:
        logits = logits[:, None]
    return dataclasses.replace(encoded, targets=np.concatenate([targets, logits], axis=1))


@keras.utils.register_keras_serializable(package="kerasft")
class DistillationLoss(keras.losses.Loss):
    """`alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * task loss` on packed targets.

    Args:
        task: the config's task name.
        num_outputs: classes, labels or tags (1 for regression).
        alpha: weight of the distillation term.
        temperature: softmax (sigmoid) temperature of the distillation term.
    """

    def __init__(
        self, task: str, num_outputs: int, alpha: float, temperature: float, **kwargs: Any
    ) -> None:
        kwargs.setdefault("name", "distillation")
        super().__init__(**kwargs)
        self.task, self.num_outputs = task, num_outputs  # the name, for get_config
        self.alpha, self.temperature = alpha, temperature
        self._spec = TASKS[task]

    def call(self, packed: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        packed, logits = tf.cast(packed, tf.float32), tf.cast(logits, tf.float32)
        target, labelled = self.true_targets(packed)  # labelled: 0 where only the teacher labels
        if self._spec.numeric:
            task = labelled * tf.square(logits - target)
            return self.alpha * tf.square(logits - packed[:, 1]) + (1 - self.alpha) * task
        if self._spec.multi_hot:
            task = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(target, logits), -1)
            teacher = packed[:, self.num_outputs :]
            return (
                self.alpha * self._bernoulli_kl(teacher, logits)
                + (1 - self.alpha) * labelled * task
            )
        task = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(target, tf.int32), logits)
        loss = (
            self.alpha * self._softmax_kl(packed[..., 1:], logits)
            + (1 - self.alpha) * labelled * task
        )
        if not self._spec.per_token:
            return loss
        # One value per sequence: the mean over its labelled words, as the task loss does.
        return tf.reduce_sum(loss * labelled, -1) / tf.maximum(tf.reduce_sum(labelled, -1), 1.0)

    def true_targets(self, packed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The true targets in `packed`, and a weight that is 0 where there is none (a text only
        the teacher labels, a sub-token)."""
        if self._spec.numeric:
            target = packed[:, 0]
            labelled = tf.math.is_finite(target)
            return tf.where(labelled, target, 0.0), tf.cast(labelled, tf.float32)
        if self._spec.multi_hot:
            target = packed[:, : self.num_outputs]
            return tf.maximum(target, 0.0), tf.cast(target[:, 0] >= 0, tf.float32)
        label = packed[..., 0]
        labelled = label >= 0
        return tf.where(labelled, label, 0.0), tf.cast(labelled, tf.float32)

    def _softmax_kl(self, teacher: tf.Tensor, student: tf.Tensor) -> tf.Tensor:
        t = self.temperature
        p = tf.nn.softmax(teacher / t, axis=-1)
        log_p = tf.nn.log_softmax(teacher / t, axis=-1)
        log_q = tf.nn.log_softmax(student / t, axis=-1)
        return t * t * tf.reduce_sum(p * (log_p - log_q), axis=-1)

    def _bernoulli_kl(self, teacher: tf.Tensor, student: tf.Tensor) -> tf.Tensor:
        t = self.temperature
        p = tf.sigmoid(teacher / t)
        # KL(p || q) = BCE(p, q) - H(p), both from logits for stability.
        cross = tf.nn.sigmoid_cross_entropy_with_logits(p, student / t)
        entropy = tf.nn.sigmoid_cross_entropy_with_logits(p, teacher / t)
        return t * t * tf.reduce_mean(cross - entropy, axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "task": self.task,
            "num_outputs": self.num_outputs,
            "alpha": self.alpha,
            "temperature": self.temperature,
        }


class Distiller(keras.Model):
    """A student that learns from its teacher's cached outputs.

    Built over the student's own layers (`Distiller.around(student, loss)`), so it
    has the student's variables, names and checkpoint layout: a best checkpoint or
    export of a Distiller is one of the student. Its training targets pack the true
    target with the teacher's logits (`pack_targets`): `train_step` minimises the
    `DistillationLoss` on them and updates the compiled metrics (the task's `fit`
    metrics) on the labelled examples' true targets; `test_step` is Keras' own, with
    the compiled task loss on true targets, as for any run.

    Args:
        distillation: the loss on packed targets. Set by `around`.
    """

    @classmethod
    def around(cls, student: keras.Model, distillation: DistillationLoss) -> Distiller:
        """A Distiller sharing `student`'s layers and weights."""
        distiller = cls(inputs=student.inputs, outputs=student.outputs, name=student.name)
        # Unreduced: Keras refuses a mean-reducing loss called under a distribution strategy
        # outside `compile`; `train_step` takes the mean of each replica's batch itself.
        config = {**distillation.get_config(), "reduction": keras.losses.Reduction.NONE}
        distiller.distillation = type(distillation).from_config(config)
        distiller.distillation_loss = keras.metrics.Mean(name="loss")
        return distiller

    def train_step(self, data):
        x, packed, weights = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            logits = self(x, training=True)
            loss = tf.reduce_mean(self.distillation(packed, logits, weights))
            if self.losses:
                loss += tf.add_n(self.losses)
            # Replicas' gradients are summed: each contributes its share of the global mean,
            # as Keras' compiled losses do.
            scaled = loss / tf.distribute.get_strategy().num_replicas_in_sync
        self.optimizer.minimize(scaled, self.trainable_variables, tape=tape)
        self.distillation_loss.update_state(loss)
        targets, labelled = self.distillation.true_targets(packed)
        keep = labelled > 0  # Keras' plain metrics take no sample weights: leave the rest out
        self.compiled_metrics.update_state(
            tf.boolean_mask(targets, keep), tf.boolean_mask(logits, keep)
        )
        results = {m.name: m.result() for m in self.compiled_metrics.metrics}
        return {**results, "loss": self.distillation_loss.result()}


def unlabeled_split(cfg: Config, spec: TaskSpec, pairs: bool) -> Split | None:
    """`distill.unlabeled` as a split whose targets say "unlabelled", or None.

    Raises:
        DataError: the file is missing, empty, or lacks the text column.
    """

    from kerasft.data.readers import resolve_path
    from kerasft.data.rows import read_text_column

    d = cfg.distill
    if d is None or not d.unlabeled:
        return None
    path = resolve_path(d.unlabeled, "distill.unlabeled")
    if pairs:
        raise DataError(
            f"`distill.unlabeled` ({path}): unlabelled text pairs are not supported; leave it out."
        )
    texts = read_text_column(
        path,
        d.unlabeled_text_column,
        key="distill.unlabeled_text_column",
        encoding=cfg.data.encoding,
        quoting=cfg.data.quoting,  # as `data.quoting` says for the labelled files
    )
    if not texts:
        raise DataError(f"{path}: no unlabelled texts in it.")
    if d.max_unlabeled and len(texts) > d.max_unlabeled:
        keep = np.random.default_rng(cfg.training.seed).choice(
            len(texts), d.max_unlabeled, replace=False
        )
        texts = [texts[i] for i in sorted(keep)]
    return Split(texts, _no_targets(len(texts), spec), str(path))


def transfer_split(cfg: Config, spec: TaskSpec, data: Data) -> Split | None:
    """The transfer set: `distill.transfer_copies` EDA copies of the training texts, then
    `distill.transfer_joins` joined ones; targets "unlabelled". None when both are 0.

    Copies equal to their original are dropped, so there may be fewer than asked for.
    """
    from kerasft.config import AugmentConfig
    from kerasft.data.augment import make_copies

    if cfg.distill is None:
        return None
    train = data.splits.train
    copies, joins = cfg.distill.copies(cfg.task), joins_per_text(cfg, train)
    texts, pairs = [], None
    if copies:
        rate = 0.1  # EDA's own default for each operation
        augment = AugmentConfig(
            copies=copies, synonym=rate, insertion=rate, swap=rate, deletion=rate
        )
        jobs = make_copies(augment, spec, data.splits, cfg.training.seed)
        texts = [" ".join(j.words) for j in jobs]
        if train.pairs is not None:
            pairs = [" ".join(j.pair or []) for j in jobs]
    if joins:  # never for pairs (joins_per_text)
        texts += joined_texts(list(train.texts), joins, cfg.training.seed)
    if not texts:
        return None
    return Split(texts, _no_targets(len(texts), spec), "transfer set", pairs=pairs)


def joins_per_text(cfg: Config, train: Split) -> int:
    """`distill.transfer_joins` resolved: 0 for text pairs, whose texts are not joined, and for
    a single training text."""
    if train.pairs is not None or len(train) < 2:
        return 0
    return cfg.distill.joins(cfg.task)


def joined_texts(texts: list[str], per_text: int, seed: int) -> list[str]:
    """`per_text * len(texts)` texts, each two or three of `texts` (at least two) drawn at random
    and joined."""
    rng = np.random.default_rng([seed, 7])  # its own stream: the EDA copies stay as they were
    joined = []
    for _ in range(per_text * len(texts)):
        chosen = rng.choice(len(texts), min(int(rng.integers(2, 4)), len(texts)), replace=False)
        joined.append(" ".join(texts[i] for i in chosen))
    return joined


def _no_targets(count: int, spec: TaskSpec) -> np.ndarray:
    """Targets that say "unlabelled": NaN scores, or the UNLABELED mark."""
    if spec.numeric:
        return np.full(count, np.nan, np.float32)
    if spec.multi_hot:
        return np.full((count, 0), UNLABELED, np.float32)  # widened in `add_unlabeled`
    return np.full(count, UNLABELED, np.float32)


def add_unlabeled(
    labelled: Encoded,
    tokenizer: Any,
    split: Split,
    max_length: int,
    spec: TaskSpec,
    cache_dir: str | None,
) -> Encoded:
    """The labelled training examples followed by the unlabelled ones, as one `Encoded`."""
    extra = encode(tokenizer, split, max_length, spec, cache_dir)
    targets = labelled.targets.astype(np.float32)
    if spec.multi_hot:
        extra_targets = np.full((len(extra), targets.shape[1]), UNLABELED, np.float32)
    else:
        extra_targets = np.asarray(split.targets, np.float32)
    return Encoded(
        {n: np.concatenate([v, extra.features[n]]) for n, v in labelled.features.items()},
        np.concatenate([labelled.lengths, extra.lengths]),
        np.concatenate([targets, extra_targets]),
        labelled.token_targets,
    )


def distillation_data(
    cfg: Config, spec: TaskSpec, data: Data, teacher: Teacher, tokenizer: Any
) -> Data:
    """The run's data with the unlabelled texts added and the teacher's logits packed into the
    training targets; validation and test keep their true targets only.

    Raises:
        ConfigError, DataError: a student that cannot read the teacher's ids or labels.
    """
    check_tokenizer(tokenizer, teacher)
    check_labels(data, teacher)
    train = data.encoded["train"]
    extra = unlabeled_split(cfg, spec, data.splits.train.pairs is not None)
    if extra is not None:
        train = add_unlabeled(train, tokenizer, extra, data.max_length, spec, cfg.data.cache_dir)
        print(
            f"distill: {len(extra)} unlabelled texts from {extra.source}, labelled by the teacher"
        )
    transfer = transfer_split(cfg, spec, data)
    if transfer is not None:
        train = add_unlabeled(train, tokenizer, transfer, data.max_length, spec, cfg.data.cache_dir)
        count = len(data.splits.train)
        joined = joins_per_text(cfg, data.splits.train) * count
        print(
            f"distill: a transfer set of {len(transfer) - joined} augmented copies and {joined} "
            f"joins of the {count} training texts, labelled by the teacher "
            "(`distill.transfer_copies`, `distill.transfer_joins`)"
        )
    pad_id = tokenizer.pad_token_id or 0
    logits = teacher_logits(teacher, train, pad_id, spec, cfg.data.cache_dir)
    if data.scaling is not None:  # the teacher's scores are in its own standardised units
        logits = _rescale(logits, teacher, data.scaling)
    return dataclasses.replace(
        data, encoded={**data.encoded, "train": pack_targets(train, logits, spec)}
    )


def _rescale(scores: np.ndarray, teacher: Teacher, student: tuple[float, float]) -> np.ndarray:
    """Teacher scores moved from the teacher's target scaling into the student's."""
    from kerasft.serving import ExportInfo

    mean, std = ExportInfo.read(teacher.run_dir).scaling or (0.0, 1.0)
    raw = scores * std + mean
    return ((raw - student[0]) / student[1]).astype(np.float32)


def start_student(model: keras.Model, cfg: Config, teacher: Teacher) -> dict[str, Any]:
    """Initialises a cut student from its teacher; returns the facts for metrics.json."""
    facts: dict[str, Any] = {
        "teacher": str(teacher.run_dir),
        "alpha": cfg.distill.alpha,
        "temperature": cfg.distill.temperature,
    }
    if cfg.distill.student_layers:
        keep = kept_layers(teacher_layers(teacher), cfg.distill.student_layers)
        copied = init_from_teacher(model, teacher.model, keep)
        print(
            f"distill: a {len(keep)}-layer student starts from the teacher's layers "
            f"{', '.join(map(str, keep))}, embeddings and head ({copied} weights)"
        )
        facts["kept_layers"] = keep
    return facts


def distillation_loss(cfg: Config, data: Data) -> DistillationLoss:
    return DistillationLoss(
        cfg.task, max(len(data.label_names), 1), cfg.distill.alpha, cfg.distill.temperature
    )


def build_distiller(
    student: keras.Model, cfg: Config, data: Data, teacher: Teacher
) -> tuple[Distiller, dict[str, Any]]:
    """The student, started from its teacher when cut from it, as a `Distiller`; and the facts
    metrics.json records under `distill`."""
    facts = start_student(student, cfg, teacher)
    # Examples only the teacher labels: `distill.unlabeled` texts and the transfer set.
    facts["teacher_labelled_only"] = len(data.encoded["train"].lengths) - len(data.splits.train)
    facts["transfer_copies"] = cfg.distill.copies(cfg.task)
    facts["transfer_joins"] = joins_per_text(cfg, data.splits.train)
    return Distiller.around(student, distillation_loss(cfg, data)), facts
