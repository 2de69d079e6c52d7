"""Everything an export is made of: the serving module and its signatures, the export
contract, versions, in-graph tokenizers, the model card and TFLite.

`kerasft.export` (re-export a run) and `kerasft.predict` (batch prediction) are the
commands on top of it.
"""

from kerasft.serving.info import ExportInfo, RunCard
from kerasft.serving.module import ServingModule
from kerasft.serving.savedmodel import export_model
from kerasft.serving.versions import list_versions, next_version, resolve_version

__all__ = [
    "ExportInfo",
    "RunCard",
    "ServingModule",
    "export_model",
    "list_versions",
    "next_version",
    "resolve_version",
]
