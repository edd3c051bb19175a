"""Export trained models to TFLite and ONNX artefacts that carry their own metadata and pass a fidelity gate."""

from .exporter import ExportResult, export_model, fidelity
from .foreign import ForeignSpec, parse_labels
from .spec import DEFAULT_MIN_AGREEMENT, MODES, ExportSpec, Format, QuantSpec
from edgeclf.edge_runtime.errors import ExportError

__all__ = ["DEFAULT_MIN_AGREEMENT", "MODES", "ExportError", "ExportResult", "ExportSpec", "ForeignSpec", "Format",
           "QuantSpec", "export_model", "fidelity", "parse_labels"]
