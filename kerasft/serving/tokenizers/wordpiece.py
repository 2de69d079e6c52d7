"""WordPiece tokenization in the graph (BERT, MiniLM, DistilBERT, ELECTRA), equal to Hugging Face's.

Rebuilt from the Hugging Face fast tokenizer's own serialised settings:
vocabulary, sub-word prefix, unknown token, normaliser (clean text, CJK
splitting, accent stripping, lower-casing), special tokens and the truncation
of pairs (`longest_first`).

Known differences from Hugging Face (see docs/serving.md): text that literally
contains a special token such as `[SEP]` (Hugging Face keeps it as the special
token, the graph tokenizes its characters), and words longer than 100 bytes but
not 100 characters (non-ASCII words of 26-100 characters are [UNK] in one and
tokenized in the other).
"""

from __future__ import annotations

from typing import Any

from kerasft._compat import tf
from kerasft.serving.tokenizers.common import UnsupportedTokenizer, model_inputs, truncate_pair


class GraphWordPiece(tf.Module):
    """WordPiece tokenization in TensorFlow ops, equal to the Hugging Face fast tokenizer it is built from.

    Args:
        state: the fast tokenizer's serialised JSON, parsed.
        hf_tokenizer: the Hugging Face tokenizer (for special-token ids).
        max_length: sequences are truncated to this many tokens, special tokens included.
        input_names: which of input_ids, attention_mask, token_type_ids to return.
    """

    def __init__(
        self, state: dict, hf_tokenizer: Any, max_length: int, input_names: tuple[str, ...]
    ):
        import tensorflow_text as tft

        super().__init__(name="graph_wordpiece")
        model = state["model"]
        vocab = sorted(model["vocab"].items(), key=lambda item: item[1])
        if [i for _, i in vocab] != list(range(len(vocab))):
            raise UnsupportedTokenizer("its vocabulary ids are not contiguous")
        normalizer = _bert_normalizer(state.get("normalizer"))
        self.clean_text = bool(normalizer.get("clean_text", True))
        self.lowercase = bool(normalizer.get("lowercase", True))
        strip = normalizer.get("strip_accents")
        self.strip_accents = self.lowercase if strip is None else bool(strip)
        self.handle_chinese_chars = bool(normalizer.get("handle_chinese_chars", True))
        self.max_length = int(max_length)
        self.input_names = tuple(input_names)
        self.cls_id = int(hf_tokenizer.cls_token_id)
        self.sep_id = int(hf_tokenizer.sep_token_id)
        self.pad_id = int(hf_tokenizer.pad_token_id or 0)
        self._wordpiece = tft.FastBertTokenizer(
            vocab=[token for token, _ in vocab],
            suffix_indicator=model.get("continuing_subword_prefix", "##"),
            max_bytes_per_word=int(model.get("max_input_chars_per_word", 100)),
            token_out_type=tf.int32,
            unknown_token=model.get("unk_token", "[UNK]"),
            lower_case_nfd_strip_accents=False,
        )

    def normalize(self, text: tf.Tensor) -> tf.Tensor:
        """Hugging Face's BertNormalizer in string ops."""
        if self.clean_text:
            text = tf.strings.regex_replace(text, r"\s", " ")
            text = tf.strings.regex_replace(text, r"[\p{C}\x{FFFD}]", "")
        if self.handle_chinese_chars:
            text = tf.strings.regex_replace(
                text,
                r"([\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}\x{2A700}-\x{2B73F}"
                r"\x{2B740}-\x{2B81F}\x{2B820}-\x{2CEAF}\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}])",
                r" \1 ",
            )
        if self.strip_accents:
            import tensorflow_text as tft

            text = tft.normalize_utf8(text, "NFD")
            text = tf.strings.regex_replace(text, r"\p{Mn}", "")
        if self.lowercase:
            # ICU lower-casing turns a word-final Σ into ς; Rust's char-wise lowercase always gives σ.
            text = tf.strings.regex_replace(text, "Σ", "σ")
            text = tf.strings.lower(text, encoding="utf-8")
        return text

    def __call__(self, text: tf.Tensor, text_pair: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """Token-id tensors `[batch, length]` for a batch of strings (and second strings)."""
        first = self._wordpiece.tokenize(self.normalize(text))
        batch = tf.shape(text)[0]
        cls = tf.fill([batch, 1], self.cls_id)
        sep = tf.fill([batch, 1], self.sep_id)
        if text_pair is None:
            first = first[:, : self.max_length - 2]
            ids = tf.concat([cls, first, sep], axis=1)
            types = tf.zeros_like(ids)
        else:
            second = self._wordpiece.tokenize(self.normalize(text_pair))
            first, second = truncate_pair(first, second, self.max_length - 3)
            part_a = tf.concat([cls, first, sep], axis=1)
            part_b = tf.concat([second, sep], axis=1)
            ids = tf.concat([part_a, part_b], axis=1)
            types = tf.concat([tf.zeros_like(part_a), tf.ones_like(part_b)], axis=1)
        return model_inputs(ids, types, self.pad_id, self.input_names)


def _bert_normalizer(normalizer: dict | None) -> dict:
    if normalizer is None:
        return {
            "clean_text": False,
            "lowercase": False,
            "strip_accents": False,
            "handle_chinese_chars": False,
        }
    if normalizer.get("type") == "BertNormalizer":
        return normalizer
    raise UnsupportedTokenizer(
        f"its normaliser ({normalizer.get('type')}) has no in-graph equivalent yet"
    )
