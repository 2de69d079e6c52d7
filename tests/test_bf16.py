"""The user paths from a run trained in mixed_bfloat16, on any CPU.

`precision: auto` trains sets of 2,000 examples or more in mixed_bfloat16 on CPUs with native
bfloat16 (AVX-512 BF16, AMX); on others bfloat16 is emulated, slower but numerically the same,
so forcing the policy checks that path everywhere. Exports are float32 rebuilds: TFLite, ONNX
and the SavedModel all come from one; distillation reads a bfloat16 teacher; pretraining trains
in bfloat16.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from kerasft._compat import tf
from kerasft.config import PretrainRun, config_from_dict
from tests.conftest import NEGATIVE, POSITIVE, pretrain_config, tiny_run_config

pytestmark = [pytest.mark.slow, pytest.mark.precision]
pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory, tiny_bert_dir):
    from kerasft.training.runner import run

    root = tmp_path_factory.mktemp("bf16")
    raw = tiny_run_config(
        root,
        tiny_bert_dir,
        training={"epochs": 3, "learning_rate": 3e-3, "precision": "mixed_bfloat16"},
        export={"tflite": True, "tflite_int8": True, "onnx": True},
    )
    return raw, run(config_from_dict(raw), verbose=0)


def test_a_bf16_run_exports_savedmodel_tflite_and_onnx_in_float32(bf16_run):
    _, result = bf16_run
    assert result.model.dtype_policy.name == "mixed_bfloat16"
    version = result.export_dir
    tflite = version.parent / "tflite"
    onnx_dir = version.parent / "onnx" / version.name
    assert (tflite / f"{version.name}.tflite").is_file()
    assert (tflite / f"{version.name}.int8.tflite").is_file()
    assert (onnx_dir / "model.onnx").is_file() and (onnx_dir / "model.int8.onnx").is_file()
    # The export computes in float32 and agrees with the bfloat16 model within its rounding.
    serve = tf.saved_model.load(str(version)).signatures["predict_ids"]
    tokenizer_dir = version / "assets"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    enc = tok(POSITIVE + NEGATIVE, padding=True, return_tensors="np")
    ids = {k: tf.constant(enc[k].astype(np.int32)) for k in serve.structured_input_signature[1]}
    exported = serve(**ids)["probabilities"]
    assert exported.dtype == tf.float32
    in_memory = tf.nn.softmax(tf.cast(result.model(ids, training=False), tf.float32))
    np.testing.assert_allclose(exported.numpy(), in_memory.numpy(), atol=2e-2)
    meta = json.loads((version / "assets.extra" / "kerasft.json").read_text())
    assert meta["tflite"]["agreement"] >= 0.9 and meta["onnx"]["mb"] > 0


def test_a_student_distils_from_a_bf16_teacher(bf16_run, tmp_path):
    from kerasft.training.runner import run

    raw, teacher = bf16_run
    student = json.loads(json.dumps(raw))
    student.update(name="student")
    student["training"].update(output_dir=str(tmp_path / "runs"), precision="mixed_bfloat16")
    student["export"] = {"dir": str(tmp_path / "exports")}
    student["distill"] = {"teacher": str(teacher.run_dir), "student_layers": 1}
    result = run(config_from_dict(student), verbose=0)
    assert result.export_dir is not None and (result.export_dir / "saved_model.pb").is_file()
    assert np.isfinite(result.metrics["train"]["history"]["loss"]).all()


def test_pretraining_runs_in_bf16_and_writes_a_backbone(tiny_bert_dir, tmp_path):
    from kerasft.models import load_backbone
    from kerasft.pretrain import run

    raw = pretrain_config(tmp_path, tiny_bert_dir, epochs=1, precision="mixed_bfloat16")
    result = run(config_from_dict(raw, root=PretrainRun))
    backbone = load_backbone(result.output_dir)
    assert backbone.model.dtype_policy.name == "float32"  # loads as a float32 backbone
    assert all(np.isfinite(w).all() for w in backbone.model.get_weights())
