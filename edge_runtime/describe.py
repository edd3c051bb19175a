"""What an exported artefact says about itself, in readable lines: ``edgeclf info``.

Everything comes from the metadata inside the file (the sidecar ``NAME.json`` may not have travelled with it to
the device), plus the warnings that apply on this machine. A trained ``model.keras`` is described from its run's
``metadata.json`` and ``metrics.json`` instead.
"""

from __future__ import annotations

from pathlib import Path

from .classifier import deployment_warnings
from .errors import ConfigError, DataError
from .metadata import ArtifactMetadata
from .preprocess import describe_fit
from .tensor import InputTensor

MAX_CLASSES_SHOWN = 20


def _quantised(q: dict | None) -> str:
    # LiteRT reports scale 0 for a float tensor: not quantised
    return f", scale {q['scale']:.6g} zero point {q['zero_point']}" if q and q.get("scale") else ""


def _tensor(inp: dict) -> str:
    """How the runtime turns the pixels into the model's input, where that is more than passing them on."""
    try:
        tensor = InputTensor.from_metadata(inp)
    except ConfigError as exc:
        return f"; model input: not supported here ({exc})"
    if tensor.identity:
        return ""
    fmt = ", ".join
    if tensor.channels == 1:
        return (f"; model input {tensor.layout} grayscale (Pillow's luminance), (luma - mean) / std with mean "
                f"{tensor.mean[0]:g} and std {tensor.std[0]:g}")
    return (f"; model input {tensor.layout} {tensor.color}, (pixel - mean) / std with mean "
            f"({fmt(f'{m:g}' for m in tensor.mean)}) and std ({fmt(f'{v:g}' for v in tensor.std)})")


def _quantization(fmt: str, q: dict) -> str:
    mode = q.get("mode", "unknown")
    if fmt == "tflite":
        return {"fp32": "none (float32)", "fp16": "float16 weights", "dynamic": "dynamic range (int8 weights, float "
                "activations)", "int8": "full integer (int8 weights and activations)"}.get(mode, mode)
    if mode != "int8":
        return "none (float32)" if mode == "fp32" else mode
    parts = [f"int8 {q.get('format', '')} ({q.get('activations', 'uint8')} activations, "
             f"{'per-channel' if q.get('per_channel') else 'per-tensor'} int8 weights)".replace("  ", " ")]
    if "reduce_range" in q:
        bits = "7-bit weights (reduce_range)" if q["reduce_range"] else "8-bit weights"
        source = q.get("reduce_range_from")
        parts.append(bits + (f", set by {source}" if source else ""))
    if q.get("calibration_method"):
        parts.append(f"{q['calibration_method']} calibration")
    return "; ".join(parts)


def _gate(gate: dict, fid: dict) -> str:
    if not fid.get("verified"):
        text = f"not verified ({fid.get('reason') or 'no fidelity figures recorded'})"
        check = fid.get("check")
        if check:
            text += f"; --check: accuracy {100 * check['accuracy']:.2f} % on {check['images']}"
            if check.get("label_order_problem"):
                text += f"; {check['label_order_problem']}"
        return text
    verdict = "passed" if gate.get("passed", True) else "REJECTED"
    text = (f"{verdict} (min agreement {100 * gate['min_agreement']:.2f} %): " if "min_agreement" in gate else
            f"{verdict}: ")
    lo, hi = fid.get("agreement_ci95", (None, None))
    text += f"top-1 agreement with Keras {100 * fid['agreement']:.2f} %"
    if lo is not None:
        text += f" (95 % interval {100 * lo:.2f}-{100 * hi:.2f})"
    text += f" on {fid.get('images') or str(fid['n']) + ' images'}, max |dp| {fid['max_abs_diff']:.4f}"
    if "accuracy_change_pp" in fid:
        text += f", accuracy {100 * fid['accuracy']:.2f} % ({fid['accuracy_change_pp']:+.2f} pp vs Keras)"
    if fid.get("measured_where_it_saturates"):
        text += "; measured on an x86 CPU without VNNI, where its 8-bit weights saturate"
    if gate.get("reason"):
        text += f"; reason: {gate['reason']}"
    return text


