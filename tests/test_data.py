"""Dataset forms, stratified splitting, bad files, class balance, leakage and the shared decode path."""

from __future__ import annotations

import csv
import os

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_class_folders
from edgeclf.edge_runtime import DataError, PreprocessSpec, load_image
from edgeclf.toolkit.data import balanced_class_weights, class_counts, decode_samples, discover, imbalance_ratio
from edgeclf.toolkit.splits import SplitSpec, assign_splits, stratified_folds, stratified_split
from edgeclf.toolkit.leakage import find_leaks


def test_training_path_and_runtime_path_give_identical_arrays(tmp_path):
    rng = np.random.default_rng(3)
    photo = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        Image.fromarray(photo).save(tmp_path / cls / "x.jpg", quality=90)
        Image.fromarray(photo).save(tmp_path / cls / "y.png")
    ds = discover(tmp_path)
    spec = PreprocessSpec(48, 64)
    decoded = decode_samples(ds, ds.splits["all"], spec)
    assert len(decoded) == 4
    for source, pixels in zip(decoded.sources, decoded.pixels):
        np.testing.assert_array_equal(pixels, load_image(source, spec))


def test_class_folders_are_discovered_in_sorted_order(tiny_folders):
    ds = discover(tiny_folders)
    assert ds.form == "folders"
    assert ds.class_names == ["bar_h", "bar_v"]
    assert len(ds.splits["all"]) == 80
    assert np.bincount(ds.splits["all"].labels).tolist() == [40, 40]


def test_presplit_folders_carve_val_out_of_train(tmp_path):
    write_class_folders(tmp_path / "train", {"a": 20, "b": 20})
    write_class_folders(tmp_path / "test", {"a": 5, "b": 5}, seed=9)
    ds = discover(tmp_path)
    assert ds.form == "presplit" and set(ds.splits) == {"train", "test"}
    splits = assign_splits(ds, SplitSpec(), seed=1)
    assert len(splits["test"]) == 10
    assert len(splits["train"]) + len(splits["val"]) == 40
    assert np.bincount(splits["val"].labels).tolist() == [3, 3]
    assert any("carved val" in n for n in ds.notes)


def test_presplit_folders_without_a_split_given_carve_a_tenth_of_train_for_val(tmp_path):
    write_class_folders(tmp_path / "train", {"a": 20, "b": 20})
    write_class_folders(tmp_path / "test", {"a": 5, "b": 5}, seed=9)
    ds = discover(tmp_path)
    splits = assign_splits(ds, None, seed=1)
    assert np.bincount(splits["val"].labels).tolist() == [2, 2]
    assert len(splits["train"]) == 36 and len(splits["test"]) == 10
    assert any("carved val (10%) out of train" in n for n in ds.notes)
    unsplit = discover(tmp_path / "train")  # data without its own split keeps 70/15/15
    assert [len(v) for v in assign_splits(unsplit, None, seed=1).values()] == [28, 6, 6]


def test_presplit_class_folder_missing_from_train_is_named_with_its_split(tmp_path):
    write_class_folders(tmp_path / "train", {"a": 4, "b": 4})
    write_class_folders(tmp_path / "valid", {"a": 2, "c": 2})
    with pytest.raises(DataError, match=r"valid has class folder\(s\) c that .*train lacks"):
        discover(tmp_path)


def test_csv_manifest_with_split_column(tmp_path):
    root = write_class_folders(tmp_path / "imgs", {"cat": 6, "dog": 6})
    rows = [{"path": str(p.relative_to(tmp_path)), "label": p.parent.name, "split": "train" if i % 3 else "test"}
            for i, p in enumerate(sorted(root.rglob("*.png")))]
    with open(tmp_path / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "label", "split"])
        w.writeheader()
        w.writerows(rows)
    ds = discover(tmp_path / "manifest.csv")
    assert ds.form == "csv" and ds.class_names == ["cat", "dog"]
    assert len(ds.splits["train"]) == 8 and len(ds.splits["test"]) == 4
    decoded = decode_samples(ds, ds.splits["test"], PreprocessSpec(16, 16))
    assert decoded.pixels.shape == (4, 16, 16, 3)


