"""The data, model (and its PEFT methods) and pretraining sections (`data.augment:` in `augment`)."""

from __future__ import annotations

import reprlib
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from kerasft.config.augment import AugmentConfig
from kerasft.config.base import MAX_BATCH_SIZE, _Section


class MixConfig(_Section):
    """A general-domain labelled file mixed into training as a regulariser."""

    file: str = Field(
        description="The labelled file (same formats as `data.train`); its labels must be in the "
        "task's label set."
    )
    share: float = Field(
        0.2,
        gt=0.0,
        lt=1.0,
        description="Share of every epoch's training examples taken from `file` (a seeded sample "
        "of it, drawn once); the task's own examples are the rest.",
    )
    text_column: str | int | None = Field(
        None, description="Its text column. Defaults to `data.text_column`."
    )
    label_column: str | int | None = Field(
        None, description="Its label column. Defaults to `data.label_column`."
    )


class DataConfig(_Section):
    """Where the examples come from and how they become token ids."""

    train: str | list[str] = Field(
        description="Training data: a CSV, TSV, JSONL, Parquet or CoNLL file; a `datasets` folder written by "
        "`save_to_disk`; or `hf:<hub name>[:<config>]`. Append `@<split>` to pick a `datasets` split. Relative "
        "paths start at the working directory; `pkg:<package>/<path>` is a file inside an installed package. "
        "A list of such sources (same columns) is read as one training set, in order; "
        "`validation_split` and `test_split` then carve from all of them."
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
    target_column: str | int | None = Field(
        None,
        description="For `task: seq2seq`: the column with the target text (the translation, the summary); "
        "the source text is `text_column`.",
    )
    source_prefix: str = Field(
        "",
        description="For `task: seq2seq`: text put before every source text, in training and in the "
        "export (T5's `translate English to German: `).",
    )
    max_target_length: int = Field(
        64,
        ge=2,
        le=4096,
        description="For `task: seq2seq`: longest target kept in training, in tokens (end token included).",
    )
    label_delimiter: str | None = Field(
        None,
        description="For multi_label: the separator of labels given as one string, e.g. `|` (other tasks refuse it).",
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
        description="Share of `train` held out for validation when `validation` is not given: "
        "stratified by label, seeded; when some label has a single row, at random except that "
        "one row of every label stays in training.",
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
        128,
        ge=8,
        le=4096,
        description="Truncate token sequences to this length; to less when the backbone's "
        "position embeddings or its tokenizer's `model_max_length` take fewer tokens (said when "
        "the run starts). Sequence-to-sequence models refuse a length past their positions.",
    )
    bucketing: bool = Field(
        True,
        description="Without packing: batch examples of similar length together so little padding "
        "is computed (about 2x faster training on CPU than padded shuffled batches).",
    )
    bucket_window: int = Field(
        0,
        ge=0,
        description="With bucketing: each epoch's shuffled examples are sorted by length in windows "
        "of this many batches, then the batches are shuffled. 0 sorts the whole epoch (least "
        "padding); smaller windows mix lengths more and pad more.",
    )
    packing: bool | Literal["auto"] = Field(
        "auto",
        description="Train on shuffled batches whose texts are laid end to end in a few rows, each "
        "text attending only to itself: the mixed-length batches of `bucketing: false` with "
        "little padding. `auto` packs where the run can (sequence-level tasks, BERT-family "
        "backbones, no XLA) and keeps `bucketing` elsewhere; `true` where it cannot is an error.",
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
        description="Augment the training split (EDA operations, masked-LM replacement, back-translation, "
        "code-switching, templates); the added rows are written to the run's `augmented.jsonl`. "
        "null: off.",
    )
    mix: MixConfig | None = Field(
        None,
        description="Mix a general-domain labelled file into training at a fixed share of every "
        "epoch (a regulariser); see below. null: off.",
    )

    @field_validator("train", mode="before")
    @classmethod
    def _one_source_or_a_list(cls, value: Any) -> Any:
        # One message for both forms: the union's own would name its `str` branch.
        if isinstance(value, str) or (
            isinstance(value, list) and value and all(isinstance(v, str) for v in value)
        ):
            return value
        raise ValueError(
            "takes a file (or `datasets`/`hf:` source) or a non-empty list of them; "
            f"got {reprlib.repr(value)}"
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
        description="Names of the dense layers to adapt (BERT-style: query, key, value, dense; "
        "seq2seq: T5's q, k, v, o, BART's and Marian's q_proj, k_proj, v_proj, out_proj).",
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
    normalize: bool = Field(
        False,
        description="Scale the pooled sentence vector to unit length before the head, as "
        "sentence-transformers models such as all-MiniLM-L6-v2 do. `training.method: contrastive` "
        "turns it on unless set.",
    )
    dropout: float = Field(
        0.1, ge=0.0, lt=1.0, description="Dropout before the task head's dense layer."
    )
    weights: Literal["pretrained", "random"] = Field(
        "pretrained",
        description="`pretrained` loads the backbone's weights; `random` builds it from its config.json "
        "with fresh weights and trains from scratch (the directory then needs no weights).",
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
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        max_length=100,
        description="Name of the pretraining run.",
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
