"""In-graph text ↔ token ids for seq2seq exports (tensorflow-text ops, saved in the SavedModel).

| family | tokenizer | in the graph |
| --- | --- | --- |
| T5, mT5 | SentencePiece, its ids are the model's | `SentencepieceCodec` |
| Marian | SentencePiece pieces, mapped to ids by `vocab.json`; target pieces from the target model | `MarianCodec` |
| BART, mBART, Pegasus, others | byte-level BPE or not covered | none: the export takes token ids |

Each codec truncates as the Hugging Face tokenizer does (the first max_length - 1
tokens, then the end token) and decodes as `decode(skip_special_tokens=True)` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kerasft._compat import tf


def codec_for(tokenizer: Any, max_length: int) -> tf.Module | None:
    """The in-graph codec of `tokenizer`'s family, or None when it has none here."""
    files = getattr(tokenizer, "spm_files", None)
    if files is not None and getattr(tokenizer, "encoder", None) is not None:
        if getattr(tokenizer, "separate_vocabs", False):
            return None  # a second vocabulary for the targets: not covered yet
        return MarianCodec(tokenizer, max_length)
    file = getattr(tokenizer, "vocab_file", None)
    if file and str(file).endswith(".model") and Path(file).is_file():
        return SentencepieceCodec(tokenizer, max_length)
    return None


class _Codec(tf.Module):
    def __init__(self, tokenizer: Any, max_length: int):
        super().__init__()
        self.max_length = int(max_length)
        self.pad_id = int(tokenizer.pad_token_id or 0)
        self.eos_id = int(tokenizer.eos_token_id)
        self.special_ids = tf.constant(sorted(set(tokenizer.all_special_ids)), tf.int32)

    def _finish(self, ids: tf.RaggedTensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Token ids of the text (no end token) → padded ids with the end token, and the mask."""
        ids = tf.cast(ids, tf.int32)[:, : self.max_length - 1]
        eos = tf.fill([ids.nrows(), 1], self.eos_id)
        ids = tf.concat([ids, tf.RaggedTensor.from_tensor(eos)], axis=1)
        dense = ids.to_tensor(default_value=self.pad_id)
        mask = tf.sequence_mask(ids.row_lengths(), tf.shape(dense)[1], dtype=tf.int32)
        return dense, mask

    def kept(self, ids: tf.Tensor) -> tf.RaggedTensor:
        """Generated ids without the special ones (padding, end, unknown), per row."""
        keep = tf.reduce_all(ids[:, :, None] != self.special_ids[None, None, :], axis=-1)
        return tf.ragged.boolean_mask(ids, keep)


class SentencepieceCodec(_Codec):
    """T5 and mT5: the SentencePiece model's own ids."""

    def __init__(self, tokenizer: Any, max_length: int):
        super().__init__(tokenizer, max_length)
        import tensorflow_text as tf_text

        model = Path(tokenizer.vocab_file).read_bytes()
        self.sentencepiece = tf_text.SentencepieceTokenizer(model=model)

    def encode(self, text: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return self._finish(self.sentencepiece.tokenize(text))

    def decode(self, ids: tf.Tensor) -> tf.Tensor:
        return tf.strings.strip(self.sentencepiece.detokenize(self.kept(ids)))


class MarianCodec(_Codec):
    """Marian: source pieces → ids through `vocab.json` (unknown pieces → `<unk>`), a leading
    `>>lang<<` code kept as one token; generated ids → pieces → text (▁ as spaces)."""

    def __init__(self, tokenizer: Any, max_length: int):
        super().__init__(tokenizer, max_length)
        import tensorflow_text as tf_text

        source = Path(tokenizer.spm_files[0]).read_bytes()
        self.sentencepiece = tf_text.SentencepieceTokenizer(model=source, out_type=tf.string)
        vocab = dict(tokenizer.encoder)
        pieces, ids = list(vocab), [int(vocab[p]) for p in vocab]
        unk = int(vocab[str(tokenizer.unk_token)])
        self.to_id = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(pieces, tf.constant(ids, tf.int64)), unk
        )
        self.to_piece = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(ids, tf.int64), pieces), ""
        )

    def encode(self, text: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        code = tf.strings.regex_replace(text, r"^(>>[^<]*<<)?.*$", r"\1")
        start = tf.strings.length(code)
        rest = tf.strings.substr(text, start, tf.strings.length(text) - start)
        pieces = self.sentencepiece.tokenize(rest)
        codes = tf.ragged.boolean_mask(code[:, None], tf.strings.length(code)[:, None] > 0)
        pieces = tf.concat([codes, pieces], axis=1)
        return self._finish(tf.ragged.map_flat_values(self.to_id.lookup, pieces))

    def decode(self, ids: tf.Tensor) -> tf.Tensor:
        pieces = tf.ragged.map_flat_values(self.to_piece.lookup, tf.cast(self.kept(ids), tf.int64))
        text = tf.strings.reduce_join(pieces, axis=1)
        return tf.strings.strip(tf.strings.regex_replace(text, "\u2581", " "))