def test_csv_manifest_without_required_columns(tmp_path):
    (tmp_path / "m.csv").write_text("file,class\na.png,x\n")
    with pytest.raises(DataError, match="'path' and 'label'"):
        discover(tmp_path / "m.csv")


@pytest.mark.parametrize("row, error", [("a.png,", "m.csv:3: empty label"), (",cat", "m.csv:3: empty path"),
                                        ("a.png", "m.csv:3: empty label")])  # a short row: DictReader gives None
def test_csv_manifest_rows_without_a_path_or_label_are_refused_by_line(tmp_path, row, error):
    (tmp_path / "m.csv").write_text(f"path,label\nb.png,dog\n{row}\nc.png,cat\n")
    with pytest.raises(DataError, match=error):
        discover(tmp_path / "m.csv")


def test_csv_files_that_are_not_utf8_are_refused_with_the_line_and_the_fix(tmp_path):
    (tmp_path / "m.csv").write_bytes(b"path,label\na.png,x\ncaf\xe9.png,y\n")  # Excel's cp1252 "CSV"
    with pytest.raises(DataError, match=r"m.csv:3: byte 0xe9 is not UTF-8 text. Save the file as UTF-8"):
        discover(tmp_path / "m.csv")
    np.save(tmp_path / "images.npy", np.zeros((2, 4, 4), np.uint8))
    (tmp_path / "labels.csv").write_bytes(b"label\ncaf\xe9\nb\n")
    with pytest.raises(DataError, match=r"labels.csv:2: byte 0xe9 is not UTF-8"):  # was an unexpected crash
        discover(tmp_path / "images.npy")


def test_npy_labels_must_not_be_empty(tmp_path):
    np.save(tmp_path / "images.npy", np.zeros((3, 4, 4), np.uint8))
    (tmp_path / "labels.csv").write_text("id,label\n0,cat\n1,\n2,dog\n")
    with pytest.raises(DataError, match="labels.csv:3: empty label"):
        discover(tmp_path)
    (tmp_path / "labels.csv").write_text("id,label\n0,cat\n1\n2,dog\n")
    with pytest.raises(DataError, match="labels.csv:3: empty label"):
        discover(tmp_path)


def test_npy_with_labels_csv_and_float_pixels(tmp_path):
    images = np.zeros((6, 10, 10), dtype=np.float32)
    images[3:] = 1.0
    np.save(tmp_path / "images.npy", images)
    (tmp_path / "labels.csv").write_text("label\n" + "\n".join(["spam"] * 3 + ["ham"] * 3) + "\n")
    ds = discover(tmp_path)
    assert ds.form == "npy" and ds.class_names == ["ham", "spam"]
    assert any("[0, 1]" in n for n in ds.notes)
    decoded = decode_samples(ds, ds.splits["all"], PreprocessSpec(5, 5))
    assert decoded.pixels[0].max() == 0 and decoded.pixels[5].min() == 255
    assert decoded.labels.tolist() == [1, 1, 1, 0, 0, 0]


def test_npy_label_count_mismatch(tmp_path):
    np.save(tmp_path / "images.npy", np.zeros((3, 4, 4), np.uint8))
    (tmp_path / "labels.csv").write_text("0\n1\n")
    with pytest.raises(DataError, match="3 images but .* 2 labels"):
        discover(tmp_path)


def test_missing_or_single_class_dataset(tmp_path):
    with pytest.raises(DataError, match="not found"):
        discover(tmp_path / "nope")
    write_class_folders(tmp_path / "one", {"only": 3})
    with pytest.raises(DataError, match="at least 2"):
        discover(tmp_path / "one")
    for name in ("a", "b"):
        (tmp_path / "text" / name).mkdir(parents=True)
        (tmp_path / "text" / name / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="0 class folder.* types: .jpg, .jpeg, .png, .bmp, .webp, .gif, .tif") as e:
        discover(tmp_path / "text")
    assert "outside any class folder" not in str(e.value)


def test_a_folder_of_loose_images_is_told_that_their_folder_names_the_class(tmp_path):
    """``evaluate model.keras data/no_helmet`` (the class folder itself) says to pass a folder holding it."""
    write_class_folders(tmp_path, {"no_helmet": 3})
    (tmp_path / "no_helmet" / ".hidden.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"holds 3 image\(s\) itself, outside any class folder.* contains "
                                        r"'no_helmet/'"):
        discover(tmp_path / "no_helmet", min_classes=1)
    assert discover(tmp_path, min_classes=1).class_names == ["no_helmet"]


