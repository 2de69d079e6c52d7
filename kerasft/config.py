"""The typed config tree: YAML loading, `--set` overrides and validation.

Every key a user can write is a field below, with a description saying what it
is for; docs/config.md is generated from the same descriptions (`python -m
kerasft.config` prints the table, `--update-docs` rewrites docs/config.md).
Unknown keys, wrong types and values out of range raise `ConfigError` naming the
file and the dotted key.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kerasft.errors import ConfigError

# Per task: the monitor used when `training.monitor` is not set, and every key it may name.
MONITORS = {
    "classification": (
        "val_macro_f1",
        (
            "val_loss",
            "val_accuracy",
            "val_macro_f1",
            "val_f1",
            "val_weighted_f1",
            "val_roc_auc",
            "val_pr_auc",
            "val_ece",
            "val_brier",
        ),
    ),
    "multi_label": (
        "val_micro_f1",
        (
            "val_loss",
            "val_micro_f1",
            "val_macro_f1",
            "val_weighted_f1",
            "val_subset_accuracy",
            "val_roc_auc",
            "val_pr_auc",
            "val_ece",
            "val_brier",
        ),
    ),
    "regression": ("val_pearson", ("val_loss", "val_pearson", "val_spearman", "val_mse")),
    "token_classification": (
        "val_f1",
        ("val_f1", "val_precision", "val_recall", "val_token_accuracy"),
    ),
}


# Larger global batches than this do not fit any accelerator's memory with a transformer;
# a typo such as 1000000000 would otherwise abort TensorFlow with std::bad_alloc.
MAX_BATCH_SIZE = 65536
# What a config file may hold before it is refused: values once aliases are expanded (a
# "billion laughs" file grows a few lines into gigabytes), nesting, and the length of a value
# echoed back in an error.
MAX_YAML_VALUES = 100_000
MAX_YAML_DEPTH = 50
MAX_ECHO = 120


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class BackTranslationConfig(_Section):
    """Paraphrases made by translating each training text to another language and back."""

    forward: str = Field(
        description="Translation model into the pivot language: a local Hugging Face model directory "
        "(Marian or any TF sequence-to-sequence model) or a hub name such as `Helsinki-NLP/opus-mt-en-de` "
        "(needs network access)."
    )
    backward: str = Field(description="Translation model from the pivot language back, same forms.")
    num_beams: int = Field(
        1, ge=1, description="Beam search width; 1 with `sampling` draws varied paraphrases."
    )
    sampling: bool = Field(
        True,
        description="Sample each output token (top-k) instead of taking the likeliest, so copies differ.",
    )
    top_k: int = Field(50, ge=1, description="With sampling: draw from this many likeliest tokens.")
    batch_size: int = Field(16, ge=1, le=MAX_BATCH_SIZE, description="Texts translated at once.")
    max_length: int = Field(
        128, ge=8, description="Longest translation in tokens (longer inputs are truncated)."
    )


class AugmentConfig(_Section):
    """Extra training rows made from the training split (never validation or test)."""

    copies: int = Field(
        1,
        ge=1,
        le=32,
        description="Augmented rows per training example; each is made by one operation drawn at random "
        "from those enabled (as in EDA). A copy identical to its original is dropped.",
    )
    synonym: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of words replaced by a WordNet synonym (EDA SR)."
    )
    insertion: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of the text length of synonyms inserted at random places (EDA RI).",
    )
    swap: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of the text length of random word swaps (EDA RS)."
    )
    deletion: float = Field(
        0.0, ge=0.0, le=1.0, description="Probability that each word is deleted (EDA RD)."
    )
    contextual: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of words replaced by a masked-LM prediction of `contextual_model`.",
    )
    contextual_model: str | None = Field(
        None,
        description="The masked LM of `contextual`: a Hugging Face model directory with a masked-LM head, "
        "e.g. one written by `kerasft.pretrain`. Defaults to `model.backbone`.",
    )
    back_translation: BackTranslationConfig | None = Field(
        None, description="Round-trip translation; see below. null: off."
    )
    protected: list[str] = Field(
        [],
        description="Words never changed, moved or deleted (case-insensitive). Numbers, URLs, e-mail "
        "addresses, @mentions and #hashtags are always protected.",
    )
    seed: int | None = Field(
        None,
        ge=0,
        le=2**32 - 1,
        description="Seed of the augmentation. Defaults to `training.seed`.",
    )

    @field_validator("protected", mode="before")
    @classmethod
    def _words_not_booleans(cls, value: Any) -> Any:
        if isinstance(value, list) and any(isinstance(v, bool) for v in value):
            raise ValueError(
                "YAML reads a bare no, yes, on or off as true/false; quote the words, "
                'e.g. protected: ["not", "no"]'
            )
        return value

    @model_validator(mode="after")
    def _something_enabled(self) -> AugmentConfig:
        if not self.operations():
            raise ValueError(
                "no operation is enabled: set a rate above 0 for synonym, insertion, swap, deletion "
                "or contextual, or give back_translation"
            )
        return self

    def operations(self) -> tuple[str, ...]:
        """The enabled operations, in a fixed order."""
        rates = {
            n: getattr(self, n) for n in ("synonym", "insertion", "swap", "deletion", "contextual")
        }
        enabled = tuple(n for n, rate in rates.items() if rate > 0)
        return enabled + (("back_translation",) if self.back_translation else ())


class DataConfig(_Section):
    """Where the examples come from and how they become token ids."""

    train: str = Field(
        description="Training data: a CSV, TSV, JSONL, Parquet or CoNLL file; a `datasets` folder written by "
        "`save_to_disk`; or `hf:<hub name>[:<config>]`. Append `@<split>` to pick a `datasets` split. Relative "
        "paths start at the working directory; `pkg:<package>/<path>` is a file inside an installed package."
    )
    validation: str | None = Field(
        None, description="Validation data, same forms as `train`. Defaults to a split of `train`."
    )
    test: str | None = Field(
        None, description="Test data, same forms as `train`. Defaults to a split of `train`."
    )
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet", "conll", "datasets"] = Field(
        "auto",
        description="Data format; `auto` goes by the extension (.csv, .tsv, .jsonl, .parquet, .conll) or, "
        "for folders and `hf:` names, `datasets`.",
    )
    encoding: str = Field(
        "utf-8", description="Text encoding of CSV/TSV/JSONL/CoNLL files, e.g. `latin-1`."
    )
    header: bool | Literal["auto"] = Field(
        "auto",
        description="Whether CSV/TSV files start with a header row. `auto`: yes when columns are named; "
        "when they are given by position, a first row whose label looks unlike the others is taken as a header.",
    )
    delimiter: str | None = Field(
        None,
        description="Field delimiter of delimited files. Defaults to `,` for CSV, tab for TSV.",
    )
    quoting: Literal["csv", "none"] = Field(
        "csv",
        description='`csv`: `"` quotes fields; `none`: quotes are ordinary text (SST-2 and GLUE TSVs).',
    )
    text_column: str | int = Field(
        "text",
        description="Column with the input text (a name, or a 0-based position); for token "
        "classification from JSONL/Parquet, a list of words.",
    )
    text_pair_column: str | int | None = Field(
        None,
        description="Column with the second text of sentence-pair tasks (paraphrase, NLI, similarity).",
    )
    label_column: str | int = Field(
        "label",
        description="Column with the target: a label (classification), a list or delimited string "
        "of labels (multi_label), a number (regression), or a list of tags (token_classification).",
    )
    label_delimiter: str | None = Field(
        None, description="For multi_label: the separator of labels given as one string, e.g. `|`."
    )
    labels: list[str] | None = Field(
        None,
        description="Label (or tag) vocabulary in id order. Defaults to the sorted labels of the training "
        "split (numerically when they are all integers).",
    )
    empty_text: Literal["drop", "error"] = Field(
        "drop", description="Rows with empty text are dropped (with a count) or rejected."
    )
    class_weights: Literal["none", "balanced"] = Field(
        "none",
        description="`balanced` weighs each class inversely to its training frequency (classification).",
    )
    validation_split: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="Share of `train` held out for validation when `validation` is not given.",
    )
    test_split: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="Share of `train` held out for testing when `test` is not given.",
    )
    max_train_examples: int | None = Field(
        None,
        ge=1,
        description="Keep at most this many training examples (seeded, stratified sample).",
    )
    max_eval_examples: int | None = Field(
        None, ge=1, description="Keep at most this many validation and test examples each."
    )
    max_length: int = Field(
        128, ge=8, le=4096, description="Truncate token sequences to this length."
    )
    bucketing: bool = Field(
        True,
        description="Batch examples of similar length together so little padding is computed "
        "(about 2x faster training on CPU).",
    )
    bucket_window: int = Field(
        0,
        ge=0,
        description="With bucketing: each epoch's shuffled examples are sorted by length in windows "
        "of this many batches, then the batches are shuffled. 0 sorts the whole epoch (least "
        "padding); smaller windows mix lengths more and pad more.",
    )
    target_scaling: Literal["none", "standard"] = Field(
        "none",
        description="Regression: `standard` trains on (target - mean) / std of the training split; "
        "the export undoes it, so predictions come out on the original scale.",
    )
    cache_dir: str | None = Field(
        ".cache/kerasft",
        description="Token ids (and augmented rows) are cached here, keyed by data, tokenizer and max "
        "length, so a second run skips tokenization; null turns the cache off.",
    )
    augment: AugmentConfig | None = Field(
        None,
        description="Augment the training split (EDA operations, masked-LM replacement, back-translation); "
        "the added rows are written to the run's `augmented.jsonl`. null: off.",
    )

    @model_validator(mode="after")
    def _splits_leave_training_data(self) -> DataConfig:
        held_out = (0 if self.validation else self.validation_split) + (
            0 if self.test else self.test_split
        )
        if held_out >= 0.9:
            raise ValueError(
                f"validation_split + test_split = {held_out:g} leaves almost nothing to train on; "
                "keep their sum below 0.9"
            )
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError(f"`labels` has duplicates: {self.labels}")
        return self


class LoraConfig(_Section):
    """LoRA adapters: train low-rank updates of some dense layers instead of the whole backbone."""

    rank: int = Field(8, ge=1, description="Rank of each update.")
    alpha: float = Field(16.0, gt=0.0, description="Updates are scaled by alpha / rank.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the adapters' input.")
    targets: list[str] = Field(
        ["query", "value"],
        min_length=1,
        description="Names of the dense layers to adapt (BERT-style: query, key, value, dense).",
    )


class AdapterConfig(_Section):
    """Bottleneck adapters: small trainable layers inside a frozen backbone."""

    size: int = Field(64, ge=1, description="Bottleneck width of each adapter.")
    placement: Literal["houlsby", "pfeiffer"] = Field(
        "houlsby",
        description="`houlsby`: after the attention and the feed-forward output of every layer; "
        "`pfeiffer`: after the feed-forward output only (half the adapters).",
    )


class PromptConfig(_Section):
    """Prompt tuning: trainable vectors before the input of a frozen backbone."""

    tokens: int = Field(20, ge=1, le=256, description="Number of soft-prompt vectors.")
    init: Literal["vocab", "random"] = Field(
        "vocab",
        description="`vocab`: start from the embeddings of random vocabulary tokens (Lester et al.); "
        "`random`: random vectors with the embeddings' spread.",
    )


class RnnConfig(_Section):
    """The BiGRU baseline (`model.backbone: bigru`)."""

    units: int = Field(128, ge=1, description="GRU units per direction.")
    layers: int = Field(1, ge=1, le=8, description="Stacked bidirectional GRU layers.")
    embeddings: Literal["pretrained", "random"] = Field(
        "pretrained",
        description="Start from the vocabulary backbone's input embeddings, or from random vectors "
        "of the same size.",
    )
    vocabulary: str = Field(
        "minilm-l6",
        description="The transformer whose WordPiece vocabulary, tokenizer and input embeddings the "
        "BiGRU uses (any `model.backbone` value).",
    )


class ModelConfig(_Section):
    """The pretrained backbone and the task head on top of it."""

    backbone: str = Field(
        "minilm-l6",
        description="`minilm-l6` (embedded MiniLM-L6-H384), a local Hugging Face model directory, "
        "a hub name such as `bert-base-uncased` (needs network access), or `bigru`: the BiGRU "
        "baseline trained from scratch (see `model.rnn`).",
    )
    num_layers: int | None = Field(
        None,
        ge=1,
        description="Build the backbone with only this many transformer layers (its first ones, pretrained "
        "weights for those). `kerasft.distill` sets it for a student cut from its teacher. null: all.",
    )
    pooling: Literal["mean", "cls", "pooler"] = Field(
        "mean",
        description="How the head sees the sequence: `mean` of the token vectors (works for every "
        "backbone), the `cls` token vector, or BERT's `pooler` output.",
    )
    dropout: float = Field(
        0.1, ge=0.0, lt=1.0, description="Dropout before the task head's dense layer."
    )
    lora: LoraConfig | None = Field(
        None,
        description="LoRA adapters (`{rank: 8}` is enough): only the adapters and the head train; the "
        "adapters are merged into the weights at export.",
    )
    rnn: RnnConfig = Field(
        default_factory=RnnConfig,
        description="The BiGRU baseline's shape and vocabulary; read only with `backbone: bigru`.",
    )
    prompt_tuning: PromptConfig | None = Field(
        None,
        description="Soft-prompt vectors before the input (`{tokens: 20}`): the backbone is frozen, only "
        "the prompt and the head train; the prompt is part of the exported graph.",
    )
    adapters: AdapterConfig | None = Field(
        None,
        description="Bottleneck adapters (`{size: 64}` is enough): only the adapters, the encoder's "
        "LayerNorms and the head train; the adapters stay in the exported model.",
    )
    hidden_dropout: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description="Override the backbone's hidden-layer dropout. Defaults to its own.",
    )
    attention_dropout: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description="Override the backbone's attention dropout. Defaults to its own.",
    )


class GroupOptimizerConfig(_Section):
    """The optimizer of one layer group."""

    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="`adamw` or `sgd`.")
    learning_rate: float = Field(gt=0.0, le=1.0, description="Peak learning rate of this group.")
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="Momentum (sgd).")
    weight_decay: float = Field(0.0, ge=0.0, description="Decoupled weight decay.")


class TrainingConfig(_Section):
    """The optimiser, the schedule and when to stop."""

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
        0.1,
        ge=0.0,
        le=1.0,
        description="Share of all steps spent warming the learning rate up linearly.",
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
        "float32, and prints why. Logits, losses and metrics stay float32.",
    )
    distribution: Literal["auto", "none", "mirrored", "multi_worker", "tpu"] = Field(
        "auto",
        description="`auto`: MultiWorkerMirroredStrategy when `TF_CONFIG` names a cluster, else MirroredStrategy "
        "when more than one GPU is visible, else one device. `mirrored` mirrors over all GPUs (or all logical CPU "
        "devices); `multi_worker` runs over the `TF_CONFIG` cluster (only the chief writes the run and export); "
        "`tpu` uses the TPU `TPUClusterResolver` finds. `batch_size` is the global batch, split across replicas.",
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
        description="Fuse `model.onnx` with onnxruntime's transformer optimizer (attention, layer norm, GELU "
        "and embeddings as single com.microsoft kernels; onnxruntime only, faster on CPU). `false`: standard "
        "ONNX ops only, for other runtimes. A fused graph that differs from the plain one is not kept.",
    )
    dir: str = Field(
        "saved_models", description="Exports go to `<dir>/<name>/<version>/` (TF Serving layout)."
    )


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


class TuningConfig(_Section):
    """A keras-tuner search over config keys (`python -m kerasft.tune`)."""

    space: dict[str, SearchDimension] = Field(
        description="Dotted config keys to search, e.g. `training.learning_rate: {type: float, min: 1e-5, "
        "max: 1e-4, sampling: log}`."
    )
    oracle: Literal["random", "bayesian", "hyperband"] = Field(
        "random", description="The search algorithm."
    )
    max_trials: int = Field(10, ge=1, description="Trials to run (random, bayesian).")
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


class Config(_Section):
    """A whole kerasft experiment."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Name of the experiment; names the run and export folders.",
    )
    task: Literal["classification", "multi_label", "regression", "token_classification"] = Field(
        "classification",
        description="What is predicted: one label per text (or text pair), any number of labels, a number, "
        "or one tag per word.",
    )
    data: DataConfig
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    export: ExportConfig = ExportConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    tuning: TuningConfig | None = Field(
        None, description="Hyperparameter search; used by `kerasft.tune` only."
    )
    distill: DistillConfig | None = Field(
        None,
        description="Train a student on a teacher run's outputs; `kerasft.distill` needs it, "
        "`kerasft.train` honours it too.",
    )

    @model_validator(mode="after")
    def _training_keys_agree(self) -> Config:
        t = self.training
        if t.group_learning_rates and t.layerwise_lr_decay < 1.0:
            raise ValueError(
                "use either `training.group_learning_rates` or `training.layerwise_lr_decay`, not both"
            )
        if t.group_optimizers and t.gradient_accumulation_steps > 1:
            raise ValueError(
                "`training.group_optimizers` does not combine with `gradient_accumulation_steps` yet"
            )
        if t.unfreeze_every_epochs and t.unfreeze_every_steps:
            raise ValueError(
                "give `training.unfreeze_every_epochs` or `unfreeze_every_steps`, not both"
            )
        if (t.unfreeze_every_epochs or t.unfreeze_every_steps) and (
            t.freeze_layers or t.freeze_embeddings
        ):
            raise ValueError(
                "`training.unfreeze_every_epochs` unfreezes every block in turn; drop `freeze_layers` and "
                "`freeze_embeddings`, or gradual unfreezing"
            )
        return self

    @model_validator(mode="after")
    def _one_way_to_choose_what_trains(self) -> Config:
        t = self.training
        methods = [
            name
            for name, on in (
                ("model.lora", self.model.lora),
                ("model.adapters", self.model.adapters),
                ("model.prompt_tuning", self.model.prompt_tuning),
                ("training.bitfit", t.bitfit),
            )
            if on
        ]
        if len(methods) > 1:
            raise ValueError(
                f"choose one of `{methods[0]}` and `{methods[1]}`: each freezes the backbone its own way"
            )
        if methods and (t.unfreeze_every_epochs or t.unfreeze_every_steps or t.freeze_layers):
            raise ValueError(
                f"`{methods[0]}` decides what trains; drop `training.unfreeze_every_*` and `freeze_layers`"
            )
        if self.model.backbone == "bigru":
            bigru_refuses = [m for m in methods if m != "training.bitfit"] + [
                key
                for key, on in (
                    ("model.num_layers", self.model.num_layers),
                    (
                        "training.unfreeze_every_*",
                        t.unfreeze_every_epochs or t.unfreeze_every_steps,
                    ),
                    ("training.freeze_layers", t.freeze_layers),
                    ("training.bitfit", t.bitfit),
                    ("model.pooling: pooler", self.model.pooling == "pooler"),
                )
                if on
            ]
            if bigru_refuses:
                raise ValueError(
                    f"`{bigru_refuses[0]}` applies to transformer backbones, not `model.backbone: "
                    "bigru`; drop it or pick a transformer backbone"
                )
        if self.model.prompt_tuning and self.model.pooling == "pooler":
            raise ValueError(
                "`model.pooling: pooler` reads the first position, a soft-prompt vector under "
                "`model.prompt_tuning`; use `mean` or `cls`"
            )
        return self

    @model_validator(mode="after")
    def _augmentation_fits_task(self) -> Config:
        augment = self.data.augment
        if augment and augment.back_translation and self.task == "token_classification":
            raise ValueError(
                "`data.augment.back_translation` rewrites whole sentences, so word tags cannot follow; "
                "token_classification can use synonym, insertion, swap, deletion and contextual"
            )
        return self

    @model_validator(mode="after")
    def _monitor_fits_task(self) -> Config:
        t = self.training
        if self.task not in ("classification", "multi_label") and (
            t.loss == "focal" or t.label_smoothing
        ):
            raise ValueError(
                f"`training.loss: focal` and `training.label_smoothing` apply to classification tasks, "
                f"not `{self.task}`"
            )
        if self.distill is not None:
            if self.distill.unlabeled and self.task == "token_classification":
                raise ValueError(
                    "`distill.unlabeled` applies to sequence-level tasks; token_classification distils "
                    "on its labelled words only"
                )
        allowed = MONITORS[self.task][1]
        if self.training.monitor is not None and self.training.monitor not in allowed:
            close = difflib.get_close_matches(self.training.monitor, allowed, n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise ValueError(
                f"`training.monitor: {self.training.monitor}` is not reported for task `{self.task}`.{hint} "
                f"Allowed: {', '.join(allowed)}"
            )
        if self.tuning is not None:
            leaves = set(_leaf_keys(Config)) - {"name"}
            for key in self.tuning.space:
                if key not in leaves or key.startswith("tuning."):
                    close = difflib.get_close_matches(key, sorted(leaves), n=1)
                    hint = f" Did you mean `{close[0]}`?" if close else ""
                    raise ValueError(f"`tuning.space.{key}` is not a config key.{hint}")
            objective = self.tuning.objective
            if objective is not None and objective not in allowed:
                raise ValueError(
                    f"`tuning.objective: {objective}` is never reported for task `{self.task}`. "
                    f"Use one of {', '.join(allowed)}"
                )
        return self

    @property
    def monitor(self) -> str:
        """`training.monitor`, or the task's default."""
        return self.training.monitor or MONITORS[self.task][0]


class PretrainConfig(_Section):
    """Continued masked-LM pretraining of the backbone on unlabelled in-domain text (`kerasft.pretrain`)."""

    files: list[str] = Field(
        min_length=1,
        description="Unlabelled text: .txt files (one text per line) or CSV/TSV/JSONL/Parquet files with a "
        "`text_column`; `pkg:<package>/<path>` for a file inside an installed package.",
    )
    text_column: str | int = Field(
        "text",
        description="The text column of CSV/TSV/JSONL/Parquet files (a name or 0-based position).",
    )
    encoding: str = Field("utf-8", description="Text encoding of the files, e.g. `latin-1`.")
    quoting: Literal["csv", "none"] = Field(
        "csv", description="Quoting of CSV/TSV files, as `data.quoting` (`none` for GLUE TSVs)."
    )
    max_length: int = Field(128, ge=8, le=4096, description="Truncate texts to this many tokens.")
    max_examples: int | None = Field(
        None, ge=1, description="Use at most this many texts (a seeded sample). null: all."
    )
    validation_share: float = Field(
        0.05,
        ge=0.0,
        lt=0.5,
        description="Share of the texts (at most 1,000) held out to report the masked-token loss "
        "before and after.",
    )
    mlm_probability: float = Field(
        0.15, gt=0.0, lt=1.0, description="Share of tokens (or words) masked in each text."
    )
    whole_word_masking: bool = Field(
        True,
        description="Mask every sub-token of a chosen word together (BERT's whole-word masking).",
    )
    epochs: int = Field(1, ge=1, description="Passes over the texts.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many steps (also sets the schedule's length)."
    )
    batch_size: int = Field(32, ge=1, le=MAX_BATCH_SIZE, description="Texts per step.")
    learning_rate: float = Field(5e-5, gt=0.0, le=1.0, description="Peak learning rate of AdamW.")
    weight_decay: float = Field(0.01, ge=0.0, description="Decoupled weight decay.")
    layerwise_lr_decay: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Multiply the learning rate by this per layer from the top down, as in "
        "`training.layerwise_lr_decay`; 1 means one rate for all.",
    )
    warmup_ratio: float = Field(
        0.06, ge=0.0, le=1.0, description="Share of the steps with linear warmup."
    )
    precision: Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"] = Field(
        "auto", description="Keras mixed-precision policy, as `training.precision`."
    )
    bucketing: bool = Field(
        True,
        description="Batch texts of similar length together (sorted in windows of 50 batches).",
    )
    seed: int = Field(
        0, ge=0, le=2**32 - 1, description="Seed of the sample, the order and the masks."
    )
    backup_every_steps: int = Field(
        200,
        ge=1,
        description="Back up the model and optimizer this often; a killed run resumes there.",
    )
    log_every_steps: int = Field(50, ge=1, description="Print the loss and speed this often.")
    output_dir: str | None = Field(
        None,
        description="The Hugging Face model directory written at the end (usable as `model.backbone`). "
        "Defaults to `pretrained/<name>`.",
    )


