"""Each task trains a tiny random BERT end to end, writes its metrics and exports a model that reloads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kerasft._compat import tf
from kerasft.config import config_from_dict
from kerasft.tasks import TASKS, evaluate, tune_thresholds
from kerasft.training.runner import run
from tests.conftest import NEGATIVE, POSITIVE

# Trains with `precision: auto`: `make test-bf16` reruns this module in mixed_bfloat16.
pytestmark = pytest.mark.precision

IDS = {
    "input_ids": tf.constant([[2, 5, 6, 3, 0], [2, 8, 9, 10, 3]]),
    "attention_mask": tf.constant([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]),
    "token_type_ids": tf.zeros((2, 5), tf.int32),
}


def config(tiny_config, task, data, **training):
    tiny_config["task"] = task
    tiny_config["data"].update(data)
    tiny_config["training"].update(training)
    return config_from_dict(tiny_config)


def serve(export_dir):
    return tf.saved_model.load(str(export_dir)).signatures["predict_ids"](**IDS)


def serve_text(export_dir, **texts):
    signature = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    return signature(**{k: tf.constant(v) for k, v in texts.items()})


def held_out_test(cfg):
    """The run's test split, read again the way training read it (seeded carve-outs)."""
    from kerasft.data import load_splits

    return load_splits(cfg.data, cfg.training.seed, TASKS[cfg.task]).test


@pytest.mark.slow
def test_sentence_pairs(tiny_config, tmp_path):
    rows = [f"{p},{n},diff" for p, n in zip(POSITIVE, NEGATIVE, strict=True)]
    rows += [f"{p},{q},same" for p, q in zip(POSITIVE, POSITIVE[1:] + POSITIVE[:1], strict=True)]
    (tmp_path / "pairs.csv").write_text("\n".join(["a,b,label", *rows, *rows]) + "\n")
    cfg = config(
        tiny_config,
        "classification",
        {"train": str(tmp_path / "pairs.csv"), "text_column": "a", "text_pair_column": "b"},
        precision="float32",  # the export then computes exactly what evaluation did
    )
    result = run(cfg, verbose=0)
    test = result.metrics["test"]
    assert test["f1"] == test["per_class"]["same"]["f1"]  # binary F1 is the second class's
    # The export reads both texts: its labels on the raw test pairs reproduce the test metrics.
    split = held_out_test(cfg)
    labels = serve_text(result.export_dir, text=split.texts, text_pair=split.pairs)["label"]
    truth = np.array(["diff", "same"])[split.targets]
    predicted = np.array([label.decode() for label in labels.numpy()])
    assert test["examples"] == len(split) and test["accuracy"] == pytest.approx(
        (predicted == truth).mean()
    )
    # kerasft.predict names the missing second text (once a TypeError from the signature)
    from kerasft.errors import DataError
    from kerasft.predict import predict_file

    source = tmp_path / "in.csv"
    source.write_text("a,b\ngood movie,bad movie\n")
    with pytest.raises(DataError, match="takes sentence pairs .* pass --text-pair-column"):
        predict_file(result.export_dir, source, tmp_path / "out.csv", text_column="a")
    assert not list(tmp_path.glob("out.csv*"))
    out = tmp_path / "out.csv"
    assert predict_file(result.export_dir, source, out, text_column="a", text_pair_column="b") == 1


@pytest.mark.slow
def test_multi_label(tiny_config, tmp_path):
    lines = [
        json.dumps({"text": t, "label": ["pos", "movie"] if "movie" in t else ["pos"]})
        for t in POSITIVE
    ]
    lines += [json.dumps({"text": t, "label": ["movie"] if "movie" in t else []}) for t in NEGATIVE]
    (tmp_path / "ml.jsonl").write_text("\n".join(lines * 2) + "\n")
    result = run(
        config(tiny_config, "multi_label", {"train": str(tmp_path / "ml.jsonl")}), verbose=0
    )
    test = result.metrics["test"]
    assert {"micro_f1", "macro_f1", "subset_accuracy", "per_label"} <= set(test)
    thresholds = [test["per_label"][n]["threshold"] for n in ("movie", "pos")]
    out = serve(result.export_dir)
    np.testing.assert_allclose(
        out["probabilities"].numpy(), tf.sigmoid(result.model(IDS)).numpy(), atol=0.02
    )  # independent sigmoids (the model trained in bfloat16 where native; the export is float32)
    np.testing.assert_allclose(out["thresholds"].numpy(), thresholds)
    assert out["predicted"].dtype == tf.bool
    np.testing.assert_array_equal(
        out["predicted"].numpy(), out["probabilities"].numpy() >= np.array(thresholds)
    )


