"""Writing an export: a new SavedModel version in the TensorFlow Serving layout, `<model dir>/<version>/`.

Each version is written to a temporary folder and renamed into place, so a reader
never sees half an export and no version is overwritten. Besides the SavedModel:
the label names and tokenizer files in `assets/`, TF Serving warmup requests and
kerasft's metadata in `assets.extra/`, optionally `tflite/<version>.tflite`, and
the model card (`<model dir>/README.md`) over all versions.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from kerasft._compat import tf
from kerasft.serving.info import ExportInfo
from kerasft.serving.model_card import write_card, write_meta, write_warmup
from kerasft.serving.module import ServingModule
from kerasft.serving.tokenizers import UnsupportedTokenizer, graph_tokenizer_for
from kerasft.serving.versions import next_version
from kerasft.tasks import TASKS

LABELS_ASSET = "labels.txt"


def export_model(
    model: Any,
    info: ExportInfo,
    input_names: tuple[str, ...],
    model_dir: str | Path,
    *,
    tokenizer: Any = None,
    tflite: bool = False,
    tflite_check: tf.data.Dataset | None = None,
) -> Path:
    """Writes a new version of the model under `model_dir` and returns the version's directory.

    Args:
        model: the trained Keras model (token-id inputs → task logits), in float32.
        info: the export contract; with `info.card`, the model card and metadata are written.
        input_names: the model's input names.
        model_dir: `<export dir>/<name>`; its name is the model's name in TF Serving.
        tokenizer: the Hugging Face tokenizer used in training; with it the export takes
            raw text (when the tokenizer can run in the graph). Defaults to None (ids only).
        tflite: also write a dynamic-range quantised TFLite model. Defaults to False.
        tflite_check: an (x, y) dataset (the test split) to compare it with the float model on.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-export-", dir=model_dir))
    try:
        assets, graph = _assets(staging / "src", info, tokenizer, input_names)
        module = ServingModule(model, TASKS[info.task], info, input_names, assets, graph)
        saved = staging / "saved_model"
        signatures = module.signatures()
        tf.saved_model.save(module, str(saved), signatures=signatures)
        if info.warmup_texts and graph is not None:
            write_warmup(saved, model_dir.name, list(info.warmup_texts), info.warmup_pairs)
        lite = None
        if tflite:
            lite = _tflite(model, info.task, input_names, saved, tflite_check)
        if info.card is not None:
            outputs = sorted(signatures["predict_ids"].structured_outputs)
            write_meta(saved, _metadata(info, input_names, outputs, graph is not None, lite))
        target = _publish(saved, model_dir, staging / "model.tflite" if tflite else None)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if info.card is not None:
        write_card(model_dir, model_dir.name)
    return target


def _assets(
    src: Path, info: ExportInfo, tokenizer: Any, input_names: tuple[str, ...]
) -> tuple[list[Path], tf.Module | None]:
    """Writes the asset files and returns them with the in-graph tokenizer (None: ids only)."""
    src.mkdir()
    (src / LABELS_ASSET).write_text("".join(f"{n}\n" for n in info.labels), encoding="utf-8")
    assets = [src / LABELS_ASSET]
    if tokenizer is None:
        return assets, None
    tokenizer.save_pretrained(str(src / "tokenizer"))
    assets += sorted((src / "tokenizer").iterdir())
    try:
        return assets, graph_tokenizer_for(tokenizer, info.max_length, input_names)
    except UnsupportedTokenizer as exc:
        print(
            f"export: the backbone's tokenizer cannot run in the graph ({exc}); "
            "serving_default takes token ids, tokenize with the files in assets/"
        )
        return assets, None


def _tflite(model, task: str, input_names, saved: Path, check: tf.data.Dataset | None) -> dict:
    """Writes `model.tflite` beside the staged SavedModel; returns its size and agreement figures."""
    from kerasft.serving import tflite as tflite_lib

    spec, path = TASKS[task], saved.parent / "model.tflite"
    lite = {"mb": tflite_lib.convert(model, tuple(input_names), spec, path)}
    variables = sum(p.stat().st_size for p in (saved / "variables").iterdir()) / 1e6
    lite["size_ratio"] = lite["mb"] / variables
    if check is not None:
        lite.update(tflite_lib.compare(path, model, check, spec))
    agreement = (
        f", top label agrees on {100 * lite['agreement']:.1f}% of {lite['examples']} test examples"
        if lite.get("agreement") is not None
        else ""
    )
    print(
        f"tflite: {lite['mb']:.1f} MB ({lite['size_ratio']:.2f} of the float variables){agreement}"
    )
    return lite


def _metadata(info: ExportInfo, input_names, outputs, raw_text: bool, lite) -> dict[str, Any]:
    """The version's `assets.extra/kerasft.json`: the run card's facts and the signature contract."""
    return {
        **dataclasses.asdict(info.card),
        "task": info.task,
        "labels": list(info.labels),
        "max_length": info.max_length,
        "pair": info.pair,
        "input_names": list(input_names),
        "outputs": outputs,
        "signature": "text" if raw_text else "ids",
        "tflite": lite,
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def _publish(saved: Path, model_dir: Path, lite: Path | None) -> Path:
    """Renames the staged SavedModel into the next free version (retrying if another writer won)."""
    while True:
        target = model_dir / str(next_version(model_dir))
        try:
            os.rename(saved, target)
        except OSError:
            if not target.exists():
                raise
            continue
        if lite is not None:
            (model_dir / "tflite").mkdir(exist_ok=True)
            os.replace(lite, model_dir / "tflite" / f"{target.name}.tflite")
        return target