def _resize(pre: dict) -> str:
    """How an image becomes the input: ``bilinear resize``, or ``centre crop 0.875, bilinear resize``."""
    fitted = describe_fit(pre.get("crop"), pre.get("pad"))
    return f"{fitted + ', ' if fitted else ''}{pre.get('resize', '?')} resize"


def _classes(class_names) -> str:
    names = list(class_names)
    return f"{len(names)}: " + ", ".join(names[:MAX_CLASSES_SHOWN]) + (
        f", ... ({len(names) - MAX_CLASSES_SHOWN} more)" if len(names) > MAX_CLASSES_SHOWN else "")


def describe_run_model(meta: dict, path: Path, size_bytes: int | None = None, metrics: dict | None = None,
                       sha256: str | None = None) -> list[tuple[str, str]]:
    """``(field, text)`` lines describing a trained ``model.keras`` from the run's ``metadata.json``.

    Args:
        meta: The run's metadata (``artifact.read_run_metadata``).
        path: The ``.keras`` file.
        size_bytes: The file's size, when known.
        metrics: The run's ``metrics.json``, when there is one.
        sha256: The file's SHA-256, to check against the one training recorded.
    """
    pre, model, train = meta.get("preprocess") or {}, meta.get("model") or {}, meta.get("train") or {}
    data, hardware = meta.get("dataset") or {}, meta.get("hardware") or {}
    lo, hi = pre.get("value_range", (0, 255))
    weights = model.get("weights")
    lines = [
        ("model", "keras" + (f", {size_bytes / 1024:.0f} KiB" if size_bytes else "")),
        ("classes", _classes(meta.get("class_names", []))),
        ("input", f"{pre.get('height')}x{pre.get('width')} {pre.get('color', 'RGB')} {pre.get('layout', 'NHWC')} "
                  f"float32; pixels {lo:g}-{hi:g}, {_resize(pre)}"),
        ("backbone", f"{meta.get('backbone', '?')}" + (f", initial weights {weights}" if weights else "")),
    ]
    sizes = data.get("split_sizes") or {}
    if train:
        text = f"{'up to ' if train.get('early_stopping') else ''}{train.get('epochs')} epochs"
        if weights not in (None, "none") and train.get("fine_tune_layers") and train.get("fine_tune_epochs"):
            text += (f" with the backbone frozen, then {train['fine_tune_epochs']} with its top "
                     f"{train['fine_tune_layers']} layers unfrozen")
        if train.get("early_stopping"):
            text += f" (early stopping on {train.get('monitor', 'val_loss')})"
        text += f"; batch {train.get('batch_size')}, learning rate {train.get('learning_rate')}, seed {train.get('seed')}"
        if (train.get("folds") or 1) > 1:
            text += f", {train['folds']} folds"
        backend = hardware.get("keras_backend")
        gpus = hardware.get("gpus") or []
        text += f"; {backend or '?'} on {', '.join(map(str, gpus)) if gpus else 'CPU'}"
        if hardware.get("mixed_precision"):
            text += ", mixed precision"
        lines.append(("training", text))
    if data:
        split = " / ".join(f"{sizes[k]} {k}" for k in ("train", "val", "test") if k in sizes)
        lines.append(("dataset", f"{data.get('path', '?')}" + (f" ({split})" if split else "")))
    test = ((metrics or {}).get("splits") or {}).get("test")
    if test:
        text = f"accuracy {100 * test['accuracy']:.2f} %, F1 macro {test['f1_macro']:.4f}"
        if test.get("roc_auc") is not None:
            text += f", ROC-AUC {test['roc_auc']:.4f}"
        lines.append(("test", text + f" ({test['n']} images)"))
    lines.append(("trained", f"{meta.get('created', '?')} by edgeclf {meta.get('edgeclf_version', '?')}"))
    recorded = meta.get("model_sha256")
    if sha256 and recorded and sha256 != recorded:
        lines.append(("warning", f"{path.name} is not the file training wrote (sha256 {sha256[:16]}, metadata.json "
                                 f"says {recorded[:16]}): the figures above describe that one"))
    return lines


