"""``edgeclf export``: write every requested artefact, verify it through the runtime, and gate it."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

import edgeclf
from edgeclf.edge_runtime.artifact import (METADATA_KEY, check_keras_file, read_run_metadata, sha256_file,
                                           write_tflite_metadata)
from edgeclf.edge_runtime.backends import open_backend
from edgeclf.edge_runtime.classifier import saturates_here
from edgeclf.edge_runtime.errors import ConfigError
from edgeclf.edge_runtime.metadata import ArtifactMetadata, InputInfo, OutputInfo
from edgeclf.edge_runtime.preprocess import PreprocessSpec

from .._deps import import_tf
from ..evaluate import load_keras_model
from ..io import atomic_path, clean_leftovers, ensure_writable_dir, work_dir, write_json
from ..metrics import classification_metrics, wilson_interval
from ..pipeline import predict_probs
from ..progress import Reporter
from . import onnx as onnx_export
from . import tflite as tflite_export
from .archive import write_saved_model
from .foreign import ForeignSpec, adapt_model, check_outputs, refuse_run_model
from .images import ImageSet, folder_images, relocate_dataset, relocate_hint, run_split, run_split_problem
from .spec import ExportSpec, Format, QuantSpec

logger = logging.getLogger(__name__)
# Fewer calibration images than this (unless fewer were asked for) and export warns; TensorFlow's and
# onnxruntime's guides suggest a hundred to a few hundred.
FEW_CALIBRATION_IMAGES = 100
MIN_HELD_OUT = 50  # fewer held-out images than this and the gate also uses the calibration images
GATE_BATCH = 32


@dataclass(frozen=True)
class ExportResult:
    """One artefact: where it is, whether it passed the gate, and its figures."""

    format: str
    mode: str
    path: Path
    passed: bool
    size_bytes: int
    fidelity: dict
    reason: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def fidelity(reference: np.ndarray, probs: np.ndarray, labels: np.ndarray | None, class_names: list[str]) -> dict:
    """How closely an artefact's probabilities follow the Keras model's on the same images.

    Returns:
        n, top-1 agreement with its 95 % (Wilson) interval, max and mean |delta probability|, and with labels
        the accuracy and macro F1 of both and their change in percentage points.
    """
    agree = int((reference.argmax(1) == probs.argmax(1)).sum())
    out = {
        "n": int(len(reference)),
        "agreement": agree / len(reference),
        "agreement_ci95": list(wilson_interval(agree, len(reference))),
        "max_abs_diff": float(np.abs(reference - probs).max()),
        "mean_abs_diff": float(np.abs(reference - probs).mean()),
    }
    if labels is not None:
        ref_m = classification_metrics(labels, reference, class_names)
        art_m = classification_metrics(labels, probs, class_names)
        out.update({
            "accuracy_keras": ref_m["accuracy"], "accuracy": art_m["accuracy"],
            "accuracy_change_pp": 100.0 * (art_m["accuracy"] - ref_m["accuracy"]),
            "f1_keras": ref_m["f1_macro"], "f1": art_m["f1_macro"],
            "f1_change_pp": 100.0 * (art_m["f1_macro"] - ref_m["f1_macro"]),
        })
    return out


def _artifact_metadata(run_meta: dict, source: Path, source_sha: str, fmt: Format, quant: QuantSpec, io: dict,
                       fid: dict, spec: ExportSpec, passed: bool, reason: str) -> ArtifactMetadata:
    pre = run_meta["preprocess"]
    return ArtifactMetadata(
        edgeclf_version=edgeclf.__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        format=fmt.value,
        class_names=tuple(run_meta["class_names"]),
        input=InputInfo(shape=(pre["height"], pre["width"], 3), dtype=io["input_dtype"], layout="NHWC", color="RGB",
                        value_range=tuple(pre["value_range"]), resize=pre["resize"],
                        quantization=io.get("input_quantization")),
        output=OutputInfo(kind="probabilities", dtype=io["output_dtype"], quantization=io.get("output_quantization")),
        preprocess=pre,
        quantization={"mode": quant.mode, **io.get("quantization", {})},
        backbone=run_meta.get("backbone"),
        adapter=run_meta.get("adapter"),
        source_model=source.name,
        source_model_sha256=source_sha,
        fidelity=fid,
        gate={"min_agreement": spec.threshold(quant.mode), "verified": spec.verify, "passed": passed,
              "reason": reason},
    )


def _targets(out_dir: Path, name: str, spec: ExportSpec) -> list[Path]:
    paths = []
    for fmt, quant in spec.jobs():
        stem = out_dir / f"{name}_{quant.mode}"
        paths += [stem.with_suffix(f".{fmt.value}"), Path(f"{stem}.{fmt.value}.rejected"),
                  Path(f"{stem}.{fmt.value}.json")]
    return paths


def export_model(model_path: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
                 spec: ExportSpec | None = None, calib: str | os.PathLike | None = None, name: str | None = None,
                 dataset: str | os.PathLike | None = None, foreign: ForeignSpec | None = None, force: bool = False,
                 reporter: Reporter | None = None) -> list[ExportResult]:
    """Exports a trained model to every requested format and quantisation mode, each gated on fidelity.

    Args:
        model_path: ``model.keras`` with its ``metadata.json`` (an edgeclf run directory), or with ``foreign``
            a ``.keras`` model trained elsewhere.
        out_dir: Output folder; defaults to ``export/`` beside the model.
        spec: What to write.
        calib: Calibration images (a folder or any dataset form); defaults to the run's validation split.
        name: Artefact name prefix; defaults to the run directory's name.
        dataset: Where the training run's dataset is now, when it has moved since training: its val and test
            splits are rebuilt there from ``splits.csv`` (paths relative to the dataset), instead of falling back
            to ``calib`` images for the gate.
        foreign: The class names and input contract of a model trained outside edgeclf (no ``metadata.json``);
            it is wrapped to take RGB 0-255 pixels and output probabilities (``foreign.adapt_model``).
        force: Overwrite existing artefacts.
        reporter: Progress sink.

    Returns:
        One ExportResult per artefact, passed or rejected. Rejected artefacts are left as ``*.rejected``.

    Raises:
        ConfigError: Bad options, existing outputs without ``force``, int8 without calibration data.
        DataError: Unreadable calibration data.
        ExportError: A conversion failed.
    """
    spec = spec or ExportSpec()
    reporter = reporter or Reporter()
    import_tf()  # conversion runs through TensorFlow: a missing TensorFlow or another Keras backend fails first
    model_path = Path(model_path)
    run_dir = model_path.parent
    run_meta = _source_metadata(model_path, foreign, dataset)
    if dataset is not None:
        run_meta = relocate_dataset(run_meta, dataset)
    out = Path(out_dir) if out_dir is not None else run_dir / "export"
    # resolve(): `edgeclf export model.keras` run inside the run folder names the artefacts after that folder.
    name = name or (run_dir.resolve().name if model_path.name == "model.keras" else model_path.stem)
    _prepare_output(out, name, spec, force, reporter)

    model = load_keras_model(model_path)
    if foreign is not None:
        model, run_meta = adapt_model(model, foreign)
    _warn_missing_modes(spec, reporter)
    reporter.stage("Loading calibration and verification images")
    calibration, held_out = _gate_images(run_meta, run_dir, calib, spec, foreign is not None, reporter)
    reference = _reference(model, calibration, held_out, run_meta, spec, foreign is not None, reporter)

    source_sha = sha256_file(model_path)
    results: list[ExportResult] = []
    with work_dir(out) as tmp:
        tmp = Path(tmp)
        reporter.stage("Writing the inference SavedModel")
        write_saved_model(model, tmp / "saved_model")
        jobs = spec.jobs()
        with reporter.progress(len(jobs), "Exporting") as advance:
            for fmt, quant in jobs:
                staged, io = _convert(model, tmp, name, fmt, quant, calibration, spec)
                results.append(_gate_and_write(staged, out, name, fmt, quant, io, run_meta, model_path, source_sha,
                                               spec, held_out, reference, run_meta["class_names"]))
                if results[-1].passed and results[-1].fidelity.get("measured_where_it_saturates"):
                    reporter.warn(f"{results[-1].path.name}: gate figures {SATURATION_NOTE}.")
                advance(1)
    export = {
        "source_model": str(model_path), "source_model_sha256": source_sha, "spec": spec.to_dict(),
        "calibration": calibration.origin if calibration is not None else None,
        "verification": held_out.origin if held_out is not None and spec.verify else None,
    }
    _write_report(out / "export_report.json", export, [{**r.to_dict(), **export} for r in results])
    return results


def _prepare_output(out: Path, name: str, spec: ExportSpec, force: bool, reporter: Reporter) -> None:
    """Checks the artefact name and that nothing would be overwritten without ``force``, before any work; makes
    the folder and removes what an interrupted export left in it."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.strip() != name:
        raise ConfigError(f"Received: name={name!r}. Expected a file name prefix such as 'helmet', without folders "
                          "(--out sets the folder).")
    existing = [p for p in _targets(out, name, spec) if p.exists()]
    if existing and not force:
        raise ConfigError(f"{len(existing)} artefact(s) already exist, e.g. {existing[0]}. Pass --force to overwrite.")
    ensure_writable_dir(out)
    clean_leftovers(out, reporter)


