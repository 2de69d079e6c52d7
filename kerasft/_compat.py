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
    return tensorflow, tf_keras


import warnings  # noqa: E402

tf, keras = _quietly(_import_tensorflow)

__all__ = ["VERBOSE", "keras", "tf"]

# transformers' TF classes warn on every import and call that TF support is deprecated.
warnings.filterwarnings("ignore", message=".*seed_generator.*", category=UserWarning)
