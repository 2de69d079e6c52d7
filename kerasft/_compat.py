"""Imported before anything touches TensorFlow.

Hugging Face's TF models are written against the Keras 2 API, so TensorFlow
must be told to use `tf_keras` before its first import. Every kerasft module
imports `keras` from here instead of importing `tf_keras` or `tensorflow.keras`.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# kerasft never wants a framework other than TensorFlow pulled in behind its back.
os.environ.setdefault("USE_TORCH", "0")
os.environ.setdefault("USE_TF", "1")

import warnings  # noqa: E402

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["keras", "tf"]

# transformers' TF classes warn on every import and call that TF support is deprecated.
warnings.filterwarnings("ignore", message=".*seed_generator.*", category=UserWarning)