def _warn_missing_modes(spec: ExportSpec, reporter: Reporter) -> None:
    """Says which requested modes a format cannot write (they are skipped for it, not failed)."""
    for fmt in spec.formats:
        missing = [q.mode for f, q in spec.skipped() if f is fmt]
        if missing:
            others = list(dict.fromkeys(f.value for f, _ in spec.jobs() if f is not fmt))
            reporter.warn(f"{fmt.value} has no {' or '.join(missing)} mode: "
                          + (f"written for {', '.join(others)} only." if others else "skipped."))


def _gate_images(run_meta: dict, run_dir: Path, calib, spec: ExportSpec, foreign: bool,
                 reporter: Reporter) -> tuple[ImageSet | None, ImageSet | None]:
    """The calibration and held-out images (``_images``), refusing an export that needs images it cannot find."""
    needs_calib = any(q.needs_calibration for _, q in spec.jobs())
    pre = PreprocessSpec.from_dict(run_meta["preprocess"])
    calibration, held_out = _images(run_meta, run_dir, calib, pre, spec, needs_calib, from_run=not foreign,
                                    warn=reporter.warn)
    moved = relocate_hint(run_dir) if not foreign else ""
    if needs_calib and calibration is None:
        raise ConfigError(
            "int8 quantisation needs calibration images, and " + (
                f"the training run's validation split cannot be found ({run_split_problem(run_meta, run_dir, 'val')})"
                if not foreign else "a model trained outside edgeclf has no run to take them from")
            + f". Pass {moved}--calib DIR with representative images."
        )
    if needs_calib and len(calibration) < min(FEW_CALIBRATION_IMAGES, spec.calibration_images):
        reporter.warn(f"int8 ranges are fitted to {len(calibration)} calibration images, from {calibration.origin}: "
                      f"inputs unlike them may be clipped. Pass --calib DIR with {FEW_CALIBRATION_IMAGES} or more "
                      "representative images.")
    if held_out is None and spec.verify:
        raise ConfigError("The fidelity gate needs images and " + (
            f"the training run's test split cannot be found ({run_split_problem(run_meta, run_dir, 'test')})"
            if not foreign else "a model trained outside edgeclf has no run to take them from")
            + f". Pass {moved}--calib DIR, or --no-verify to skip the gate.")
    return calibration, held_out


