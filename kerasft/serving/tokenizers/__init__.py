"""In-graph tokenizers, rebuilt from the Hugging Face fast tokenizer used in training.

They run inside the exported SavedModel, so TF Serving takes raw strings with no
Python beside it. Two families: WordPiece (BERT, MiniLM, DistilBERT, ELECTRA) and
SentencePiece Unigram (ALBERT, XLM-R, T5). Byte-level BPE (RoBERTa, GPT-2) has no
in-graph equivalent yet: those exports take token ids.
"""

from __future__ import annotations

import json
from typing import Any

from kerasft._compat import tf
from kerasft.serving.tokenizers.common import UnsupportedTokenizer
from kerasft.serving.tokenizers.unigram import GraphUnigram
from kerasft.serving.tokenizers.wordpiece import GraphWordPiece

__all__ = ["GraphUnigram", "GraphWordPiece", "UnsupportedTokenizer", "graph_tokenizer_for"]


def graph_tokenizer_for(
    hf_tokenizer: Any, max_length: int, input_names: tuple[str, ...]
) -> tf.Module:
    """The in-graph tokenizer for a Hugging Face fast tokenizer (WordPiece or Unigram).

    Raises:
        UnsupportedTokenizer: the tokenizer is neither, with the reason.
    """
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UnsupportedTokenizer(f"{type(hf_tokenizer).__name__} is not a fast tokenizer")
    state = json.loads(backend.to_str())
    kind = state["model"]["type"]
    if kind == "WordPiece":
        return GraphWordPiece(state, hf_tokenizer, max_length, input_names)
    if kind == "Unigram":
        return GraphUnigram(state, hf_tokenizer, max_length, input_names)
    raise UnsupportedTokenizer(f"its {kind} tokenizer has no in-graph equivalent yet")
