"""``Classifier``: an exported artefact plus its preprocessing contract, ready to classify images or frames."""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence, Union

import numpy as np

from .artifact import NO_METADATA
from .backends import Backend, default_threads, needs_reduce_range, open_backend
from .errors import ConfigError, DataError, ImageDecodeError
from .metadata import ArtifactMetadata
from .preprocess import ImageSource, PreprocessSpec, is_one_image, load_image, preprocess_frame
from .sources import INPUT_IDLE, empty_folder_reason, is_unmatched_pattern
from .tensor import adapt_backend

Image = Union[ImageSource, np.ndarray]


@dataclass(frozen=True)
class Prediction:
    """One class and its probability."""

    index: int
    label: str
    score: float


@dataclass(frozen=True)
class Classification:
    """A model's probabilities for one image."""

    probabilities: np.ndarray
    class_names: tuple[str, ...]

    def top(self, k: int = 1) -> list[Prediction]:
        """The ``k`` most probable classes, best first."""
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [Prediction(int(i), self.class_names[i], float(self.probabilities[i])) for i in order]

    @property
    def best(self) -> Prediction:
        return self.top(1)[0]

    def decide(self, threshold: float | None = None) -> Prediction:
        """The predicted class; with ``threshold`` (two classes only), class 1 wins when its probability reaches it."""
        if threshold is None:
            return self.best
        check_threshold(threshold, [("this model", self.class_names)])
        i = 1 if self.probabilities[1] >= threshold else 0
        return Prediction(i, self.class_names[i], float(self.probabilities[i]))

    def scores(self) -> dict[str, float]:
        return {c: float(p) for c, p in zip(self.class_names, self.probabilities)}


def saturates_here(metadata: dict) -> bool:
    """Whether an int8 ONNX artefact with 8-bit weights runs on an x86 CPU without VNNI, where onnxruntime's int8
    kernels saturate them (read from its metadata, or the part of it ``export`` has when it gates the file)."""
    quant = metadata.get("quantization") or {}
    return (metadata.get("format") == "onnx" and quant.get("mode") == "int8" and quant.get("reduce_range") is False
            and needs_reduce_range())


def deployment_warnings(metadata: dict, path: Path) -> tuple[str, ...]:
    """What makes this artefact less faithful on this machine than its export gate measured.

    An int8 ONNX file exported with 8-bit weights (on a CPU with VNNI, or with ``--reduce-range off``) saturates in
    onnxruntime's int8 kernels on an x86 CPU without VNNI: on such a CPU the simple_cnn demo's int8 ONNX fell from
    100 % to 99.17 % agreement and its max |delta p| rose from 0.024 to 0.31.
    """
    if saturates_here(metadata):
        return (f"{path.name} has 8-bit int8 weights, and this x86 CPU has no VNNI: onnxruntime's int8 kernels can "
                "saturate here, so its results may differ from the Keras model more than its export gate measured. "
                "Export it again with --reduce-range on for CPUs like this one.",)
    return ()