def _reference(model, calibration: ImageSet | None, held_out: ImageSet | None, run_meta: dict, spec: ExportSpec,
               foreign: bool, reporter: Reporter) -> np.ndarray | None:
    """The Keras model's probabilities on the held-out images, which every artefact is gated against (None
    without the gate); for a foreign model, its outputs are first checked to be probabilities over its classes."""
    reference = predict_probs(model, held_out.pixels) if held_out is not None and spec.verify else None
    if foreign:
        probe = reference if reference is not None else (
            predict_probs(model, calibration.pixels[:GATE_BATCH]) if calibration is not None else None)
        if probe is not None:
            check_outputs(probe, held_out.labels if reference is not None else None, run_meta["class_names"],
                          reporter.warn)
    return reference


def _convert(model, tmp: Path, name: str, fmt: Format, quant: QuantSpec, calibration: ImageSet | None,
             spec: ExportSpec) -> tuple[Path, dict]:
    """Converts the model (its SavedModel in ``tmp`` for TFLite) to one format and mode in ``tmp``; returns the
    staged file and what it says about its input, output and quantisation. The float32 ONNX conversion is done
    once in ``tmp`` and reused by every ONNX mode."""
    staged = tmp / f"{name}_{quant.mode}.{fmt.value}"
    cal = calibration.batches() if quant.needs_calibration else None
    if fmt is Format.TFLITE:
        data = tflite_export.convert(tmp / "saved_model", quant, cal)
        staged.write_bytes(data)
        return staged, tflite_export.describe_io(data)
    fp32_onnx = tmp / "fp32_base.onnx"
    if not fp32_onnx.exists():
        onnx_export.convert_fp32(model, fp32_onnx, spec.opset)
    io = {"input_dtype": "float32", "output_dtype": "float32"}
    if quant.mode == "int8":
        io["quantization"] = onnx_export.quantize_int8(fp32_onnx, staged, quant, cal)
    else:
        shutil.copyfile(fp32_onnx, staged)
    io["quantization"] = {**io.get("quantization", {}), "opset": spec.opset}
    return staged, io