@pytest.mark.slow
def test_regression_with_target_scaling(tiny_config, tmp_path):
    rows = [f"{t},{4.0 + i / 10}" for i, t in enumerate(POSITIVE)]
    rows += [f"{t},{1.0 + i / 10}" for i, t in enumerate(NEGATIVE)]
    (tmp_path / "reg.csv").write_text("\n".join(["text,score", *rows, *rows]) + "\n")
    cfg = config(
        tiny_config,
        "regression",
        {"train": str(tmp_path / "reg.csv"), "label_column": "score", "target_scaling": "standard"},
        precision="float32",
    )
    result = run(cfg, verbose=0)
    from kerasft.data import load_splits

    train = load_splits(cfg.data, cfg.training.seed, TASKS["regression"]).train.targets
    mean, std = train.mean(), train.std()
    # The model learns standardised targets; the export maps them back to the original scale.
    scores = serve(result.export_dir)["score"].numpy()
    raw = result.model(IDS, training=False).numpy()
    np.testing.assert_allclose(scores, raw * std + mean, rtol=1e-5)
    # The test metrics are on the original scale too: the export's scores reproduce them.
    split = held_out_test(cfg)
    served = serve_text(result.export_dir, text=split.texts)["score"].numpy()
    test = result.metrics["test"]
    assert test["mse"] == pytest.approx(np.mean((served - split.targets) ** 2), rel=1e-4)
    assert test["pearson"] == pytest.approx(np.corrcoef(served, split.targets)[0, 1], abs=1e-4)


CONLL = """good O
film B-X
was O

the O
movie B-X
plot I-X
was O
fun O
"""


@pytest.mark.slow
def test_token_classification(tiny_config, tmp_path):
    (tmp_path / "ner.conll").write_text((CONLL + "\n") * 12)
    cfg = config(
        tiny_config,
        "token_classification",
        {"train": str(tmp_path / "ner.conll")},
        epochs=3,
        learning_rate=5e-3,
    )
    result = run(cfg, verbose=0)
    test = result.metrics["test"]
    assert {"precision", "recall", "f1", "per_type", "token_accuracy"} <= set(test)
    assert test["f1"] > 0.5  # entities this regular are learnt even by a tiny model
    out = serve(result.export_dir)
    assert out["probabilities"].shape == (2, 5, 3)
    assert {t.decode() for t in out["tag"].numpy().ravel()} <= {"B-X", "I-X", "O"}
    signature = tf.saved_model.load(str(result.export_dir)).signatures["serving_default"]
    assert signature(text=tf.constant([], tf.string))["probabilities"].shape[0] == 0

    # kerasft.predict tags words from the export's contract (task, tags, max length 16).
    from kerasft.predict import predict_file

    words = ["the", "movie", "plot", "was", "fun"] * 5  # 25 words: past max_length's 14
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"text": " ".join(words)}) + "\n")
    predict_file(result.export_dir, source, tmp_path / "out.jsonl")
    (record,) = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(record["tags"]) == 25
    assert set(record["tags"][:14]) <= {"B-X", "I-X", "O"} and record["tags"][14:] == [None] * 11
    assert all(e["type"] == "X" for e in record["entities"])


def test_monitor_must_fit_the_task(tiny_config):
    from kerasft.errors import ConfigError

    tiny_config["task"] = "regression"
    tiny_config["training"]["monitor"] = "val_pearsn"
    with pytest.raises(
        ConfigError, match=r"not reported for task `regression`. Did you mean `val_pearson`"
    ):
        config_from_dict(tiny_config)


def test_thresholds_maximise_per_label_f1():
    probs = np.array([[0.9, 0.2], [0.7, 0.35], [0.2, 0.3], [0.1, 0.8]])
    hot = np.array([[1, 0], [1, 1], [0, 1], [0, 1]])
    thresholds = tune_thresholds(probs, hot)
    assert 0.2 < thresholds[0] <= 0.7 and thresholds[1] <= 0.3
    assert (
        evaluate(TASKS["multi_label"], probs, hot, ("a", "b"), thresholds=thresholds)["micro_f1"]
        == 1.0
    )


def test_regression_metrics_on_original_scale():
    scores = evaluate(
        TASKS["regression"],
        np.array([0.0, 1.0, -1.0]),
        np.array([0.0, 1.0, -1.0]),
        (),
        scaling=(3.0, 2.0),
    )
    assert scores["pearson"] == pytest.approx(1.0) and scores["mse"] == 0.0
    off = evaluate(
        TASKS["regression"],
        np.array([0.5, 0.5, 0.5]),
        np.array([0.0, 0.0, 0.0]),
        (),
        scaling=(3.0, 2.0),
    )
    assert off["mse"] == pytest.approx(1.0)  # 0.5 * std 2 = 1 on the original scale


def test_tag_words_gives_word_tags_and_character_spans(tiny_bert_dir):
    from kerasft.models import load_tokenizer
    from kerasft.predict import tag_words

    tokenizer = load_tokenizer(tiny_bert_dir)
    names = ("B-X", "I-X", "O")
    vocab = tokenizer.get_vocab()
    # A stand-in model: "movie" and "film" start an entity, "plot" continues one, the rest is O.
    table = {vocab["movie"]: 0, vocab["film"]: 0, vocab["plot"]: 1}

    def predict(x):
        return np.vectorize(lambda i: table.get(int(i), 2))(x["input_ids"])

    text = "the  movie plot, was fun film"
    (result,) = tag_words([text], tokenizer, predict, names)
    assert result["tags"] == ["O", "B-X", "I-X", "O", "O", "B-X"]
    assert [(e["type"], e["text"]) for e in result["entities"]] == [
        ("X", "movie plot,"),
        ("X", "film"),
    ]
    first = result["entities"][0]
    assert text[first["start"] : first["end"]] == "movie plot,"
