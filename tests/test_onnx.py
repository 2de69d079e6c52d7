"""ONNX export: the models beside each version, their agreement with the SavedModel, and prediction."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from kerasft._compat import tf
from kerasft.config import config_from_dict
from kerasft.predict import predict_file
from kerasft.train import run
from tests.conftest import REPO, tiny_run_config
from tests.parity_corpus import parity_corpus

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_bert_dir):
    root = tmp_path_factory.mktemp("onnx")
    return run(
        config_from_dict(tiny_run_config(root, tiny_bert_dir, export={"onnx": True})), verbose=0
    )


def _tokenize(directory, texts, max_length=16):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    enc = tokenizer(
        texts, truncation=True, max_length=max_length, padding=True, return_tensors="np"
    )
    return {k: enc[k].astype(np.int32) for k in ("input_ids", "token_type_ids", "attention_mask")}


@pytest.mark.slow
def test_onnx_matches_the_savedmodel_on_the_parity_corpus(exported):
    import onnx

    from kerasft.serving.onnx import runner

    directory = exported.export_dir.parent / "onnx" / exported.export_dir.name
    assert {"model.onnx", "model.int8.onnx", "labels.txt", "kerasft.json", "vocab.txt"} <= {
        p.name for p in directory.iterdir()
    }
    model = onnx.load(str(directory / "model.onnx"))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert {i.name for i in model.graph.input} == {"input_ids", "token_type_ids", "attention_mask"}
    serve = tf.saved_model.load(str(exported.export_dir)).signatures["predict_ids"]
    fp32, int8 = runner(directory / "model.onnx"), runner(directory / "model.int8.onnx")
    corpus = parity_corpus(n=256)
    for start in range(0, len(corpus), 64):
        x = _tokenize(directory, corpus[start : start + 64])
        expected = serve(**{k: tf.constant(v) for k, v in x.items()})
        got = fp32(x)
        np.testing.assert_allclose(got["probabilities"], expected["probabilities"], atol=1e-4)
        np.testing.assert_array_equal(got["label_id"], expected["label_id"].numpy())
        quantised = int8(x)["probabilities"]
        np.testing.assert_allclose(quantised.sum(-1), 1.0, atol=1e-5)
        assert np.abs(quantised - expected["probabilities"].numpy()).max() < 0.1


@pytest.mark.slow
def test_onnx_figures_are_measured_and_in_the_model_card(exported):
    meta = json.loads((exported.export_dir / "assets.extra" / "kerasft.json").read_text())["onnx"]
    assert meta["examples"] == 12 and meta["opset"] >= 17  # the whole test split (20% of 60)
    assert meta["onnx_max_abs_diff"] < 1e-4
    assert meta["onnx_accuracy"] == meta["savedmodel_accuracy"]
    assert (
        meta["int8_mb"] > 0
    )  # (smaller only for real sizes: a hidden-32 model is mostly overhead)
    assert all(meta[f"{m}_ex_per_s"] > 0 for m in ("savedmodel", "onnx", "onnx_int8"))
    card = (exported.export_dir.parent / "README.md").read_text()
    assert "## ONNX" in card and "`model.int8.onnx`" in card


@pytest.mark.slow
@pytest.mark.parametrize("model_file", ["model.onnx", "model.int8.onnx"])
def test_predict_runs_an_onnx_model_like_the_savedmodel(exported, tmp_path, model_file):
    texts = parity_corpus(n=40)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    onnx_path = exported.export_dir.parent / "onnx" / exported.export_dir.name / model_file
    predict_file(onnx_path, source, tmp_path / "onnx.jsonl", batch_size=8)
    predict_file(exported.export_dir, source, tmp_path / "saved.jsonl", batch_size=8)
    onnx_rows = [json.loads(line) for line in (tmp_path / "onnx.jsonl").read_text().splitlines()]
    saved_rows = [json.loads(line) for line in (tmp_path / "saved.jsonl").read_text().splitlines()]
    assert [r["text"] for r in onnx_rows] == texts
    tolerance = 1e-4 if model_file == "model.onnx" else 0.1
    for a, b in zip(onnx_rows, saved_rows, strict=True):
        for label in ("neg", "pos"):
            assert abs(a["probabilities"][label] - b["probabilities"][label]) < tolerance
        if model_file == "model.onnx":
            assert a["label"] == b["label"]


def test_predict_names_a_file_that_is_not_a_kerasft_onnx_model(tmp_path):
    (tmp_path / "in.csv").write_text("text\nhello\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kerasft.predict",
            "--model",
            str(tmp_path / "model.onnx"),
            "--input",
            str(tmp_path / "in.csv"),
            "--output",
            str(tmp_path / "out.csv"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip().splitlines()[-1].startswith(f"error: --model {tmp_path / 'model.onnx'}")
    )
    assert not (tmp_path / "out.csv").exists()
