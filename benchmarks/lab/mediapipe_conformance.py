"""Makes ``benchmarks/results/mediapipe_conformance.md``: MediaPipe Tasks' ``ImageClassifier`` against
``edgeclf predict``'s runtime on every TFLite artefact of a run, over the run's held-out (test split) images.

MediaPipe brings ``opencv-contrib-python``, which must not share an environment with edgeclf's ``opencv-python``,
so the script makes its own venv (``.venv-mediapipe``: ``mediapipe`` and ``edgeclf[runtime-litert]``, which has
no OpenCV) and runs itself there. Two comparisons per artefact:

- ``as stored``: the held-out images as the run's dataset holds them, decoded by each side (Pillow to RGB for
  MediaPipe, which feeds a grayscale file's single channel to a three-channel model and fails);
- ``photo-like``: the same images upscaled to 256 x 256 and saved as JPEG (quality 90), opened with
  ``mp.Image.create_from_file``: each side decodes and resizes them its own way (edgeclf: Pillow, JPEG draft
  decoding and its recorded resize filter; MediaPipe: its own decoder and GPU-style bilinear sampling).

With ``--task-library``, the TFLite Task Library's ``ImageClassifier`` (``tflite-support``, in its own venv
``.venv-tflite-support``; it needs the system's ``libusb-1.0-0``) is compared the same way on the images as stored.

From a checkout, after the README's main command (which makes ``runs/demo``):

    .venv/bin/python benchmarks/lab/mediapipe_conformance.py runs/demo [--task-library]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RESULTS = HERE.parent / "results"
PHOTO_SIZE = 256


def held_out(run: Path) -> tuple[list[Path], list[str]]:
    """The run's test split (its ``splits.csv``) as image paths and their labels."""
    meta = json.loads((run / "metadata.json").read_text())
    root = Path(meta["dataset"]["path"])
    root = root if root.is_absolute() else ROOT / root
    with open(run / "splits.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    return [root / r["path"] for r in rows], [r["label"] for r in rows]


def compare(model: Path, images: list, mp_images: list) -> dict:
    """MediaPipe's ImageClassifier and edgeclf's Classifier on the same images.

    Args:
        model: A ``.tflite`` artefact.
        images: What edgeclf decodes (paths, or (H, W, 3) uint8 RGB arrays).
        mp_images: The same images as ``mediapipe.Image`` objects.

    Returns:
        n, whether MediaPipe named every category as edgeclf does, top-1 agreement, and the max and mean absolute
        score difference.
    """
    from mediapipe.tasks import python as mpt
    from mediapipe.tasks.python import vision

    options = vision.ImageClassifierOptions(base_options=mpt.BaseOptions(model_asset_path=str(model)),
                                            max_results=-1)
    with vision.ImageClassifier.create_from_options(options) as mp_clf:
        return _agreement(model, images, [mp_clf.classify(image).classifications[0].categories
                                          for image in mp_images])


def _agreement(model: Path, images: list, categories: list) -> dict:
    """edgeclf's Classifier on ``images`` against another runtime's ``categories`` (per image: objects with
    ``index``, ``score`` and ``category_name``) for the same images."""
    import numpy as np

    from edgeclf.edge_runtime import Classifier

    clf = Classifier.load(model, threads=1)
    ours = np.stack([r.probabilities for r in clf.classify(images)])
    theirs = np.zeros_like(ours)
    names_ok = True
    for i, found in enumerate(categories):
        for c in found:
            theirs[i, c.index] = c.score
            names_ok &= c.category_name == clf.class_names[c.index]
    diff = np.abs(ours - theirs)
    return {"n": len(images), "names_match": bool(names_ok),
            "top1_agreement": float((ours.argmax(1) == theirs.argmax(1)).mean()),
            "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean())}


def compare_task_library(model: Path, images: list) -> dict:
    """The TFLite Task Library's ImageClassifier and edgeclf's Classifier on the same (H, W, 3) uint8 RGB arrays."""
    import numpy as np
    from tflite_support.task import core, processor, vision

    options = vision.ImageClassifierOptions(base_options=core.BaseOptions(file_name=str(model)),
                                            classification_options=processor.ClassificationOptions(max_results=-1))
    tl_clf = vision.ImageClassifier.create_from_options(options)
    return _agreement(model, images, [
        tl_clf.classify(vision.TensorImage.create_from_array(np.ascontiguousarray(image))).classifications[0].categories
        for image in images])


def inside_task_library(run: Path) -> dict:
    """Runs in the tflite-support venv: the Task Library on every artefact, images as stored."""
    import numpy as np
    from PIL import Image

    paths, _ = held_out(run)
    rgb = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    from importlib.metadata import version

    return {"tflite_support": version("tflite-support"),
            "artefacts": {m.name: compare_task_library(m, rgb) for m in sorted((run / "export").glob("*.tflite"))}}


def inside(run: Path) -> dict:
    """Runs in the MediaPipe venv: every comparison, as JSON."""
    import mediapipe as mp
    import numpy as np
    from PIL import Image

    from edgeclf.edge_runtime.flatbuf import tflite_metadata_buffer
    from edgeclf.edge_runtime.support_metadata import SUPPORT_METADATA, packed_files

    paths, _ = held_out(run)
    rgb = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    stored = [mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(a)) for a in rgb]
    as_file = mp.Image.create_from_file(str(paths[0]))
    with Image.open(paths[0]) as first:
        stored_format = f"{first.mode} {first.size[0]}x{first.size[1]}"
    out = {"mediapipe": mp.__version__, "images": len(paths), "stored_format": stored_format,
           "mediapipe_reads_stored_as": mp.ImageFormat(as_file.image_format).name, "artefacts": {}}
    with tempfile.TemporaryDirectory() as tmp:
        photos = []
        for i, a in enumerate(rgb):
            photo = Path(tmp) / f"{i:04d}.jpg"
            Image.fromarray(a).resize((PHOTO_SIZE, PHOTO_SIZE), Image.BICUBIC).save(photo, quality=90)
            photos.append(photo)
        mp_photos = [mp.Image.create_from_file(str(p)) for p in photos]
        for model in sorted((run / "export").glob("*.tflite")):
            data = model.read_bytes()
            support = tflite_metadata_buffer(data, SUPPORT_METADATA)
            out["artefacts"][model.name] = {
                "size_bytes": len(data),
                "support_metadata_bytes": len(support) if support is not None else 0,
                "labels_archive_bytes": len(packed_files(data)),
                "as_stored": compare(model, rgb, stored),
                "photo_like": compare(model, photos, mp_photos),
            }
    return out


def _agreement_cells(s: dict) -> str:
    """The names / top-1 / max and mean score difference cells of a comparison's table row."""
    return (f"{'all right' if s['names_match'] else 'WRONG'} | {100 * s['top1_agreement']:.2f} % | "
            f"{s['max_abs_diff']:.4f} | {s['mean_abs_diff']:.5f}")


def render(result: dict, run: Path) -> list[str]:
    m = result["machine"]
    lines = [
        "# MediaPipe Tasks reads edgeclf's TFLite artefacts",
        "",
        "`benchmarks/lab/mediapipe_conformance.py`: MediaPipe Tasks' `ImageClassifier` "
        f"(mediapipe {result['mediapipe']}) and `edgeclf predict`'s runtime on every TFLite artefact of `{run}` "
        f"(the README's main command), over the run's {result['images']} held-out (test split) images. Scores are "
        "compared per class; `names` is whether MediaPipe gave every category the class name edgeclf gives it "
        "(read from the artefact's TFLite Support metadata).",
        "",
        f"- {result['date']}, commit {result['commit']}, {m['cpu']}, {m['affinity_cores']} cores, ai-edge-litert "
        f"{m['versions'].get('ai-edge-litert')} (edgeclf's side).",
        "",
        f"**As stored** ({result['stored_format']} PNG, no resize; decoded with Pillow to RGB for MediaPipe, whose "
        f"`create_from_file` reads them as {result['mediapipe_reads_stored_as']}, a one-channel image that a "
        "three-channel model refuses):",
        "",
        "| artefact | size | TFLite Support metadata + labels | names | top-1 agreement | max abs score diff | mean |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for name, a in result["artefacts"].items():
        s = a["as_stored"]
        added = a["support_metadata_bytes"] + a["labels_archive_bytes"]
        lines.append(f"| {name} | {a['size_bytes']:,} B | {added:,} B ({a['support_metadata_bytes']:,} + "
                     f"{a['labels_archive_bytes']:,}; {100 * added / a['size_bytes']:.2f} %) | "
                     f"{_agreement_cells(s)} |")
    lines += [
        "",
        f"**Photo-like** (the same images upscaled to {PHOTO_SIZE} x {PHOTO_SIZE} JPEG, quality 90, each side "
        "decoding and resizing the file its own way):",
        "",
        "| artefact | names | top-1 agreement | max abs score diff | mean |",
        "|---|---|---:|---:|---:|",
    ]
    for name, a in result["artefacts"].items():
        s = a["photo_like"]
        lines.append(f"| {name} | {_agreement_cells(s)} |")
    if "task_library" in result:
        tl = result["task_library"]
        lines += ["", f"**TFLite Task Library** (tflite-support {tl['tflite_support']}, `ImageClassifier`, the images "
                  "as stored):", "", "| artefact | names | top-1 agreement | max abs score diff | mean |",
                  "|---|---|---:|---:|---:|"]
        for name, s in tl["artefacts"].items():
            lines.append(f"| {name} | {_agreement_cells(s)} |")
    lines += ["", "What the differences mean for choosing a runtime: [docs/runtime.md](../../docs/runtime.md#mediapipe-"
              "tasks-and-the-tflite-task-library).", "", "## History", "",
              "| date | commit | mediapipe | artefacts | names right | top-1 as stored (min) | top-1 photo-like (min) "
              "| Task Library top-1 (min) |", "|---|---|---|---:|---|---:|---:|---:|"]
    for h in result["history"]:
        lines.append(f"| {h['date']} | {h['commit']} | {h['mediapipe']} | {h['artefacts']} | "
                     f"{'all' if h['names_match'] else 'NOT ALL'} | {100 * h['top1_as_stored']:.2f} % | "
                     f"{100 * h['top1_photo_like']:.2f} % | "
                     + (f"{100 * h['task_library_top1']:.2f} % |" if "task_library_top1" in h else "- |"))
    return lines


def make_venv(venv: Path, package: str) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", package,
                    "-e", f"{ROOT}[runtime-litert]"], check=True)
    return python


