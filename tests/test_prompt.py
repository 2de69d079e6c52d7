"""Prompt tuning: what trains, what the prompt does to the input, and that runs with it export."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kerasft._compat import tf
from kerasft.config import PromptConfig, config_from_dict
from kerasft.errors import ConfigError, ModelError
from kerasft.models import load_backbone, task_model, usable_positions
from kerasft.peft.prompt import SoftPrompt, check_prompt_length
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


def prompted(directory, task="classification", tokens=4, init="vocab"):
    backbone = load_backbone(directory, dropout={"hidden": 0.0, "attention": 0.0})
    prompt = PromptConfig(tokens=tokens, init=init)
    return task_model(backbone, TASKS[task], 3, dropout=0.0, prompt=prompt), backbone


def test_only_the_prompt_and_the_head_train(tiny_bert_dir):
    model, _ = prompted(tiny_bert_dir)
    names = sorted(v.name.split(":")[0] for v in model.trainable_variables)
    assert names == ["head/bias", "head/kernel", "soft_prompt/prompt"]
    assert model(X).shape == (2, 3)


def test_the_prompt_starts_as_vocabulary_embeddings_and_precedes_the_words(tiny_bert_dir):
    backbone = load_backbone(tiny_bert_dir)
    embeddings = backbone.model.get_input_embeddings()
    layer = SoftPrompt(embeddings, 3, "vocab")
    out = layer(X)
    table = embeddings.weight.numpy()
    prompt = layer.prompt.numpy()
    assert all((np.abs(table - row).max(axis=1) == 0).any() for row in prompt)
    np.testing.assert_array_equal(out["inputs_embeds"][0, :3].numpy(), prompt)
    np.testing.assert_array_equal(
        out["inputs_embeds"][:, 3:].numpy(), tf.gather(table, X["input_ids"])
    )
    assert out["attention_mask"].numpy().tolist()[0] == [1, 1, 1, 1, 1, 1, 1, 0, 0]
    assert out["token_type_ids"].shape == (2, 9)


def test_padding_is_still_ignored_and_the_prompt_changes_the_output(tiny_bert_dir):
    model, _ = prompted(tiny_bert_dir, init="random")
    short = {k: v[:1, :4] for k, v in X.items()}  # the first example without its padding
    np.testing.assert_allclose(model(X).numpy()[0], model(short).numpy()[0], atol=1e-5)
    before = model(X).numpy()
    prompt = model.get_layer("soft_prompt").prompt
    prompt.assign(prompt + tf.random.normal(prompt.shape, stddev=1.0, seed=3))
    assert not np.allclose(model(X).numpy(), before, atol=1e-4)


def test_token_tags_keep_one_row_per_input_token(tiny_bert_dir):
    model, _ = prompted(tiny_bert_dir, task="token_classification")
    assert model(X).shape == (2, 6, 3)


def test_prompt_and_inputs_must_fit_the_position_table(tiny_bert_dir):
    backbone = load_backbone(tiny_bert_dir)
    limit = usable_positions(backbone.model.config)
    assert limit == backbone.model.config.max_position_embeddings == 64
    check_prompt_length(limit, 20, limit - 20)
    check_prompt_length(None, 20, 10_000)  # relative positions: no table
    with pytest.raises(ModelError, match="prompt_tuning.tokens: 20.*Lower one"):
        check_prompt_length(limit, 20, limit - 19)
    # RoBERTa-style models number positions from after the padding index
    roberta = {"model_type": "xlm-roberta", "max_position_embeddings": 514, "pad_token_id": 1}
    assert usable_positions(roberta) == 512
    assert usable_positions({"model_type": "t5"}) is None


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"prompt_tuning": {"tokens": 8}, "lora": {"rank": 4}}, "choose one of `model.lora`"),
        ({"prompt_tuning": {"tokens": 8}, "pooling": "pooler"}, "soft-prompt vector"),
        ({"prompt_tuning": {"tokens": 0}}, "tokens"),
    ],
)
def test_conflicting_settings_are_refused(tiny_config, model, message):
    raw = dict(tiny_config)
    raw["model"] = {**raw.get("model", {}), **model}
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


@pytest.mark.slow
def test_a_prompt_tuned_run_trains_and_serves_raw_text(tmp_path, tiny_bert_dir):
    raw = tiny_run_config(
        tmp_path,
        tiny_bert_dir,
        model={"backbone": str(tiny_bert_dir), "prompt_tuning": {"tokens": 4}},
        training={"epochs": 3, "batch_size": 8, "learning_rate": 3e-2},
    )
    result = run(config_from_dict(raw), verbose=0)
    assert_trained_and_served(
        result, {k: v[:, :5] for k, v in X.items()}
    )  # the prompt is in the graph


@pytest.mark.slow
@pytest.mark.parametrize("method", ["prompt", "bigru"])
def test_combines_with_layerwise_rates_accumulation_and_mixed_precision(
    method, tmp_path, tiny_bert_dir
):
    model = (
        {"prompt_tuning": {"tokens": 4}}
        if method == "prompt"
        else {"backbone": "bigru", "rnn": {"units": 8, "vocabulary": str(tiny_bert_dir)}}
    )
    raw = tiny_run_config(
        tmp_path,
        tiny_bert_dir,
        model=model,
        training={
            "epochs": 2,
            "learning_rate": 1e-2,
            "layerwise_lr_decay": 0.8,
            "gradient_accumulation_steps": 2,
            "precision": "mixed_bfloat16",
        },
        export={"enabled": False},
    )
    result = run(config_from_dict(raw), verbose=0)
    assert result.model.dtype_policy.name == "mixed_bfloat16"
    assert np.isfinite(result.metrics["train"]["history"]["loss"]).all()
    steps = [json.loads(line) for line in (result.run_dir / "steps.jsonl").read_text().splitlines()]
    rates = [s["lr"] for s in steps]
    # Accumulation: the schedule moves once per applied update, every second batch.
    head = [r["head"] for r in rates]
    assert len(steps) == 10 and len(set(head)) == 5 and head == sorted(head, reverse=True)
    if method == "bigru":  # layer-wise decay: the embeddings learn at 0.8 of the head's rate
        assert all(r["embeddings"] == pytest.approx(0.8 * r["head"], rel=1e-3) for r in rates)
    else:  # the frozen backbone's groups learn nothing; the prompt and the head do
        assert all(r["layer_0"] == r["layer_1"] == r["embeddings"] == 0.0 for r in rates)
        assert all(r["head"] > 0 for r in rates)
