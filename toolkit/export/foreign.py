"""Keras classifiers trained outside edgeclf: the contract edgeclf cannot read from the file, and the adapter to it.

An edgeclf model takes RGB pixels 0-255 and outputs one probability per class, with its normalisation inside the
graph. A model from a notebook usually expects its inputs scaled by the training pipeline (``x / 255``,
``preprocess_input``) and may output logits or one sigmoid unit. ``adapt_model`` wraps it in built-in layers so that
the artefacts keep edgeclf's contract and the runtime needs to know nothing about where the model came from.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgeclf.edge_runtime.errors import ConfigError, DataError
from edgeclf.edge_runtime.preprocess import RESIZE_METHODS, PreprocessSpec
from edgeclf.edge_runtime.support_metadata import labels_from_text
from edgeclf.edge_runtime.tensor import LUMA_RGB, InputTensor
from edgeclf.models.factory import check_img_size, img_hw

# How the model's training pipeline scaled RGB 0-255 pixels, named as the CLI takes them -> models.NORMALISATIONS.
INPUT_NORMS = {"raw": "in_model", "unit": "unit", "tf": "tf", "caffe": "caffe", "torch": "torch"}
OUTPUTS = ("auto", "probabilities", "logits")
# --mean/--std (edgeclf adopt): a normalisation given by its numbers rather than a preset's name.
CUSTOM_NORM = "custom"
# How much more of the labelled images another order of --labels must get right to be named (label_order_problem).
ORDER_GAIN = 0.10


@dataclass(frozen=True)
class ForeignSpec:
    """What a Keras model trained outside edgeclf does not say about itself.

    Args:
        class_names: One per output unit, in output order; two for a one-unit sigmoid output, whose value is the
            probability of the second.
        input_norm: How the training pipeline scaled the RGB 0-255 pixels before the model, one of ``INPUT_NORMS``.
        output: ``probabilities`` (softmax, or one sigmoid unit), ``logits``, or ``auto`` to read it from the
            model's last layer.
        img_size: Input size for a model whose input size is not fixed: the side of a square input, or
            ``(height, width)``.
        resize: Resampling filter of the training pipeline, one of ``RESIZE_METHODS``.
        mean: With ``input_norm="custom"`` (``--mean --std``): per-RGB-channel mean of pixels
            scaled to 0-1, torchvision's convention (``(x / 255 - mean) / std``); one value applies to all three.
        std: Its standard deviation, on the same scale.
        crop: The centre crop of the training pipeline (``PreprocessSpec.crop``): None for none, 0.875 for
            torchvision's ``Resize(256)`` + ``CenterCrop(224)``.
        pad: The letterbox colour of a training pipeline that padded to the input's aspect ratio
            (``PreprocessSpec.pad``), or None.
    """

    class_names: tuple[str, ...]
    input_norm: str
    output: str = "auto"
    img_size: int | tuple[int, int] | None = None
    resize: str = "bilinear"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    crop: float | None = None
    pad: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", check_labels(self.class_names))
        if self.mean is not None or self.std is not None or self.input_norm == CUSTOM_NORM:
            self._check_custom()
        elif self.input_norm not in INPUT_NORMS:
            raise ConfigError(f"Received: input_norm='{self.input_norm}'. Supported: {', '.join(INPUT_NORMS)}.")
        if self.output not in OUTPUTS:
            raise ConfigError(f"Received: output='{self.output}'. Supported: {', '.join(OUTPUTS)}.")
        if self.img_size is not None:
            object.__setattr__(self, "img_size", check_img_size(self.img_size))
        if self.resize not in RESIZE_METHODS:
            raise ConfigError(f"Received: resize='{self.resize}'. Supported: {', '.join(RESIZE_METHODS)}.")
        fit = self.preprocess(1, 1)  # PreprocessSpec checks the crop and the pad, and refuses both together
        object.__setattr__(self, "crop", fit.crop)
        object.__setattr__(self, "pad", fit.pad)


    def _check_custom(self) -> None:
        if self.input_norm != CUSTOM_NORM:
            raise ConfigError(f"Received: --mean/--std and --input-norm {self.input_norm}. Give one or the other.")
        if self.mean is None or self.std is None:
            given = "neither" if self.mean is None and self.std is None else "only one"
            raise ConfigError(f"Received: {given} of --mean and --std. Give both: the per-channel mean and standard "
                              "deviation its training normalised 0-1 pixels with.")
        for name in ("mean", "std"):
            values = tuple(float(v) for v in getattr(self, name))
            values = values * 3 if len(values) == 1 else values
            if len(values) != 3:
                raise ConfigError(f"Received: --{name} with {len(values)} values. Expected 3 (R,G,B) or 1.")
            low = 0.0 if name == "mean" else 1e-6
            if not all(low <= v <= 1.0 for v in values):
                raise ConfigError(f"Received: --{name} {','.join(f'{v:g}' for v in values)}. Expected values for "
                                  "pixels scaled to 0-1, as torchvision gives them (e.g. 0.485,0.456,0.406); on a "
                                  "0-255 scale, divide them by 255.")
            object.__setattr__(self, name, values)

    def input_tensor(self, layout: str = "NHWC", channels: int = 3) -> InputTensor:
        """The input tensor this normalisation feeds a model with ``layout`` and ``channels`` (1: grayscale)."""
        if channels == 1:
            check_grayscale_norm(self)
        if self.input_norm == CUSTOM_NORM:
            return InputTensor(layout, "RGB", tuple(255.0 * m for m in self.mean), tuple(255.0 * s for s in self.std),
                               channels)
        return InputTensor.preset(self.input_norm, layout, channels)

    def preprocess(self, height: int, width: int) -> PreprocessSpec:
        """The preprocessing contract of the pipeline at an input of ``height`` x ``width``."""
        return PreprocessSpec(height, width, resize=self.resize, crop=self.crop, pad=self.pad)

    def describe_norm(self) -> str:
        """The normalisation as the metadata records it: a preset's name, or the custom mean and std."""
        if self.input_norm == CUSTOM_NORM:
            return f"custom: mean {list(self.mean)}, std {list(self.std)} on 0-1 pixels"
        return self.input_norm

    def to_dict(self) -> dict:
        """A JSON-ready dict; ``ForeignSpec(**d)`` reverses it."""
        return {**asdict(self), "class_names": list(self.class_names)}