def test_gif_and_tiff_images_in_class_folders_are_found(tmp_path):
    write_class_folders(tmp_path / "d", {"a": 2}, fmt="gif")
    write_class_folders(tmp_path / "d", {"a": 0, "b": 2}, fmt="tiff")
    ds = discover(tmp_path / "d")
    assert ds.class_names == ["a", "b"] and len(ds.splits["all"]) == 4


def test_hidden_files_and_folders_are_left_out_of_class_folders(tmp_path):
    root = write_class_folders(tmp_path / "d", {"a": 2, "b": 2})
    (root / "a" / "._a_000.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")  # not an image
    (root / "b" / ".thumbnails").mkdir()
    (root / "b" / ".thumbnails" / "b_000.png").write_bytes((root / "b" / "b_000.png").read_bytes())  # a copy
    (root / "b" / "sub").mkdir()
    (root / "b" / "sub" / "b_9.png").write_bytes((root / "b" / "b_001.png").read_bytes())
    ds = discover(root)
    assert [os.path.relpath(p, root) for p in ds.splits["all"].sources] == [
        "a/a_000.png", "a/a_001.png", "b/b_000.png", "b/b_001.png", "b/sub/b_9.png"]


def test_file_names_that_are_not_utf8_are_written_escaped_and_found_again(tmp_path):
    from edgeclf.toolkit.export.images import run_split_samples
    from edgeclf.toolkit.io import write_csv, write_text

    root = write_class_folders(tmp_path / "d", {"a": 3, "b": 3})
    try:  # a Latin-1 name from an old archive; Python reads it back with a lone surrogate
        os.rename(root / "a" / "a_000.png", os.fsencode(root / "a") + b"/caf\xe9.png")
        (root / "b").joinpath(os.fsdecode(b"bad\xe9.png")).write_bytes(b"not an image")
    except OSError:
        pytest.skip("this file system only takes UTF-8 names")
    ds = discover(root)
    names = [ds.describe(s) for s in ds.splits["all"].sources]
    assert "a/caf\\xe9.png" in names and all(n.encode("utf-8") for n in names)
    decoded = decode_samples(ds, ds.splits["all"], PreprocessSpec(16, 16))
    assert decoded.skipped == [("b/bad\\xe9.png", "not an image (unrecognised format)")]
    # splits.csv keeps the escaped name, and the export step still finds the file from it.
    write_csv(tmp_path / "splits.csv", [{"path": n, "label": "a" if n.startswith("a/") else "b", "split": "val"}
                                        for n in names], ("path", "label", "split"))
    found = run_split_samples({"dataset": {"path": str(root)}, "class_names": ["a", "b"]}, tmp_path, "val")
    assert found is not None and sorted(found[1].sources) == sorted(ds.splits["all"].sources)
    write_text(tmp_path / "report.md", "root " + os.fsdecode(b"x\xe9"))  # a stray surrogate cannot fail a report
    assert (tmp_path / "report.md").read_text(encoding="utf-8") == "root x\\udce9"


def test_stratified_split_is_deterministic_disjoint_and_proportional():
    labels = np.array([0] * 100 + [1] * 20)
    parts = stratified_split(labels, (0.7, 0.15, 0.15), seed=5)
    again = stratified_split(labels, (0.7, 0.15, 0.15), seed=5)
    other = stratified_split(labels, (0.7, 0.15, 0.15), seed=6)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    assert not np.array_equal(parts[0], other[0])
    allidx = np.concatenate(parts)
    assert len(allidx) == 120 and len(np.unique(allidx)) == 120
    assert [np.bincount(labels[p], minlength=2).tolist() for p in parts] == [[70, 14], [15, 3], [15, 3]]


def test_stratified_folds_cover_everything_once():
    labels = np.array([0] * 10 + [1] * 6)
    folds = stratified_folds(labels, 3, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(16))
    assert all(set(np.bincount(labels[f], minlength=2)) <= {2, 3, 4} for f in folds)


