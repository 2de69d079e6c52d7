"""`task: seq2seq`: config and data checks, the loss, layer groups, a run that learns, and its
export (strings in, generated strings out, equal to the in-memory model's `generate`).

Everything is offline: the tiny T5 has a SentencePiece vocabulary trained here on the
date task of bench/dates.py, and fresh weights (`model.weights: random`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kerasft._compat import tf
from kerasft.config import config_from_dict
from kerasft.errors import ConfigError, DataError
from tests.conftest import read_json
from tests.seq2seq_fixtures import seq2seq_config


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": {"train": "x.jsonl"}}, "needs `data.target_column`"),
        ({"generation": {"num_beams": 0}}, "generation.num_beams"),
        ({"export": {"onnx": True}}, "`export.onnx` does not apply to `task: seq2seq`"),
        (
            {"data": {"train": "x.jsonl", "target_column": "t", "text_pair_column": "b"}},
            "text_pair_column",
        ),
        ({"distill": {"teacher": "runs/x"}}, "`distill` does not apply"),
    ],
)
def test_config_refuses_what_seq2seq_cannot_do(change, message):
    raw = {"name": "s", "task": "seq2seq", "data": {"train": "x.jsonl", "target_column": "t"}}
    for key, value in change.items():
        raw[key] = value
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_target_column_belongs_to_seq2seq():
    with pytest.raises(ConfigError, match="`data.target_column` applies to `task: seq2seq`"):
        config_from_dict({"name": "s", "data": {"train": "x.csv", "target_column": "t"}})


def test_empty_target_names_the_line(tmp_path):
    from kerasft.data.splits import load_splits
    from kerasft.tasks import TASKS

    path = tmp_path / "d.jsonl"
    rows = [{"text": "one", "target": "1"}, {"text": "two", "target": "  "}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = config_from_dict(
        {"name": "s", "task": "seq2seq", "data": {"train": str(path), "target_column": "target"}}
    )
    with pytest.raises(DataError, match=r"d.jsonl:2: empty target text in column `target`"):
        load_splits(cfg.data, 0, TASKS["seq2seq"])


def test_encoding_prefixes_and_truncates_like_the_tokenizer(dates):
    from transformers import AutoTokenizer

    from kerasft.data.splits import Split
    from kerasft.data.tokenize import encode_seq2seq

    tokenizer = AutoTokenizer.from_pretrained(str(dates["backbone"]))
    split = Split(
        ["March 3, 2021", "the 1st of May, 1999"],
        np.array(["2021-03-03", "1999-05-01"], object),
        "s",
    )
    encoded = encode_seq2seq(tokenizer, split, 8, 6, prefix="date: ")
    expected = tokenizer(["date: " + t for t in split.texts], truncation=True, max_length=8)[
        "input_ids"
    ]
    assert encoded.features["input_ids"].tolist() == [i for ids in expected for i in ids]
    targets = tokenizer(text_target=list(split.targets), truncation=True, max_length=6)["input_ids"]
    assert encoded.targets.tolist() == [i for ids in targets for i in ids]
    assert encoded.target_lengths.tolist() == [6, 6] and targets[0][-1] == tokenizer.eos_token_id


def test_loss_is_the_mean_over_target_tokens_with_smoothing():
    from kerasft.tasks.specs import MaskedTokenCrossentropy

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 5)).astype(np.float32)
    labels = np.array([[1, 4, -100], [2, -100, -100]])
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    for smoothing in (0.0, 0.1):
        per_token = [
            -(1 - smoothing) * log_p[b, t, labels[b, t]] - smoothing * log_p[b, t].mean()
            for b, t in ((0, 0), (0, 1), (1, 0))
        ]
        got = MaskedTokenCrossentropy(smoothing)(tf.constant(labels), tf.constant(logits))
        np.testing.assert_allclose(float(got), np.mean(per_token), rtol=1e-5)


def test_layer_groups_stack_the_decoder_above_the_encoder(dates):
    from kerasft.models import load_tokenizer
    from kerasft.models.seq2seq import build_seq2seq, load_seq2seq
    from kerasft.peft.freezing import freeze
    from kerasft.training.layer_groups import depth_groups, layer_depths

    cfg = config_from_dict(seq2seq_config(Path("."), dates))
    backbone = load_seq2seq(cfg.model, dates["backbone"], load_tokenizer(dates["backbone"]))
    model = build_seq2seq(backbone)
    groups = depth_groups(model)
    assert set(groups.values()) == {
        "embeddings",
        "encoder_0",
        "encoder_1",
        "decoder_0",
        "decoder_1",
        "head",
    }
    depths = layer_depths(model)
    by_group = {g: depths[n] for n, g in groups.items()}
    assert by_group["encoder_1"] < by_group["decoder_0"] < by_group["decoder_1"] < by_group["head"]
    freeze(model, embeddings=True, bottom_layers=2)  # the whole encoder and the embeddings
    trainable = {groups[v.name] for v in model.trainable_variables}
    assert trainable == {"decoder_0", "decoder_1", "head"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, dates):
    from kerasft.training.runner import run

    root = tmp_path_factory.mktemp("seq2seq-run")
    raw = seq2seq_config(root, dates, evaluation={"report": True}, training={"epochs": 3})
    raw["generation"]["xla"] = True  # the export's parity is checked against XLA's texts
    cfg = config_from_dict(raw)
    return run(cfg, verbose=0)


@pytest.mark.slow
def test_a_run_learns_scores_and_records_generated_text(trained):
    metrics = trained.metrics
    history = metrics["train"]["history"]
    assert history["loss"][-1] < history["loss"][0] / 2, history["loss"]
    for key in ("bleu", "chrf", "exact_match", "rouge1", "rouge2", "rougeLsum", "loss"):
        assert key in metrics["test"] and key in metrics["validation"], key
    assert "val_bleu" in history and len(history["val_bleu"]) == 3
    assert history["val_chrf"][-1] > history["val_chrf"][0] + 3, history["val_chrf"]
    records = [json.loads(line) for line in (trained.run_dir / "predictions" / "test.jsonl").open()]
    assert len(records) == 48 and set(records[0]) == {"source", "reference", "generated", "chrf"}
    page = trained.report.read_text()
    worst = min(records, key=lambda r: r["chrf"])  # the page lists the lowest-scored ones
    assert "worst-scored generations" in page and worst["source"].split()[0] in page
    info = read_json(trained.run_dir / "export.json")
    assert info["task"] == "seq2seq" and info["generation"]["max_new_tokens"] == 12


@pytest.mark.slow
def test_export_takes_strings_and_generates_what_the_model_generates(trained):
    import tensorflow_text  # noqa: F401  (a fresh process needs its ops to load the export)

    loaded = tf.saved_model.load(str(trained.export_dir))
    assert set(loaded.signatures) == {"serving_default", "predict_ids"}
    records = [json.loads(line) for line in (trained.run_dir / "predictions" / "test.jsonl").open()]
    served = loaded.signatures["serving_default"](text=tf.constant([r["source"] for r in records]))
    texts = [t.decode() for t in served["text"].numpy()]
    assert texts == [r["generated"] for r in records]  # parity: every one of them
    empty = loaded.signatures["serving_default"](text=tf.constant([], tf.string))
    assert empty["text"].shape == (0,)
    ids = tf.constant([[5, 6, 7, 1], [5, 6, 1, 0]], tf.int32)
    out = loaded.signatures["predict_ids"](
        input_ids=ids, attention_mask=tf.cast(ids != 0, tf.int32)
    )
    assert out["ids"].dtype == tf.int32 and out["ids"].shape[0] == 2
    meta = read_json(trained.export_dir / "assets.extra" / "kerasft.json")
    assert meta["signature"] == "text" and meta["generation"]["num_beams"] == 1
    assert (trained.export_dir / "assets.extra" / "tf_serving_warmup_requests").is_file()


@pytest.mark.parametrize("family", ["t5", "marian"])
def test_in_graph_codecs_tokenize_and_decode_as_the_tokenizer(family, dates, marian):
    from kerasft.models import load_tokenizer
    from kerasft.serving.text_codecs import codec_for

    tokenizer = load_tokenizer(dates["backbone"] if family == "t5" else marian)
    codec = codec_for(tokenizer, 10)
    texts = ["the 3rd of March, 2021", "Ünïcode & ☃ snow", "", "May 1, 1999 " * 4]
    if family == "marian":
        texts.append(">>fr<< March 3, 2021")
    ids, mask = codec.encode(tf.constant(texts))
    expected = tokenizer(texts, truncation=True, max_length=10, padding=True)
    assert ids.numpy().tolist() == expected["input_ids"]
    assert mask.numpy().tolist() == expected["attention_mask"]
    generated = np.array(expected["input_ids"], np.int32)
    decoded = [t.decode() for t in codec.decode(tf.constant(generated)).numpy()]
    assert decoded == [tokenizer.decode(row, skip_special_tokens=True).strip() for row in generated]


def test_a_source_longer_than_the_model_takes_is_refused(tmp_path, dates, marian):
    from kerasft.errors import ModelError
    from kerasft.training.runner import run

    raw = seq2seq_config(tmp_path, dates, model={"backbone": str(marian), "weights": "random"})
    raw["data"]["max_length"] = 128
    with pytest.raises(
        ModelError, match=r"`data.max_length: 128` is longer than .* \(64 positions\)"
    ):
        run(config_from_dict(raw), verbose=0)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("metrics.json"))


@pytest.mark.slow
def test_predict_in_a_fresh_process_and_reexport(trained, tmp_path):
    from tests.test_commands import command

    records = [json.loads(line) for line in (trained.run_dir / "predictions" / "test.jsonl").open()]
    source = tmp_path / "dates.jsonl"
    source.write_text("".join(json.dumps({"text": r["source"]}) + "\n" for r in records[:20]))
    out = tmp_path / "out.csv"
    done = command(
        "predict",
        "--model",
        str(trained.export_dir.parent),
        "--input",
        str(source),
        "--output",
        str(out),
    )
    assert "rows=20" in done.stdout
    import pandas as pd

    written = pd.read_csv(out, keep_default_na=False, dtype=str)
    assert written["text"].tolist() == [r["source"] for r in records[:20]]
    assert written["generated"].tolist() == [r["generated"] for r in records[:20]]
    from kerasft.training.exports import reexport  # its command is tested on the encoder tasks

    target = reexport(trained.run_dir, str(tmp_path / "again"))
    assert (target / "saved_model.pb").is_file() and (target / "assets" / "spiece.model").is_file()


def test_lora_on_t5_trains_only_the_adapters_and_merges_exactly(dates):
    from kerasft.models import load_tokenizer
    from kerasft.models.seq2seq import build_seq2seq, load_seq2seq
    from kerasft.peft.lora import merge_lora

    raw = seq2seq_config(
        Path("."), dates, model={"weights": "random", "lora": {"targets": ["q", "v"]}}
    )
    cfg = config_from_dict(raw)
    backbone = load_seq2seq(cfg.model, dates["backbone"], load_tokenizer(dates["backbone"]))
    model = build_seq2seq(backbone, cfg.model.lora)
    names = [v.name for v in model.trainable_variables]
    adapters = [n for n in names if "lora_" in n]
    # 2 encoder layers x 1 attention + 2 decoder layers x 2 attentions, q and v each: 12 adapters;
    # beside them only T5's relative position bias of the first encoder and decoder block.
    assert len(adapters) == 2 * 12
    assert (
        len([n for n in names if "relative_attention_bias" in n]) == 2 == len(names) - len(adapters)
    )
    for v in model.trainable_variables:  # an update, so merging has something to fold in
        v.assign(tf.random.normal(v.shape, stddev=0.1))
    ids = tf.constant([[5, 6, 7, 1]], tf.int32)
    x = {"input_ids": ids, "attention_mask": tf.ones_like(ids), "labels": ids}
    before = model(x).numpy()
    assert merge_lora(model, cfg.model.lora.targets) == 12
    np.testing.assert_allclose(model(x).numpy(), before, atol=1e-4)
