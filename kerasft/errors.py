"""The exceptions kerasft raises for user mistakes.

A `KerasftError` is the user's to fix: the CLI prints its one-line message and
exits with status 2. Any other exception is a bug in kerasft and keeps its
traceback.
"""


class KerasftError(Exception):
    """Base class for mistakes in the user's config, data, paths or models."""


class ConfigError(KerasftError):
    """The config file or a `--set` override is invalid."""


class DataError(KerasftError):
    """A data file is missing, unreadable or does not fit the config."""


class ModelError(KerasftError):
    """A backbone cannot be found or loaded."""
