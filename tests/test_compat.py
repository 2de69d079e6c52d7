"""The private tf-keras hooks in `kerasft._compat`: each still works, and none is used elsewhere.

A tf-keras release that renames or changes one of them fails here, by name, rather
than as a wrong number in a training run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

from kerasft import _compat
from kerasft._compat import keras, tf

PACKAGE = Path(__file__).resolve().parents[1] / "kerasft"
# tf-keras internals kerasft once reached for; only `_compat.py` may touch such names.
PRIVATE = {
    "_index_dict", "_momentums", "_velocities", "_var_key", "_apply_weight_decay",
    "_use_weight_decay", "_backup", "_supports_tf_logs", "_maybe_load_initial_counters_from_ckpt",
    "_trainable_weights", "_non_trainable_weights", "_build_learning_rate", "_learning_rate",
    "_current_learning_rate", "_iterations", "_train_counter", "_distribution_strategy",
    "_distributed_container", "_unique_id", "_training_state", "_ckpt_saved_epoch",
}  # fmt: skip


def _hooks_in_compat() -> list[str]:
    tree = ast.parse((PACKAGE / "_compat.py").read_text())
    hooks = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            touched = {
                n.attr
                for n in ast.walk(node)
                if isinstance(n, ast.Attribute)
                and n.attr.startswith("_")
                and not n.attr.startswith("__")
            }
            if touched:
                hooks.append(node.name)
    return hooks


def test_no_module_but_compat_touches_tf_keras_internals_or_model_dicts():
    offences = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "_compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and (
                node.attr in PRIVATE or node.attr == "__dict__"
            ):
                if node.attr == "__dict__" and path.name == "onnx.py":
                    continue  # reads a layer's own `call` override: not a cache
                offences.append(f"{path.relative_to(PACKAGE)}:{node.lineno} .{node.attr}")
    assert offences == []


def test_at_most_five_private_hooks_each_documented():
    hooks = _hooks_in_compat()
    assert len(hooks) <= 5, hooks
    for name in hooks:
        assert len(getattr(_compat, name).__doc__ or "") > 80, name  # says why


def test_build_learning_rate_gives_a_custom_optimizer_a_schedule():
    from kerasft.training.optimizers import AdamW
    from kerasft.training.schedules import WarmupDecay

    optimizer = AdamW(learning_rate=WarmupDecay(1.0, total_steps=10, warmup_steps=4))
    variable = tf.Variable([0.0])
    rates = []
    for _ in range(5):
        optimizer.apply_gradients([(tf.constant([1.0]), variable)])
        rates.append(float(optimizer.learning_rate))
    np.testing.assert_allclose(rates, [0.25, 0.5, 0.75, 1.0, 1.0], rtol=1e-6)


def _restarted(directory):
    """A fresh model and a `BackupAndRestore` on `directory` after its restore (`on_train_begin`)."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    backup = keras.callbacks.BackupAndRestore(
        str(directory), save_freq=1000, delete_checkpoint=False
    )
    backup.set_model(model)
    backup.on_train_begin()
    return model, backup


def test_restored_position_and_backup_now_round_trip(tmp_path):
    model, backup = _restarted(tmp_path)
    assert _compat.restored_position(model, 10) == (0, 0)  # nothing to restore
    backup.on_epoch_begin(2)
    backup.on_train_batch_begin(3)
    _compat.backup_now(backup)  # mid-epoch: epoch 3's step 5 comes next
    model, backup = _restarted(tmp_path)
    assert _compat.restored_position(model, 10) == (2, 4)
    backup.on_epoch_begin(4)
    backup.on_train_batch_begin(9)
    _compat.backup_now(backup)  # the epoch's last step: the next epoch follows
    model, _ = _restarted(tmp_path)
    assert _compat.restored_position(model, 10) == (5, 0)


def test_skip_log_sync_is_what_keras_reads():
    callback = keras.callbacks.Callback()
    assert not keras.callbacks.CallbackList([callback])._supports_tf_logs
    _compat.skip_log_sync(callback)
    assert keras.callbacks.CallbackList([callback])._supports_tf_logs


def test_train_only_freezes_single_weights_of_a_layer():
    dense = keras.layers.Dense(3)
    model = keras.Sequential([keras.Input((2,)), dense])
    assert _compat.train_only(dense, lambda w: "bias" in w.name) == 1
    assert [w.name for w in model.trainable_weights] == [dense.bias.name]
    assert dense.kernel.name in [w.name for w in model.non_trainable_weights]
    model.compile("sgd", "mse")
    kernel = dense.kernel.numpy().copy()
    model.fit(np.ones((4, 2)), np.ones((4, 3)), verbose=0)
    np.testing.assert_array_equal(dense.kernel.numpy(), kernel)


def test_graph_clean_encoders_are_traced_without_autograph_and_the_rest_with_it():
    from tensorflow.python.autograph.impl import conversion
    from tensorflow_text import FastWordpieceTokenizer
    from transformers.models.bert import modeling_tf_bert
    from transformers.models.marian import modeling_tf_marian

    from kerasft.models.backbones import MaskedMeanPooling

    assert conversion.is_allowlisted(modeling_tf_bert.TFBertMainLayer.call)
    # Marian's decoder branches on a tensor in Python: it needs AutoGraph.
    assert not conversion.is_allowlisted(modeling_tf_marian.TFMarianDecoder.call)
    # kerasft's own graph code and tensorflow_text's ops use TensorFlow's loops and branches:
    # rewriting them cost a third of a small run's time (tests/test_train.py's first run).
    assert conversion.is_allowlisted(MaskedMeanPooling.call)
    assert conversion.is_allowlisted(FastWordpieceTokenizer.tokenize_with_offsets)
