"""ONNX export: the models beside each version, their agreement with the SavedModel, and prediction."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kerasft._compat import tf
from kerasft.config import config_from_dict
from kerasft.predict import predict_file
from kerasft.training.runner import run
from tests.conftest import tiny_run_config
from tests.parity_corpus import parity_corpus

# Trains with `precision: auto`: `make test-bf16` reruns this module in mixed_bfloat16.
pytestmark = pytest.mark.precision

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_bert_dir):
    root = tmp_path_factory.mktemp("onnx")
    # float32: the trace test hands the in-memory model to the TFLite converter, which takes
    # float32 graphs only (runs trained in bfloat16 export through a float32 rebuild: test_bf16.py).
    raw = tiny_run_config(
        root, tiny_bert_dir, training={"precision": "float32"}, export={"onnx": True}
    )
    return run(config_from_dict(raw), verbose=0)


@pytest.fixture(scope="module")
def plain_graph(exported, tmp_path_factory):
    """The tiny model's plain tf2onnx graph (`export.onnx_optimize: false`)."""
    from kerasft.training.exports import reexport

    export = reexport(
        exported.run_dir,
        str(tmp_path_factory.mktemp("plain")),
        onnx=True,
        overrides=["export.onnx_optimize=false"],
    )
    return export.parent / "onnx" / export.name / "model.onnx"


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
    assert "fused for onnxruntime (" in card and " Attention" in card


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


def test_predict_names_a_file_that_is_not_a_kerasft_onnx_model(tmp_path, capsys):
    from kerasft.predict import main

    (tmp_path / "in.csv").write_text("text\nhello\n")
    args = ["--model", str(tmp_path / "model.onnx"), "--input", str(tmp_path / "in.csv")]
    assert main([*args, "--output", str(tmp_path / "out.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1].startswith(f"error: --model {tmp_path / 'model.onnx'}")
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        ("junk", "model.onnx: cannot load this ONNX model ([ONNXRuntimeError]"),
        ("foreign", "model.onnx: the model takes `x`, which kerasft.json beside it does not list"),
        ("meta", "kerasft.json: cannot read it (Expecting"),
    ],
)
def test_a_damaged_onnx_export_is_one_line(exported, tmp_path, capsys, damage, fragment):
    """Each was a traceback from onnxruntime or json."""
    import shutil

    from onnx import TensorProto, helper

    from kerasft.predict import main
    from tests.test_hostile import one_error_line

    version = tmp_path / "onnx" / "1"
    shutil.copytree(exported.export_dir.parent / "onnx" / exported.export_dir.name, version)
    if damage == "junk":
        (version / "model.onnx").write_bytes(b"not a model")
    elif damage == "meta":
        (version / "kerasft.json").write_text("{half")
    else:
        value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])
        graph = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])],
            "g",
            [value],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
        )
        (version / "model.onnx").write_bytes(helper.make_model(graph).SerializeToString())
    (tmp_path / "in.csv").write_text("text\nhello\n")
    args = ["--model", str(version / "model.onnx"), "--input", str(tmp_path / "in.csv")]
    one_error_line(capsys, main([*args, "--output", str(tmp_path / "out.csv")]), fragment)
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.slow
def test_the_fused_model_holds_onnxruntime_kernels_and_the_card_says_so(exported):
    import onnx

    directory = exported.export_dir.parent / "onnx" / exported.export_dir.name
    ops = [n.op_type for n in onnx.load(str(directory / "model.onnx")).graph.node]
    # The tiny BERT has 2 layers: attention and GELU once per layer, two layer norms each
    # and the embeddings'; residual Adds and GELU's bias stay apart (faster on CPU).
    assert ops.count("Attention") == 2 and ops.count("Gelu") == 2
    assert ops.count("LayerNormalization") == 5
    assert "SkipLayerNormalization" not in ops and "BiasGelu" not in ops
    assert "Erf" not in ops and ops.count("Softmax") == 1  # the head's; attention's are fused
    meta = json.loads((exported.export_dir / "assets.extra" / "kerasft.json").read_text())["onnx"]
    assert meta["fused"]["Attention"] == 2


@pytest.mark.slow
def test_onnxruntime_keeps_the_int8_layer_norms_apart_when_it_loads_the_model(exported, tmp_path):
    import onnx
    import onnxruntime as ort

    directory = exported.export_dir.parent / "onnx" / exported.export_dir.name
    model = onnx.load(str(directory / "model.int8.onnx"))
    assert not model.graph.value_info  # with shapes, onnxruntime fuses Add + LayerNorm again
    # What a default session runs, as onnxruntime writes it out.
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "loaded.onnx")
    ort.InferenceSession(
        str(directory / "model.int8.onnx"), options, providers=["CPUExecutionProvider"]
    )
    ops = [n.op_type for n in onnx.load(str(tmp_path / "loaded.onnx")).graph.node]
    assert "SkipLayerNormalization" not in ops and ops.count("LayerNormalization") >= 4
    assert "QAttention" in ops