def refuse_run_model(model_path: Path) -> None:
    """Refuses the options that describe a foreign model for a model from an edgeclf run.

    Raises:
        ConfigError: If ``model_path`` has the ``metadata.json`` of an edgeclf run beside it.
    """
    if Path(model_path).with_name("metadata.json").exists():
        raise ConfigError(f"{model_path} has a metadata.json beside it, which sets its class names and input: "
                          "--labels, --input-norm, --model-output, --img-size, --resize, --crop and --pad are for "
                          "Keras models trained elsewhere. Leave them out.")


def check_outputs(probs: np.ndarray, labels: np.ndarray | None, class_names: Sequence[str],
                  warn: Callable[[str], None]) -> None:
    """The checks on an adapted model's outputs that export and evaluate share.

    Raises ``check_probabilities``' error for outputs that are not probabilities, and passes ``warn`` the
    ``label_order_problem`` message when ``labels`` are known and another order of them fits better.
    """
    check_probabilities(probs)
    if labels is not None:
        problem = label_order_problem(probs, labels, class_names)
        if problem:
            warn(problem)


def spec_from_artifact(meta: dict) -> ForeignSpec:
    """The ForeignSpec an artefact was exported with, from its metadata (``adapter``, class names, input)."""
    adapter, pre = meta["adapter"], meta["preprocess"]
    variable = None in adapter["source_input_shape"][:2]
    return ForeignSpec(tuple(meta["class_names"]), adapter["input_norm"], adapter["output"],
                       (pre["height"], pre["width"]) if variable else None, pre["resize"], adapter.get("mean"),
                       adapter.get("std"), pre.get("crop"), pre.get("pad"))


