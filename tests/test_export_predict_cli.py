from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from kerasft._compat import tf
from kerasft.config import config_from_dict
from kerasft.errors import DataError
from kerasft.export import main as export_main
from kerasft.predict import predict_file
from kerasft.training.runner import run
from tests.conftest import tiny_run_config

# Trains with `precision: auto`: `make test-bf16` reruns this module in mixed_bfloat16.
pytestmark = pytest.mark.precision

TEXTS = ["good movie", "the plot was boring", "", "very great fun film"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert_dir):
    root = tmp_path_factory.mktemp("trained")
    raw = tiny_run_config(root, tiny_bert_dir, copies=2, training={"epochs": 1})
    return run(config_from_dict(raw), verbose=0)


def probabilities(export_dir, texts):
    serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    return serve(text=tf.constant(texts))["probabilities"].numpy()


@pytest.mark.slow
def test_reexport_writes_a_new_version_with_the_same_answers(trained, capsys):
    assert export_main(["--run", str(trained.run_dir)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    second = line.removeprefix("export_dir=")
    assert second.endswith("/2")
    np.testing.assert_allclose(
        probabilities(second, TEXTS), probabilities(trained.export_dir, TEXTS), atol=1e-6
    )
    card = (trained.export_dir.parent / "README.md").read_text()
    assert "Latest version: **2**" in card and "| 1 |" in card


@pytest.mark.slow
def test_a_bfloat16_export_computes_in_bfloat16_and_says_so(trained, capsys, tmp_path):
    # In a directory of its own: the other tests predict with the run's newest version.
    args = ["--run", str(trained.run_dir), "--dir", str(tmp_path)]
    assert export_main([*args, "--set", "export.precision=bfloat16"]) == 0
    export_dir = capsys.readouterr().out.strip().splitlines()[-1].removeprefix("export_dir=")
    assert Path(export_dir).parent.parent == tmp_path
    meta = json.loads((Path(export_dir) / "assets.extra" / "kerasft.json").read_text())
    assert meta["precision"] == "bfloat16"
    bf16, fp32 = probabilities(export_dir, TEXTS), probabilities(trained.export_dir, TEXTS)
    assert bf16.dtype == np.float32
    # bfloat16 keeps 8 bits of mantissa: close to the float32 answers, but not the same
    np.testing.assert_allclose(bf16, fp32, atol=0.05)
    assert not np.array_equal(bf16, fp32)
    assert "| computes in | bfloat16 |" in (Path(export_dir).parent / "README.md").read_text()


def test_a_bfloat16_export_refuses_onnx_in_one_line(trained, capsys):
    before = sorted(p.name for p in trained.export_dir.parent.iterdir())
    code = export_main(
        ["--run", str(trained.run_dir), "--onnx", "--set", "export.precision=bfloat16"]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "export.precision: bfloat16` is for the SavedModel" in err[0]
    assert "--set export.precision=float32" in err[0]
    # The section's check across keys names the file and the overrides that fed it.
    assert (
        f"in {trained.run_dir / 'config.yaml'} with --set export.precision=bfloat16, export.onnx=true"
        in err[0]
    )
    assert sorted(p.name for p in trained.export_dir.parent.iterdir()) == before
    code = export_main(["--run", str(trained.run_dir), "--set", "export.enabled=false"])
    assert code == 2 and capsys.readouterr().err.strip().startswith(
        "error: --set export.enabled=false: kerasft.export writes an export"
    )
    assert sorted(p.name for p in trained.export_dir.parent.iterdir()) == before


def test_reexport_of_something_else_is_a_one_line_error(tmp_path, capsys):
    assert export_main(["--run", str(tmp_path)]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith(f"error: {tmp_path} is not a finished kerasft run")
    )


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".tsv"])
def test_predict_streams_a_file_into_labels_and_probabilities(trained, tmp_path, suffix):
    source = tmp_path / "in.csv"
    rows = [{"id": str(i), "text": TEXTS[i % len(TEXTS)]} for i in range(23)]
    with source.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "text"])
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / f"out{suffix}"
    # Windows of 2 batches of 5: three windows read one after another (streaming), each sorted.
    n = predict_file(trained.export_dir.parent, source, out, batch_size=5, sort_window=2)
    assert n == 23 and not list(tmp_path.glob("*.partial"))
    if suffix == ".jsonl":
        records = [json.loads(line) for line in out.read_text().splitlines()]
    else:
        with out.open() as handle:
            delimiter = "\t" if suffix == ".tsv" else ","
            records = [
                {**r, "probabilities": json.loads(r["probabilities"])}
                for r in csv.DictReader(handle, delimiter=delimiter)
            ]
    assert [r["id"] for r in records] == [str(i) for i in range(23)]
    expected = probabilities(trained.export_dir, [r["text"] for r in rows])
    got = np.array([[r["probabilities"]["neg"], r["probabilities"]["pos"]] for r in records])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert [r["label"] for r in records] == [("neg", "pos")[i] for i in expected.argmax(-1)]


