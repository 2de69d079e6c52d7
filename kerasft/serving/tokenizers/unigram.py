"""SentencePiece-style Unigram tokenization in the graph (ALBERT, XLM-R, T5), equal to Hugging Face's."""

from __future__ import annotations

from typing import Any

from kerasft._compat import tf
from kerasft.serving.tokenizers.common import UnsupportedTokenizer, model_inputs, truncate_pair


class GraphUnigram(tf.Module):
    """SentencePiece-style Unigram tokenization (ALBERT, XLM-R, T5) in TensorFlow ops.

    Rebuilt from the Hugging Face fast tokenizer, not from the original `.model` file:
    the Unigram pieces and scores become a SentencePiece model with an identity
    normaliser, and Hugging Face's own normaliser sequence, Metaspace pre-tokenizer,
    unknown-token fusing and post-processor template are replayed in string and
    ragged ops. Ids therefore follow the Hugging Face vocabulary (including
    XLM-R's fairseq offsets).

    Args:
        state: the fast tokenizer's serialised JSON, parsed.
        max_length: sequences are truncated to this many tokens, special tokens included.
        input_names: which of input_ids, attention_mask, token_type_ids to return.
    """

    def __init__(
        self, state: dict, hf_tokenizer: Any, max_length: int, input_names: tuple[str, ...]
    ):
        import tensorflow_text as tft

        super().__init__(name="graph_unigram")
        model = state["model"]
        if model.get("byte_fallback"):
            raise UnsupportedTokenizer(
                "its Unigram model falls back to bytes, which has no in-graph equivalent yet"
            )
        self.normalizers = _flatten(state.get("normalizer"))
        for step in self.normalizers:
            if step["type"] not in _UNIGRAM_NORMALIZERS:
                raise UnsupportedTokenizer(
                    f"its normaliser step {step['type']} has no in-graph equivalent yet"
                )
        pre = state.get("pre_tokenizer") or {}
        metaspaces = [p for p in _flatten(pre) if p["type"] == "Metaspace"]
        others = [p for p in _flatten(pre) if p["type"] not in ("Metaspace", "WhitespaceSplit")]
        if not metaspaces or others:
            raise UnsupportedTokenizer("its pre-tokenizer is not Metaspace")
        self.replacement = metaspaces[0].get("replacement", "\u2581")
        self.prepend = metaspaces[0].get("prepend_scheme", "always") != "never"
        self.unk_id = int(model["unk_id"]) if model.get("unk_id") is not None else -1
        self.max_length = int(max_length)
        self.input_names = tuple(input_names)
        self.pad_id = int(hf_tokenizer.pad_token_id or 0)
        self.single, self.pair = _templates(state.get("post_processor"), hf_tokenizer)
        self._sp = tft.SentencepieceTokenizer(model=_sentencepiece_model(model), out_type=tf.int32)
        # Each Precompiled step (SentencePiece's nmt_nfkc character map) becomes a lookup table.
        self._charmaps = [
            _charmap_table(step["precompiled_charsmap"])
            for step in self.normalizers
            if step["type"] == "Precompiled"
        ]

    def normalize(self, text: tf.Tensor) -> tf.Tensor:
        import tensorflow_text as tft

        charmap_index, decomposed = 0, False
        for step in self.normalizers:
            kind = step["type"]
            decomposed |= kind in ("NFKD", "NFD")
            if kind == "Replace":
                pattern = step["pattern"]
                regex = pattern["Regex"] if "Regex" in pattern else _re_escape(pattern["String"])
                text = tf.strings.regex_replace(text, regex, _re_replacement(step["content"]))
            elif kind in ("NFKD", "NFKC", "NFD", "NFC"):
                text = tft.normalize_utf8(text, kind)
            elif kind == "StripAccents":
                text = tf.strings.regex_replace(text, r"\p{M}", "")
            elif kind == "Lowercase":
                text = tf.strings.regex_replace(text, "Σ", "σ")
                text = tf.strings.lower(text, encoding="utf-8")
            elif kind == "Strip":
                if step.get("strip_left", True):
                    text = tf.strings.regex_replace(text, r"^[\s\p{Z}]+", "")
                if step.get("strip_right", True):
                    text = tf.strings.regex_replace(text, r"[\s\p{Z}]+$", "")
            elif kind == "Precompiled":
                if not decomposed:
                    # Hugging Face maps whole graphemes first (e + combining acute → é): compose them.
                    text = tft.normalize_utf8(text, "NFC")
                table = self._charmaps[charmap_index]
                charmap_index += 1
                chars = tf.strings.unicode_split(text, "UTF-8")
                mapped = tf.ragged.map_flat_values(table.lookup, chars)
                keep = tf.ragged.map_flat_values(tf.equal, mapped, _KEEP)
                chars = tf.ragged.map_flat_values(tf.where, keep, chars, mapped)
                text = tf.strings.reduce_join(chars, axis=-1)
        return text

    def pieces(self, text: tf.Tensor) -> tf.RaggedTensor:
        # ICU and SentencePiece read C strings: a NUL would end the text. Any other unknown
        # character gives the same <unk> piece Hugging Face produces for it.
        text = self.normalize(tf.strings.regex_replace(text, "\\x00", "\ue000"))
        text = tf.strings.regex_replace(text, " ", self.replacement)
        if self.prepend:
            text = tf.strings.regex_replace(text, "^(.)", self.replacement + r"\1")
            text = tf.strings.regex_replace(text, "^" + self.replacement * 2, self.replacement)
        ids = self._sp.tokenize(text)
        if self.unk_id >= 0:  # Hugging Face fuses runs of unknown pieces into one
            flat = ids.flat_values
            first = tf.ragged.range(ids.row_lengths()).flat_values == 0
            previous = tf.where(first, -1, tf.concat([[-1], flat[:-1]], axis=0))
            fused = (flat == self.unk_id) & (previous == self.unk_id)
            ids = tf.ragged.boolean_mask(ids, ids.with_flat_values(~fused))
        return ids

    def __call__(self, text: tf.Tensor, text_pair: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        batch = tf.shape(text)[0]
        first = self.pieces(text)
        template = self.single if text_pair is None else self.pair
        specials = sum(1 for kind, _, _ in template if kind == "special")
        if text_pair is None:
            parts = {"A": first[:, : self.max_length - specials]}
        else:
            first, second = truncate_pair(first, self.pieces(text_pair), self.max_length - specials)
            parts = {"A": first, "B": second}
        ids, types = [], []
        for kind, value, type_id in template:
            piece = (
                tf.fill([batch, 1], value) if kind == "special" else tf.cast(parts[value], tf.int32)
            )
            if kind == "special":
                piece = tf.RaggedTensor.from_tensor(piece)
            ids.append(piece)
            types.append(tf.ones_like(piece) * type_id)
        ids, types = tf.concat(ids, axis=1), tf.concat(types, axis=1)
        return model_inputs(ids, types, self.pad_id, self.input_names)


_UNIGRAM_NORMALIZERS = {
    "Replace",
    "NFKD",
    "NFKC",
    "NFD",
    "NFC",
    "StripAccents",
    "Lowercase",
    "Strip",
    "Precompiled",
}


def _flatten(node: dict | None) -> list[dict]:
    if not node:
        return []
    if node.get("type") == "Sequence":
        children = node.get("normalizers") or node.get("pretokenizers") or []
        return [leaf for child in children for leaf in _flatten(child)]
    return [node]


def _templates(post: dict | None, hf_tokenizer: Any) -> tuple[list, list]:
    """(single, pair) templates as lists of ("special", id, type) and ("sequence", "A"/"B", type)."""
    if not post or post.get("type") != "TemplateProcessing":
        raise UnsupportedTokenizer("its post-processor is not a template")
    ids = {name: int(spec["ids"][0]) for name, spec in post["special_tokens"].items()}

    def parse(items):
        out = []
        for item in items:
            if "SpecialToken" in item:
                out.append(
                    ("special", ids[item["SpecialToken"]["id"]], item["SpecialToken"]["type_id"])
                )
            else:
                out.append(("sequence", item["Sequence"]["id"], item["Sequence"]["type_id"]))
        return out

    return parse(post["single"]), parse(post["pair"])


_KEEP = "\x00kerasft-keep"


def _charmap_table(charsmap_b64: str) -> tf.lookup.StaticHashTable:
    """A character → replacement table equal to a Precompiled normaliser on single characters.

    Hugging Face applies the map to whole graphemes first; entries for multi-character
    graphemes (e.g. composing `e` + combining acute into `é`) are not replayed.
    """
    import base64

    from tokenizers import normalizers

    precompiled = normalizers.Precompiled(base64.b64decode(charsmap_b64))
    keys, values = [], []
    for code in range(0x30000):  # the BMP and the two supplementary planes that hold text
        if 0xD800 <= code <= 0xDFFF:
            continue
        char = chr(code)
        out = precompiled.normalize_str(char)
        if out != char:
            keys.append(char)
            values.append(out)
    init = tf.lookup.KeyValueTensorInitializer(tf.constant(keys), tf.constant(values))
    return tf.lookup.StaticHashTable(init, default_value=_KEEP)


def _sentencepiece_model(model: dict) -> bytes:
    """A SentencePiece model proto with the Hugging Face Unigram's pieces and scores and no normalisation."""
    from transformers.convert_slow_tokenizer import import_protobuf

    spm_pb2 = (
        import_protobuf()
    )  # sentencepiece's own module when installed, else transformers' copy

    proto = spm_pb2.ModelProto()
    proto.trainer_spec.model_type = spm_pb2.TrainerSpec.UNIGRAM
    proto.trainer_spec.unk_id = int(model.get("unk_id") or 0)
    proto.trainer_spec.split_by_whitespace = True
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = False
    proto.normalizer_spec.remove_extra_whitespaces = False
    proto.normalizer_spec.escape_whitespaces = False
    unk = model.get("unk_id")
    seen = set()
    for i, (piece, score) in enumerate(model["vocab"]):
        entry = proto.pieces.add()
        entry.piece, entry.score = piece, float(score)
        if piece in seen:  # XLM-R lists </s> twice; the copy keeps its id but can never be produced
            entry.piece = f"<kerasft-duplicate-{i}>"
            entry.type = spm_pb2.ModelProto.SentencePiece.CONTROL
            continue
        seen.add(piece)
        if i == unk:
            entry.type = spm_pb2.ModelProto.SentencePiece.UNKNOWN
        elif (
            piece.startswith("<")
            and piece.endswith(">")
            or piece.startswith("[")
            and piece.endswith("]")
        ):
            entry.type = spm_pb2.ModelProto.SentencePiece.CONTROL
    return proto.SerializeToString()


def _re_escape(text: str) -> str:
    import re

    return re.escape(text)


def _re_replacement(text: str) -> str:
    return text.replace("\\", "\\\\")
