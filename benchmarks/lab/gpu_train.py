"""Training throughput on a GPU: ``edgeclf train`` on Fashion-MNIST, mixed precision against float32, and how fast
the input pipeline feeds the model.

Each configuration is one real ``toolkit.train.train`` run (the code ``edgeclf train`` calls; decode, leakage
check, fit, evaluation) with a callback that times the training part of every epoch (from its start to the start of
its validation pass). Steady-state throughput is the training images over the median of those times from the second
epoch on (the first compiles). Then the run's decoded train images go through the input pipeline alone, with and
without augmentation, for as many batches as one epoch: if the pipeline delivers fewer images per second than the
model consumes, training is input-bound.

Keras runs on the backend ``KERAS_BACKEND`` names: TensorFlow by default, or JAX (a GPU machine may have JAX's CUDA
wheels and no TensorFlow).

    apt-get install dataset-fashion-mnist
    KERAS_BACKEND=jax python benchmarks/lab/gpu_train.py --work /tmp/gpu \\
        --config mobilenet_v2:96:on --config mobilenet_v2:96:off --epochs 4 --batch-size 256
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from pathlib import Path

import numpy as np

from fashion_mnist import CLASS_NAMES, DEFAULT_SOURCE, load
from edgeclf.benchmarks.machine import describe

RESULTS = Path(__file__).resolve().parent.parent / "results"


def write_npy_dataset(source: str, out: Path, max_images: int | None, seed: int = 0) -> int:
    """All of Fashion-MNIST (train then test, 70,000 images) as ``images.npy`` + ``labels.csv``; returns the count."""
    data = load(source)
    images = np.concatenate([data["train"][0], data["test"][0]])
    labels = np.concatenate([data["train"][1], data["test"][1]])
    if max_images and max_images < len(labels):
        keep = np.sort(np.random.default_rng(seed).choice(len(labels), size=max_images, replace=False))
        images, labels = images[keep], labels[keep]
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "images.npy", images)
    (out / "labels.csv").write_text("label\n" + "\n".join(CLASS_NAMES[i] for i in labels) + "\n")
    return len(labels)


def epoch_timer(keras):
    class EpochTimer(keras.callbacks.Callback):
        """Seconds of each epoch's training part: from its start to the start of its validation pass."""

        def __init__(self):
            super().__init__()
            self.seconds, self._start = [], None

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_test_begin(self, logs=None):
            if self._start is not None:  # validation inside fit (evaluate after fit has no epoch start)
                self.seconds.append(time.perf_counter() - self._start)
                self._start = None

    return EpochTimer()


def pipeline_rate(keras, pixels: np.ndarray, labels: np.ndarray, batch_size: int, augmenter) -> float:
    """Images per second the training pipeline delivers, model left out (one epoch's batches, after one warm-up)."""
    from edgeclf.toolkit.pipeline import EpochClock, make_dataset

    ds = make_dataset(pixels, labels, batch_size, shuffle=True, seed=0, augmenter=augmenter, clock=EpochClock())

    def ready(x):
        return x.block_until_ready() if hasattr(x, "block_until_ready") else np.asarray(x)

    if keras.backend.backend() == "tensorflow":
        batches = iter(ds)
        ready(next(batches)[0])
        started, n = time.perf_counter(), 0
        for x, y in batches:
            ready(x)
            n += len(y)
    else:  # the adapter fit wraps a PyDataset in: the same worker threads, queue and conversion to arrays
        from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

        adapter = PyDatasetAdapter(ds)
        adapter.on_epoch_begin()
        batches = adapter.get_jax_iterator() if keras.backend.backend() == "jax" else adapter.get_numpy_iterator()
        ready(next(batches)[0])  # warm-up: the first dispatch of the augmentation ops
        started, n = time.perf_counter(), 0
        for x, y in batches:
            ready(x)
            n += len(y)
        adapter.on_epoch_end()
    return n / (time.perf_counter() - started)