def check_labels(class_names) -> tuple[str, ...]:
    """The class names stripped, refused unless there are at least two, none empty and none repeated.

    Raises:
        ConfigError: Naming what is wrong.
    """
    names = tuple(str(n).strip() for n in class_names)
    if len(names) < 2 or any(not n for n in names):
        raise ConfigError(f"Received: labels {list(names)}. Expected at least two non-empty class names, in the "
                          "order of the model's outputs.")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"Received: labels with {', '.join(repeated)} more than once. Expected each class once.")
    return names


def parse_labels(value: str) -> tuple[str, ...]:
    """``--labels``: a file with one class name per line (``labels.txt``), or the names separated by commas.

    Lines numbered in order from 0 (``0 cat``, as Teachable Machine writes them) lose their numbers.

    Raises:
        DataError: If a named file is missing or cannot be read as UTF-8 text.
    """
    if not os.path.isfile(value):
        if "," not in value and (os.sep in value or "/" in value or Path(value).suffix in (".txt", ".csv", ".json")):
            raise DataError(f"Labels file not found: {value}. Expected a file with one class name per line, or "
                            "the names separated by commas.")
        return tuple(part.strip() for part in value.split(","))
    try:
        text = Path(value).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{value} is not UTF-8 text (byte {exc.start}). Save it as UTF-8, one class name per "
                        "line.") from None
    except OSError as exc:
        raise DataError(f"Cannot read {value}: {exc.strerror or exc}.") from None
    return labels_from_text(text)


def _last_activation(model) -> str | None:
    """The name of the activation the model's output goes through last, when its last layer says."""
    from keras import layers

    layer = model.layers[-1] if getattr(model, "layers", None) else None
    if layer is None:
        return None
    if hasattr(layer, "layers") and layer.layers:  # a nested model as the last layer
        return _last_activation(layer)
    if isinstance(layer, layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None) if activation is not None else None


def _output_kind(model, units: int, spec: ForeignSpec) -> str:
    if spec.output != "auto":
        return spec.output
    activation = _last_activation(model)
    if activation == "softmax" and units > 1 or activation == "sigmoid" and units == 1:
        return "probabilities"
    if activation == "linear":
        return "logits"
    if activation == "sigmoid":
        raise ConfigError(f"The model ends in {units} sigmoid units: a multi-label output, where each class is decided "
                          "on its own. edgeclf exports single-label classifiers (one class per image).")
    raise ConfigError(f"Cannot tell from the model's last layer (activation: {activation or 'unknown'}) whether it "
                      "outputs probabilities or logits. Pass --model-output probabilities or --model-output logits.")


