"""Encoder-decoder models for `task: seq2seq`: loading, the Keras model `fit` trains, generation.

The backbone is any TF sequence-to-sequence model of transformers 4.57 (T5/mT5,
Marian, BART/mBART, Pegasus) from the embedded, local-directory or hub paths
`model.backbone` takes, loaded without PyTorch (`load_weights`), or built from its
config.json with fresh weights (`model.weights: random`). `Seq2SeqLM` wraps it for
Keras' `fit`: teacher forcing, the decoder reading the target shifted right,
the loss (`tasks.MaskedTokenCrossentropy`) on the next-token logits.
`generate_texts` decodes with the model's own `generate`, compiled with XLA, in
length-sorted batches.
"""

from __future__ import annotations

import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from kerasft._compat import keras, tf
from kerasft.config import GenerationConfig, ModelConfig
from kerasft.errors import ModelError
from kerasft.models.backbones import Backbone, _backbone_config, load_weights
from kerasft.models.precision import float32_dropout_masks


def load_seq2seq(
    cfg: ModelConfig, directory: Path, tokenizer: Any, dropout: dict | None = None
) -> Backbone:
    """The encoder-decoder model `model:` names, with its weights (or fresh ones).

    Raises:
        ModelError: the directory holds no encoder-decoder model, or lacks weights it needs.
    """
    from transformers import TFAutoModelForSeq2SeqLM

    config = _backbone_config(directory, dropout, None)
    if not getattr(config, "is_encoder_decoder", False):
        raise ModelError(
            f"{directory} holds a `{config.model_type}` model, an encoder only; `task: seq2seq` needs an "
            "encoder-decoder model (T5, mT5, Marian, BART, mBART, Pegasus)."
        )
    if cfg.weights == "random":
        try:
            model = TFAutoModelForSeq2SeqLM.from_config(config)
        except ValueError as exc:
            raise ModelError(f"{directory}/config.json: {str(exc).splitlines()[0]}") from None
        model(model.dummy_inputs, training=False)
        loading: dict[str, list[str]] = {"missing": [], "unexpected": []}
        how = "fresh (random) weights"
    else:
        model, info = load_weights(directory, config, TFAutoModelForSeq2SeqLM)
        missing = [k for k in info.get("missing_keys", []) if "final_logits_bias" not in k]
        if missing:
            raise ModelError(
                f"{directory}: the checkpoint lacks {len(missing)} weights of the model (e.g. {missing[0]}); "
                "it does not match config.json (or set `model.weights: random` to train from scratch)."
            )
        loading = {"missing": missing, "unexpected": list(info.get("unexpected_keys", []))}
        how = "pretrained weights"
    print(
        f"seq2seq model {config.model_type} from {directory}: {model.count_params():,} parameters, {how}"
    )
    return Backbone(model, tokenizer, directory, ("input_ids", "attention_mask"), loading)


def check_lengths(backbone: Backbone, max_length: int, key: str = "data.max_length") -> None:
    """Refuses sources longer than the model's position embeddings can take (T5 has no such limit).

    Raises:
        ModelError: `max_length` above the model's `max_position_embeddings`.
    """
    limit = getattr(backbone.model.config, "max_position_embeddings", None)
    if limit is not None and max_length > limit:
        raise ModelError(
            f"`{key}: {max_length}` is longer than {backbone.directory} takes "
            f"({limit} positions); lower it to {limit} or less."
        )


@keras.utils.register_keras_serializable(package="kerasft")
class Seq2SeqLM(keras.Model):
    """An encoder-decoder model for `fit`: `{input_ids, attention_mask, labels}` → next-token logits.

    The decoder reads `labels` shifted right (the model family's own
    `prepare_decoder_input_ids_from_labels`, which also turns the -100 padding into its
    pad id): teacher forcing.
    """

    def __init__(self, seq2seq: Any, **kwargs):
        super().__init__(**kwargs)
        self.seq2seq = seq2seq

    def call(self, inputs: dict, training: bool = False) -> tf.Tensor:
        decoder_inputs = self.seq2seq.prepare_decoder_input_ids_from_labels(labels=inputs["labels"])
        out = self.seq2seq(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            decoder_input_ids=decoder_inputs,
            training=training,
        )
        return out.logits

    def get_config(self) -> dict:  # rebuilt from the run's config, never from this
        return {"name": self.name}


