"""WordPiece tokenization in the graph (BERT, MiniLM, DistilBERT, ELECTRA), equal to Hugging Face's.

Rebuilt from the Hugging Face fast tokenizer's own serialised settings:
vocabulary, sub-word prefix, unknown token, normaliser (clean text, CJK
splitting, accent stripping, lower-casing), special tokens and the truncation
of pairs (`longest_first`).

Text that literally contains a special token such as `[SEP]` or `[PAD]` gets that
token's id, as Hugging Face gives it (added tokens it matches on the raw text).

Known differences from Hugging Face (see docs/serving.md): words longer than 100
bytes but not 100 characters (non-ASCII words of 26-100 characters are [UNK] in
one and tokenized in the other), and characters whose Unicode category changed
between the Unicode versions of the two libraries (recently assigned marks and
letters: Hugging Face's tables treat some as unassigned).
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
        self._special_pattern, self._special_ids = _special_tokens(state)
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
            # As tokenizers' Rust code: first delete U+FFFD and the control, format and
            # private-use characters (Cc, Cf, Co, Cs) but tab, newline and carriage return; then
            # map the remaining white space (Z*) to a space. A form feed is deleted, not a space.
            text = tf.strings.regex_replace(
                text,
                r"[\x{0}-\x{8}\x{B}\x{C}\x{E}-\x{1F}\x{7F}-\x{9F}\p{Cf}\p{Co}\p{Cs}\x{FFFD}]",
                "",
            )
            text = tf.strings.regex_replace(text, r"[\t\n\r\p{Z}]", " ")
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

    def tokenize(self, text: tf.Tensor) -> tf.RaggedTensor:
        """Word-piece ids `[batch, (tokens)]` of a batch of strings, without special tokens
        added; literal special tokens in the text (`[SEP]`, `[PAD]`, ...) keep their ids."""
        if self._special_ids is None:
            return self._wordpiece.tokenize(self.normalize(text))
        import tensorflow_text as tft

        if self.clean_text:  # regex_split reads a NUL as the string's end; the normaliser drops it
            text = tf.strings.regex_replace(text, r"\x00", "")
        pieces = tft.regex_split(text, self._special_pattern, self._special_pattern)
        flat = pieces.flat_values
        special = self._special_ids.lookup(tf.strings.strip(flat))
        is_special = special >= 0
        words = self._wordpiece.tokenize(self.normalize(flat))
        # One row per piece: the special token's id, or the piece's word pieces.
        kept = tf.repeat(tf.logical_not(is_special), words.row_lengths())
        word_part = tf.RaggedTensor.from_row_lengths(
            tf.boolean_mask(words.flat_values, kept),
            tf.where(is_special, tf.zeros_like(words.row_lengths()), words.row_lengths()),
        )
        special_part = tf.RaggedTensor.from_row_lengths(
            tf.boolean_mask(special, is_special), tf.cast(is_special, tf.int64)
        )
        per_piece = tf.concat([special_part, word_part], axis=1)
        return tf.RaggedTensor.from_row_lengths(per_piece, pieces.row_lengths()).merge_dims(1, 2)

    def __call__(self, text: tf.Tensor, text_pair: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """Token-id tensors `[batch, length]` for a batch of strings (and second strings)."""
        first = self.tokenize(text)
        batch = tf.shape(text)[0]
        cls = tf.fill([batch, 1], self.cls_id)
        sep = tf.fill([batch, 1], self.sep_id)
        if text_pair is None:
            first = first[:, : self.max_length - 2]
            ids = tf.concat([cls, first, sep], axis=1)
            types = tf.zeros_like(ids)
        else:
            second = self.tokenize(text_pair)
            first, second = truncate_pair(first, second, self.max_length - 3)
            part_a = tf.concat([cls, first, sep], axis=1)
            part_b = tf.concat([second, sep], axis=1)
            ids = tf.concat([part_a, part_b], axis=1)
            types = tf.concat([tf.zeros_like(part_a), tf.ones_like(part_b)], axis=1)
        return model_inputs(ids, types, self.pad_id, self.input_names)


def _special_tokens(state: dict) -> tuple[str | None, tf.lookup.StaticHashTable | None]:
    """The regular expression of the added tokens Hugging Face matches on the raw text
    (`normalized: false`, such as BERT's `[CLS] [SEP] [PAD] [MASK] [UNK]`), and a table from
    each token to its id (-1 for any other string). (None, None) when there are none."""
    import re

    tokens = [t for t in state.get("added_tokens", []) if not t.get("normalized", True)]
    if not tokens:
        return None, None
    # Longest first, so a token that contains another is matched whole.
    tokens.sort(key=lambda t: -len(t["content"]))
    parts = [
        (r"\s*" if t.get("lstrip") else "")
        + re.escape(t["content"])
        + (r"\s*" if t.get("rstrip") else "")
        for t in tokens
    ]
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant([t["content"] for t in tokens]),
            tf.constant([int(t["id"]) for t in tokens], tf.int32),
        ),
        default_value=-1,
    )
    return "|".join(parts), table


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
