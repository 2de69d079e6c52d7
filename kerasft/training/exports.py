"""A finished run's model, rebuilt, and its exports.

Training exports at its end (`export_run`); `reexport` (`python -m kerasft.export`)
rebuilds the model from the run's config and best checkpoint, in float32, and
exports it again with the contract the run recorded (`export.json`, an
`ExportInfo`). What an export holds and its signatures: `kerasft.serving` and
docs/serving.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kerasft import config as config_lib
from kerasft._compat import keras, tf
from kerasft.config import Config
from kerasft.errors import ConfigError, DataError, first_line
from kerasft.models import Backbone, backbone_for, build_model, load_tokenizer, model_directory
from kerasft.models.precision import activations_in_float32
from kerasft.models.seq2seq import build_seq2seq, load_seq2seq
from kerasft.peft.lora import merge_lora
from kerasft.serving import ExportInfo, export_model
from kerasft.tasks import TASKS
from kerasft.training.callbacks import best_checkpoint
from kerasft.training.rundir import check_writable


def export_run(
    run_dir: Path,
    model: keras.Model,
    backbone: Backbone,
    cfg: Config,
    test_data: tf.data.Dataset | None = None,
    calibration: list[dict] | None = None,
) -> Path:
    """Exports a run's model (holding its best weights) with the run's `export.json`.

    LoRA adapters are merged into the weights first, so the export is a plain model.

    Args:
        test_data: an (x, y) dataset for the TFLite and ONNX checks. Defaults to none.
        calibration: training examples for `export.tflite_int8`. Without them (a
            re-export), no full-integer TFLite model is written. Defaults to none.
    """
    if cfg.export.tflite_int8 and not calibration:
        print("export: no training examples to calibrate with here; no int8 TFLite model this time")
    if cfg.model.lora:
        merged = merge_lora(model, cfg.model.lora.targets)
        print(f"LoRA: merged {merged} adapters into the weights for export")
    if model.dtype_policy.name == "mixed_bfloat16":
        activations_in_float32(model)
    return export_model(
        model,
        ExportInfo.read(run_dir),
        backbone.input_names,
        Path(cfg.export.dir) / cfg.name,
        tokenizer=backbone.tokenizer,
        tflite=cfg.export.tflite,
        calibration=calibration if cfg.export.tflite_int8 else None,
        onnx=cfg.export.onnx,
        onnx_optimize=cfg.export.onnx_optimize,
        check=test_data,
    )


def rebuild(
    run_dir: str | Path,
    export_dir: str | None = None,
    onnx: bool = False,
    overrides: list[str] | tuple[str, ...] = (),
    for_export: bool = False,
) -> tuple[Any, Backbone, Config]:
    """A finished run's model, rebuilt from its config and best checkpoint, in float32 whatever
    precision it trained in (mixed precision keeps float32 master weights): it computes in full
    precision, runs on any CPU and converts to TFLite.

    Args:
        overrides: `export.*` settings to change, as `--set` takes them (`export.onnx_optimize=false`).
            Defaults to none.
        for_export: with `export.precision: bfloat16`, rebuild under mixed_bfloat16 instead (the
            same float32 weights, matrix products in bfloat16; `export_run` then puts the
            feed-forward activations in float32). Defaults to False.

    Returns:
        (model, backbone, cfg); `cfg.export.dir` is `export_dir` when given, and
        `cfg.export.onnx` is on with `onnx`.

    Raises:
        ConfigError: `run_dir` is not a finished kerasft run, or an override is not an `export.*` key.
    """
    run_dir = Path(run_dir)
    _only_export_keys(overrides)
    weights = _finished(run_dir)
    cfg = _export_config(run_dir, export_dir, onnx, overrides)
    check_writable(cfg.export.dir, "--dir" if export_dir else "export.dir", cfg.name)
    info = ExportInfo.read(run_dir)
    directory = model_directory(cfg.model)
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(cfg.export.policy if for_export else "float32")
    try:
        if TASKS[cfg.task].generative:  # fresh weights: the checkpoint holds the trained ones
            fresh = cfg.model.model_copy(update={"weights": "random"})
            backbone = load_seq2seq(fresh, directory, load_tokenizer(directory))
            model = build_seq2seq(backbone, cfg.model.lora)
        else:
            backbone = backbone_for(cfg.model, directory, load_tokenizer(directory))
            # With LoRA, the adapters are rebuilt too: the checkpoint holds them.
            model = build_model(cfg.model, TASKS[cfg.task], backbone, len(info.labels))
    finally:
        keras.mixed_precision.set_global_policy(policy)
    # The checkpoint also holds the optimizer's state, which an export does not need.
    try:
        model.load_weights(weights).expect_partial()
    except (tf.errors.OpError, IndexError, ValueError) as exc:
        raise DataError(
            f"{run_dir / 'checkpoints'}: cannot read the checkpoint `{Path(weights).name}` "
            f"({first_line(exc)[:160]}); its files are damaged or incomplete. Train the run again."
        ) from None
    return model, backbone, cfg


def _only_export_keys(overrides: list[str] | tuple[str, ...]) -> None:
    """Refuses an override outside `export.*`: the rest is what the checkpoint was trained with."""
    for override in overrides:
        if not override.startswith("export."):
            raise ConfigError(
                f"--set {override}: kerasft.export changes only export.* keys; the rest of the run's "
                "config is what its checkpoint was trained with. Train again to change it."
            )


def _export_config(
    run_dir: Path, export_dir: str | None, onnx: bool, overrides: list[str] | tuple[str, ...]
) -> Config:
    """The run's config with `export.*` overrides, `--dir` and `--onnx` applied.

    Raises:
        ConfigError: `export.enabled=false` among the overrides.
    """
    every = [*overrides, *([f"export.dir={export_dir}"] if export_dir else [])]
    every += ["export.onnx=true"] if onnx else []
    cfg = config_lib.load_config(run_dir / "config.yaml", every)
    if not cfg.export.enabled and any(
        o.partition("=")[0].strip() == "export.enabled" for o in every
    ):
        raise ConfigError(
            "--set export.enabled=false: kerasft.export writes an export whatever the run's "
            "config says; leave the override out, or do not run the command."
        )
    return cfg


def _finished(run_dir: Path) -> str:
    """The best checkpoint of a finished run; a ConfigError naming what is missing otherwise."""
    missing = [n for n in ("config.yaml", "export.json") if not (run_dir / n).is_file()]
    weights = best_checkpoint(run_dir / "checkpoints")
    state = (
        None if weights or missing else tf.train.get_checkpoint_state(str(run_dir / "checkpoints"))
    )
    if state is not None:  # `checkpoint` names one, but best_checkpoint found no .index for it
        name = Path(state.model_checkpoint_path).name
        raise DataError(
            f"{run_dir / 'checkpoints'}: `checkpoint` names `{name}`, whose files are gone (no "
            f"{name}.index): the run's weights are lost. Train it again."
        )
    if weights is None:
        missing.append("checkpoints/checkpoint")
    if missing:
        raise ConfigError(
            f"{run_dir} is not a finished kerasft run (no {', '.join(missing)}). Pass a directory printed as run_dir=."
        )
    return weights


def reexport(
    run_dir: str | Path,
    export_dir: str | None = None,
    test_data=None,
    onnx: bool = False,
    calibration: list[dict] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> Path:
    """Exports a new version of a finished run from its best checkpoint, in float32 or in
    `export.precision` (see `rebuild`).

    Args:
        export_dir: overrides the config's `export.dir`. Defaults to the config's.
        onnx: also write the ONNX models, whatever the config says. Defaults to False.
        test_data: an (x, y) dataset for the TFLite and ONNX checks. Defaults to none.
        calibration: training examples for `export.tflite_int8`. Defaults to none.
        overrides: `export.*` settings to change (see `rebuild`). Defaults to none.

    Raises:
        ConfigError: `run_dir` is not a finished kerasft run, or an override is not an `export.*` key.
    """
    model, backbone, cfg = rebuild(run_dir, export_dir, onnx, overrides, for_export=True)
    return export_run(Path(run_dir), model, backbone, cfg, test_data, calibration)
