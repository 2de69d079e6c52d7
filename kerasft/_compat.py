"""Imported before anything touches TensorFlow.

Hugging Face's TF models are written against the Keras 2 API, so TensorFlow
must be told to use `tf_keras` before its first import. Every kerasft module
imports `keras` from here instead of importing `tf_keras` or `tensorflow.keras`.

TensorFlow's C++ start-up logging (absl's pre-initialisation notice, oneDNN,
CUDA stubs, `failed call to cuInit` on a machine without a GPU) is written to
file descriptor 2 before any Python logging setting applies, so a user's first
sight of a config typo would be a CUDA error. The import and the first device
query run with descriptor 2 pointed at a temporary file; what was written there
is replayed only if the import fails. `KERASFT_VERBOSE=1` keeps every log.
"""

import os
import sys
import tempfile

VERBOSE = os.environ.get("KERASFT_VERBOSE", "").strip().lower() not in ("", "0", "false", "no")

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
if not VERBOSE:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
# oneDNN's kernels: TensorFlow turns them on by itself only on CPUs with AVX-512 VNNI, BF16
# or AMX; on AVX2 CPUs they train MiniLM about 6% faster than the default (Eigen) kernels at
# the same accuracy (bench/README.md, "oneDNN"). TF_ENABLE_ONEDNN_OPTS=0 turns them off.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# kerasft never wants a framework other than TensorFlow pulled in behind its back.
os.environ.setdefault("USE_TORCH", "0")
os.environ.setdefault("USE_TF", "1")


def _quietly(action):
    """Runs `action()` with file descriptor 2 captured; replays the capture if it raises."""
    if VERBOSE:
        return action()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real descriptor 2 (an embedded interpreter)
        return action()
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            return action()
        except BaseException:
            os.dup2(saved, 2)
            capture.seek(0)
            sys.stderr.write(capture.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _import_tensorflow():
    import tensorflow
    import tf_keras

    # The first device query is where CUDA is probed (`cuInit`); it does not start the
    # runtime, so distribution strategies can still be configured afterwards.
    tensorflow.config.list_physical_devices()
    if not VERBOSE:
        tensorflow.get_logger().setLevel("ERROR")
    _no_autograph_for(
        *(f"transformers.models.{m}" for m in GRAPH_CLEAN_FAMILIES), "tensorflow_text", "kerasft"
    )
    return tensorflow, tf_keras


# Encoder families whose TF code has no Python branch on a tensor (read, and trained in the
# tests); the encoder-decoders are not among them (BART/Marian: `if input_shape[-1] > 1`).
# tensorflow_text's ops and kerasft's own graph code (packing, the in-graph tokenizers, train
# steps, serving signatures) are written with TensorFlow's ops for loops and branches too.
GRAPH_CLEAN_FAMILIES = ("bert", "roberta", "xlm_roberta", "distilbert", "albert", "electra")


def _no_autograph_for(*modules: str) -> None:
    """Traces these modules' code as written instead of rewriting it with AutoGraph first.

    Hugging Face's TF encoders are written for graphs and XLA, so AutoGraph's source
    rewrite of every `call` they run buys nothing and costs seconds in each process
    and each trace: test_tasks.py's 8 runs took 76 s with it and 58 s without.
    TensorFlow keeps such a list for its own packages (`tensorflow`, `keras`,
    `tf_keras`, numpy, ...) and has no public way to add one; if its module moves,
    the rewrite simply stays on. `transformers.modeling_tf_utils` stays converted: its
    input-unpacking wrapper calls every model, and what it calls is looked up afresh.
    """
    try:
        from tensorflow.python.autograph.core import config
    except ImportError:  # pragma: no cover - a TensorFlow that moved it
        return
    rules = tuple(config.DoNotConvert(m) for m in modules)
    config.CONVERSION_RULES = (*rules, *config.CONVERSION_RULES)


import warnings  # noqa: E402

tf, keras = _quietly(_import_tensorflow)

__all__ = ["VERBOSE", "keras", "tf"]

# transformers' TF classes warn on every import and call that TF support is deprecated.
warnings.filterwarnings("ignore", message=".*seed_generator.*", category=UserWarning)


# -- The private tf-keras hooks kerasft uses, each with why it has no public form. -----
# tests/test_compat.py fails loudly when a tf-keras release changes one of them.


def build_learning_rate(optimizer, learning_rate) -> None:
    """Gives a custom optimizer its learning rate (a float or a schedule).

    Every built-in tf-keras optimizer does this in its constructor through the
    protected `_build_learning_rate`, which creates the current-rate variable in a
    form every distribution strategy can update; the public `learning_rate` setter
    only replaces a rate that already exists.
    """
    optimizer._learning_rate = optimizer._build_learning_rate(learning_rate)


def restored_position(model, steps_per_epoch: int) -> tuple[int, int]:
    """Epoch and step a `BackupAndRestore` restore landed at; (0, 0) without a backup.

    `fit` asks the model this privately (`_maybe_load_initial_counters_from_ckpt`)
    to choose its first epoch and step; tf-keras has no public way to read it.
    """
    return model._maybe_load_initial_counters_from_ckpt(steps_per_epoch, 0)


def backup_now(callback) -> None:
    """Writes a `BackupAndRestore` backup at once, of the epoch and step it last saw begin.

    `BackupAndRestore` backs up on its own schedule; its `_backup` is the only way
    to write one at an epoch's last step (so a restore continues with the next epoch).
    """
    callback._backup(epoch=0)  # the position comes from the callback's own record


def skip_log_sync(callback) -> None:
    """Tells `fit` the callback never reads a step's logs, so no step waits to copy them.

    tf-keras syncs the logs to NumPy after every step unless each callback sets the
    protected `_supports_tf_logs`; there is no public setting.
    """
    callback._supports_tf_logs = True


def train_only(layer, keep) -> int:
    """Of a layer's own weights (not its sublayers'), only those `keep(weight)` accepts train.

    Keras decides what trains per layer (`layer.trainable`), not per weight; BitFit
    needs a layer's bias to train while its kernel does not. The others are moved
    to the layer's non-trainable weights, which is what `add_weight(trainable=False)`
    records. Returns how many of its weights still train.
    """
    own = list(layer._trainable_weights)
    kept = [w for w in own if keep(w)]
    layer._non_trainable_weights.extend(w for w in own if not keep(w))
    layer._trainable_weights = kept
    return len(kept)