class Classifier:
    """Classifies images with an exported ``.tflite`` or ``.onnx`` artefact.

    Everything it needs - class names, input size, resize method, quantisation - is read from the file's own
    metadata; nothing is guessed from names or constants. ``warnings`` says what makes the file less faithful on
    this machine than its export gate measured (``deployment_warnings``).
    """

    def __init__(self, backend: Backend, metadata: dict, path: Path):
        # Checked against the model's own output width here, where both are known; ``info`` is the typed form.
        self.info = ArtifactMetadata.from_dict(metadata, path, getattr(backend, "output_width", None))
        self.metadata = metadata
        self.path = path
        self.name = path.stem  # labels this model's results; see ``distinct_names`` for several models
        self.class_names = self.info.class_names
        try:
            self.preprocess = PreprocessSpec.from_dict(metadata["preprocess"])
            # an adopted model's own scaling, layout or logits; edgeclf's exports get ``backend`` itself
            self.backend = adapt_backend(backend, metadata)
        except ConfigError as exc:
            raise DataError(f"{path}: its metadata's input contract is one this runtime cannot follow. {exc}") from None
        if tuple(self.backend.input_shape) != (self.preprocess.height, self.preprocess.width, 3):
            raise DataError(f"{path}: metadata says input {self.preprocess.size} but the model takes "
                            f"{self.backend.input_shape}. The file is inconsistent; export it again.")
        self.warnings = deployment_warnings(metadata, path)

    def __repr__(self) -> str:
        kind = " ".join(str(v) for v in (self.metadata.get("format"), self.info.quantization.get("mode")) if v)
        return (f"Classifier('{self.path}', {kind or 'format unknown'}, input {self.preprocess.height}x"
                f"{self.preprocess.width}, classes {list(self.class_names)})")

    @classmethod
    def load(cls, path: str | os.PathLike, threads: int | None = None) -> "Classifier":
        """Opens an artefact with the backend its format needs.

        Args:
            path: An artefact written by ``edgeclf export``.
            threads: Inference threads; None uses every available core (LiteRT's own default is 1).

        Raises:
            DataError: If the file is unreadable or carries no edgeclf metadata.
            BackendUnavailableError: If its backend library is missing (the message names the install command).
        """
        path = Path(path)
        if threads is not None and threads < 1:
            raise ConfigError(f"Received: threads={threads}. Expected at least 1, or None for all cores.")
        if path.is_dir():
            raise DataError(f"Received: {path}, a folder. Expected a .tflite or .onnx file (edgeclf predict takes the "
                            "model first: MODEL PATH..., or --model MODEL).")
        if not path.is_file():
            raise DataError(f"Model not found: {path}.")
        backend = open_backend(path, threads or default_threads())
        if backend.metadata is None:
            raise DataError(NO_METADATA.format(path=path))
        return cls(backend, backend.metadata, path)

    def prepare(self, image: Image, *, bgr: bool = False) -> np.ndarray:
        """Decodes (for a path or bytes) and resizes one image to the model's input, as training did.

        Args:
            image: A path, encoded bytes, a binary file, a PIL image, or an (H, W, 3) uint8 array.
            bgr: Arrays are in OpenCV's BGR order (``cv2.imread``, video frames) rather than RGB.
        """
        if isinstance(image, np.ndarray):
            return preprocess_frame(image, self.preprocess, bgr=bgr)
        return load_image(image, self.preprocess)

    def classify_pixels(self, pixels: np.ndarray) -> list[Classification]:
        """Batch API on already prepared (N, H, W, 3) uint8 pixels."""
        if len(pixels) == 0:
            return []
        probs = self.backend.run(pixels)
        return [Classification(p, self.class_names) for p in probs]

    def classify(self, images: Iterable[Image], *, bgr: bool = False) -> list[Classification]:
        """Batch API: paths, encoded bytes, binary files, PIL images or (H, W, 3) uint8 arrays (RGB, or BGR with
        ``bgr=True`` for OpenCV images).

        Raises:
            ImageDecodeError: For the first image that cannot be decoded (``stream`` carries on past bad images).
            ConfigError: For one image instead of a list of them, or an item that is not an image.
        """
        _refuse_one_image(images, "classify")
        prepared = [self.prepare(i, bgr=bgr) for i in images]
        return self.classify_pixels(np.stack(prepared)) if prepared else []

    def stream(self, images: Iterable[Image], batch_size: int = 8, workers: int | None = None, *, bgr: bool = False
               ) -> Iterator[tuple[Image, Classification | ImageDecodeError]]:
        """Streaming API: yields ``(image, result)`` in input order; a bad image yields its ImageDecodeError.

        Decoding runs on ``workers`` threads while the model classifies the previous batch; at most a few
        batches are in flight, so memory stays bounded for any number of images. ``bgr`` as in ``classify``.
        """
        for item, results in stream_many([self], images, batch_size, workers, bgr=bgr):
            yield item, results[0]


def _refuse_one_image(images: object, method: str) -> None:
    if is_one_image(images):
        raise ConfigError(f"Received one image ({type(images).__name__}) where {method}() takes a list of images. "
                          f"For one image: {method}([image]).")


def check_threshold(threshold: float | None, models: Iterable[tuple[str, Sequence[str]]] = ()) -> None:
    """Refuses a threshold outside [0, 1], or one given for a model that is not two-class, before any work.

    Args:
        threshold: The probability class 1 must reach, or None.
        models: ``(name, class_names)`` of each model it will apply to.

    Raises:
        ConfigError: Naming the value or the model.
    """
    if threshold is None:
        return
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"Received: threshold={threshold}. Expected a probability between 0 and 1.")
    for name, class_names in models:
        if len(class_names) != 2:
            raise ConfigError(f"Received: threshold={threshold} for {name}, which has {len(class_names)} classes. "
                              "A threshold applies to two-class models only.")