def run_config(data: Path, work: Path, backbone: str, size: int, mixed: str, args) -> dict:
    from edgeclf.toolkit._deps import import_keras
    from edgeclf.toolkit.augment import AugmentSpec, build_augmenter
    from edgeclf.toolkit.train import TrainSpec, train

    keras = import_keras()
    spec = TrainSpec(epochs=args.epochs, batch_size=args.batch_size, mixed_precision=mixed,
                     deterministic=args.deterministic, early_stopping=False, reduce_lr=False, keep_cache=True,
                     augment=AugmentSpec() if args.augment else AugmentSpec.none())
    timer = epoch_timer(keras)
    run = work / f"run-{backbone}-{size}-mixed_{mixed}"
    started = time.perf_counter()
    result = train(data, run, backbone=backbone, img_size=size, weights="none", spec=spec, force=True,
                   callbacks=[timer])
    wall = time.perf_counter() - started
    meta = json.loads((run / "metadata.json").read_text())
    n_train = meta["dataset"]["split_sizes"]["train"]
    steady = statistics.median(timer.seconds[1:]) if len(timer.seconds) > 1 else None
    row = {
        "backbone": backbone, "img_size": size, "mixed_precision": meta["hardware"]["mixed_precision"],
        "keras_backend": meta["hardware"]["keras_backend"], "gpus": meta["hardware"]["gpus"],
        "batch_size": args.batch_size, "epochs": args.epochs, "deterministic": args.deterministic,
        "augment": args.augment, "n_train": n_train, "epoch_train_seconds": [round(s, 3) for s in timer.seconds],
        "first_epoch_s": round(timer.seconds[0], 2) if timer.seconds else None,
        "train_images_per_s": round(n_train / steady, 1) if steady else None,
        "wall_time_s": round(wall, 1),
        "test_accuracy": result.metrics["test"]["accuracy"],
        "val_accuracy_by_epoch": [round(float(r["val_accuracy"]), 4) for r in csv.DictReader(
            (run / "history.csv").open(encoding="utf-8"))],
    }
    pixels = np.load(run / "cache" / "train.npy", mmap_mode="r")[:n_train]
    labels = np.zeros(len(pixels), dtype=np.int32)  # the pipeline does not look at label values
    row["pipeline_images_per_s"] = round(pipeline_rate(keras, pixels, labels, args.batch_size, None), 1)
    if args.augment:
        augmenter = build_augmenter(AugmentSpec(), 0)
        row["pipeline_augmented_images_per_s"] = round(
            pipeline_rate(keras, pixels, labels, args.batch_size, augmenter), 1)
        if keras.backend.backend() != "tensorflow":  # the alternative: the layers called one by one, uncompiled
            from edgeclf.toolkit import pipeline

            compiled, pipeline._compiled_augmenter = pipeline._compiled_augmenter, lambda a, e, b: (
                lambda x, counter: a(x, training=True))
            try:
                row["pipeline_augmented_eager_images_per_s"] = round(
                    pipeline_rate(keras, pixels, labels, args.batch_size, build_augmenter(AugmentSpec(), 0)), 1)
            finally:
                pipeline._compiled_augmenter = compiled
    fed = row.get("pipeline_augmented_images_per_s", row["pipeline_images_per_s"])
    row["input_bound"] = bool(row["train_images_per_s"] and fed < row["train_images_per_s"])
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=DEFAULT_SOURCE, help=f"Fashion-MNIST IDX folder [{DEFAULT_SOURCE}]")
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgeclf-gpu"))
    parser.add_argument("--config", action="append", required=True,
                        help="BACKBONE:IMG_SIZE:MIXED (MIXED is on, off or auto); repeat for several runs")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-images", type=int, default=None, help="a random subset of the 70,000 images")
    parser.add_argument("--no-augment", dest="augment", action="store_false")
    parser.add_argument("--deterministic", action="store_true", help="as edgeclf train's default (one pipeline "
                        "thread; TensorFlow op determinism or XLA's deterministic GPU ops)")
    parser.add_argument("--output", type=Path, default=RESULTS / "gpu_train.json")
    args = parser.parse_args(argv)
    data = args.work / "fashion-mnist-npy"
    n = write_npy_dataset(args.source, data, args.max_images)
    record = {"benchmark": "edgeclf train throughput on Fashion-MNIST (70/15/15 split of the 70,000 images"
              + (f", a random {n}" if args.max_images else "") + ")",
              "date": time.strftime("%Y-%m-%d"), "machine": describe(), "runs": []}
    rows = record["runs"]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    for config in args.config:
        backbone, size, mixed = config.split(":")
        rows.append(run_config(data, args.work, backbone, int(size), mixed, args))
        print(json.dumps(rows[-1]), flush=True)
        args.output.write_text(json.dumps(record, indent=2) + "\n")  # after each run: a cut-off run keeps the rest
    print(f"{'backbone':14} {'px':>4} {'mixed':>5} {'train img/s':>11} {'pipe img/s':>10} {'pipe+aug':>9} "
          f"{'1st ep s':>8} {'test acc':>8}")
    for r in rows:
        print(f"{r['backbone']:14} {r['img_size']:4d} {str(r['mixed_precision']):>5} {r['train_images_per_s'] or 0:11.0f} "
              f"{r['pipeline_images_per_s']:10.0f} {r.get('pipeline_augmented_images_per_s', 0):9.0f} "
              f"{r['first_epoch_s'] or 0:8.1f} {r['test_accuracy']:8.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
