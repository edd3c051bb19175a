"""Latency statistics over timed runs (NumPy only, so the benchmark worker stays light)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from edgeclf.edge_runtime.errors import ConfigError


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between closest ranks (NumPy's default).

    Raises:
        ConfigError: If there are no samples or q is outside 0-100.
    """
    if not 0 <= q <= 100:
        raise ConfigError(f"Received: q={q}. Expected a percentile between 0 and 100.")
    if len(samples) == 0:
        raise ConfigError("Received no samples. A percentile needs at least one.")
    return float(np.percentile(np.asarray(samples, np.float64), q))


@dataclass(frozen=True)
class LatencyStats:
    """Summary of per-call latencies in milliseconds.

    ``std`` is the sample standard deviation (n - 1); it is 0 for a single run.
    """

    n: int
    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def from_seconds(cls, samples: Sequence[float]) -> "LatencyStats":
        """Summarises latencies given in seconds.

        Raises:
            ConfigError: If there are no samples.
        """
        ms = np.asarray(samples, np.float64) * 1000.0
        if ms.size == 0:
            raise ConfigError("Received no latency samples. Time at least one run.")
        return cls(
            n=int(ms.size),
            mean_ms=float(ms.mean()),
            std_ms=float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
            min_ms=float(ms.min()),
            p50_ms=percentile(ms, 50),
            p90_ms=percentile(ms, 90),
            p99_ms=percentile(ms, 99),
            max_ms=float(ms.max()),
        )

    def images_per_second(self, batch: int) -> float:
        """Throughput over the timed runs: images processed divided by the total time they took."""
        return batch * 1000.0 / self.mean_ms if self.mean_ms > 0 else float("inf")

    def to_dict(self) -> dict:
        return asdict(self)


def timed_runs(fn, *, min_runs: int, min_seconds: float, max_runs: int) -> list[float]:
    """Calls ``fn()`` until at least ``min_runs`` calls and ``min_seconds`` have passed (at most ``max_runs``).

    Returns:
        The duration of each call in seconds (``time.perf_counter``).
    """
    import time

    if min_runs < 1 or max_runs < min_runs:
        raise ConfigError(f"Received: min_runs={min_runs}, max_runs={max_runs}. Expected 1 <= min_runs <= max_runs.")
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < max_runs and (len(samples) < min_runs or time.perf_counter() - started < min_seconds):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return samples


def runtime_overhead(model, image, threads: int, *, classifier: bool = False, rounds: int = 15,
                     per_round: int = 200) -> dict:
    """Per-call time edgeclf adds over the plain runtime calls, on one loaded model in one process.

    Alternates blocks of ``per_round`` calls of the plain runtime (LiteRT ``set_tensor``/``invoke``/``get_tensor``,
    or onnxruntime ``run``, on the same session) with blocks of edgeclf's call on the same preprocessed image:
    the backend's ``run`` or, with ``classifier``, ``Classifier.classify_pixels`` (results included), the order
    swapped every round. The overhead is the median of the per-round ratios, so neither process-to-process
    variation nor a slow drift enters; the millisecond figures are medians of the per-block means.

    Returns:
        ``{"plain_ms", "edgeclf_ms", "overhead"}`` with overhead = median(edgeclf / plain per round) - 1.
    """
    import statistics
    import time

    from edgeclf.edge_runtime.classifier import Classifier

    clf = Classifier.load(model, threads=threads)
    backend = clf.backend
    pixels = clf.prepare(str(image))[None]
    if str(model).endswith(".onnx"):
        session, feed = backend.session, {backend.session.get_inputs()[0].name: pixels.astype(np.float32)}

        def plain():
            session.run(None, feed)
    else:
        interp = backend.interpreter
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        x = pixels.astype(inp["dtype"])

        def plain():
            interp.set_tensor(inp["index"], x)
            interp.invoke()
            interp.get_tensor(out["index"])

    call = clf.classify_pixels if classifier else backend.run

    def edgeclf_call():
        call(pixels)

    blocks: dict = {plain: [], edgeclf_call: []}
    for fn in blocks:
        for _ in range(20):
            fn()
    for r in range(rounds):
        # Counterbalanced: every other round runs edgeclf's block first, so a drift within rounds favours neither.
        for fn in ((plain, edgeclf_call) if r % 2 == 0 else (edgeclf_call, plain)):
            t = time.perf_counter()
            for _ in range(per_round):
                fn()
            blocks[fn].append((time.perf_counter() - t) / per_round * 1000.0)
    ratios = [e / p for p, e in zip(blocks[plain], blocks[edgeclf_call])]
    return {"plain_ms": statistics.median(blocks[plain]), "edgeclf_ms": statistics.median(blocks[edgeclf_call]),
            "overhead": statistics.median(ratios) - 1.0}