def _source_metadata(model_path: Path, foreign: ForeignSpec | None, dataset) -> dict:
    """The training run's metadata, or a placeholder to be completed by ``adapt_model`` for a foreign model."""
    check_keras_file(model_path)
    if foreign is None:
        return read_run_metadata(model_path)
    refuse_run_model(model_path)
    if dataset is not None:
        raise ConfigError("Received --dataset for a model trained outside edgeclf: it finds a training run's splits. "
                          "Pass --calib DIR instead.")
    return {}


def _images(run_meta: dict, run_dir: Path, calib, pre: PreprocessSpec, spec: ExportSpec, needs_calib: bool,
            from_run: bool, warn: Callable[[str], None]) -> tuple[ImageSet | None, ImageSet | None]:
    """Calibration images and the gate's held-out images.

    A training run gives its val split to calibrate and its test split to verify. Images from ``calib`` alone are
    split in two, so that the gate does not run on the images the int8 ranges were fitted to; only when there are
    too few for both does the gate reuse them (and says so).
    """
    classes = run_meta["class_names"]
    held_out = run_split(run_meta, run_dir, "test", pre, spec.verify_images, seed=1) if from_run else None
    has_held_out = held_out is not None and len(held_out) >= MIN_HELD_OUT
    calibration = None
    if calib is None:
        calibration = run_split(run_meta, run_dir, "val", pre, spec.calibration_images) if from_run else None
    elif has_held_out:  # the gate runs on the run's test split: calib's labels, or their absence, do not matter
        calibration = folder_images(calib, classes, pre, spec.calibration_images)
    elif needs_calib or spec.verify:
        pool = folder_images(calib, classes, pre, (spec.calibration_images if needs_calib else 0)
                             + (spec.verify_images if spec.verify else 0), warn=warn)
        if not needs_calib:
            held_out = pool
        else:
            n_cal = min(spec.calibration_images, len(pool))
            if spec.verify and len(pool) - n_cal < MIN_HELD_OUT:  # keep enough for the gate, if there are enough
                n_cal = len(pool) - MIN_HELD_OUT if len(pool) >= 2 * MIN_HELD_OUT else len(pool)
            calibration = pool
            if n_cal < len(pool):
                calibration, held_out = pool.split(n_cal)
        has_held_out = held_out is not None and len(held_out) >= MIN_HELD_OUT
    if not has_held_out and calibration is not None and spec.verify:
        held_out = calibration.head(spec.verify_images)
        held_out.origin = f"calibration images ({held_out.origin}; fewer than {MIN_HELD_OUT} held-out available)"
    return calibration, held_out