class PretrainRun(_Section):
    """A `kerasft.pretrain` config: a name, the backbone and the `pretrain:` section."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Name of the pretraining run."
    )
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig

    @model_validator(mode="after")
    def _a_transformer(self) -> PretrainRun:
        if self.model.backbone == "bigru":
            raise ValueError(
                "`model.backbone: bigru` has no masked-LM pretraining; pick a transformer"
            )
        return self


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Reads a YAML config, applies `--set key=value` overrides and validates it.

    Args:
        path: the YAML file.
        overrides: strings `dotted.key=value`; the value is parsed as YAML, so
            `training.epochs=2` gives an integer. Defaults to none.

    Raises:
        ConfigError: the file is missing or invalid, or an override is malformed.
    """
    return config_from_dict(load_raw(path), source=str(path), overrides=overrides)


def load_raw(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The config file as a plain dict with the overrides applied, before validation.

    Raises:
        ConfigError: the file is missing, not YAML, or an override is malformed.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--config {path} is a directory. Pass a YAML file, e.g. {path}/x.yaml.")
    if not path.is_file():
        raise ConfigError(f"Config file not found: {path}. Pass an existing YAML file to --config.")
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text. Save the config as UTF-8.") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror}).") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}."
        )
    for item in overrides:
        _apply_override(raw, item)
    return raw


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses duplicate keys and bounds aliases and nesting."""

    def __init__(self, stream: str, source: str) -> None:
        super().__init__(stream)
        self.source = source
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise ConfigError(
                    f"{self.source}:{line}: nested more than {MAX_YAML_DEPTH} levels deep; "
                    "a config has a few levels of sections."
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.setdefault(key, line)
            except TypeError:  # an unhashable key; SafeLoader says so below
                continue
            if first != line:
                raise ConfigError(
                    f"{self.source}:{line}: duplicate key `{_echo(key)}` (first set on line {first}); "
                    "keep one of them."
                )
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str) -> Any:
    """YAML text as Python values, with `_StrictLoader`'s limits.

    Raises:
        ConfigError: invalid YAML, a duplicate key, too many aliases or too deep nesting,
            naming `source` and the line.
    """
    loader = _StrictLoader(text, source)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {})
        if size > MAX_YAML_VALUES:
            raise ConfigError(
                f"{source}: expands to {size:,} values through YAML aliases (`*name`), more than "
                f"{MAX_YAML_VALUES:,}; write the values out instead of nesting aliases."
            )
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML ({_echo(problem)}).") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to read.") from None
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values `node` stands for once every alias is written out (shared nodes count
    once per use), computed without expanding anything."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = 1  # a cycle counts once, not forever
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    sizes[id(node)] = total
    return total


def _echo(value: Any, limit: int = MAX_ECHO, quote: bool = False) -> str:
    """`value` as an error message shows it: its repr for non-strings (and strings with `quote`),
    cut to `limit` characters."""
    if quote or not isinstance(value, str):
        import reprlib

        short = reprlib.Repr()  # never builds the full repr of a huge value
        short.maxlevel, short.maxlist, short.maxdict, short.maxstring = 3, 6, 6, limit
        value = short.repr(value)
    return value if len(value) <= limit else value[: limit - 3] + "..."


def add_override_argument(
    parser: Any, example: str = "training.epochs=2", what: str = "override a config key"
) -> None:
    """The `--set KEY=VALUE` option every command that reads a config shares."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"{what}, e.g. --set {example} (repeatable; the value is read as YAML)",
    )


