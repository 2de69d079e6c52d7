"""An XLM-R-style backbone (SentencePiece Unigram) end to end: trains, slices by language, serves raw text."""

from __future__ import annotations

import numpy as np
import pytest

from kerasft._compat import keras, tf
from kerasft.config import config_from_dict
from kerasft.errors import ModelError
from kerasft.models import load_tokenizer, resolve_backbone
from kerasft.training.runner import run
from tests.conftest import policy_atol, read_json, sentencepiece_tokenizer, tiny_run_config

# Trains with `precision: auto`: `make test-bf16` reruns this module in mixed_bfloat16.
pytestmark = pytest.mark.precision

SENTENCES = {
    ("en", "pos"): ["a wonderful film", "great acting and a fine story", "I loved it"],
    ("en", "neg"): ["a dull film", "bad acting and a weak story", "I hated it"],
    ("de", "pos"): ["ein wunderbarer Film", "großartig gespielt", "ich fand ihn toll"],
    ("de", "neg"): ["ein langweiliger Film", "schlecht gespielt", "ich fand ihn furchtbar"],
}


@pytest.fixture(scope="module")
def tiny_xlmr_dir(tmp_path_factory, spm_model):
    """A tiny random XLM-RoBERTa with the SentencePiece model trained in conftest."""
    from transformers import TFXLMRobertaModel, XLMRobertaConfig

    tokenizer = sentencepiece_tokenizer("xlm-roberta", spm_model)
    directory = tmp_path_factory.mktemp("tiny-xlmr")
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=66,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    keras.utils.set_random_seed(0)  # Python's generator too: it seeds the initializers
    model = TFXLMRobertaModel(config)
    model(model.dummy_inputs)
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory


@pytest.mark.slow
def test_an_xlmr_run_trains_slices_by_language_and_serves_raw_text(tmp_path, tiny_xlmr_dir):
    rows = ["text,label,language"]
    for (language, label), texts in SENTENCES.items():
        rows += [f"{t},{label},{language}" for t in texts * 5]
    raw = tiny_run_config(
        tmp_path,
        tiny_xlmr_dir,
        training={"epochs": 4, "batch_size": 8, "learning_rate": 3e-3},
        evaluation={"slices": ["language"]},
    )
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = run(config_from_dict(raw), verbose=0)
    history = result.metrics["train"]["history"]["loss"]
    assert history[-1] < history[0]
    languages = read_json(result.run_dir / "metrics.json")["test"]["slices"]["language"]
    assert set(languages["values"]) == {"en", "de"}

    texts = ["ein wunderbarer Film", "a dull film", "naïve café", ""]
    tokenizer = load_tokenizer(tiny_xlmr_dir)
    ids = tokenizer(texts, truncation=True, max_length=16, padding=True, return_tensors="np")
    in_memory = tf.nn.softmax(
        result.model({k: tf.constant(v) for k, v in ids.items()}, training=False)
    ).numpy()
    serve = tf.saved_model.load(str(result.export_dir)).signatures["serving_default"]
    np.testing.assert_allclose(
        serve(text=tf.constant(texts))["probabilities"], in_memory, atol=policy_atol(result.model)
    )


@pytest.mark.parametrize("name", ["xlm-roberta-base", "bert-base-multilingual-cased"])
def test_multilingual_hub_backbones_fail_clearly_offline(name):
    with pytest.raises(
        ModelError, match=f"`model.backbone: {name}`.*huggingface-cli download {name}"
    ):
        resolve_backbone(name)
