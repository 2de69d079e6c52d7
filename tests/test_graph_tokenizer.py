"""In-graph WordPiece equals the Hugging Face tokenizer, on real and adversarial text."""

from __future__ import annotations

import numpy as np
import pytest

from kerasft._compat import tf
from kerasft.graph_tokenizer import UnsupportedTokenizer, graph_tokenizer_for
from kerasft.models import load_tokenizer, resolve_backbone
from tests.parity_corpus import parity_corpus


def graph_ids(graph, texts, pairs=None):
    out = graph(tf.constant(texts), None if pairs is None else tf.constant(pairs))
    mask = out["attention_mask"].numpy().astype(bool)
    rows = {
        name: [row[m].tolist() for row, m in zip(out[name].numpy(), mask, strict=True)]
        for name in out
    }
    return rows


def mismatches(hf, graph, texts, pairs=None, max_length=64):
    expected = hf(texts, pairs, truncation=True, max_length=max_length)
    got = graph_ids(graph, texts, pairs)
    bad = []
    for i in range(len(texts)):
        for name in got:
            if got[name][i] != expected[name][i]:
                bad.append((i, name, texts[i][:60]))
                break
    return bad


@pytest.fixture(scope="module")
def minilm_tokenizer():
    return load_tokenizer(resolve_backbone("minilm-l6"))


@pytest.mark.parametrize("max_length", [16, 64])
def test_single_texts_match_hugging_face(minilm_tokenizer, max_length):
    corpus = parity_corpus(560)
    graph = graph_tokenizer_for(
        minilm_tokenizer, max_length, ("input_ids", "token_type_ids", "attention_mask")
    )
    bad = mismatches(minilm_tokenizer, graph, corpus, max_length=max_length)
    assert bad == [], f"{len(bad)} of {len(corpus)} differ, e.g. {bad[:5]}"


def test_pairs_and_longest_first_truncation_match(minilm_tokenizer):
    corpus = parity_corpus(560)
    rng = np.random.default_rng(0)
    firsts = corpus[:280]
    seconds = [corpus[i] for i in rng.permutation(len(corpus))[:280]]
    graph = graph_tokenizer_for(
        minilm_tokenizer, 32, ("input_ids", "token_type_ids", "attention_mask")
    )
    bad = mismatches(minilm_tokenizer, graph, firsts, seconds, max_length=32)
    assert bad == [], f"{len(bad)} of 280 pairs differ, e.g. {bad[:5]}"


def test_cased_vocabulary_keeps_case_and_accents(tiny_bert_dir, tmp_path):
    from transformers import BertTokenizerFast

    cased = BertTokenizerFast(vocab_file=str(tiny_bert_dir / "vocab.txt"), do_lower_case=False)
    graph = graph_tokenizer_for(cased, 16, ("input_ids", "attention_mask"))
    texts = ["Good movie", "good MOVIE", "gööd film", "the\tplot\nwas fun"]
    assert mismatches(cased, graph, texts, max_length=16) == []


def test_byte_level_bpe_is_reported_unsupported():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    bpe = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE()))
    with pytest.raises(UnsupportedTokenizer, match=r"BPE tokenizer has no in-graph equivalent"):
        graph_tokenizer_for(bpe, 16, ("input_ids",))