def build_seq2seq(backbone: Backbone, lora: Any = None) -> Seq2SeqLM:
    """The Keras model `fit` trains, with its weights built; with `lora` (a `model.lora`
    section), LoRA adapters on its target dense layers and the rest frozen."""
    model = Seq2SeqLM(backbone.model, name="seq2seq")
    ids = tf.constant([[1, 2, 3]], tf.int32)
    example = {"input_ids": ids, "attention_mask": tf.ones_like(ids), "labels": ids}
    model(example)
    if lora is not None:
        from kerasft.peft.lora import apply_lora

        sites = apply_lora(model, lora.rank, lora.alpha, lora.dropout, lora.targets, example)
        print(
            f"LoRA: adapters on {sites} dense layers ({', '.join(lora.targets)}); the rest is frozen"
        )
    float32_dropout_masks(model)
    return model


def generation_kwargs(gen: GenerationConfig) -> dict[str, Any]:
    """`generate`'s arguments for the `generation:` section."""
    kwargs: dict[str, Any] = {"max_new_tokens": gen.max_new_tokens, "num_beams": gen.num_beams}
    if gen.num_beams > 1:
        kwargs["length_penalty"] = gen.length_penalty
    return kwargs


class Generator:
    """The model's `generate`, compiled with XLA once per batch shape, over length-sorted batches.

    Args:
        model: the TF encoder-decoder model (`Backbone.model`).
        gen: the `generation:` section.
        jit: compile with XLA. Defaults to True (eager `generate` is several times slower).
    """

    def __init__(self, model: Any, gen: GenerationConfig, jit: bool = True):
        self.model, self.gen, self.jit = model, gen, jit
        kwargs = generation_kwargs(gen)

        def generate(ids, mask):
            return model.generate(ids, attention_mask=mask, **kwargs)

        self._generate = tf.function(generate, jit_compile=True) if jit else generate

    def __call__(
        self, features: dict[str, np.ndarray], lengths: np.ndarray, pad_id: int, label: str = ""
    ) -> list[np.ndarray]:
        """Generated token ids (decoder start dropped) per example, in input order."""
        flat, n = features["input_ids"], len(lengths)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        order = np.argsort(lengths, kind="stable")
        out: list[np.ndarray] = [np.zeros(0, np.int32)] * n
        size = self.gen.batch_size
        begin_time = last = time.monotonic()
        for begin in range(0, n, size):
            rows = order[begin : begin + size]
            width = _bucket(int(lengths[rows].max()))
            # XLA: a fixed batch shape, one compilation per width; eager: the rows there are.
            shape = (size if self.jit else len(rows), width)
            ids, mask = np.full(shape, pad_id, np.int32), np.zeros(shape, np.int32)
            for k, i in enumerate(rows):
                ids[k, : lengths[i]] = flat[starts[i] : starts[i] + lengths[i]]
                mask[k, : lengths[i]] = 1
            generated = np.asarray(self._generate(tf.constant(ids), tf.constant(mask)))
            for k, i in enumerate(rows):
                out[i] = generated[k, 1:]
            if label and (time.monotonic() - last > 10 or begin + size >= n):
                last = time.monotonic()
                print(
                    f"{label}: generated {min(begin + size, n)}/{n} texts, {last - begin_time:.0f}s",
                    flush=True,
                )
        return out


_GENERATORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def generator_for(model: Any, gen: GenerationConfig) -> Generator:
    """The model's `Generator` for these settings, made once: validation and test share its
    compiled shapes."""
    made = _GENERATORS.setdefault(model, {})
    key = repr(gen)
    if key not in made:
        made[key] = Generator(model, gen, gen.xla)
    return made[key]


def _bucket(width: int) -> int:
    """The next power of two from 8: few distinct shapes, so few XLA compilations."""
    return max(8, 1 << (width - 1).bit_length())


def decode(tokenizer: Any, generated: list[np.ndarray]) -> list[str]:
    """Generated ids → texts, cut at the end token, special tokens dropped."""
    eos = tokenizer.eos_token_id
    texts = []
    for ids in generated:
        ids = ids.tolist()
        if eos is not None and eos in ids:
            ids = ids[: ids.index(eos)]
        texts.append(
            tokenizer.decode(
                ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
            ).strip()
        )
    return texts
