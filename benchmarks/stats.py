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

    Each round makes ``per_round`` pairs of calls: the plain runtime (LiteRT ``set_tensor``/``invoke``/``get_tensor``,
    or onnxruntime ``run``, on the same session) and edgeclf's call on the same preprocessed image - the backend's
    ``run`` or, with ``classifier``, ``Classifier.classify_pixels`` (results included) - interleaved call by call,
    which of the two goes first alternating from pair to pair. A round's ratio is the median edgeclf call over the
    median plain call; the overhead is the median of the round ratios. Interleaving single calls keeps both sides
    under the same machine conditions (a block of calls can land in a slow spell the other block missed), and
    medians ignore the odd preempted call.

    Returns:
        ``{"plain_ms", "edgeclf_ms", "overhead"}`` with overhead = median(edgeclf / plain per round) - 1; the
        millisecond figures are medians of the per-round medians.
    """
    import statistics
    import time

    from edgeclf.edge_runtime.classifier import Classifier

    clf = Classifier.load(model, threads=threads)
    backend = clf.backend
    # A stacked batch, as Classifier.classify and the streaming path build it (a ``[None]`` view would make
    # set_tensor copy it first, a cost the real path does not pay).
    pixels = np.stack([clf.prepare(str(image))])
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

    for _ in range(20):
        plain()
        edgeclf_call()
    plain_ms: list[float] = []
    edgeclf_ms: list[float] = []
    for _ in range(rounds):
        times: dict = {plain: [], edgeclf_call: []}
        for i in range(per_round):
            for fn in ((plain, edgeclf_call) if i % 2 == 0 else (edgeclf_call, plain)):
                t = time.perf_counter()
                fn()
                times[fn].append(time.perf_counter() - t)
        plain_ms.append(statistics.median(times[plain]) * 1000.0)
        edgeclf_ms.append(statistics.median(times[edgeclf_call]) * 1000.0)
    ratios = [e / p for p, e in zip(plain_ms, edgeclf_ms)]
    return {"plain_ms": statistics.median(plain_ms), "edgeclf_ms": statistics.median(edgeclf_ms),
            "overhead": statistics.median(ratios) - 1.0}