def describe(meta: ArtifactMetadata | dict, path: Path, size_bytes: int | None = None) -> list[tuple[str, str]]:
    """``(field, text)`` lines describing an artefact from its embedded metadata.

    Args:
        meta: The metadata (``artifact.read_metadata``'s dict is typed here).
        path: The file, for its name and this machine's warnings.
        size_bytes: The file's size, when known.
    """
    if not isinstance(meta, ArtifactMetadata):
        meta = ArtifactMetadata.from_dict(meta, path)
    inp, out, pre = meta.input, meta.output, meta.preprocess
    h, w = pre.get("height"), pre.get("width")
    lo, hi = pre.get("value_range", (0, 255))
    mode = meta.quantization.get("mode", "unknown")
    lines = [
        ("artefact", f"{meta.format} {mode}" + (f", {size_bytes / 1024:.0f} KiB" if size_bytes else "")),
        ("classes", _classes(meta.class_names)),
        ("input", f"{h}x{w} {pre.get('color', 'RGB')} {pre.get('layout', 'NHWC')} {inp.dtype}"
                  f"{_quantised(inp.quantization)}; pixels {lo:g}-{hi:g}, {_resize(pre)}"
                  + (", JPEG draft decoding" if pre.get("draft") else "") + _tensor(inp.to_dict())),
        ("output", f"{out.kind}, {out.dtype}{_quantised(out.quantization)}"
                   + ("; one sigmoid unit scoring the second class" if out.units == 1 else "")
                   + (f"; the runtime applies a {'sigmoid' if out.units == 1 else 'softmax'}"
                      if out.kind == "logits" else "")),
        ("quantization", _quantization(meta.format, meta.quantization)),
    ]
    source = f"{meta.source_model} (sha256 {meta.source_model_sha256[:16]})"
    if meta.backbone:
        source += f", backbone {meta.backbone}"
    adapter = meta.adapter
    if adapter:
        shape = "x".join("?" if d is None else str(d) for d in adapter.get("source_input_shape") or [])
        source += (f", {'adopted: made' if adapter.get('adopted') else 'trained'} outside edgeclf (input norm "
                   f"{adapter.get('input_norm')}, output "
                   f"{adapter.get('output')}, its own input {shape or '?'}"
                   + (", grayscale" if adapter.get("grayscale") else "") + ")")
    lines += [("source", source),
              ("adopted" if (adapter or {}).get("adopted") else "exported",
               f"{meta.created} by edgeclf {meta.edgeclf_version}"),
              ("gate", _gate(meta.gate, meta.fidelity))]
    lines += _support_lines(meta, path)
    lines += [("warning", w) for w in deployment_warnings(meta.to_dict(), path)]
    return lines


def _support_lines(meta: ArtifactMetadata, path: Path) -> list[tuple[str, str]]:
    """The file's TFLite Support metadata and who can read the file, for a ``.tflite`` file."""
    from .support_metadata import consumers, describe_support, read_support_metadata, support_metadata_for

    if meta.format != "tflite":
        return [("readable by", consumers(meta.format, None))]
    try:
        support = read_support_metadata(path.read_bytes())
    except (OSError, DataError, ValueError, IndexError) as exc:  # another writer's, or a hostile, flatbuffer
        return [("support meta", f"unreadable ({exc})"), ("readable by", consumers(meta.format, None, "unreadable"))]
    if support is None:
        return [("support meta", "none"), ("readable by", consumers(meta.format, None, support_metadata_for(meta)[1]))]
    lines = [("support meta", describe_support(support)), ("readable by", consumers(meta.format, support))]
    fitted = describe_fit(meta.preprocess.get("crop"), meta.preprocess.get("pad"))
    if fitted:
        lines.append(("warning", f"MediaPipe Tasks and the Task Library resize the whole image: they do not apply "
                                 f"this model's {fitted}, so they feed it different pixels than edgeclf does"))
    names = list(meta.class_names)
    expected = names[1:] if meta.output.units == 1 else names
    if support.labels and list(support.labels) != expected:
        lines.append(("warning", "its TFLite Support labels differ from edgeclf's class names: MediaPipe Tasks and "
                                 "the Task Library will name the classes differently from edgeclf"))
    return lines
