"""The training, export, evaluation, distillation and tuning sections."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from kerasft.config.base import MAX_BATCH_SIZE, _Section


class GroupOptimizerConfig(_Section):
    """The optimizer of one layer group."""

    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="`adamw` or `sgd`.")
    learning_rate: float = Field(gt=0.0, le=1.0, description="Peak learning rate of this group.")
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="Momentum (sgd).")
    weight_decay: float = Field(0.0, ge=0.0, description="Decoupled weight decay.")


class ContrastiveConfig(_Section):
    """`training.method: contrastive`: how sentence pairs are drawn, and the head fitted after."""

    sampling: Literal["iterations", "oversampling"] = Field(
        "iterations",
        description="`iterations`: in each of `iterations` rounds, every example gets one pair with an "
        "example of its label and one with an example of another label (the SetFit paper's script). "
        "`oversampling`: every pair of examples once, the rarer kind (usually same-label pairs) drawn "
        "again until both kinds are as many (SetFit v1's default).",
    )
    iterations: int = Field(
        20, ge=1, le=1000, description="Rounds of pairs with `sampling: iterations`."
    )
    max_pairs: int | None = Field(
        None, ge=1, description="Use at most this many pairs (a seeded sample). null: all."
    )
    head_l2: float = Field(
        1.0,
        gt=0.0,
        description="Inverse L2 strength `C` of the logistic-regression head fitted on the frozen "
        "sentence vectors after every epoch (scikit-learn's, as SetFit's default head). Smaller "
        "regularises more.",
    )


SETFIT_DEFAULTS = {"batch_size": 16, "learning_rate": 2e-5, "epochs": 1, "warmup_ratio": 0.1}
"""`training:` keys `method: contrastive` sets unless the config does (SetFit's body defaults,
its `warmup_proportion` of 0.1 included: the standard method's default warmup is none)."""


class TrainingConfig(_Section):
    """The optimiser, the schedule and when to stop."""

    method: Literal["standard", "contrastive"] = Field(
        "standard",
        description="`standard`: fine-tune backbone and head on the labels. `contrastive`: SetFit's two "
        "phases for few labels (docs/training.md): the backbone learns from sentence pairs (same label "
        "or not, cosine similarity of the pooled vectors), then a logistic-regression head is fitted on "
        "its frozen sentence vectors. Defaults then become batch 16, learning rate 2e-5, 1 epoch, "
        "10% warmup and `model.normalize: true`. Classification and multi_label only.",
    )
    contrastive: ContrastiveConfig = Field(
        default_factory=ContrastiveConfig,
        description="Pairs and head of `method: contrastive`; read only with that method.",
    )

    epochs: int = Field(3, ge=1, description="Maximum number of passes over the training set.")
    batch_size: int = Field(
        32,
        ge=1,
        le=MAX_BATCH_SIZE,
        description="Global batch size (split across replicas when distributed).",
    )
    learning_rate: float = Field(5e-5, gt=0.0, le=1.0, description="Peak learning rate of AdamW.")
    weight_decay: float = Field(
        0.01,
        ge=0.0,
        description="Decoupled weight decay; biases and LayerNorm weights are excluded.",
    )
    optimizer: Literal["adamw", "sgd"] = Field(
        "adamw", description="`adamw`, or `sgd` with `momentum`."
    )
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="Momentum of `sgd`.")
    group_learning_rates: dict[str, float] | None = Field(
        None,
        description="Explicit learning rates per group (`embeddings`, `layer_0` ... `layer_<L-1>`, `head`); "
        "groups left out use `learning_rate`.",
    )
    group_optimizers: dict[str, GroupOptimizerConfig] | None = Field(
        None,
        description="A separate optimizer per group (`embeddings`, `layer_<i>`, `head`), e.g. "
        "`{head: {learning_rate: 1.0e-3}, embeddings: {optimizer: sgd, learning_rate: 1.0e-5}}`; "
        "other groups use the main optimizer.",
    )
    layerwise_lr_decay: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Layer-wise learning-rate decay: encoder layer i (of L) learns at "
        "`learning_rate * decay^(L - i)`, embeddings at `decay^(L + 1)`, the head at the full rate. "
        "1.0 turns it off; 0.8-0.95 is usual.",
    )
    schedule: Literal["linear", "cosine", "constant"] = Field(
        "linear",
        description="Learning-rate shape after warmup: down to 0 linearly or on a cosine, or constant.",
    )
    warmup_steps: int | None = Field(
        None, ge=0, description="Warmup length in steps; overrides `warmup_ratio`."
    )
    clipnorm: float | None = Field(None, gt=0.0, description="Clip gradients to this global norm.")
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=1.0, description="Label smoothing of the classification loss."
    )
    loss: Literal["cross_entropy", "focal"] = Field(
        "cross_entropy",
        description="Classification loss; `focal` down-weights easy examples (imbalanced data).",
    )
    focal_gamma: float = Field(2.0, ge=0.0, description="Focusing parameter of the focal loss.")
    gradient_accumulation_steps: int = Field(
        1,
        ge=1,
        description="Apply the mean gradient of this many batches at once: an effective batch "
        "`batch_size * gradient_accumulation_steps` in the memory of one batch.",
    )
    freeze_embeddings: bool = Field(False, description="Keep the backbone's embeddings fixed.")
    lazy_embedding_updates: bool = Field(
        True,
        description="AdamW updates only the embedding rows of tokens in the batch (moments, decay, "
        "weights), as TF Addons' LazyAdam does; `false` moves every row every step, as Keras' AdamW "
        "does, at about a third more time per step.",
    )
    freeze_layers: int = Field(0, ge=0, description="Keep the bottom N encoder layers fixed.")
    bitfit: bool = Field(
        False,
        description="BitFit: train only the backbone's bias terms (and the task head); about 0.1% of "
        "a BERT's weights.",
    )
    unfreeze_every_steps: int | None = Field(
        None,
        ge=1,
        description="Gradual unfreezing, one more block every N training steps instead of epochs.",
    )
    unfreeze_every_epochs: int | None = Field(
        None,
        ge=1,
        description="Gradual unfreezing: train the head alone first, then unfreeze one more encoder layer "
        "from the top every N epochs (the embeddings last).",
    )
    warmup_ratio: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of all steps spent warming the learning rate up linearly. Defaults to none, "
        "as in Hugging Face's Trainer (a short run loses accuracy to warmup); 0.06-0.1 guards larger "
        "rates and deeper models.",
    )
    monitor: str | None = Field(
        None,
        description="Validation metric for early stopping and the best checkpoint, e.g. `val_macro_f1`. "
        "Defaults per task: val_macro_f1, val_micro_f1 (multi_label), val_pearson (regression), "
        "val_f1 (token_classification, entity-level).",
    )
    patience: int = Field(
        2, ge=0, description="Epochs without improvement of `monitor` before training stops early."
    )
    precision: Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"] = Field(
        "auto",
        description="Keras mixed-precision policy. `auto` picks mixed_float16 on NVIDIA GPUs of compute "
        "capability 7.0+, mixed_bfloat16 on TPUs and CPUs with native bfloat16 (AVX-512 BF16, AMX), else "
        "float32, and prints why; on such a CPU, float32 for a training set under 2,000 examples (or "
        "contrastive pairs), where mixed_bfloat16 saves no time. Logits, losses and "
        "metrics stay float32; under mixed_bfloat16, dropout draws its masks in float32.",
    )
    distribution: Literal["auto", "none", "mirrored", "multi_worker", "tpu"] = Field(
        "auto",
        description="`auto`: MultiWorkerMirroredStrategy when `TF_CONFIG` names a cluster, else MirroredStrategy "
        "when more than one GPU is visible, else one device. `mirrored` mirrors over all GPUs (or all logical CPU "
        "devices); `multi_worker` runs over the `TF_CONFIG` cluster (only the chief writes the run and export); "
        "`tpu` uses the TPU `TPUClusterResolver` finds. `batch_size` is the global batch, split across replicas.",
    )
    cluster_wait_seconds: float | None = Field(
        900,
        gt=0,
        description="A multi-worker run's wait for every task of `TF_CONFIG` to start. Past it, each "
        "waiting worker stops with one line (the chief, or worker 0, names the tasks missing) and "
        "exit status 1, before writing anything; `null`: wait without a limit.",
    )
    jit_compile: bool | Literal["auto"] = Field(
        "auto",
        description="Compile the train step with XLA. `auto`: on GPUs and TPUs only (on CPUs it was slower "
        "here). With XLA, batches are padded up to fixed widths about 12% apart, so few shapes are compiled.",
    )
    backup_every_steps: int | None = Field(
        500,
        ge=1,
        description="Back up the training state every N steps as well as at every epoch end; a run "
        "killed mid-epoch resumes at its last backup step with the same data order. `null`: epoch ends only.",
    )
    max_steps: int | None = Field(
        None,
        ge=1,
        description="Stop after this many training steps in all (a budget; the schedule fits it).",
    )
    max_seconds: float | None = Field(
        None,
        gt=0,
        description="Stop at the end of the step during which this much training time has passed.",
    )
    seed: int = Field(
        42,
        ge=0,
        le=2**32 - 1,
        description="Seed for splits, sampling, shuffling and initialisation (0 to 2^32 - 1).",
    )
    output_dir: str = Field("runs", description="Runs go to `<output_dir>/<name>/<timestamp>/`.")