def adapt_model(model, spec: ForeignSpec):
    """Wraps ``model`` so that it takes RGB 0-255 pixels and outputs one probability per class.

    Returns:
        ``(adapted keras.Model, run metadata)``: the metadata stands in for an edgeclf run's ``metadata.json``
        (class names, preprocessing) and records the adapter.

    Raises:
        ConfigError: For a model whose input or output edgeclf cannot adapt, or labels that do not fit it.
    """
    import keras
    from keras import layers

    from edgeclf.models.factory import normalise, normalise_per_channel

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConfigError(f"The model has {len(model.inputs)} input(s) and {len(model.outputs)} output(s). Expected "
                          "an image classifier with one image input and one output.")
    in_shape, out_shape = tuple(model.inputs[0].shape), tuple(model.outputs[0].shape)
    if len(in_shape) != 4 or in_shape[-1] not in (1, 3):
        hint = " It looks channels-first (N, C, H, W); edgeclf needs channels-last." if (
            len(in_shape) == 4 and in_shape[1] in (1, 3)) else ""
        raise ConfigError(f"The model's input has shape {in_shape}. Expected (batch, height, width, 1 or 3).{hint}")
    _, h, w, channels = in_shape
    h, w = input_size(h, w, spec.img_size, f"The model's input size is not fixed ({in_shape})")
    if len(out_shape) != 2 or out_shape[-1] is None:
        raise ConfigError(f"The model's output has shape {out_shape}. Expected (batch, classes).")
    units = out_shape[-1]
    check_label_count(spec.class_names, units)
    if channels == 1:
        check_grayscale_norm(spec)
    kind = _output_kind(model, units, spec)

    inputs = keras.Input((h, w, 3), name="pixels", dtype="float32")
    x = inputs
    if channels == 1:  # trained on grayscale: the same luminance Pillow's convert("L") computes
        luma = layers.Conv2D(1, 1, name="luminance", trainable=False)
        x = luma(x)
        luma.set_weights([np.asarray(LUMA_RGB, dtype="float32").reshape(1, 1, 3, 1), np.zeros(1, dtype="float32")])
    if spec.input_norm == CUSTOM_NORM:  # (x / 255 - mean) / std, as keras' "torch" mode with other numbers
        n = 1 if channels == 1 else 3
        x = normalise_per_channel(x, [255.0 * m for m in spec.mean[:n]], [255.0 * s for s in spec.std[:n]],
                                  "input_norm")
    else:
        x = normalise(x, INPUT_NORMS[spec.input_norm], name="input_norm")
    y = model(x)
    y = layers.Activation("linear", dtype="float32", name="source_output")(y)  # a float16 model's output too
    if units == 1:
        if kind == "logits":
            y = layers.Activation("sigmoid", name="sigmoid")(y)
        # (p) -> (1 - p, p) with fixed weights: the second label is the one the sigmoid unit scores.
        pair = layers.Dense(2, name="two_classes", trainable=False)
        y = pair(y)
        pair.set_weights([np.asarray([[-1.0, 1.0]], dtype="float32"), np.asarray([1.0, 0.0], dtype="float32")])
    elif kind == "logits":
        y = layers.Softmax(name="softmax")(y)
    adapted = keras.Model(inputs, y, name=f"edgeclf_adapted_{model.name}")
    meta = {
        "class_names": list(spec.class_names),
        "preprocess": spec.preprocess(int(h), int(w)).to_dict(),
        "backbone": None,
        "adapter": {"source_input_shape": [None if d is None else int(d) for d in in_shape[1:]],
                    "input_norm": spec.input_norm, "output": kind, "output_units": int(units),
                    "grayscale": channels == 1,
                    **({"mean": list(spec.mean), "std": list(spec.std)} if spec.input_norm == CUSTOM_NORM else {})},
    }
    return adapted, meta


def input_size(h: int | None, w: int | None, img_size: int | tuple[int, int] | None, unfixed: str
               ) -> tuple[int, int]:
    """The ``(height, width)`` a model trained elsewhere runs at: its own where fixed, ``--img-size`` for the rest.

    Args:
        h, w: The model's input height and width, None where not fixed.
        img_size: What ``--img-size`` gave (``check_img_size``), or None.
        unfixed: Opens the error for a size that is not fixed and not given, e.g. "The model's input size is
            not fixed ((None, None, None, 3))".

    Raises:
        ConfigError: For a size that is neither fixed nor given, or given unlike the model's fixed one.
    """
    if img_size is None:
        if h is None or w is None:
            raise ConfigError(f"{unfixed}. Pass --img-size with the size it was trained at: N for N x N, or HxW "
                              "(height first).")
        return int(h), int(w)
    gh, gw = img_hw(img_size)
    if (h is not None and h != gh) or (w is not None and w != gw):
        fixed = f"{h or 'any'}x{w or 'any'}"
        if h is not None and w is not None:
            raise ConfigError(f"Received: --img-size {gh}x{gw} for a model whose input is fixed at {fixed}. "
                              "Leave --img-size out.")
        raise ConfigError(f"Received: --img-size {gh}x{gw} for a model whose input is {fixed} (height x width). "
                          "Give the size it was trained at, with the fixed side as it is.")
    return gh, gw


def check_label_count(class_names: Sequence[str], units: int) -> None:
    """Refuses labels that do not name the model's outputs: one per unit, or two for one sigmoid unit.

    Raises:
        ConfigError: Naming the count received and the count expected.
    """
    if len(class_names) != (2 if units == 1 else units):
        raise ConfigError(f"Received {len(class_names)} labels ({', '.join(class_names)}) for a model with " + (
            "one sigmoid unit (scoring the second class). Expected 2 labels, negative class first." if units == 1
            else f"{units} output units. Expected {units} labels in the order of its outputs."))


