"""SavedModel export in the TensorFlow Serving layout: `<dir>/<name>/<version>/`.

The serving module is a `tf.Module` separate from the training model, so the
export holds only what serving needs: the weights, the in-graph tokenizer, the
signatures, and the label names and tokenizer files as assets. Versions are
integers counting up; each is written to a temporary folder and renamed into
place, so a reader never sees half an export and no version is overwritten.

Signatures:
- `serving_default`: raw UTF-8 strings `text` (and `text_pair` for pair models),
  tokenized in the graph with tensorflow-text exactly as in training. Backbones
  whose tokenizer has no in-graph equivalent (byte-level BPE, SentencePiece for
  now) get the token-ids signature here instead, and the export says so.
- `predict_ids`: int32 token ids for clients that tokenize themselves.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from kerasft._compat import keras, tf
from kerasft.errors import cli_main
from kerasft.graph_tokenizer import UnsupportedTokenizer, graph_tokenizer_for
from kerasft.model_card import write_card, write_meta, write_warmup

LABELS_ASSET = "labels.txt"


class ServingModule(tf.Module):
    """Serving signatures with outputs per task.

    | task | outputs |
    | --- | --- |
    | classification | `probabilities` [B, C], `label_id` [B], `label` [B] |
    | multi_label | `probabilities` [B, C], `predicted` [B, C] (bool, per-label thresholds), `thresholds` [C] |
    | regression | `score` [B], on the original scale of the targets |
    | token_classification | `probabilities` [B, T, C], `tag_id` [B, T], `tag` [B, T] (per sub-token) |

    Args:
        model: the trained Keras model (dict of int32 token-id inputs → task outputs).
        task: the config's task.
        label_names: class, label or tag names in id order (empty for regression).
        input_names: the model's input names, e.g. `input_ids`, `attention_mask`.
        assets: files to ship in `assets/` (label names, tokenizer files).
        tokenizer: the in-graph tokenizer, or None for an ids-only export. Defaults to None.
        pair: whether the model reads text pairs. Defaults to False.
        thresholds: per-label decision thresholds (multi_label). Defaults to 0.5 each.
        scaling: `(mean, std)` of standardised regression targets. Defaults to none.
    """

    def __init__(
        self,
        model,
        task,
        label_names,
        input_names,
        assets,
        tokenizer=None,
        pair=False,
        thresholds=None,
        scaling=None,
    ):
        super().__init__(name="kerasft_serving")
        self.model = model
        self.task = task
        self.input_names = tuple(input_names)
        self.assets = [tf.saved_model.Asset(str(path)) for path in assets]
        self.tokenizer = tokenizer
        self.pair = pair
        self._label_names = tf.constant(list(label_names) or [""])
        n = max(len(label_names), 1)
        self._thresholds = tf.constant(
            [0.5] * n if thresholds is None else [float(t) for t in thresholds]
        )
        mean, std = scaling if scaling is not None else (0.0, 1.0)
        self._scale = tf.constant([mean, std], tf.float32)

    def predict_ids(self, **features: tf.Tensor) -> dict[str, tf.Tensor]:
        features = {k: tf.cast(v, tf.int32) for k, v in features.items()}
        out = tf.cast(self.model(features, training=False), tf.float32)
        if self.task == "regression":
            return {"score": out * self._scale[1] + self._scale[0]}
        if self.task == "multi_label":
            probabilities = tf.sigmoid(out)
            return {
                "probabilities": probabilities,
                "predicted": probabilities >= self._thresholds,
                "thresholds": tf.identity(self._thresholds),
            }
        probabilities = tf.nn.softmax(out, axis=-1)
        ids = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        if self.task == "token_classification":
            return {
                "probabilities": probabilities,
                "tag_id": ids,
                "tag": tf.gather(self._label_names, ids),
            }
        return {
            "probabilities": probabilities,
            "label_id": ids,
            "label": tf.gather(self._label_names, ids),
        }

    def predict_text(
        self, text: tf.Tensor, text_pair: tf.Tensor | None = None
    ) -> dict[str, tf.Tensor]:
        return self.predict_ids(**self.tokenizer(text, text_pair))

    def signatures(self) -> dict[str, Any]:
        specs = {
            name: tf.TensorSpec([None, None], tf.int32, name=name) for name in self.input_names
        }
        ids_fn = tf.function(self.predict_ids).get_concrete_function(**specs)
        if self.tokenizer is None:
            return {"serving_default": ids_fn, "predict_ids": ids_fn}
        text = tf.TensorSpec([None], tf.string, name="text")
        if self.pair:
            pair = tf.TensorSpec([None], tf.string, name="text_pair")
            text_fn = tf.function(self.predict_text).get_concrete_function(
                text=text, text_pair=pair
            )
        else:
            text_fn = tf.function(lambda text: self.predict_text(text)).get_concrete_function(
                text=text
            )
        return {"serving_default": text_fn, "predict_ids": ids_fn}


def next_version(model_dir: Path) -> int:
    """One more than the highest integer version under `model_dir` (1 for a new model)."""
    versions = (
        [int(p.name) for p in model_dir.iterdir() if p.name.isdigit()] if model_dir.is_dir() else []
    )
    return max(versions, default=0) + 1


def export_model(
    model: keras.Model,
    task: str,
    label_names: tuple[str, ...],
    input_names: tuple[str, ...],
    export_root: Path,
    name: str,
    *,
    tokenizer: Any = None,
    max_length: int = 128,
    pair: bool = False,
    thresholds=None,
    scaling=None,
    info: dict[str, Any] | None = None,
    warmup: tuple[list[str], list[str] | None] | None = None,
    tflite_check: tf.data.Dataset | None = None,
    tflite: bool = False,
) -> Path:
    """Writes a new version of `name` under `export_root` and returns its directory.

    Args:
        tokenizer: the Hugging Face tokenizer used in training; with it the export
            takes raw text (when the tokenizer can run in-graph). Defaults to None (ids only).
        max_length: the training max length, for in-graph truncation. Defaults to 128.
        pair: whether the model reads text pairs. Defaults to False.
        info: what the model card shows (backbone, data, run, config, metrics). Defaults to none:
            no card.
        warmup: texts (and pairs) for TF Serving warmup requests. Defaults to none.
        tflite: also write a dynamic-range quantised TFLite model. Defaults to False.
        tflite_check: an (x, y) dataset (the test split) to compare it with the float model on.
    """
    model_dir = Path(export_root) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-export-", dir=model_dir))
    try:
        src = staging / "src"
        src.mkdir()
        (src / LABELS_ASSET).write_text("".join(f"{n}\n" for n in label_names), encoding="utf-8")
        assets = [src / LABELS_ASSET]
        graph = None
        if tokenizer is not None:
            tokenizer.save_pretrained(str(src / "tokenizer"))
            assets += sorted((src / "tokenizer").iterdir())
            try:
                graph = graph_tokenizer_for(tokenizer, max_length, input_names)
            except UnsupportedTokenizer as exc:
                print(
                    f"export: the backbone's tokenizer cannot run in the graph ({exc}); "
                    "serving_default takes token ids, tokenize with the files in assets/"
                )
        module = ServingModule(
            model, task, label_names, input_names, assets, graph, pair, thresholds, scaling
        )
        saved = staging / "saved_model"
        signatures = module.signatures()
        tf.saved_model.save(module, str(saved), signatures=signatures)
        if warmup is not None and graph is not None:
            write_warmup(saved, name, *warmup)
        lite_info = None
        if tflite:
            from kerasft import tflite as tflite_lib

            mb = tflite_lib.convert(model, tuple(input_names), task, staging / "model.tflite")
            variables = sum(p.stat().st_size for p in (saved / "variables").iterdir()) / 1e6
            lite_info = {"mb": mb, "size_ratio": mb / variables}
            if tflite_check is not None:
                lite_info.update(
                    tflite_lib.compare(staging / "model.tflite", model, tflite_check, task)
                )
            print(
                f"tflite: {mb:.1f} MB ({lite_info['size_ratio']:.2f} of the float variables)"
                + (
                    f", top label agrees on {100 * lite_info['agreement']:.1f}% of "
                    f"{lite_info['examples']} test examples"
                    if "agreement" in lite_info
                    else ""
                )
            )
        if info is not None:
            outputs = sorted(signatures["predict_ids"].structured_outputs)
            write_meta(
                saved,
                {
                    **info,
                    "task": task,
                    "labels": list(label_names),
                    "max_length": max_length,
                    "pair": pair,
                    "input_names": list(input_names),
                    "outputs": outputs,
                    "signature": "text" if graph is not None else "ids",
                    "tflite": lite_info,
                    "created": datetime.datetime.now().isoformat(timespec="seconds"),
                },
            )
        while True:
            target = model_dir / str(next_version(model_dir))
            try:
                os.rename(saved, target)
                if tflite:
                    (model_dir / "tflite").mkdir(exist_ok=True)
                    os.replace(
                        staging / "model.tflite", model_dir / "tflite" / f"{target.name}.tflite"
                    )
                break
            except OSError:
                if not target.exists():
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if info is not None:
        write_card(model_dir, name)
    return target


def export_run(run_dir: Path, model: keras.Model, backbone: Any, cfg: Any, test_data=None) -> Path:
    """Exports a run's model (holding its best weights) with what the run recorded in export.json."""
    info = json.loads((Path(run_dir) / "export.json").read_text(encoding="utf-8"))
    labels = tuple(json.loads((Path(run_dir) / "labels.json").read_text())["labels"])
    if cfg.model.lora:
        from kerasft.lora import merge_lora

        print(
            f"LoRA: merged {merge_lora(model, cfg.model.lora.targets)} adapters into the weights for export"
        )
    return export_model(
        model,
        cfg.task,
        labels,
        backbone.input_names,
        Path(cfg.export.dir),
        cfg.name,
        tokenizer=backbone.tokenizer,
        max_length=info["max_length"],
        pair=info["pair"],
        thresholds=info["thresholds"],
        scaling=None if info["scaling"] is None else tuple(info["scaling"]),
        info=info["card"],
        warmup=(info["warmup_texts"], info["warmup_pairs"]),
        tflite=cfg.export.tflite,
        tflite_check=test_data,
    )