class GenerationConfig(_Section):
    """How `task: seq2seq` generates text: in validation, test, the export and `kerasft.predict`."""

    max_new_tokens: int = Field(
        64, ge=1, le=4096, description="Longest generated text, in tokens (end token included)."
    )
    num_beams: int = Field(1, ge=1, le=64, description="Beam search width; 1 is greedy decoding.")
    length_penalty: float = Field(
        1.0,
        description="Beam search: the score is divided by length ** length_penalty; above 1 favours "
        "longer texts.",
    )
    batch_size: int = Field(
        64, ge=1, le=4096, description="Texts generated at once (length-sorted batches)."
    )
    xla: bool = Field(
        True,
        description="Compile `generate` with XLA for validation and test (several times faster once "
        "compiled; each batch shape compiles once, ~10 s). The export always compiles it.",
    )


class ExportConfig(_Section):
    """The SavedModel written after training."""

    enabled: bool = Field(True, description="Export a SavedModel after training.")
    tflite: bool = Field(
        False,
        description="Also write `<dir>/<name>/tflite/<version>.tflite` (token ids in, int8 weights) and record "
        "its size and its agreement with the float model on the test split in the model card.",
    )
    tflite_int8: bool = Field(
        False,
        description="Also write `<dir>/<name>/tflite/<version>.int8.tflite`: weights and activations in int8, "
        "calibrated on 200 training examples (training runs only; `kerasft.export` cannot calibrate).",
    )
    onnx: bool = Field(
        False,
        description="Also write `<dir>/<name>/onnx/<version>/`: `model.onnx` (token ids in, the task's outputs "
        "out) and `model.int8.onnx`, with the tokenizer files and labels; their size, speed and accuracy on "
        "the test split go in the model card. Needs `pip install 'kerasft[onnx]'`.",
    )
    onnx_optimize: bool = Field(
        True,
        description="Fuse `model.onnx` with onnxruntime's transformer optimizer (each layer's attention and "
        "GELU as single com.microsoft kernels, layer norms as LayerNormalization) and run the per-token "
        "layers on the real tokens only, skipping padding (onnxruntime only, faster on CPU). `false`: standard "
        "ONNX ops only, for other runtimes. A fused graph that differs from the plain one is not kept.",
    )
    precision: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="What the SavedModel computes in, whatever the training precision. `bfloat16`: "
        "rebuilt under mixed_bfloat16 (float32 weights and outputs, matrix products in bfloat16), "
        "faster on CPUs with native bfloat16 (AVX-512 BF16, AMX) and on GPUs, slower on others; "
        "ONNX and TFLite need `float32`.",
    )
    dir: str = Field(
        "saved_models", description="Exports go to `<dir>/<name>/<version>/` (TF Serving layout)."
    )

    @property
    def policy(self) -> str:
        """The Keras mixed-precision policy the SavedModel is built under."""
        return "mixed_bfloat16" if self.precision == "bfloat16" else "float32"

    @model_validator(mode="after")
    def _float32_for_conversions(self) -> ExportConfig:
        wanted = [k for k in ("onnx", "tflite", "tflite_int8") if getattr(self, k)]
        if self.precision == "bfloat16" and wanted:
            raise ValueError(
                f"`export.precision: bfloat16` is for the SavedModel; {', '.join(wanted)} "
                "converts a float32 one. Export those separately: "
                "`python -m kerasft.export --run RUN_DIR --onnx --set export.precision=float32`."
            )
        return self