def run_inside(python: Path, run: Path, flag: str) -> dict:
    done = subprocess.run([str(python), __file__, str(run), flag], check=True, capture_output=True, text=True,
                          env={**os.environ, "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2"})
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run directory with export/*.tflite (runs/demo)")
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv-mediapipe")
    parser.add_argument("--task-library", action="store_true",
                        help="also compare the TFLite Task Library (tflite-support, needs libusb-1.0-0)")
    parser.add_argument("--task-library-venv", type=Path, default=ROOT / ".venv-tflite-support")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--inside-task-library", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    run = args.run.resolve()
    if args.inside or args.inside_task_library:
        print(json.dumps(inside(run) if args.inside else inside_task_library(run)))
        return
    result = run_inside(make_venv(args.venv, "mediapipe"), run, "--inside")
    if args.task_library:
        result["task_library"] = run_inside(make_venv(args.task_library_venv, "tflite-support"), run,
                                            "--inside-task-library")
    from edgeclf.benchmarks.machine import describe, git_commit, write_record

    shown = run.relative_to(ROOT) if run.is_relative_to(ROOT) else run
    result.update(machine=describe(), date=time.strftime("%Y-%m-%d"), commit=git_commit())
    earlier = RESULTS / "mediapipe_conformance.json"
    history = json.loads(earlier.read_text()).get("history", []) if earlier.exists() else []
    a = result["artefacts"].values()
    history.append({"date": result["date"], "commit": result["commit"], "mediapipe": result["mediapipe"],
                    "artefacts": len(a), "names_match": all(x["as_stored"]["names_match"] and
                                                            x["photo_like"]["names_match"] for x in a),
                    "top1_as_stored": min(x["as_stored"]["top1_agreement"] for x in a),
                    "top1_photo_like": min(x["photo_like"]["top1_agreement"] for x in a),
                    **({"task_library_top1": min(x["top1_agreement"] for x in result["task_library"]["artefacts"]
                                                 .values())} if "task_library" in result else {})})
    result["history"] = history
    write_record(RESULTS, "mediapipe_conformance", result, render(result, shown))


if __name__ == "__main__":
    main()