def test_bad_files_are_skipped_and_listed(tiny_folders):
    (tiny_folders / "bar_h" / "zero.png").write_bytes(b"")
    (tiny_folders / "bar_v" / "junk.jpg").write_text("not really")
    ds = discover(tiny_folders)
    decoded = decode_samples(ds, ds.splits["all"], PreprocessSpec(16, 16))
    assert len(decoded) == 80
    assert sorted(decoded.skipped) == [
        ("bar_h/zero.png", "empty file (0 bytes)"),
        ("bar_v/junk.jpg", "not an image (unrecognised format)"),
    ]


def test_class_balance_helpers():
    counts = class_counts(np.array([0, 0, 0, 1]), 3)
    assert counts.tolist() == [3, 1, 0]
    assert imbalance_ratio(counts) == 3.0
    assert balanced_class_weights(counts) == {0: pytest.approx(4 / 6), 1: pytest.approx(2.0)}


def test_leakage_finds_exact_and_near_duplicates(tiny_folders, tmp_path):
    ds = discover(tiny_folders)
    decoded = decode_samples(ds, ds.splits["all"], PreprocessSpec(16, 16))
    train, val, test = decoded.pixels[:60], decoded.pixels[60:70].copy(), decoded.pixels[70:].copy()
    test[0] = train[5]                                              # exact copy
    val[2] = np.clip(train[7].astype(int) + 3, 0, 255).astype(np.uint8)  # brightened copy (not byte-identical)
    report = find_leaks({"train": train, "val": val, "test": test})
    exact = [p for p in report.pairs if p.exact]
    near = [p for p in report.pairs if not p.exact]
    assert [(p.split, p.index, p.other_index) for p in exact] == [("test", 0, 5)]
    assert [(p.split, p.index, p.other_index) for p in near] == [("val", 2, 7)]
    assert report.leaked("val").tolist() == [2] and report.leaked("test").tolist() == [0]
    assert report.summary()["leaked_images"] == {"val": 1, "test": 1}


def _natural_image(n: int, rng: np.random.Generator) -> np.ndarray:
    """Noise with a 1/f amplitude spectrum, the statistics of natural photographs."""
    f = np.sqrt(np.fft.fftfreq(n)[:, None] ** 2 + np.fft.fftfreq(n)[None, :] ** 2)
    spec = (rng.normal(size=(n, n, 3)) + 1j * rng.normal(size=(n, n, 3))) / np.maximum(f, 1.0 / n)[..., None]
    img = np.real(np.fft.ifft2(spec, axes=(0, 1)))
    img = (img - img.mean()) / img.std() * 45 + 128
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def test_leakage_catches_reencoded_and_resized_copies():
    import io

    rng = np.random.default_rng(4)
    originals, copies = [], []
    for _ in range(12):
        img = Image.fromarray(_natural_image(96, rng))
        buf = io.BytesIO()
        img.resize((64, 64)).save(buf, "JPEG", quality=60)  # shrunk, re-encoded, scaled back up
        originals.append(np.asarray(img))
        copies.append(np.asarray(Image.open(buf).convert("RGB").resize((96, 96), Image.Resampling.BILINEAR)))
    empty = np.zeros((0, 96, 96, 3), np.uint8)
    report = find_leaks({"train": np.stack(originals), "val": np.stack(copies[:6]), "test": empty})
    assert sorted((p.index, p.other_index) for p in report.pairs) == [(i, i) for i in range(6)]
    assert all(not p.exact and p.distance > 0 for p in report.pairs)


def test_leakage_is_quiet_on_distinct_real_images(monkeypatch):
    # The IDX reader lives with the reproduction scripts (benchmarks/lab, run from a checkout, not installed).
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks" / "lab"))
    from fashion_mnist import load

    pytest.importorskip("gzip")
    try:
        data = load()
    except SystemExit:
        pytest.skip("dataset-fashion-mnist is not installed")
    imgs = np.repeat(data["test"][0][:3000, :, :, None], 3, axis=3)
    report = find_leaks({"train": imgs[:2000], "val": imgs[2000:2500], "test": imgs[2500:]})
    # Small, plain silhouettes look alike (a 256-bit dHash flagged ~7 % of these); pHash must not flood the report.
    assert len(report.pairs) <= 10