def check_grayscale_norm(spec: ForeignSpec) -> None:
    """Refuses, for a model with one input channel, a normalisation that treats colour channels differently.

    Raises:
        ConfigError: For caffe or torch, or --mean/--std with different values per channel.
    """
    if spec.input_norm == CUSTOM_NORM and (len(set(spec.mean)) > 1 or len(set(spec.std)) > 1):
        raise ConfigError(f"Received: --mean {spec.mean} and --std {spec.std}, per colour channel, for a model with one "
                          "input channel. Expected one value each.")
    if spec.input_norm in ("caffe", "torch"):
        raise ConfigError(f"Received: --input-norm {spec.input_norm} for a model with one input channel; "
                          f"{spec.input_norm} normalises three colour channels. Expected raw, unit or tf.")


def probability_problem(outputs: np.ndarray, value_tolerance: float = 1e-4, sum_tolerance: float = 1e-3
                        ) -> str | None:
    """What shows that ``outputs`` (one row per image) are not probabilities, or None when they are.

    Args:
        outputs: The model's outputs.
        value_tolerance: How far outside [0, 1] a value may lie.
        sum_tolerance: How far from 1 a row may sum (a uint8 output rounds each value to its scale).
    """
    sums = outputs.sum(axis=1)
    low, high = float(outputs.min()), float(outputs.max())
    if low < -value_tolerance or high > 1 + value_tolerance or np.abs(sums - 1.0).max() > sum_tolerance:
        return (f"values {low:.3g} to {high:.3g}, rows summing to {sums.min():.3g} to {sums.max():.3g} on "
                f"{len(outputs)} images")
    return None


def check_probabilities(outputs: np.ndarray, value_tolerance: float = 1e-4, sum_tolerance: float = 1e-3) -> None:
    """Refuses a model whose outputs are not probabilities (``--model-output probabilities`` on logits).

    Raises:
        ConfigError: Naming what the outputs look like and the option that fixes it.
    """
    problem = probability_problem(outputs, value_tolerance, sum_tolerance)
    if problem:
        raise ConfigError(f"The model's outputs are not probabilities ({problem}): they look like logits. Pass "
                          "--model-output logits.")


def label_order_problem(probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                        subject: str = "The Keras model") -> str | None:
    """Labelled images the adapted model gets wrong in a pattern usually mean ``--labels`` is not in output order.

    The order that fits gives each output the class it is most often right for (where that names every class once).

    Returns:
        A message when the model is right less often than chance, or when the order that fits is right on at
        least ``ORDER_GAIN`` more of the images (some classes swapped: names in alphabetical rather than output
        order often leave a few in place); None otherwise.
    """
    k = len(class_names)
    predicted = probs.argmax(1)
    accuracy = float((predicted == labels).mean())
    confusion = np.zeros((k, k), dtype=np.int64)  # rows: output index, columns: true class
    np.add.at(confusion, (predicted, labels), 1)
    best = confusion.argmax(1)
    fitted = None
    if sorted(best) == list(range(k)) and all(confusion[i].sum() for i in range(k)):
        fitted = float(confusion[np.arange(k), best].sum()) / len(labels)
    order = f"In the order {','.join(class_names[c] for c in best)} it is right on {100 * fitted:.1f} %." if (
        fitted is not None) else ""
    if accuracy < 1.0 / k:
        return (f"{subject} is right on only {100 * accuracy:.1f} % of {len(labels)} labelled images, below "
                f"chance ({100 / k:.0f} %): --labels is probably not in the order of its outputs. {order}").strip()
    if fitted is not None and fitted - accuracy >= ORDER_GAIN:
        return (f"{subject} is right on {100 * accuracy:.1f} % of {len(labels)} labelled images with --labels "
                f"as given: some are probably not in the order of its outputs. {order}")
    return None
