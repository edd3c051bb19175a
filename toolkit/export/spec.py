"""What to export: formats, quantisation modes and the fidelity gate's thresholds."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum

from edgeclf.edge_runtime.errors import ConfigError


class Format(str, Enum):
    """Artefact formats; the values are the CLI strings."""

    TFLITE = "tflite"
    ONNX = "onnx"

    @classmethod
    def parse(cls, value: str) -> "Format":
        try:
            return cls(value)
        except ValueError:
            raise ConfigError(f"Received: format='{value}'. Supported: {', '.join(f.value for f in cls)}.") from None


MODES = {Format.TFLITE: ("fp32", "fp16", "dynamic", "int8"), Format.ONNX: ("fp32", "int8")}
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
# Default minimum top-1 agreement with the Keras model, per quantisation mode.
DEFAULT_MIN_AGREEMENT = {"fp32": 0.999, "fp16": 0.999, "dynamic": 0.98, "int8": 0.98}


@dataclass(frozen=True)
class QuantSpec:
    """One quantisation mode.

    Args:
        mode: ``fp32``, ``fp16`` (float16 weights), ``dynamic`` (dynamic-range) or ``int8`` (full integer).
        calibration_method: For ONNX int8: ``minmax``, ``entropy`` or ``percentile``.
        per_channel: For ONNX int8: per-channel weight scales.
        reduce_range: For ONNX int8: 7-bit weights, which x86 CPUs without VNNI need (their 8-bit multiply-add
            saturates). None decides from this machine's CPU; set it from the CPU the artefact will run on when
            that is another one.
    """

    mode: str
    calibration_method: str = "minmax"
    per_channel: bool = True
    reduce_range: bool | None = None

    def __post_init__(self) -> None:
        if self.mode not in DEFAULT_MIN_AGREEMENT:
            raise ConfigError(f"Received: quantize='{self.mode}'. Supported: {', '.join(DEFAULT_MIN_AGREEMENT)}.")
        if self.calibration_method not in CALIBRATION_METHODS:
            raise ConfigError(f"Received: calibration_method='{self.calibration_method}'. "
                              f"Supported: {', '.join(CALIBRATION_METHODS)}.")

    @classmethod
    def float32(cls) -> "QuantSpec":
        return cls("fp32")

    @classmethod
    def float16(cls) -> "QuantSpec":
        return cls("fp16")

    @classmethod
    def dynamic(cls) -> "QuantSpec":
        return cls("dynamic")

    @classmethod
    def int8(cls, calibration_method: str = "minmax", per_channel: bool = True, reduce_range: bool | None = None
             ) -> "QuantSpec":
        return cls("int8", calibration_method, per_channel, reduce_range)

    @property
    def needs_calibration(self) -> bool:
        return self.mode == "int8"


@dataclass(frozen=True)
class ExportSpec:
    """A full export job.

    Args:
        formats: Formats to write.
        quant: Quantisation modes; each is written for every format that supports it.
        opset: ONNX opset (at least 17).
        min_agreement: Gate thresholds per mode, overriding ``DEFAULT_MIN_AGREEMENT``.
        verify: Run the fidelity gate.
        calibration_images: Most images used for calibration.
        verify_images: Most held-out images used by the gate.
    """

    formats: tuple[Format, ...] = (Format.TFLITE, Format.ONNX)
    quant: tuple[QuantSpec, ...] = (QuantSpec.float32(), QuantSpec.int8())
    opset: int = 17
    min_agreement: dict[str, float] = field(default_factory=dict)
    verify: bool = True
    calibration_images: int = 300
    verify_images: int = 1000

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", tuple(Format.parse(f) if isinstance(f, str) else f for f in self.formats))
        if not self.formats or not self.quant:
            raise ConfigError("Received no format or no quantisation mode. Expected at least one of each.")
        if self.opset < 17:
            raise ConfigError(f"Received: opset={self.opset}. Expected 17 or newer.")
        for mode, value in self.min_agreement.items():
            if mode not in DEFAULT_MIN_AGREEMENT or not 0.0 <= value <= 1.0:
                raise ConfigError(f"Received: min_agreement {mode}={value}. Expected a mode from "
                                  f"{', '.join(DEFAULT_MIN_AGREEMENT)} and a fraction between 0 and 1.")
        if self.calibration_images < 1 or self.verify_images < 1:
            raise ConfigError("Received a non-positive image count. Expected calibration/verify images >= 1.")
        if not self.jobs():
            supported = "; ".join(f"{f.value}: {', '.join(MODES[f])}" for f in self.formats)
            raise ConfigError(
                f"Received: format {','.join(f.value for f in self.formats)} with quantize "
                f"{','.join(q.mode for q in self.quant)}, which leaves nothing to export. Expected at least one mode "
                f"the format supports ({supported}).")

    def skipped(self) -> list[tuple[Format, QuantSpec]]:
        """The (format, mode) pairs asked for that the format has no such mode for (ONNX fp16, ONNX dynamic)."""
        return [(f, q) for f in self.formats for q in self.quant if q.mode not in MODES[f]]

    def jobs(self) -> list[tuple[Format, QuantSpec]]:
        """Every (format, mode) pair to write; modes a format does not support are skipped."""
        return [(f, q) for f in self.formats for q in self.quant if q.mode in MODES[f]]

    def threshold(self, mode: str) -> float:
        return self.min_agreement.get(mode, DEFAULT_MIN_AGREEMENT[mode])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["formats"] = [f.value for f in self.formats]
        return d