def config_from_dict(
    raw: dict[str, Any],
    source: str = "<dict>",
    overrides: list[str] | tuple[str, ...] = (),
    root: type[BaseModel] = Config,
) -> Any:
    """Validates a plain dict, with `dotted.key=value` overrides applied, as a `Config`.

    Args:
        root: the config class to validate as, e.g. `PretrainRun`. Defaults to `Config`.

    Raises:
        ConfigError: naming `source`, or the `--set` override that gave the bad key.
    """
    for item in overrides:
        _apply_override(raw, item)
    try:
        return root.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        message = _describe(errors[0], raw, _origin(errors[0], source, overrides), root)
        if len(errors) > 1:
            message += (
                f" ({len(errors) - 1} more problem{'s' if len(errors) > 2 else ''} in {source})"
            )
        raise ConfigError(message) from None


def dump_config(config: Config) -> str:
    """The fully resolved config as YAML, every default written out."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(
            f"Invalid override `{_echo(item)}`. Expected `dotted.key=value`, e.g. `training.epochs=2`."
        )
    try:
        value = parse_yaml(text, f"--set {key}") if text.strip() else None
    except ConfigError:
        value = text
    set_dotted(raw, key, value, f"Invalid override `{_echo(item)}`")


def set_dotted(raw: dict[str, Any], key: str, value: Any, context: str = "Invalid key") -> None:
    """Sets `raw[a][b][c] = value` for the key `a.b.c`, creating sections on the way.

    Raises:
        ConfigError: a part of the key names a value, not a section (`context` starts the message).
    """
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(f"{context}: `{where}` is a value, not a section.")
        node = child
    node[parts[-1]] = value


def _origin(error: dict[str, Any], source: str, overrides: list[str] | tuple[str, ...]) -> str:
    """Where the key an error is about came from: the last `--set` that wrote it, else `source`."""
    dotted = ".".join(str(p) for p in error["loc"])
    for item in reversed(overrides):
        key = item.partition("=")[0].strip()
        if dotted == key or dotted.startswith(key + "."):
            return f"--set {_echo(item)}"
    return source


def _describe(
    error: dict[str, Any], raw: dict[str, Any], source: str, root: type[BaseModel] = Config
) -> str:
    loc = [str(p) for p in error["loc"]]
    dotted = ".".join(loc)
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1], root)
        close = difflib.get_close_matches(loc[-1], allowed, n=1, cutoff=0.6)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        return f"Unknown key `{_echo(dotted)}` in {source}.{hint} Allowed keys here: {', '.join(allowed)}."
    if error["type"] == "missing":
        return f"Missing required key `{dotted}` in {source}."
    if error["type"] == "value_error":
        msg = _echo(str(error.get("ctx", {}).get("error", error["msg"])), 600)
        where = f"`{dotted}` in {source}" if dotted else source
        return f"Invalid {where}: {msg}."
    received = _echo(error.get("input"), quote=True)
    msg = error["msg"]
    expected = msg[:1].lower() + msg[1:]  # the allowed pattern or choices keep their case
    return f"Invalid value for `{dotted}` in {source}. Received: {received}. Expected: {_echo(expected, 400)}."


def _allowed_keys(loc: list[str], root: type[BaseModel] = Config) -> list[str]:
    model: type[BaseModel] = root
    for part in loc:
        if part not in model.model_fields:  # a free-form key, e.g. under tuning.space
            if model is TuningConfig or model is root:
                return []
            continue
        annotation = model.model_fields[part].annotation
        section = _section(annotation) or _section(
            typing.get_args(annotation)[-1] if typing.get_args(annotation) else None
        )
        if section is None:
            return []
        model = section
    return list(model.model_fields)


def _section(annotation: Any) -> type[BaseModel] | None:
    """The config section class an annotation holds (`X` or `X | None`), else None."""
    if typing.get_origin(annotation) is dict:
        return None
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _leaf_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        section = _section(field.annotation)
        if section is not None:
            keys += _leaf_keys(section, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def reference() -> str:
    """A Markdown table of every config key, its default and its description."""
    rows = ["| key | default | what it does |", "| --- | --- | --- |"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            section = _section(field.annotation)
            if section is not None:
                walk(section, f"{prefix}{name}.")
                continue
            if typing.get_origin(field.annotation) is dict:
                rows.append(f"| `{prefix}{name}` | required | {field.description} |")
                walk(typing.get_args(field.annotation)[1], f"{prefix}{name}.<key>.")
                continue
            default = (
                "required"
                if field.is_required()
                else f"`{field.default!r}`".replace("None", "null")
            )
            rows.append(f"| `{prefix}{name}` | {default} | {field.description or ''} |")

    walk(Config, "")
    rows.append(
        "| `pretrain` | | Used by `kerasft.pretrain` only, in a config of its own with `name` and "
        "`model.backbone` (and `model.hidden_dropout`/`attention_dropout`): |"
    )
    walk(PretrainConfig, "pretrain.")
    return "\n".join(rows)


def update_reference(path: str | Path = "docs/config.md") -> None:
    """Rewrites the config reference between the `config-reference` markers of `path`."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    start = text.index("<!-- config-reference:start -->\n") + len(
        "<!-- config-reference:start -->\n"
    )
    end = text.index("\n<!-- config-reference:end -->")
    path.write_text(text[:start] + reference() + text[end:], encoding="utf-8")


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--update-docs"]:
        update_reference(*sys.argv[2:3])
    else:
        print(reference())
