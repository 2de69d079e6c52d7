"""The export contract: what a run records (`export.json`) so any later export of it is the same.

`ExportInfo` is written by training next to the best checkpoint and read by
`kerasft.export` to re-export the run; `export_model` takes it instead of a
dozen loose arguments.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

from kerasft.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class RunCard:
    """What the model card says about the run that trained the model.

    Attributes:
        backbone: the backbone as configured, with its type and directory.
        data: training source and size, validation and test sources with sizes.
        run_dir: the run directory.
        config: the fully resolved config, as YAML.
        metrics: split → scalar metrics.
        metric_names: the metrics the card's tables show, in order.
        teacher: the run that taught this one (distillation), else None.
    """

    backbone: str
    data: dict[str, Any]
    run_dir: str
    config: str
    metrics: dict[str, dict[str, float | int]]
    metric_names: tuple[str, ...]
    teacher: str | None = None


@dataclasses.dataclass(frozen=True)
class ExportInfo:
    """Everything an export needs besides the weights and the tokenizer.

    Attributes:
        task: the config's task name.
        labels: class, label or tag names in id order (empty for regression).
        max_length: the training max length, for in-graph truncation.
        pair: whether the model reads text pairs.
        thresholds: per-label decision thresholds (multi_label). Defaults to 0.5 each.
        scaling: `(mean, std)` of standardised regression targets; serving undoes it.
        warmup_texts: raw strings (and `warmup_pairs`) for TF Serving warmup requests.
        card: the model card's facts about the run; None writes no card.
        generation: seq2seq only: the source prefix and generation settings (max_new_tokens,
            num_beams, length_penalty) the export generates with.
    """

    task: str
    labels: tuple[str, ...]
    max_length: int = 128
    pair: bool = False
    thresholds: tuple[float, ...] | None = None
    scaling: tuple[float, float] | None = None
    warmup_texts: tuple[str, ...] = ()
    warmup_pairs: tuple[str, ...] | None = None
    card: RunCard | None = None
    # seq2seq: `source_prefix` and the `generation:` settings the export generates with.
    generation: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ExportInfo:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ExportInfo:
        raw = dict(raw)
        card = raw.pop("card", None)
        tuples = ("labels", "thresholds", "scaling", "warmup_texts", "warmup_pairs")
        for key in tuples:
            if raw.get(key) is not None:
                raw[key] = tuple(raw[key])
        if card is not None:
            card = RunCard(**{**card, "metric_names": tuple(card["metric_names"])})
        return cls(**raw, card=card)

    @classmethod
    def read(cls, run_dir: str | Path) -> ExportInfo:
        """The run's `export.json`.

        Raises:
            ConfigError: the file is missing or is not an export contract.
        """
        path = Path(run_dir) / "export.json"
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if "task" not in raw:  # runs from before the contract named its task and labels
                config = yaml.safe_load((path.parent / "config.yaml").read_text(encoding="utf-8"))
                raw["task"] = config.get("task", "classification")
                raw["labels"] = json.loads((path.parent / "labels.json").read_text())["labels"]
            return cls.from_dict(raw)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ConfigError(
                f"{path}: not a kerasft export contract ({type(exc).__name__}: {exc}). Train the run "
                "again with this version of kerasft."
            ) from None

    def write(self, run_dir: str | Path) -> None:
        (Path(run_dir) / "export.json").write_text(self.to_json(), encoding="utf-8")