def _gelu_graph(inv_sqrt2: float = 2**-0.5):
    """TF's exact GELU as tf2onnx writes it: 0.5·x · (1 - erf(-x · 1/√2))."""
    from onnx import TensorProto, helper

    c = lambda name, v: helper.make_tensor(name, TensorProto.FLOAT, [], [v])  # noqa: E731
    nodes = [
        helper.make_node("Mul", ["x", "half"], ["hx"]),
        helper.make_node("Neg", ["x"], ["nx"]),
        helper.make_node("Mul", ["nx", "k"], ["z"]),
        helper.make_node("Erf", ["z"], ["e"]),
        helper.make_node("Sub", ["one", "e"], ["erfc"]),
        helper.make_node("Mul", ["hx", "erfc"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "gelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])],
        [c("half", 0.5), c("k", inv_sqrt2), c("one", 1.0)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, x):
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_gelu_rewrite_computes_the_same_and_leaves_other_graphs_alone():
    from kerasft.serving.onnx_graph import fuse_gelu, remove_dead_nodes

    x = np.linspace(-4, 4, 10, dtype=np.float32).reshape(2, 5)
    model = _gelu_graph()
    expected = _run(model, x)
    assert fuse_gelu(model) == 1 and remove_dead_nodes(model) == 5
    assert [n.op_type for n in model.graph.node] == ["Gelu"]
    np.testing.assert_allclose(_run(model, x), expected, atol=1e-6)
    # Not GELU (another constant): left as it is.
    near_miss = _gelu_graph(0.6)
    assert fuse_gelu(near_miss) == 0 and len(near_miss.graph.node) == 6


@pytest.mark.slow
def test_onnx_optimize_false_writes_standard_ops_and_a_bad_fusion_is_not_kept(
    exported, plain_graph, tmp_path, monkeypatch, capsys
):
    import onnx

    from kerasft.serving import onnx as onnx_lib
    from kerasft.serving import onnx_graph
    from kerasft.training.exports import reexport

    def domains(export_dir):
        path = export_dir.parent / "onnx" / export_dir.name / "model.onnx"
        return {n.domain or "ai.onnx" for n in onnx.load(str(path)).graph.node}

    assert {n.domain or "ai.onnx" for n in onnx.load(str(plain_graph)).graph.node} == {"ai.onnx"}
    # Every fusion when none is left out (bench/onnx_fusions.py's `every`); a name that is
    # not one of the optimizer's is refused, not ignored.
    every = onnx_graph.optimize(plain_graph, tmp_path / "every.onnx", 4, 32, unfused=())
    assert every["SkipLayerNormalization"] == 4 and every["BiasGelu"] == 2
    with pytest.raises(ValueError, match="no fusion 'skip_layernorm'"):
        onnx_graph.optimize(plain_graph, tmp_path / "x.onnx", 4, 32, unfused=("skip_layernorm",))
    # A fused graph that disagrees with the plain conversion is dropped, and the export says so.
    monkeypatch.setattr(onnx_lib, "largest_difference", lambda a, b, feed: 0.5)
    kept = reexport(exported.run_dir, str(tmp_path / "kept"), onnx=True)
    assert domains(kept) == {"ai.onnx"}
    out = capsys.readouterr().out
    assert "the fused graph differs from the plain one by 5.0e-01; kept the plain one" in out


@pytest.mark.slow
def test_onnx_trace_patches_dense_layers_even_after_a_keras_save(exported, tmp_path):
    from kerasft.serving import tflite
    from kerasft.serving.onnx import onnx_trace
    from kerasft.tasks import TASKS

    model = exported.model
    names = ("input_ids", "token_type_ids", "attention_mask")
    # The TFLite converter saves the Keras model, which leaves a bound `call` on each layer:
    # an ONNX export after a TFLite one once traced Tensordot again and fused nothing.
    tflite.convert(model, names, TASKS["classification"], tmp_path / "m.tflite")
    specs = {n: tf.TensorSpec([None, None], tf.int32, name=n) for n in names}

    def tensordots() -> int:
        fn = tf.function(lambda **x: model(x, training=False)).get_concrete_function(**specs)
        return sum("Tensordot" in op.name for op in fn.graph.get_operations())

    before = tensordots()
    with onnx_trace(model):
        assert tensordots() == 0
    assert before > 0 and tensordots() == before  # restored as it was


def test_export_set_takes_only_export_keys(tmp_path, capsys):
    from kerasft.export import main

    assert main(["--run", str(tmp_path), "--set", "training.epochs=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        "error: --set training.epochs=3: kerasft.export changes only export.* keys"
    )


@pytest.mark.slow
def test_per_token_layers_skip_padding_and_compute_the_same(exported, plain_graph, tmp_path):
    import onnx

    from kerasft.serving import onnx_graph
    from kerasft.serving.onnx import runner

    padded = tmp_path / "padded.onnx"
    assert onnx_graph.PACKED not in onnx_graph.optimize(plain_graph, padded, 4, 32, pack=False)
    packed = tmp_path / "packed.onnx"
    assert onnx_graph.optimize(plain_graph, packed, 4, 32)[onnx_graph.PACKED] == 2
    ops = [n.op_type for n in onnx.load(str(packed)).graph.node]
    assert ops.count("NonZero") == 1 and ops.count("Attention") == 2
    directory = exported.export_dir.parent / "onnx" / exported.export_dir.name
    texts = ["a", "a much longer sentence with many more words in it", "two words", "x y z"]
    with_padding = _tokenize(directory, texts)
    assert (with_padding["attention_mask"] == 0).any()
    single = _tokenize(directory, texts[1:2])  # no padding at all
    for x in (with_padding, single):
        want, got = runner(padded)(x), runner(packed)(x)
        np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=1e-5)


@pytest.mark.slow
def test_a_graph_with_per_token_outputs_is_not_packed(plain_graph, tmp_path):
    import onnx

    from kerasft.serving import onnx_graph
    from kerasft.serving.onnx_packing import pack_tokens

    fused = tmp_path / "fused.onnx"
    onnx_graph.optimize(plain_graph, fused, 4, 32, pack=False)
    model = onnx.load(str(fused))
    # As a token-classification head's logits: padding rows of such outputs would change.
    last_norm = [n for n in model.graph.node if n.op_type == "LayerNormalization"][-1]
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(last_norm.output[0]))
    nodes = len(model.graph.node)
    same, layers = pack_tokens(model)
    assert same is model and layers == 0 and len(model.graph.node) == nodes
    # Further from the encoder, as real heads are: known by its rank ([batch, tokens, hidden]).
    model.graph.output.pop()
    model.graph.node.append(onnx.helper.make_node("Identity", [last_norm.output[0]], ["tags"]))
    shape = ["batch", "tokens", 32]
    model.graph.output.append(onnx.helper.make_tensor_value_info("tags", 1, shape))
    same, layers = pack_tokens(model)
    assert same is model and layers == 0
    model.graph.output.pop()  # the sentence-level outputs alone: packed
    assert pack_tokens(model)[1] == 2


@pytest.mark.slow
def test_a_graph_skipping_padding_that_fails_keeps_the_padding(exported, tmp_path, capsys):
    import onnx

    from kerasft.serving import onnx_packing
    from kerasft.training.exports import reexport

    real = onnx_packing._Packer.unpack

    def broken(self, name):  # zeros at padding lost: a shape the next Attention refuses
        return real(self, name).removesuffix("/padded") + "/flat"

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(onnx_packing._Packer, "unpack", broken)
        export = reexport(exported.run_dir, str(tmp_path / "exports"), onnx=True)
    out = capsys.readouterr().out
    assert "onnx: the fused graph fails on a test batch (" in out
    assert "kept the padding" in out and "kept the plain one" not in out
    model = export.parent / "onnx" / export.name / "model.onnx"
    ops = [n.op_type for n in onnx.load(str(model)).graph.node]
    assert "Attention" in ops and "NonZero" not in ops


@pytest.mark.slow
def test_a_token_classification_export_keeps_its_padding(tiny_config, tmp_path, capsys):
    import onnx

    from tests.test_tasks import CONLL, config

    (tmp_path / "ner.conll").write_text((CONLL + "\n") * 4)
    tiny_config["export"] = {"dir": str(tmp_path / "exports"), "onnx": True}
    cfg = config(tiny_config, "token_classification", {"train": str(tmp_path / "ner.conll")})
    result = run(cfg, verbose=0)
    # Its outputs are per token: skipping padding would change them there, so it is not tried.
    assert "padding" not in capsys.readouterr().out
    directory = result.export_dir.parent / "onnx" / result.export_dir.name
    ops = [n.op_type for n in onnx.load(str(directory / "model.onnx")).graph.node]
    assert "Attention" in ops and "NonZero" not in ops