class EvaluationConfig(_Section):
    """What is measured and drawn after training, on the validation and test splits."""

    slices: tuple[str, ...] = Field(
        (),
        description="Data columns (source, language, a demographic attribute) to score each value of "
        "separately; `metrics.json` and the report mark the largest gap between values. Numeric columns "
        "with many values are cut into quartiles.",
    )
    report: bool = Field(
        True,
        description="Write `report.html` and `plots/` in the run directory (curves, confusion matrix, "
        "ROC/PR, calibration, errors, slices).",
    )
    errors: int = Field(
        20, ge=0, description="Most confident test errors the report lists with their text."
    )


class SearchDimension(_Section):
    """One dimension of a hyperparameter search."""

    type: Literal["float", "int", "choice"] = Field(description="`float`, `int` or `choice`.")
    min: float | None = Field(None, description="Lowest value (float, int).")
    max: float | None = Field(None, description="Highest value (float, int).")
    step: float | None = Field(None, gt=0, description="Grid step (int: defaults to 1).")
    sampling: Literal["linear", "log"] = Field(
        "linear", description="`log` for scale-like values such as learning rates."
    )
    values: list[Any] | None = Field(None, description="The candidates of a `choice`.")

    @model_validator(mode="after")
    def _complete(self) -> SearchDimension:
        if self.type == "choice":
            if not self.values:
                raise ValueError("a `choice` needs a non-empty `values` list")
            return self
        if self.min is None or self.max is None:
            raise ValueError(f"a `{self.type}` dimension needs `min` and `max`")
        if self.min > self.max:
            raise ValueError(f"minimum {self.min:g} is above maximum {self.max:g}")
        if self.sampling == "log" and self.min <= 0:
            raise ValueError(f"`sampling: log` needs `min` above 0, got {self.min:g}")
        return self