def stream_many(classifiers: Sequence[Classifier], images: Iterable[Image], batch_size: int = 8,
                workers: int | None = None, *, bgr: bool = False
                ) -> Iterator[tuple[Image, list[Classification | ImageDecodeError]]]:
    """Runs several classifiers over the same images, decoding each image once per distinct input contract.

    ``bgr``: arrays among ``images`` are in OpenCV's BGR order (see ``Classifier.classify``). ``images`` may yield
    ``sources.INPUT_IDLE`` when it has nothing more ready: every image before it is then classified and yielded
    before the next is asked for (otherwise results trail the input by the read-ahead, a few images).

    Yields:
        ``(image, [result per classifier])`` in input order; a result is an ImageDecodeError for a bad image.
    """
    _refuse_one_image(images, "stream")
    if batch_size < 1:
        raise ConfigError(f"Received: batch_size={batch_size}. Expected at least 1.")
    if workers is not None and workers < 1:
        raise ConfigError(f"Received: workers={workers}. Expected at least 1, or None for all cores.")
    specs = list(dict.fromkeys(c.preprocess for c in classifiers))
    first_for_spec = {spec: next(c for c in classifiers if c.preprocess == spec) for spec in specs}

    def decode(item):
        if is_unmatched_pattern(item):
            return ImageDecodeError(item, "no file matches this pattern")
        try:
            return {spec: first_for_spec[spec].prepare(item, bgr=bgr) for spec in specs}
        except ImageDecodeError as exc:
            if isinstance(item, (str, os.PathLike)) and os.path.isdir(item):  # only once decoding has failed
                return ImageDecodeError(exc.source, empty_folder_reason(item) or "a folder, not an image (`predict` "
                                        "expands folders named as arguments, not read from stdin; in Python, "
                                        "expand_paths)")
            return exc
        except OSError as exc:
            return ImageDecodeError(str(item), f"unreadable: {exc.strerror or exc}")

    def flush(batch):
        good = [i for i, (_, d) in enumerate(batch) if not isinstance(d, ImageDecodeError)]
        per_model = []
        for c in classifiers:
            pixels = np.stack([batch[i][1][c.preprocess] for i in good]) if good else np.zeros((0,))
            per_model.append(dict(zip(good, c.classify_pixels(pixels))) if good else {})
        for i, (item, decoded) in enumerate(batch):
            if isinstance(decoded, ImageDecodeError):
                yield item, [decoded] * len(classifiers)
            else:
                yield item, [results[i] for results in per_model]

    workers = workers or default_threads()
    in_flight = max(2 * batch_size, 2 * workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        batch: list = []

        def drain(keep: int):
            # Move finished decodes into the batch until at most ``keep`` are in flight; classify full batches.
            nonlocal batch
            while len(pending) > keep:
                done_item, fut = pending.popleft()
                batch.append((done_item, fut.result()))
                if len(batch) == batch_size:
                    yield from flush(batch)
                    batch = []

        def drain_all():
            # Everything held goes out: at the end, or when the source has nothing more ready for now.
            nonlocal batch
            yield from drain(0)
            if batch:
                yield from flush(batch)
                batch = []

        for item in images:
            if item is INPUT_IDLE:  # not when the read-ahead fills: whoever feeds one image may wait for it
                yield from drain_all()
                continue
            pending.append((item, pool.submit(decode, item)))
            yield from drain(in_flight - 1)
        yield from drain_all()


def distinct_names(classifiers: Sequence[Classifier]) -> None:
    """Renames ``classifiers`` so that no two share a name: the results of several models are keyed by it.

    Each keeps its file stem (``helmet_int8``) where that alone is unique, else its file name
    (``helmet_int8.tflite`` beside ``helmet_int8.onnx``), else folder and file name; the same file given twice gets
    ``#2``, ``#3`` after its name.
    """
    files = list(dict.fromkeys(c.path.resolve() for c in classifiers))
    names = {f: f.stem for f in files}
    for level in (lambda f: f.name, lambda f: f"{f.parent.name}/{f.name}"):
        taken = list(names.values())
        names = {f: level(f) if taken.count(n) > 1 else n for f, n in names.items()}
    seen: dict[Path, int] = {}
    for c in classifiers:
        f = c.path.resolve()
        seen[f] = seen.get(f, 0) + 1
        c.name = names[f] if seen[f] == 1 else f"{names[f]}#{seen[f]}"