def test_ctrl_c_stops_predict_after_its_batch_and_leaves_no_partial_file(
    trained, tmp_path, capfd, monkeypatch, ctrl_c
):
    """As in training: a Ctrl-C raised inside the model's call could land in Python code
    TensorFlow's runtime had called; the batch now ends first."""
    import kerasft.predict as predict_module
    from kerasft.cli import cli_main

    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS[i % 2] for i in range(20)) + "\n")
    batches = []

    class CtrlCInFirstBatch:
        def __init__(self, predictor):
            self.predictor = predictor

        def __getattr__(self, name):
            return getattr(self.predictor, name)

        def __call__(self, texts, pairs):
            batches.append(len(texts))
            if len(batches) == 1:
                ctrl_c()
            return self.predictor(texts, pairs)

    real = predict_module.open_predictor
    monkeypatch.setattr(predict_module, "open_predictor", lambda p: CtrlCInFirstBatch(real(p)))
    command = cli_main(
        lambda argv: predict_file(trained.export_dir, source, tmp_path / "out.jsonl", batch_size=5)
    )
    assert command([]) == 130
    assert batches == [5]  # the batch ran to its end; no other began
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]
    err = capfd.readouterr().err
    assert "Ctrl-C: stopping after this step" in err
    assert err.strip().splitlines()[-1] == "interrupted (Ctrl-C)."


def test_predict_sorts_each_window_by_token_length_and_keeps_the_input_order(
    trained, tmp_path, monkeypatch
):
    from kerasft.serving.predictors import SavedModelPredictor

    words = "good bad plot film fun boring great movie".split()
    texts = [" ".join(words[: 1 + (i * 5) % 8]) for i in range(30)]  # lengths 1..8, shuffled
    source = tmp_path / "in.csv"
    source.write_text("text\n" + "".join(f"{t}\n" for t in texts))
    calls = []
    real = SavedModelPredictor.outputs
    monkeypatch.setattr(
        SavedModelPredictor,
        "outputs",
        lambda self, t, p: calls.append(t) or real(self, t, p),
    )
    results = {}
    for window in (1, 3):
        calls.clear()
        out = tmp_path / f"out{window}.jsonl"
        predict_file(trained.export_dir, source, out, batch_size=4, sort_window=window)
        results[window] = [json.loads(line) for line in out.read_text().splitlines()]
        batches = [[len(t.split()) for t in call] for call in calls]
        assert sum(map(len, batches)) == 30
        if window == 3:  # windows of 12, 12 and 6 rows, each cut into length-sorted batches
            assert [len(b) for b in batches] == [4, 4, 4, 4, 4, 4, 4, 2]
            for first in (0, 3, 6):
                window_lengths = sum(batches[first : first + 3], [])
                assert window_lengths == sorted(window_lengths)
        else:
            assert sum(batches, []) == [len(t.split()) for t in texts]  # file order
    assert [r["text"] for r in results[3]] == texts
    for a, b in zip(results[1], results[3], strict=True):
        assert a["label"] == b["label"]
        for name in a["probabilities"]:
            assert abs(a["probabilities"][name] - b["probabilities"][name]) < 1e-5


def test_predict_names_a_missing_column(trained, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"sentence": "good"}\n')
    with pytest.raises(
        DataError, match=r"in.jsonl:1: no `text` field \(fields present: sentence\)"
    ):
        predict_file(trained.export_dir, source, tmp_path / "out.jsonl")
    assert list(tmp_path.glob("out.jsonl*")) == []


def test_predict_names_a_wrong_encoding(trained, tmp_path):
    source = tmp_path / "in.csv"
    source.write_bytes("text\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"in.csv:2: bytes that are not valid utf-8.*--encoding"):
        predict_file(trained.export_dir, source, tmp_path / "out.csv")
    assert predict_file(trained.export_dir, source, tmp_path / "out.csv", encoding="latin-1") == 1
    source.write_bytes("text\ncafé\n".encode("utf-16"))
    with pytest.raises(DataError, match=r"UTF-16 byte-order mark.*Pass `--encoding utf-16`"):
        predict_file(trained.export_dir, source, tmp_path / "out2.csv")
