"""kerasft: fine-tune pretrained transformer NLP models with TensorFlow/Keras from a YAML config.

Entry points: `python -m kerasft.train`, `kerasft.tune`, `kerasft.export`, `kerasft.predict`
(or the `kerasft` command). From Python: `kerasft.config.load_config(path)` and
`kerasft.training.runner.run(config)`.
"""

from kerasft.errors import ConfigError, DataError, KerasftError, ModelError, TrainingError

__version__ = "0.1.0"
__all__ = [
    "ConfigError",
    "DataError",
    "KerasftError",
    "ModelError",
    "TrainingError",
    "__version__",
]
