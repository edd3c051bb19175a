"""CPU inference backends behind one small interface; (de)quantisation happens here and nowhere else."""

from __future__ import annotations

import os
import platform
from typing import Protocol

import numpy as np

from ..artifact import artifact_format


class Backend(Protocol):
    """What the runtime needs from an inference library.

    ``run`` takes (N, H, W, 3) RGB pixels 0-255 (uint8 or float32) and returns (N, C) float32 probabilities.
    """

    input_shape: tuple[int, int, int]
    input_dtype: str
    metadata: dict | None  # the artefact's embedded edgeclf metadata
    output_width: int | None  # scores per image, where the model fixes it

    def run(self, pixels: np.ndarray) -> np.ndarray: ...


def cpu_flags() -> set[str]:
    """The instruction-set flags /proc/cpuinfo lists (``flags`` on x86, ``Features`` on ARM); empty where unreadable."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    flags |= set(value.split())
    except OSError:
        pass
    return flags


def cpu_has_vnni() -> bool:
    """Whether this x86 CPU has VNNI (8-bit dot products); without it int8 weights need ``reduce_range``."""
    return not cpu_flags().isdisjoint({"avx512_vnni", "avx_vnni"})


def needs_reduce_range() -> bool:
    """7-bit int8 weights on x86 CPUs without VNNI (their 8-bit multiply-add, VPMADDUBSW, saturates)."""
    return platform.machine().lower() in ("x86_64", "amd64", "i686") and not cpu_has_vnni()


def default_threads() -> int:
    """Every core this process may use (LiteRT's own default is 1)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def open_backend(path: str | os.PathLike, threads: int | None = None) -> Backend:
    """Opens an artefact with the backend its format needs.

    Args:
        path: A ``.tflite`` or ``.onnx`` file.
        threads: Inference threads; None uses every available core.

    Raises:
        ConfigError: For an unknown file type.
        BackendUnavailableError: If the backend library is not installed (the message has the install command).
    """
    fmt = artifact_format(path)
    threads = threads or default_threads()
    if fmt == "tflite":
        from .litert import LiteRTBackend

        return LiteRTBackend(path, threads)
    from .onnx import OnnxBackend

    return OnnxBackend(path, threads)
