"""The export of a `task: seq2seq` run: strings in, generated strings out, in one SavedModel.

| signature | inputs | outputs |
| --- | --- | --- |
| `serving_default` | `text` [B] raw UTF-8 strings | `text` [B] generated strings, `ids` [B, T] generated token ids |
| `predict_ids` | `input_ids`, `attention_mask` [B, S] int32 | `ids` [B, T] generated token ids (end token, then padding) |

Inside the graph: the source prefix, SentencePiece tokenization (tensorflow-text,
from the model's own `.model` file; T5 and mT5), truncation, generation with the
model's `generate` compiled by XLA (greedy or beam, the run's `generation:`
settings), and detokenization. A family whose tokenizer is not SentencePiece with
ids of its own (BART's byte-level BPE; Marian's separate vocabulary) exports
`predict_ids` as both signatures, and says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kerasft._compat import tf
from kerasft.serving.info import ExportInfo


def sentencepiece_file(tokenizer: Any) -> Path | None:
    """The SentencePiece model whose ids are the model's ids (T5, mT5), else None."""
    file = getattr(tokenizer, "vocab_file", None)
    if not file or not str(file).endswith(".model") or not Path(file).is_file():
        return None
    if (
        getattr(tokenizer, "encoder", None) is not None
    ):  # Marian: pieces map to ids through vocab.json
        return None
    return Path(file)


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
        import tensorflow_text as tf_text

        gen = dict(info.generation or {})
        model = getattr(model, "seq2seq", model)  # the training wrapper holds the HF model
        self.weights = list(model.weights)
        self.assets = [tf.saved_model.Asset(str(path)) for path in assets]
        self.max_length = int(info.max_length)
        self.prefix = str(gen.get("source_prefix", ""))
        self.pad_id = int(tokenizer.pad_token_id or 0)
        self.eos_id = int(tokenizer.eos_token_id)
        # Ids decoding leaves out, as `decode(skip_special_tokens=True)` does (unknown included).
        self.special_ids = tf.constant(sorted(set(tokenizer.all_special_ids)), tf.int32)
        kwargs = {
            "max_new_tokens": int(gen.get("max_new_tokens", 64)),
            "num_beams": int(gen.get("num_beams", 1)),
        }
        if kwargs["num_beams"] > 1:
            kwargs["length_penalty"] = float(gen.get("length_penalty", 1.0))

        def generate(ids, mask):
            return model.generate(ids, attention_mask=mask, **kwargs)

        self._generate = tf.function(generate, jit_compile=True)
        file = sentencepiece_file(tokenizer)
        self.sentencepiece = None
        if file is not None:
            self.sentencepiece = tf_text.SentencepieceTokenizer(
                model=file.read_bytes(), add_eos=True
            )

    def predict_ids(self, input_ids: tf.Tensor, attention_mask: tf.Tensor) -> dict[str, tf.Tensor]:
        generated = self._generate(tf.cast(input_ids, tf.int32), tf.cast(attention_mask, tf.int32))
        return {"ids": self._cut(generated[:, 1:])}

    def _cut(self, ids: tf.Tensor) -> tf.Tensor:
        """Everything after the first end token becomes padding."""
        after = tf.cumsum(tf.cast(ids == self.eos_id, tf.int32), axis=1, exclusive=True) > 0
        return tf.where(after, tf.cast(self.pad_id, ids.dtype), ids)

    def predict_text(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        if self.prefix:
            text = tf.strings.join([tf.constant(self.prefix), text])
        pieces = self.sentencepiece.tokenize(text)
        # Truncate as the tokenizer does: keep max_length - 1 pieces, then the end token.
        body = pieces[:, :-1][:, : self.max_length - 1]
        eos = tf.fill([tf.shape(text)[0], 1], tf.constant(self.eos_id, pieces.dtype))
        pieces = tf.concat([body, tf.RaggedTensor.from_tensor(eos)], axis=1)
        ids = tf.cast(pieces.to_tensor(default_value=self.pad_id), tf.int32)
        mask = tf.cast(tf.sequence_mask(pieces.row_lengths(), tf.shape(ids)[1]), tf.int32)
        out = self.predict_ids(ids, mask)["ids"]
        keep = tf.reduce_all(out[:, :, None] != self.special_ids[None, None, :], axis=-1)
        texts = self.sentencepiece.detokenize(tf.ragged.boolean_mask(out, keep))
        return {"text": tf.strings.strip(texts), "ids": out}

    def signatures(self) -> dict[str, Any]:
        specs = {
            n: tf.TensorSpec([None, None], tf.int32, name=n)
            for n in ("input_ids", "attention_mask")
        }
        ids_fn = tf.function(self.predict_ids).get_concrete_function(**specs)
        if self.sentencepiece is None:
            return {"serving_default": ids_fn, "predict_ids": ids_fn}
        text = tf.TensorSpec([None], tf.string, name="text")
        text_fn = tf.function(self.predict_text).get_concrete_function(text=text)
        return {"serving_default": text_fn, "predict_ids": ids_fn}
