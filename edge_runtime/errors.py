"""Exception hierarchy shared by every edgeclf package.

It lives in ``edge_runtime`` because that is the bottom layer: the toolkit, the model registry and the CLI
all import it, and it imports nothing but the standard library.
"""

from __future__ import annotations


class EdgeclfError(Exception):
    """Base class for errors that the CLI turns into a one-line message.

    Attributes:
        exit_code: Process exit code the CLI uses for this error (2 for usage errors, 1 otherwise).
    """

    exit_code = 1


class ConfigError(EdgeclfError):
    """A user choice is invalid: unknown name, out-of-range value, conflicting options."""

    exit_code = 2


class DataError(EdgeclfError):
    """A dataset cannot be used: missing, empty, unreadable or malformed."""

    exit_code = 2


class ImageDecodeError(DataError):
    """One image cannot be decoded. Batch code records it and carries on.

    Attributes:
        source: The path (or a description of the source) of the image.
        reason: A short, human-readable cause such as ``"empty file (0 bytes)"``.
    """

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class ExportError(EdgeclfError):
    """A model could not be converted (unsupported ops, converter failure)."""

    exit_code = 1


class BackendUnavailableError(EdgeclfError):
    """An optional library (TensorFlow, LiteRT, onnxruntime, matplotlib) is not installed."""

    exit_code = 2


def missing_dependency(module: str, extra: str, exc: BaseException | None = None) -> BackendUnavailableError:
    """Builds the error raised when an optional dependency cannot be imported.

    Args:
        module: The module that failed to import, e.g. ``"tensorflow"``.
        extra: The ``edgeclf`` extra that installs it, e.g. ``"train"``.
        exc: The original ImportError, appended for context.

    Returns:
        A BackendUnavailableError whose message names the exact install command.
    """
    detail = f" ({exc})" if exc is not None else ""
    return BackendUnavailableError(
        f"{module} is not installed{detail}. Install it with: pip install 'edgeclf[{extra}]'"
    )
