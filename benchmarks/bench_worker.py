"""One row of ``edgeclf bench``, measured in a fresh process so rows never share memory, caches or threads.

    python -m edgeclf.benchmarks.bench_worker JOB.json

The job file (written by ``edgeclf.benchmarks.bench``) names the model, threads, batch size, run counts, a sample
image, the preprocessed evaluation pixels (.npy) and where to write the result. The worker:

1. loads the model (``init_s``) and classifies the sample image from its file (cold start ends here);
2. warms up, then times inference calls on a batch of real preprocessed images until it has enough runs;
3. reads its own peak RSS (before evaluation data is touched, so it is the model's and runtime's memory);
4. optionally classifies every evaluation image and saves the probabilities.

Artefacts go through the edge runtime (``Classifier``, the code ``edgeclf predict`` runs) and never import
TensorFlow; the Keras reference loads the model with safe_mode on and calls ``predict_on_batch``.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

EVAL_BATCH = 32


def peak_rss_mib() -> float | None:
    """This process's peak resident memory (``VmHWM``; ``ru_maxrss`` where /proc is absent)."""
    from edgeclf.benchmarks.machine import vm_hwm_mib

    hwm = vm_hwm_mib("self")
    if hwm is not None:
        return hwm
    try:
        import resource

        scale = 1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0  # bytes on macOS, KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale
    except (ImportError, OSError):
        return None


def _open_keras(path: str, threads: int, adapter: dict | None = None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from edgeclf.edge_runtime.preprocess import PreprocessSpec
    from edgeclf.toolkit._deps import import_tf
    from edgeclf.edge_runtime.artifact import read_run_metadata
    from edgeclf.toolkit.evaluate import load_keras_model

    tf, _ = import_tf()
    # Thread pools must be sized before TensorFlow creates them, i.e. before the model is loaded.
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    model = load_keras_model(path)
    if adapter is None:
        spec = PreprocessSpec.from_dict(read_run_metadata(path)["preprocess"])
    else:  # trained outside edgeclf: wrapped exactly as `edgeclf export` wrapped it
        from edgeclf.toolkit.export.foreign import ForeignSpec, adapt_model

        model, meta = adapt_model(model, ForeignSpec(**adapter))
        spec = PreprocessSpec.from_dict(meta["preprocess"])
    return (lambda pixels: np.asarray(model.predict_on_batch(pixels.astype(np.float32)))), spec


def _open_artifact(path: str, threads: int):
    from edgeclf.edge_runtime.classifier import Classifier

    clf = Classifier.load(path, threads)
    return clf.backend.run, clf.preprocess


def measure(job: dict, launched_at: float | None = None) -> dict:
    """Runs the job and returns the result record (see the module docstring)."""
    from edgeclf.benchmarks.stats import LatencyStats, timed_runs
    from edgeclf.edge_runtime.preprocess import load_image

    batch, threads = int(job["batch"]), int(job["threads"])
    t = time.perf_counter()
    if job["kind"] == "keras":
        infer, spec = _open_keras(job["model"], threads, job.get("adapter"))
    else:
        infer, spec = _open_artifact(job["model"], threads)
    init_s = time.perf_counter() - t
    first = load_image(job["sample_image"], spec)[None]
    t = time.perf_counter()
    first_probs = infer(first)
    first_inference_s = time.perf_counter() - t
    first_result_at = time.time()
    if first_probs.shape[0] != 1:
        raise RuntimeError(f"the model returned {first_probs.shape[0]} results for 1 image")

    pixels = np.load(job["pixels"], mmap_mode="r")[: int(job["n_images"])]
    reps = -(-batch // len(pixels))
    x = np.ascontiguousarray(np.concatenate([pixels[:batch]] * reps)[:batch])
    t = time.perf_counter()
    for _ in range(int(job["warmup"])):
        infer(x)
    warmup_s = time.perf_counter() - t
    samples = timed_runs(lambda: infer(x), min_runs=int(job["runs"]), min_seconds=float(job["min_seconds"]),
                         max_runs=int(job["max_runs"]))
    stats = LatencyStats.from_seconds(samples)
    rss = peak_rss_mib()

    if job.get("probs_out"):
        probs = np.concatenate([infer(np.ascontiguousarray(pixels[i : i + EVAL_BATCH]))
                                for i in range(0, len(pixels), EVAL_BATCH)])
        np.save(job["probs_out"], probs.astype(np.float32))
    return {
        "status": "ok",
        "init_s": init_s,
        "first_inference_ms": first_inference_s * 1000.0,
        "cold_start_s": first_result_at - launched_at if launched_at is not None else None,
        "warmup_runs": int(job["warmup"]),
        "warmup_s": warmup_s,
        "latency": stats.to_dict(),
        "images_per_s": stats.images_per_second(batch),
        "latency_samples_ms": [round(s * 1000.0, 5) for s in samples],
        "peak_rss_mib": rss,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0], encoding="utf-8") as fh:
        job = json.load(fh)
    try:
        result = measure(job, job.get("launched_at"))
    except Exception as exc:  # one failing row must not stop the table: report it as the row's reason
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        result = {"status": "failed", "reason": f"{type(exc).__name__}: {message}"[:500]}
    tmp = job["result"] + ".part"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(result, fh)
    os.replace(tmp, job["result"])
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