def rebuild(run_dir: str | Path, export_dir: str | None = None):
    """A finished run's model, rebuilt in float32 from its config and best checkpoint.

    Float32 whatever precision it trained in (mixed precision keeps float32 master
    weights): the export computes in full precision, runs on any CPU and converts
    to TFLite.

    Returns:
        (model, backbone, cfg); `cfg.export.dir` is `export_dir` when given.

    Raises:
        ConfigError: `run_dir` is not a finished kerasft run.
    """
    from kerasft import config as config_lib
    from kerasft.errors import ConfigError
    from kerasft.models import build_model, load_backbone, load_tokenizer, resolve_backbone

    run_dir = Path(run_dir)
    from kerasft.callbacks import best_checkpoint

    needed = ["config.yaml", "labels.json", "export.json"]
    missing = [n for n in needed if not (run_dir / n).is_file()]
    weights = best_checkpoint(run_dir / "checkpoints")
    if weights is None:
        missing.append("checkpoints/checkpoint")
    if missing:
        raise ConfigError(
            f"{run_dir} is not a finished kerasft run (no {', '.join(missing)}). Pass a directory printed as run_dir=."
        )
    cfg = config_lib.load_config(
        run_dir / "config.yaml", [f"export.dir={export_dir}"] if export_dir else []
    )
    directory = resolve_backbone(cfg.model.backbone)
    labels = json.loads((run_dir / "labels.json").read_text())["labels"]
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        backbone = load_backbone(directory, load_tokenizer(directory))
        model = build_model(backbone, cfg.task, len(labels), cfg.model.pooling, cfg.model.dropout)
        if cfg.model.lora:  # the checkpoint holds the adapters: rebuild them before loading
            from kerasft.lora import apply_lora_config

            apply_lora_config(model, cfg.model.lora, backbone.input_names)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    # The checkpoint also holds the optimizer's state, which an export does not need.
    model.load_weights(weights).expect_partial()
    return model, backbone, cfg


