"""The root `Config`: its sections, and the checks that span more than one of them."""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import Field, model_validator

from kerasft.config.base import MONITORS, _Section, leaf_keys
from kerasft.config.sections import DataConfig, ModelConfig
from kerasft.config.training import (
    SETFIT_DEFAULTS,
    DistillConfig,
    EvaluationConfig,
    ExportConfig,
    GenerationConfig,
    TrainingConfig,
    TuningConfig,
)


class Config(_Section):
    """A whole kerasft experiment."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        max_length=100,
        description="Name of the experiment; names the run and export folders (up to 100 letters, "
        "digits, `_`, `.` or `-`, starting with a letter or digit).",
    )
    task: Literal[
        "classification", "multi_label", "regression", "token_classification", "seq2seq"
    ] = Field(
        "classification",
        description="What is predicted: one label per text (or text pair), any number of labels, a number, "
        "one tag per word, or a text (`seq2seq`: translation, summarization).",
    )
    data: DataConfig
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    export: ExportConfig = ExportConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    generation: GenerationConfig = GenerationConfig()
    tuning: TuningConfig | None = Field(
        None, description="Hyperparameter search; used by `kerasft.tune` only."
    )
    distill: DistillConfig | None = Field(
        None,
        description="Train a student on a teacher run's outputs; `kerasft.distill` needs it, "
        "`kerasft.train` honours it too.",
    )

    @model_validator(mode="before")
    @classmethod
    def _method_defaults(cls, raw: Any) -> Any:
        """`training.method: contrastive` brings SetFit's defaults for the keys the config leaves out."""
        if not isinstance(raw, dict):
            return raw
        training = raw.get("training")
        if not isinstance(training, dict) or training.get("method") != "contrastive":
            return raw
        model = raw.get("model")
        model = model if isinstance(model, dict) else {} if model is None else model
        if isinstance(model, dict):
            model = {"normalize": True, **model}
        return {**raw, "training": {**SETFIT_DEFAULTS, **training}, "model": model}

    @model_validator(mode="after")
    def _contrastive_fits(self) -> Config:
        if self.training.method != "contrastive":
            return self
        refuses = [
            key
            for key, on in (
                (f"task: {self.task}", self.task not in ("classification", "multi_label")),
                ("data.text_pair_column", self.data.text_pair_column is not None),
                ("distill", self.distill is not None),
                ("model.backbone: bigru", self.model.backbone == "bigru"),
                ("model.prompt_tuning", self.model.prompt_tuning is not None),
                (
                    "training.unfreeze_every_*",
                    self.training.unfreeze_every_epochs or self.training.unfreeze_every_steps,
                ),
                ("training.loss: focal", self.training.loss == "focal"),
                ("training.label_smoothing", self.training.label_smoothing > 0),
            )
            if on
        ]
        if refuses:
            raise ValueError(
                f"`training.method: contrastive` trains single texts of `classification` or `multi_label` "
                f"from sentence pairs; `{refuses[0]}` does not apply to it (drop it, or use "
                "`method: standard`)"
            )
        return self

    @model_validator(mode="after")
    def _seq2seq_fits(self) -> Config:
        d = self.data
        if self.task != "seq2seq":
            given = [
                k
                for k, on in (
                    ("data.target_column", d.target_column is not None),
                    ("data.source_prefix", d.source_prefix),
                )
                if on
            ]
            if given:
                raise ValueError(
                    f"`{given[0]}` applies to `task: seq2seq`, not `{self.task}`; drop it"
                )
            return self
        if d.target_column is None:
            raise ValueError(
                "`task: seq2seq` needs `data.target_column`: the column holding the target texts"
            )
        t, e, m = self.training, self.export, self.model
        refuses = [
            key
            for key, on in (
                ("data.text_pair_column", d.text_pair_column is not None),
                ("data.augment", d.augment is not None),
                ("data.mix", d.mix is not None),
                ("data.class_weights: balanced", d.class_weights == "balanced"),
                ("distill", self.distill is not None),
                ("model.backbone: bigru", m.backbone == "bigru"),
                ("model.prompt_tuning", m.prompt_tuning is not None),
                ("model.adapters", m.adapters is not None),
                ("training.loss: focal", t.loss == "focal"),
                ("training.unfreeze_every_*", t.unfreeze_every_epochs or t.unfreeze_every_steps),
                ("export.tflite", e.tflite or e.tflite_int8),
                ("export.onnx", e.onnx),
                ("evaluation.slices", bool(self.evaluation.slices)),
            )
            if on
        ]
        if refuses:
            raise ValueError(
                f"`{refuses[0]}` does not apply to `task: seq2seq` in this version of kerasft; drop it "
                "(docs/seq2seq.md lists what seq2seq supports)"
            )
        return self

    @model_validator(mode="after")
    def _training_keys_agree(self) -> Config:
        t = self.training
        if t.group_learning_rates and t.layerwise_lr_decay < 1.0:
            raise ValueError(
                "use either `training.group_learning_rates` or `training.layerwise_lr_decay`, not both"
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
        made = [k for k in ("templates", "label_template") if augment and getattr(augment, k)]
        if made and (
            self.task not in ("classification", "multi_label") or self.data.text_pair_column
        ):
            raise ValueError(
                f"`data.augment.{made[0]}` makes single labelled texts for classification or "
                f"multi_label, not `{self.task}`{' pairs' if self.data.text_pair_column else ''}; drop it"
            )
        if self.data.label_delimiter is not None and self.task != "multi_label":
            raise ValueError(
                f"`data.label_delimiter` splits the labels of `task: multi_label`; `{self.task}` "
                "reads one label per row, so 'a|b' would be a class of its own. Set `task: "
                "multi_label` or drop it"
            )
        if augment and augment.back_translation and self.task == "token_classification":
            raise ValueError(
                "`data.augment.back_translation` rewrites whole sentences, so word tags cannot follow; "
                "token_classification can use synonym, insertion, swap, deletion and contextual"
            )
        return self

    @model_validator(mode="after")
    def _monitor_fits_task(self) -> Config:
        t = self.training
        if self.task not in ("classification", "multi_label", "seq2seq") and (
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
            for key in ("transfer_copies", "transfer_joins"):
                if getattr(self.distill, key) and self.task == "token_classification":
                    raise ValueError(
                        f"`distill.{key}` applies to sequence-level tasks; token_classification "
                        "distils on its labelled words only (set it to 0 or leave it out)"
                    )
            if self.distill.transfer_joins and self.data.text_pair_column is not None:
                raise ValueError(
                    "`distill.transfer_joins` joins single texts; with `data.text_pair_column` "
                    "set it to 0 or leave it out"
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
            leaves = set(leaf_keys(Config)) - {"name"}
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
