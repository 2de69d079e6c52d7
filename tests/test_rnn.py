"""The BiGRU baseline: its embeddings, padding, shapes, refusals, and a run that exports."""

from __future__ import annotations

import numpy as np
import pytest

from kerasft._compat import tf
from kerasft.config import ModelConfig, RnnConfig, config_from_dict
from kerasft.errors import ConfigError, ModelError
from kerasft.models import backbone_for, load_backbone, load_tokenizer, task_model
from kerasft.models.rnn import build_bigru
from kerasft.tasks import TASKS
from kerasft.training.runner import run
from tests.conftest import assert_trained_and_served, tiny_run_config

# Trains with `precision: auto`: `make test-bf16` reruns this module in mixed_bfloat16.
pytestmark = pytest.mark.precision

X = {
    "input_ids": tf.constant([[2, 5, 6, 3, 0, 0], [2, 8, 9, 10, 11, 3]]),
    "attention_mask": tf.constant([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]),
    "token_type_ids": tf.zeros((2, 6), tf.int32),
}


def bigru_backbone(directory, **rnn):
    cfg = ModelConfig(backbone="bigru", rnn=RnnConfig(vocabulary=str(directory), **rnn))
    return backbone_for(cfg, directory, load_tokenizer(directory), {"hidden": 0.0})


def test_pretrained_embeddings_are_the_vocabulary_backbones_own(tiny_bert_dir):
    encoder = bigru_backbone(tiny_bert_dir).model
    encoder(X)
    bert = load_backbone(tiny_bert_dir).model.get_input_embeddings().weight.numpy()
    np.testing.assert_allclose(encoder.embeddings.embeddings.numpy(), bert, atol=1e-6)
    random = bigru_backbone(tiny_bert_dir, embeddings="random").model
    random(X)
    assert random.embeddings.embeddings.shape == bert.shape
    assert not np.allclose(random.embeddings.embeddings.numpy(), bert)


def test_padding_does_not_change_a_sequence_and_every_weight_trains(tiny_bert_dir):
    backbone = bigru_backbone(tiny_bert_dir, units=8, layers=2)
    model = task_model(backbone, TASKS["classification"], 3, dropout=0.0)
    short = {k: v[:1, :4] for k, v in X.items()}
    np.testing.assert_allclose(model(X).numpy()[0], model(short).numpy()[0], atol=1e-5)
    # embeddings, 2 layers x 2 directions x (kernel, recurrent kernel, bias), head kernel and bias
    assert len(model.trainable_variables) == 1 + 2 * 2 * 3 + 2


def test_token_tags_get_one_row_per_token(tiny_bert_dir):
    model = task_model(bigru_backbone(tiny_bert_dir, units=8), TASKS["token_classification"], 5)
    assert model(X).shape == (2, 6, 5)


def test_pretrained_embeddings_need_safetensors(tmp_path, tiny_bert_dir):
    for name in ("config.json", "vocab.txt", "tokenizer_config.json"):
        if (tiny_bert_dir / name).exists():
            (tmp_path / name).write_bytes((tiny_bert_dir / name).read_bytes())
    with pytest.raises(ModelError, match="no word embeddings.*embeddings: random"):
        build_bigru(RnnConfig(), tmp_path, load_tokenizer(tiny_bert_dir), 0.0)


@pytest.mark.parametrize(
    ("model", "training", "message"),
    [
        ({"lora": {"rank": 4}}, {}, "`model.lora` applies to transformer backbones"),
        ({}, {"freeze_layers": 1}, "`training.freeze_layers` applies"),
        ({"pooling": "pooler"}, {}, "pooler` applies"),
        ({"num_layers": 2}, {}, "`model.num_layers` applies"),
    ],
)
def test_transformer_only_settings_are_refused(tiny_config, model, training, message):
    raw = dict(tiny_config)
    raw["model"] = {**raw.get("model", {}), "backbone": "bigru", **model}
    raw["training"] = {**raw.get("training", {}), **training}
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


@pytest.mark.slow
def test_a_bigru_run_trains_and_serves_raw_text(tmp_path, tiny_bert_dir):
    raw = tiny_run_config(
        tmp_path,
        tiny_bert_dir,
        model={"backbone": "bigru", "rnn": {"units": 16, "vocabulary": str(tiny_bert_dir)}},
        training={"epochs": 3, "batch_size": 8, "learning_rate": 1e-2},
    )
    result = run(config_from_dict(raw), verbose=0)
    assert_trained_and_served(result, {k: v[:, :5] for k, v in X.items()})
    card = (result.export_dir.parent / "README.md").read_text()
    assert "bigru" in card
