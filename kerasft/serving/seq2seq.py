"""The export of a `task: seq2seq` run: strings in, generated strings out, in one SavedModel.

| signature | inputs | outputs |
| --- | --- | --- |
| `serving_default` | `text` [B] raw UTF-8 strings | `text` [B] generated strings, `ids` [B, T] generated token ids |
| `predict_ids` | `input_ids`, `attention_mask` [B, S] int32 | `ids` [B, T] generated token ids (end token, then padding) |

Inside the graph: the source prefix, tokenization (`serving.text_codecs`:
SentencePiece for T5 and mT5, SentencePiece plus the vocabulary mapping for
Marian), truncation, generation with the model's `generate` compiled by XLA
(greedy or beam, the run's `generation:` settings), and detokenization. A family
without an in-graph tokenizer here (BART's byte-level BPE, Pegasus) exports
`predict_ids` as both signatures, and the export says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kerasft._compat import tf
from kerasft.config import GenerationConfig
from kerasft.models.seq2seq import generation_kwargs
from kerasft.serving.info import ExportInfo
from kerasft.serving.text_codecs import codec_for


class Seq2SeqServingModule(tf.Module):
    """The serving signatures of a seq2seq export (see the module table).

    Args:
        model: the TF encoder-decoder model, in float32.
        info: the export contract (`info.generation`: prefix and generation settings).
        tokenizer: the Hugging Face tokenizer (special ids; its SentencePiece file).
        assets: files to ship in `assets/`.
    """

    def __init__(self, model: Any, info: ExportInfo, tokenizer: Any, assets: list[Path]):
        super().__init__(name="kerasft_seq2seq")
        gen = dict(info.generation or {})
        model = getattr(model, "seq2seq", model)  # the training wrapper holds the HF model
        self.weights = list(model.weights)
        self.assets = [tf.saved_model.Asset(str(path)) for path in assets]
        self.prefix = str(gen.get("source_prefix", ""))
        self.pad_id = int(tokenizer.pad_token_id or 0)
        self.eos_id = int(tokenizer.eos_token_id)
        settings = {k: v for k, v in gen.items() if k in GenerationConfig.model_fields}
        kwargs = generation_kwargs(GenerationConfig(**settings))  # as in validation and test

        def generate(ids, mask):
            return model.generate(ids, attention_mask=mask, **kwargs)

        self._generate = tf.function(generate, jit_compile=True)
        self.beams, self.width = kwargs["num_beams"], kwargs["max_new_tokens"] + 1
        self.codec = codec_for(tokenizer, int(info.max_length))

    def predict_ids(self, input_ids: tf.Tensor, attention_mask: tf.Tensor) -> dict[str, tf.Tensor]:
        ids, mask = tf.cast(input_ids, tf.int32), tf.cast(attention_mask, tf.int32)
        # No rows (a client with nothing to send): no texts, where generation failed inside
        # the decoder's attention.
        generated = tf.cond(
            tf.shape(ids)[0] > 0,
            lambda: self._generated(ids, mask),
            lambda: tf.zeros([0, 0], tf.int32),
        )
        return {"ids": self._cut(generated)}

    def _generated(self, ids: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        if self.beams == 1:
            generated = self._generate(ids, mask)
        else:  # transformers' TF beam search needs a batch size known when traced: one row at a time
            generated = tf.map_fn(
                self._one_row,
                (ids, mask),
                fn_output_signature=tf.TensorSpec([self.width], tf.int32),
            )
        return generated[:, 1:]

    def _one_row(self, row: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        out = self._generate(row[0][None, :], row[1][None, :])[0][: self.width]
        return tf.pad(out, [[0, self.width - tf.shape(out)[0]]], constant_values=self.pad_id)

    def _cut(self, ids: tf.Tensor) -> tf.Tensor:
        """Everything after the first end token becomes padding."""
        after = tf.cumsum(tf.cast(ids == self.eos_id, tf.int32), axis=1, exclusive=True) > 0
        return tf.where(after, tf.cast(self.pad_id, ids.dtype), ids)

    def predict_text(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        if self.prefix:
            text = tf.strings.join([tf.constant(self.prefix), text])
        ids, mask = self.codec.encode(text)
        out = self.predict_ids(ids, mask)["ids"]
        return {"text": self.codec.decode(out), "ids": out}

    def signatures(self) -> dict[str, Any]:
        specs = {
            n: tf.TensorSpec([None, None], tf.int32, name=n)
            for n in ("input_ids", "attention_mask")
        }
        ids_fn = tf.function(self.predict_ids).get_concrete_function(**specs)
        if self.codec is None:
            return {"serving_default": ids_fn, "predict_ids": ids_fn}
        text = tf.TensorSpec([None], tf.string, name="text")
        text_fn = tf.function(self.predict_text).get_concrete_function(text=text)
        return {"serving_default": text_fn, "predict_ids": ids_fn}