TRANSFER_COPIES = 4  # `distill.transfer_copies` without unlabelled text (bench/compression.py)
TRANSFER_JOINS = 1  # `distill.transfer_joins` without unlabelled text (bench/compression.py)


class DistillConfig(_Section):
    """Knowledge distillation: a smaller student trained on a finished run's outputs."""

    teacher: str = Field(
        description="A finished run directory (as printed by `run_dir=`): its best checkpoint teaches."
    )
    student_layers: int | None = Field(
        None,
        ge=1,
        description="Cut the teacher's fine-tuned backbone to this many layers (every k-th, the top one kept) "
        "to start the student from. null: the student is `model.backbone`, which must share the teacher's "
        "tokenizer.",
    )
    alpha: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Weight of the distillation term; `1 - alpha` weighs the task loss on the true labels.",
    )
    temperature: float = Field(
        2.0, gt=0.0, description="Softmax temperature of the distillation term (scaled by T^2)."
    )
    unlabeled: str | None = Field(
        None,
        description="A CSV/TSV/JSONL/text file of unlabelled in-domain text the teacher labels; added to the "
        "training examples with the distillation term only. Sequence-level tasks.",
    )
    unlabeled_text_column: str = Field(
        "text", description="Column of `distill.unlabeled` with the text (ignored for .txt files)."
    )
    max_unlabeled: int | None = Field(
        None, ge=1, description="Use at most this many unlabelled texts (a seeded draw)."
    )
    transfer_copies: int | None = Field(
        None,
        ge=0,
        le=32,
        description="A transfer set, as DistilBERT and TinyBERT build one: this many augmented copies "
        "of every training text (EDA: synonyms, insertions, swaps and deletions at 10% each, one "
        "drawn per copy, seeded) that the teacher labels, with the distillation term only. "
        "Defaults to 4 without `unlabeled`, 0 with it. Sequence-level tasks; 0: off.",
    )
    transfer_joins: int | None = Field(
        None,
        ge=0,
        le=32,
        description="Longer texts for the transfer set: this many per training text, each two or three "
        "training texts drawn at random and joined (seeded), labelled by the teacher, so the student "
        "learns the teacher's answers on texts longer than the training ones. Defaults to 1 without "
        "`unlabeled`, 0 with it. Single-text sequence-level tasks; 0: off.",
    )

    def copies(self, task: str) -> int:
        """Transfer copies per training text for this task (the default resolved)."""
        return self._transfer(self.transfer_copies, TRANSFER_COPIES, task)

    def joins(self, task: str) -> int:
        """Joined texts per training text for this task (the default resolved)."""
        return self._transfer(self.transfer_joins, TRANSFER_JOINS, task)

    def _transfer(self, value: int | None, default: int, task: str) -> int:
        """A transfer-set count: as set, else `default` where there is no unlabelled text."""
        if value is not None:
            return value
        return 0 if self.unlabeled or task == "token_classification" else default