def _artifact_key(path: str | Path) -> str:
    name = Path(path).name
    return name[: -len(".rejected")] if name.endswith(".rejected") else name


def _write_report(path: Path, export: dict, artifacts: list[dict]) -> None:
    """Writes the folder's report: this export's settings, and every artefact in the folder with its own source.

    Artefacts written by earlier exports into the same folder (another name, other modes) keep their entries while
    their files are still there; an artefact written again replaces its entry.
    """
    earlier = []
    try:
        earlier = json.loads(path.read_text()).get("artifacts", [])
    except (OSError, ValueError, AttributeError):
        pass  # no report yet, or not ours to read: this export's report replaces it
    fresh = {_artifact_key(a["path"]) for a in artifacts}
    kept = [a for a in earlier if isinstance(a, dict) and "path" in a and _artifact_key(a["path"]) not in fresh
            and (path.parent / Path(a["path"]).name).exists()]
    write_json(path, {**export, "artifacts": kept + artifacts})


SATURATION_NOTE = ("measured on an x86 CPU without VNNI, where onnxruntime's int8 kernels saturate its 8-bit weights "
                   "(--reduce-range off); on a VNNI or ARM CPU it can agree better than this")


def _gate_and_write(staged: Path, out: Path, name: str, fmt: Format, quant: QuantSpec, io: dict, run_meta: dict,
                    model_path: Path, source_sha: str, spec: ExportSpec, held_out: ImageSet | None,
                    reference: np.ndarray | None, classes: list[str]) -> ExportResult:
    """Runs the staged artefact through the runtime backend, embeds metadata, and moves it into place."""
    threshold = spec.threshold(quant.mode)
    if spec.verify and held_out is not None:
        backend = open_backend(staged)
        # Batches, not the whole set at once: LiteRT would size its input and activations for every image.
        probs = np.concatenate([backend.run(held_out.pixels[i : i + GATE_BATCH])
                                for i in range(0, len(held_out), GATE_BATCH)])
        fid = {**fidelity(reference, probs, held_out.labels, classes), "images": held_out.origin, "verified": True}
        passed = fid["agreement"] >= threshold
        lo, hi = fid["agreement_ci95"]
        reason = "" if passed else (f"top-1 agreement {fid['agreement']:.4f} (95% interval {lo:.4f}-{hi:.4f}) is "
                                    f"below the {quant.mode} gate of {threshold:.4f} on {fid['n']} images")
        if saturates_here({"format": fmt.value, "quantization": {"mode": quant.mode, **io.get("quantization", {})}}):
            fid["measured_where_it_saturates"] = True
            if not passed:
                reason += (f"; {SATURATION_NOTE}. Run the gate on the target CPU, or pass --no-verify if you have "
                           "checked it there")
    else:
        fid, passed, reason = {"verified": False, "reason": "--no-verify: the fidelity gate was skipped"}, True, ""
    meta = _artifact_metadata(run_meta, model_path, source_sha, fmt, quant, io, fid, spec, passed, reason)
    if fmt is Format.TFLITE:
        staged.write_bytes(write_tflite_metadata(staged.read_bytes(), meta))
    else:
        onnx_export.write_metadata(staged, meta.to_json(), METADATA_KEY)
    final = out / staged.name
    target = final if passed else Path(f"{final}.rejected")
    with atomic_path(target, suffix=target.suffix) as tmp_target:
        shutil.copyfile(staged, tmp_target)
    write_json(Path(f"{final}.json"), meta.to_dict())
    if passed and Path(f"{final}.rejected").exists():
        Path(f"{final}.rejected").unlink()
    if not passed and final.exists():
        final.unlink()  # never leave a stale artefact that failed this export's gate under the good name
    return ExportResult(fmt.value, quant.mode, target, passed, target.stat().st_size, fid, reason)
