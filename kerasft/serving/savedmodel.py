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
import json
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
from kerasft.tasks import TASKS, TaskSpec

LABELS_ASSET = "labels.txt"
STAGING = ".tmp-export-"  # + the writing process's id


def remove_stale_staging(model_dir: Path) -> list[Path]:
    """Removes the staging folders of exports whose process is gone (killed mid-export);
    a live export's folder is left alone. Returns what was removed."""
    removed = []
    for folder in model_dir.glob(f"{STAGING}*"):
        pid = folder.name.removeprefix(STAGING).split("-", 1)[0]
        if pid.isdigit() and _alive(int(pid)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def export_model(
    model: Any,
    info: ExportInfo,
    input_names: tuple[str, ...],
    model_dir: str | Path,
    *,
    tokenizer: Any = None,
    tflite: bool = False,
    calibration: list[dict] | None = None,
    onnx: bool = False,
    onnx_optimize: bool = True,
    check: tf.data.Dataset | None = None,
) -> Path:
    """Writes a new version of the model under `model_dir` and returns the version's directory.

    Args:
        model: the trained Keras model (token-id inputs → task logits), in float32 (or
            mixed_bfloat16, for `export.precision: bfloat16`).
        info: the export contract; with `info.card`, the model card and metadata are written.
        input_names: the model's input names.
        model_dir: `<export dir>/<name>`; its name is the model's name in TF Serving.
        tokenizer: the Hugging Face tokenizer used in training; with it the export takes
            raw text (when the tokenizer can run in the graph). Defaults to None (ids only).
        tflite: also write a dynamic-range quantised TFLite model. Defaults to False.
        calibration: single training examples (`[1, length]` ids by input name); with
            them, also a full-integer TFLite model calibrated on them. Defaults to none.
        onnx: also write `onnx/<version>/` (fp32 and int8 ONNX models of `predict_ids`,
            with the tokenizer files and labels). Defaults to False.
        onnx_optimize: fuse the ONNX graph with onnxruntime's transformer optimizer
            (com.microsoft ops: onnxruntime only). Defaults to True.
        check: an (x, y) dataset (the test split) to compare TFLite and ONNX with the
            SavedModel on: output differences, accuracy, and for ONNX examples/s.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(model_dir)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING}{os.getpid()}-", dir=model_dir))
    try:
        ctx = ExportContext(model, info, TASKS[info.task], tuple(input_names), staging, check)
        saved, assets, metadata = write_savedmodel(ctx, tokenizer, model_dir.name)
        lite = write_tflite(ctx, saved) if tflite else None
        lite_int8 = write_tflite(ctx, saved, calibration) if calibration else None
        onnx_facts = write_onnx(ctx, saved, assets, metadata, onnx_optimize) if onnx else None
        if info.card is not None:
            facts = {"tflite": lite, "tflite_int8": lite_int8, "onnx": onnx_facts}
            write_meta(saved, {**dataclasses.asdict(info.card), **metadata, **facts})
        lite_files = [staging / n for n in ("model.tflite", "model.int8.tflite")]
        lite_files = [f for f in lite_files if f.exists()]
        target = _publish(saved, model_dir, lite_files, staging / "onnx" if onnx else None)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if info.card is not None:
        write_card(model_dir, model_dir.name)
    return target


@dataclasses.dataclass(frozen=True)
class ExportContext:
    """What every format's writer takes: the model, its contract and task (looked up once),
    its input names, the staging folder it writes into, and a test split to check against.

    Attributes:
        model: the trained Keras model (token-id inputs → task logits), in float32 (or
            mixed_bfloat16, for `export.precision: bfloat16`).
        check: an (x, y) dataset the TFLite and ONNX writers compare with; None: no check.
    """

    model: Any
    info: ExportInfo
    spec: TaskSpec
    input_names: tuple[str, ...]
    staging: Path
    check: tf.data.Dataset | None = None


def write_savedmodel(
    ctx: ExportContext, tokenizer: Any, served_name: str
) -> tuple[Path, list[Path], dict[str, Any]]:
    """Writes the staged SavedModel (signatures, assets, warmup requests).

    Returns:
        (its folder, the asset files, the signature contract for `kerasft.json`).
    """
    if ctx.spec.generative:
        return _write_seq2seq(ctx, tokenizer, served_name)
    assets, graph = _assets(ctx.staging / "src", ctx.info, tokenizer, ctx.input_names)
    module = ServingModule(ctx.model, ctx.spec, ctx.info, ctx.input_names, assets, graph)
    saved = ctx.staging / "saved_model"
    signatures = module.signatures()
    tf.saved_model.save(module, str(saved), signatures=signatures)
    info = ctx.info
    if info.warmup_texts and graph is not None:
        write_warmup(saved, served_name, list(info.warmup_texts), info.warmup_pairs)
    outputs = sorted(signatures["predict_ids"].structured_outputs)
    meta = _metadata(info, ctx.input_names, outputs, graph is not None)
    # What the matrix products run in: `export.precision` (float32 weights either way).
    meta["precision"] = "bfloat16" if "bfloat16" in ctx.model.dtype_policy.name else "float32"
    return saved, assets, meta


def _write_seq2seq(
    ctx: ExportContext, tokenizer: Any, served_name: str
) -> tuple[Path, list[Path], dict[str, Any]]:
    """`write_savedmodel` for seq2seq: generation in the graph (`serving.seq2seq`)."""
    from kerasft.serving.seq2seq import Seq2SeqServingModule

    src = ctx.staging / "src"
    src.mkdir()
    tokenizer.save_pretrained(str(src / "tokenizer"))
    assets = sorted((src / "tokenizer").iterdir())
    module = Seq2SeqServingModule(ctx.model, ctx.info, tokenizer, assets)
    if module.codec is None:
        print(
            "export: this model's tokenizer has no in-graph version here (T5, mT5 and Marian have "
            "one); serving_default takes token ids: tokenize with the files in assets/"
        )
    saved = ctx.staging / "saved_model"
    signatures = module.signatures()
    tf.saved_model.save(module, str(saved), signatures=signatures)
    raw_text = module.codec is not None
    if ctx.info.warmup_texts and raw_text:
        write_warmup(saved, served_name, list(ctx.info.warmup_texts), None)
    outputs = sorted(signatures["serving_default"].structured_outputs)
    meta = _metadata(ctx.info, ("input_ids", "attention_mask"), outputs, raw_text)
    return saved, assets, {**meta, "generation": ctx.info.generation}


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


def write_tflite(
    ctx: ExportContext, saved: Path, calibration: list[dict] | None = None
) -> dict[str, Any]:
    """Writes `model.tflite` (or, calibrated, `model.int8.tflite`) into the staging folder;
    returns its size and agreement figures."""
    from kerasft.serving import tflite as tflite_lib

    model, spec = ctx.model, ctx.spec
    path = ctx.staging / ("model.int8.tflite" if calibration else "model.tflite")
    lite = {"mb": tflite_lib.convert(model, ctx.input_names, spec, path, calibration)}
    variables = sum(p.stat().st_size for p in (saved / "variables").iterdir()) / 1e6
    lite["size_ratio"] = lite["mb"] / variables
    if ctx.check is not None:
        lite.update(tflite_lib.compare(path, model, ctx.check, spec))
    agreement = (
        f", top label agrees on {100 * lite['agreement']:.1f}% of {lite['examples']} test examples"
        if lite.get("agreement") is not None
        else ""
    )
    kind = "int8 weights and activations" if calibration else "int8 weights"
    print(
        f"tflite ({kind}): {lite['mb']:.1f} MB ({lite['size_ratio']:.2f} of the float variables)"
        f"{agreement}"
    )
    return lite


def write_onnx(
    ctx: ExportContext, saved: Path, assets: list[Path], metadata: dict, optimize: bool
) -> dict[str, Any]:
    """Writes the ONNX models, tokenizer files, labels and contract into `<staging>/onnx`;
    returns their figures.

    Args:
        optimize: fuse the graph for onnxruntime (`export.onnx_optimize`).
    """
    from kerasft.serving import onnx as onnx_lib

    onnx_lib.require()
    model, info, input_names, check = ctx.model, ctx.info, ctx.input_names, ctx.check
    out = ctx.staging / "onnx"
    out.mkdir()
    facts: dict[str, Any] = {"opset": onnx_lib.OPSET}
    source = saved.parent / "onnx_source"
    with onnx_lib.onnx_trace(model):  # the same function, in graphs onnxruntime can fuse
        module = ServingModule(model, ctx.spec, info, input_names, [], empty_batches=False)
        tf.saved_model.save(
            module, str(source), signatures={"predict_ids": module.signatures()["predict_ids"]}
        )
    plain = saved.parent / "model.plain.onnx"
    onnx_lib.convert(source, plain)
    facts["fused"] = {}
    if optimize:
        # A test batch, and one with a padded row for sure: the fused graph skips padding.
        probes = [_probe(model, input_names, None)]
        if check is not None:
            probes.append(_probe(model, input_names, check))
        # Skipping padding first: `pack_tokens` leaves graphs with per-token outputs alone.
        plain, facts["fused"] = _optimized(plain, _attention_shape(model), probes)
    os.replace(plain, out / onnx_lib.MODEL)
    facts["mb"] = (out / onnx_lib.MODEL).stat().st_size / 1e6
    facts["int8_mb"] = onnx_lib.quantize(out / onnx_lib.MODEL, out / onnx_lib.MODEL_INT8)
    for asset in assets:
        shutil.copy2(asset, out / asset.name)
    (out / onnx_lib.META).write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    if check is not None:
        facts.update(onnx_lib.measure(saved, out, check, ctx.spec))
    diff = (
        f", largest output change {facts['onnx_max_abs_diff']:.1e}"
        if "onnx_max_abs_diff" in facts
        else ""
    )
    fusions = ", ".join(f"{n} {op}" for op, n in facts["fused"].items())
    print(
        f"onnx: {facts['mb']:.1f} MB fp32, {facts['int8_mb']:.1f} MB int8{diff}"
        + (f"; fused: {fusions}" if fusions else "")
    )
    return facts


def _optimized(plain: Path, shape: tuple, probes: list[dict]) -> tuple[Path, dict[str, int]]:
    """The first fused graph of `plain` (skipping padding, then not) that computes what `plain`
    does on `probes` (to 1e-4), else `plain`; with what it fused."""
    from onnxruntime.capi import onnxruntime_pybind11_state as ort

    from kerasft.serving import onnx as onnx_lib
    from kerasft.serving import onnx_graph

    fails = (ort.Fail, ort.InvalidArgument, ort.InvalidGraph, ort.RuntimeException)
    fused = plain.with_name("model.fused.onnx")
    for pack in (True, False):
        counts = onnx_graph.optimize(plain, fused, *shape, pack=pack)
        try:
            gap = max(onnx_lib.largest_difference(plain, fused, probe) for probe in probes)
        except fails as e:
            reason = str(e).strip().splitlines()[-1][-160:]
            print(f"onnx: the fused graph fails on a test batch ({type(e).__name__}: {reason})")
            gap = float("inf")
        if gap <= 1e-4:
            return fused, counts
        if not counts.get(onnx_graph.PACKED):
            break
        print(f"onnx: the graph skipping padding differs by {gap:.1e}; kept the padding")
    print(f"onnx: the fused graph differs from the plain one by {gap:.1e}; kept the plain one")
    return plain, {}


def _hf_config(model: Any) -> Any:
    """The backbone's Hugging Face config (None for a model without one, e.g. the BiGRU)."""
    return next((layer.config for layer in model.submodules if hasattr(layer, "config")), None)


def _attention_shape(model: Any) -> tuple[int | None, int | None]:
    """The encoder's attention heads and hidden size (None, None: not a transformer)."""
    config = _hf_config(model)
    heads, hidden = (getattr(config, n, None) for n in ("num_attention_heads", "hidden_size"))
    return (heads, hidden) if heads and hidden else (None, None)


def _probe(model: Any, input_names: tuple[str, ...], check: tf.data.Dataset | None) -> dict:
    """Token ids to compare two conversions on: a test batch, else random ids in the vocabulary."""
    import numpy as np

    if check is not None:
        for x, _ in check.take(1):
            return {k: v.numpy() for k, v in x.items()}
    vocab = getattr(_hf_config(model), "vocab_size", None) or 100
    ids = np.random.default_rng(0).integers(1, vocab, (4, 12), dtype=np.int32)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": 0 * ids}
    feed["attention_mask"][1, 8:] = 0  # a padded row
    return {n: feed[n] for n in input_names if n in feed}


def _metadata(info: ExportInfo, input_names, outputs, raw_text: bool) -> dict[str, Any]:
    """The signature contract, part of `assets.extra/kerasft.json` (with the run card's facts)."""
    return {
        "task": info.task,
        "labels": list(info.labels),
        "max_length": info.max_length,
        "pair": info.pair,
        "input_names": list(input_names),
        "outputs": outputs,
        "signature": "text" if raw_text else "ids",
        "thresholds": list(info.thresholds) if info.thresholds else None,
        "scaling": list(info.scaling) if info.scaling else None,
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def _publish(saved: Path, model_dir: Path, lite: list[Path], onnx: Path | None) -> Path:
    """Renames the staged SavedModel into the next free version (retrying if another writer won),
    then the TFLite and ONNX files beside it under the same version number."""
    while True:
        target = model_dir / str(next_version(model_dir))
        try:
            os.rename(saved, target)
        except OSError:
            if not target.exists():
                raise
            continue
        for file in (
            lite
        ):  # model.tflite → tflite/<version>.tflite, model.int8.tflite → <version>.int8.tflite
            (model_dir / "tflite").mkdir(exist_ok=True)
            os.replace(file, model_dir / "tflite" / file.name.replace("model", target.name, 1))
        if onnx is not None:
            (model_dir / "onnx").mkdir(exist_ok=True)
            shutil.rmtree(
                model_dir / "onnx" / target.name, ignore_errors=True
            )  # a failed older write
            os.rename(onnx, model_dir / "onnx" / target.name)
        return target