class TuningConfig(_Section):
    """A hyperparameter search over config keys (`python -m kerasft.tune`), with keras-tuner or Optuna."""

    space: dict[str, SearchDimension] = Field(
        description="Dotted config keys to search, e.g. `training.learning_rate: {type: float, min: 1e-5, "
        "max: 1e-4, sampling: log}`."
    )
    engine: Literal["keras_tuner", "optuna"] = Field(
        "keras_tuner",
        description="`keras_tuner`, or `optuna` (needs `pip install 'kerasft[optuna]'`): its samplers, "
        "pruning and a study shared by several workers through `tuning.storage`.",
    )
    oracle: Literal["random", "bayesian", "hyperband"] = Field(
        "random", description="keras-tuner's search algorithm (`engine: keras_tuner`)."
    )
    sampler: Literal["tpe", "random", "grid"] = Field(
        "tpe",
        description="Optuna's sampler (`engine: optuna`), seeded with `training.seed`. `grid` needs every "
        "dimension to be a `choice` or to have a `step`.",
    )
    pruner: Literal["median", "hyperband", "none"] | None = Field(
        None,
        description="Stop trials that fall behind (`engine: optuna`): `median` of the other trials at the "
        "same point, `hyperband` (successive halving brackets), `none`. Defaults to `median` with Optuna, "
        "`none` with keras-tuner (whose `oracle: hyperband` prunes its own way).",
    )
    report_every_steps: int | None = Field(
        None,
        ge=1,
        description="Also score the validation split and report it to the pruner every N training steps, "
        "for epochs too long to wait for. Defaults to epoch ends only.",
    )
    pruner_startup_trials: int | None = Field(
        None,
        ge=0,
        description="`pruner: median`: trials that finish before any is pruned. Defaults to a fifth of "
        "`max_trials`, between 1 and 5 (Optuna's own 5 would leave little of a small search to prune).",
    )
    storage: str | None = Field(
        None,
        description="Optuna's study storage, shared by every worker of one search: `sqlite:///path.db`, "
        "`journal:path` (a journal file; also any path ending in `.journal`), or a PostgreSQL/MySQL URL "
        "(`postgresql://user:password@host/db`). Defaults to `<tuning.directory>/study.journal`.",
    )
    study_name: str | None = Field(None, description="Optuna's study name. Defaults to `name`.")
    heartbeat_seconds: float = Field(
        30.0,
        gt=0,
        description="Distributed searches: a running trial reports it is alive this often; one silent for "
        "three intervals (its worker was killed) is marked failed and run again by another worker.",
    )
    max_retries: int = Field(
        1,
        ge=0,
        description="Times a trial whose worker died is run again before it counts as failed.",
    )
    second_objective: Literal["latency_ms", "size_mb"] | None = Field(
        None,
        description="`engine: optuna`: also minimise the trained model's latency (milliseconds for one "
        "example of `data.max_length` tokens, median of 20 calls) or size (MB of float32 weights). "
        "The result is a Pareto front, shown in the report; `pruner` must be `none`.",
    )
    max_trials: int = Field(
        10, ge=1, description="Trials to run (random, bayesian, every Optuna sampler)."
    )
    executions_per_trial: int = Field(
        1,
        ge=1,
        description="Trainings per trial, with seeds seed, seed+1, ...; their objective is averaged.",
    )
    objective: str | None = Field(
        None,
        description="Validation metric to optimise, e.g. `val_accuracy`. Defaults to the task's monitor.",
    )
    direction: Literal["auto", "max", "min"] = Field(
        "auto", description="`auto`: minimise losses and errors, maximise the rest."
    )
    max_steps_per_trial: int | None = Field(
        None, ge=1, description="Per-trial step budget (sets `training.max_steps`)."
    )
    max_seconds_per_trial: float | None = Field(
        None, gt=0, description="Per-trial time budget (sets `training.max_seconds`)."
    )
    directory: str | None = Field(
        None,
        description="Search state and results. Defaults to `<training.output_dir>/<name>/tuning`.",
    )
    export_best: bool = Field(
        False, description="Retrain the best config at the end and export it."
    )

    @model_validator(mode="after")
    def _engine_options(self) -> TuningConfig:
        optuna_only = {"sampler", "storage", "study_name", "second_objective", "report_every_steps"}
        if self.engine == "keras_tuner":
            given = sorted(optuna_only & self.model_fields_set)
            if given:
                raise ValueError(
                    f"`tuning.{given[0]}` is Optuna's; set `tuning.engine: optuna` or remove it "
                    "(keras-tuner's algorithm is `tuning.oracle`)"
                )
            if self.pruner not in (None, "none"):
                raise ValueError(
                    f"`tuning.pruner: {self.pruner}` needs `tuning.engine: optuna`; keras-tuner stops "
                    "trials early with `tuning.oracle: hyperband`"
                )
        elif "oracle" in self.model_fields_set:
            raise ValueError(
                "`tuning.oracle` is keras-tuner's; with `tuning.engine: optuna` choose `tuning.sampler` "
                "(tpe, random, grid)"
            )
        if self.second_objective and self.pruner not in (None, "none"):
            raise ValueError(
                "`tuning.second_objective` searches for a Pareto front, which Optuna cannot prune; "
                "set `tuning.pruner: none`"
            )
        if self.sampler == "grid" and self.engine == "optuna":
            open_ = [k for k, d in self.space.items() if d.type != "choice" and d.step is None]
            if open_:
                raise ValueError(
                    f"`tuning.sampler: grid` needs a grid: `tuning.space.{open_[0]}` has no `step`; "
                    "give it one or make it a `choice`"
                )
        return self

    @property
    def pruning(self) -> str:
        """The pruner in effect: `median` (Optuna's default), `hyperband` or `none`."""
        if self.pruner is not None:
            return self.pruner
        return "median" if self.engine == "optuna" and not self.second_objective else "none"