def reexport(run_dir: str | Path, export_dir: str | None = None, test_data=None) -> Path:
    """Exports a new version of a finished run from its best checkpoint, in float32 (see `rebuild`).

    Args:
        export_dir: overrides the config's `export.dir`. Defaults to the config's.
        test_data: an (x, y) dataset for the TFLite agreement check. Defaults to none.

    Raises:
        ConfigError: `run_dir` is not a finished kerasft run.
    """
    model, backbone, cfg = rebuild(run_dir, export_dir)
    return export_run(run_dir, model, backbone, cfg, test_data=test_data)


@cli_main
def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m kerasft.export",
        description="Re-export a finished run's best checkpoint as a new SavedModel version.",
        epilog="The last output line is export_dir=<path>. Exit status 2: not a finished run.",
    )
    p.add_argument(
        "--run", required=True, help="a run directory, as printed by kerasft.train (run_dir=...)"
    )
    p.add_argument("--dir", default=None, help="export root instead of the run's export.dir")
    args = p.parse_args(argv)
    target = reexport(args.run, args.dir)
    print(f"export_dir={target}")
    return 0


def export_classifier(model, label_names, input_names, export_root, name, **kwargs) -> Path:
    """`export_model` for single-label classification."""
    return export_model(
        model, "classification", label_names, input_names, export_root, name, **kwargs
    )


if __name__ == "__main__":
    raise SystemExit(main())
