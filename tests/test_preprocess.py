"""The preprocessing contract: decoding every kind of file, and one code path for training and runtime."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from edgeclf.edge_runtime import ConfigError, ImageDecodeError, PreprocessSpec, decode_image, load_image
from edgeclf.edge_runtime.preprocess import preprocess_frame


def _save(img: Image.Image, path, fmt: str, **kw):
    img.save(path, fmt, **kw)
    return path


def test_zero_byte_file_is_rejected_with_reason(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ImageDecodeError) as e:
        decode_image(p)
    assert e.value.reason == "empty file (0 bytes)"
    assert e.value.source == str(p)


def test_text_file_is_not_an_image(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("hello, I am not a PNG")
    with pytest.raises(ImageDecodeError, match="not an image"):
        decode_image(p)


def test_truncated_jpeg_is_rejected(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    p = tmp_path / "cut.jpg"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageDecodeError, match="truncated or corrupt"):
        decode_image(p)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    p = _save(Image.new("RGB", (200, 100)), tmp_path / "big.png", "PNG")
    with pytest.raises(ImageDecodeError, match="decompression bomb refused: 200x100 = 20000 pixels"):
        decode_image(p, max_pixels=10_000)
    assert decode_image(p, max_pixels=20_000).shape == (100, 200, 3)


def test_cmyk_jpeg_decodes_to_rgb(tmp_path):
    p = _save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), tmp_path / "cmyk.jpg", "JPEG", quality=100)
    rgb = decode_image(p)
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.uint8
    r, g, b = rgb[4, 4].astype(int)
    assert r > 200 and g < 60 and b < 60  # pure red in CMYK


def test_16bit_greyscale_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 32896, 65535]], dtype=np.uint16)
    p = _save(Image.fromarray(arr), tmp_path / "deep.png", "PNG")
    assert Image.open(p).mode.startswith("I")
    rgb = decode_image(p)
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 128, 255])
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


def test_alpha_is_composited_onto_the_background(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)     # opaque red
    rgba[0, 1] = (255, 0, 0, 0)       # fully transparent red
    rgba[1, 0] = (0, 0, 0, 128)       # half-transparent black
    p = _save(Image.fromarray(rgba, "RGBA"), tmp_path / "alpha.png", "PNG")
    rgb = decode_image(p)
    np.testing.assert_array_equal(rgb[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(rgb[0, 1], [255, 255, 255])
    assert 120 <= rgb[1, 0, 0] <= 130
    black_bg = decode_image(p, background=(0, 0, 0))
    np.testing.assert_array_equal(black_bg[0, 1], [0, 0, 0])


@pytest.mark.parametrize("mode", ["La", "RGBa"])
def test_premultiplied_alpha_images_in_memory_are_composited_too(mode):
    """Pillow makes these modes in memory only (no file opens in them); La converts to nothing but LA."""
    straight = "LA" if mode == "La" else "RGBA"
    pixels = np.array([[[200, 255], [200, 0]]], dtype=np.uint8) if mode == "La" else np.array(
        [[[200, 100, 50, 255], [200, 100, 50, 0]]], dtype=np.uint8)
    img = Image.fromarray(pixels, straight).convert(mode)
    assert img.mode == mode
    rgb = decode_image(img)
    opaque = [200, 200, 200] if mode == "La" else [200, 100, 50]
    np.testing.assert_array_equal(rgb[0], [opaque, [255, 255, 255]])


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((10, 20, 3), dtype=np.uint8)
    arr[0, 0] = (255, 255, 255)  # top-left marker on a wide image
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # stored rotated: display needs a 90 degree clockwise turn
    p = tmp_path / "rotated.png"
    img.save(p, "PNG", exif=exif)
    rgb = decode_image(p)
    assert rgb.shape == (20, 10, 3)
    assert rgb[0, -1].min() > 200  # top-left moved to top-right


def test_palette_and_greyscale_become_rgb(tmp_path):
    grey = _save(Image.new("L", (4, 4), 77), tmp_path / "g.png", "PNG")
    pal = _save(Image.new("RGB", (4, 4), (10, 200, 30)).convert("P"), tmp_path / "p.gif", "GIF")
    np.testing.assert_array_equal(decode_image(grey)[0, 0], [77, 77, 77])
    assert decode_image(pal).shape == (4, 4, 3)


def test_load_image_resizes_to_the_spec(tmp_path):
    p = _save(Image.new("RGB", (640, 480), (30, 60, 90)), tmp_path / "photo.jpg", "JPEG", quality=95)
    out = load_image(p, PreprocessSpec(32, 48))
    assert out.shape == (32, 48, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - [30, 60, 90]).max() <= 3


def test_draft_decoding_of_large_jpeg_matches_the_full_decode_closely(tmp_path):
    rng = np.random.default_rng(1)
    base = np.kron(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), np.ones((32, 32, 1), dtype=np.uint8))
    p = _save(Image.fromarray(base), tmp_path / "hd.jpg", "JPEG", quality=95)
    drafted = load_image(p, PreprocessSpec(96, 128))
    full = load_image(p, PreprocessSpec(96, 128, draft=False))
    assert drafted.shape == full.shape == (96, 128, 3)
    assert np.abs(drafted.astype(int) - full.astype(int)).mean() < 4


def test_preprocess_frame_handles_bgr_and_greyscale():
    spec = PreprocessSpec(4, 4)
    bgr = np.zeros((8, 8, 3), dtype=np.uint8)
    bgr[..., 0] = 255  # blue in BGR
    np.testing.assert_array_equal(preprocess_frame(bgr, spec, bgr=True)[0, 0], [0, 0, 255])
    assert preprocess_frame(np.full((8, 8), 9, np.uint8), spec).shape == (4, 4, 3)
    with pytest.raises(ConfigError, match="dtype float32"):
        preprocess_frame(np.zeros((8, 8, 3), np.float32), spec)


def test_spec_validation_and_round_trip():
    spec = PreprocessSpec(224, 160, resize="area")
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError, match="resize='cubic'"):
        PreprocessSpec(10, 10, resize="cubic")
    with pytest.raises(ConfigError, match="height=0"):
        PreprocessSpec(0, 10)
    with pytest.raises(ConfigError, match="Unknown preprocessing keys"):
        PreprocessSpec.from_dict({"height": 1, "width": 1, "mean": 3})


def test_value_range_other_than_raw_pixels_is_refused():
    # Nothing maps pixels to another range before the model, so a spec (or an artefact's metadata) asking for one
    # must be refused rather than fed raw pixels.
    assert PreprocessSpec.from_dict({"height": 1, "width": 1, "value_range": [0, 255]}).value_range == (0.0, 255.0)
    for bad in ((-1, 1), (0, 1), (0, 255, 1)):
        with pytest.raises(ConfigError, match="Supported: \\(0, 255\\)"):
            PreprocessSpec(1, 1, value_range=bad)


def _bands(width: int, height: int) -> np.ndarray:
    """Blue, red and green vertical bands: the left quarter, the middle half, the right quarter."""
    arr = np.zeros((height, width, 3), np.uint8)
    arr[:, : width // 4] = (0, 0, 255)
    arr[:, width // 4: 3 * width // 4] = (255, 0, 0)
    arr[:, 3 * width // 4:] = (0, 255, 0)
    return arr


def test_crop_resizes_only_the_centred_box_of_the_inputs_aspect_ratio(tmp_path):
    p = _save(Image.fromarray(_bands(80, 40)), tmp_path / "wide.png", "PNG")
    stretched = load_image(p, PreprocessSpec(16, 16))
    assert stretched[8, 0].tolist() == [0, 0, 255] and stretched[8, -1].tolist() == [0, 255, 0]
    # the 40x40 box of a square input (20 <= x < 60) is the red band: only the filter's reach across the box's
    # edge, as when the whole image is resized and then cropped, tints the outermost columns
    cropped = load_image(p, PreprocessSpec(16, 16, crop=1))
    assert np.all(cropped[:, 1:-1] == (255, 0, 0)) and cropped[:, [0, -1], 0].min() >= 192
    half = PreprocessSpec(16, 16, crop=0.5)  # 30 <= x < 50: red to the edges
    assert np.all(load_image(p, half) == (255, 0, 0))
    # frames (the camera, arrays given to classify) take the same box; BGR turned to RGB first
    assert np.all(preprocess_frame(_bands(80, 40)[:, :, ::-1].copy(), half, bgr=True) == (255, 0, 0))
    assert PreprocessSpec(16, 16, crop=1).crop_box(80, 40) == (20.0, 0.0, 60.0, 40.0)
    assert PreprocessSpec(10, 40, crop=1).crop_box(80, 40) == (0.0, 10.0, 80.0, 30.0)  # a wider input: rows go
    assert PreprocessSpec(16, 16, crop=0.875).crop_box(256, 256) == (16.0, 16.0, 240.0, 240.0)  # CenterCrop(224)
    assert PreprocessSpec(16, 16).crop_box(80, 40) is None


def test_crop_is_recorded_only_when_set_and_validated():
    assert "crop" not in PreprocessSpec(8, 8).to_dict()  # files that do not crop stay readable by older runtimes
    spec = PreprocessSpec(8, 8, crop=0.875)
    assert spec.to_dict()["crop"] == 0.875 and PreprocessSpec.from_dict(spec.to_dict()) == spec
    assert PreprocessSpec(8, 8, crop=1).crop == 1.0
    for bad in (0, 1.5, -0.5, True, "1"):
        with pytest.raises(ConfigError, match="Expected a fraction in \\(0, 1\\]"):
            PreprocessSpec(8, 8, crop=bad)


def test_pad_letterboxes_the_whole_image_with_its_aspect_ratio_kept(tmp_path):
    p = _save(Image.fromarray(_bands(80, 40)), tmp_path / "wide.png", "PNG")
    boxed = load_image(p, PreprocessSpec(16, 16, pad=114))
    # 80x40 fits a square input as 16x8: four grey rows above and below, all three bands kept
    assert np.all(boxed[:4] == 114) and np.all(boxed[12:] == 114)
    assert [boxed[8, x].tolist() for x in (0, 8, 15)] == [[0, 0, 255], [255, 0, 0], [0, 255, 0]]
    # exactly Pillow's resize to 16x8 pasted in the middle (timm's ResizeKeepRatio(longest=1) + CenterCropOrPad)
    expected = np.full((16, 16, 3), 114, np.uint8)
    expected[4:12] = np.asarray(Image.open(p).convert("RGB").resize((16, 8), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(boxed, expected)
    # frames take the same letterbox; an image of the input's aspect ratio is resized as without pad
    spec = PreprocessSpec(16, 16, pad=(1, 2, 3))
    framed = preprocess_frame(_bands(80, 40)[:, :, ::-1].copy(), spec, bgr=True)
    assert framed[0, 0].tolist() == [1, 2, 3] and framed[8, 8].tolist() == [255, 0, 0]
    square = _bands(40, 40)
    np.testing.assert_array_equal(preprocess_frame(square, spec), preprocess_frame(square, PreprocessSpec(16, 16)))
    # (left, top, width, height) of the resized image; an odd pixel of padding goes right or below
    assert spec.pad_box(80, 40) == (0, 4, 16, 8) and spec.pad_box(40, 80) == (4, 0, 8, 16)
    assert spec.pad_box(45, 80) == (3, 0, 9, 16) and spec.pad_box(40, 40) == (0, 0, 16, 16)
    assert PreprocessSpec(10, 40, pad=0).pad_box(80, 40) == (10, 0, 20, 10)  # a wider input: columns padded
    assert PreprocessSpec(16, 16).pad_box(80, 40) is None


def test_pad_is_recorded_only_when_set_and_validated():
    assert "pad" not in PreprocessSpec(8, 8).to_dict()  # files that do not pad stay readable by older runtimes
    spec = PreprocessSpec(8, 8, pad=114)
    assert spec.pad == (114, 114, 114) and spec.to_dict()["pad"] == [114, 114, 114]
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    assert PreprocessSpec(8, 8, pad=[124, 116, 104]).pad == (124, 116, 104)
    for bad in (-1, 256, 1.5, True, (1, 2), (0, 0, 300), "114"):
        with pytest.raises(ConfigError, match="Expected the colour to pad with"):
            PreprocessSpec(8, 8, pad=bad)
    with pytest.raises(ConfigError, match="Received: crop=1 and pad=\\(0, 0, 0\\). Give one"):
        PreprocessSpec(8, 8, crop=1, pad=0)


def _portrait_jpeg(tmp_path):
    """Stored 1600x800 and turned upright by EXIF (6: 90 degrees clockwise) to 800x1600: the bands run across it,
    blue at the top, red in the middle half, green at the bottom."""
    img = Image.fromarray(_bands(1600, 800))
    exif = img.getexif()
    exif[0x0112] = 6
    return _save(img, tmp_path / "portrait.jpg", "JPEG", quality=95, exif=exif)


def test_draft_decoding_keeps_the_letterboxed_image_at_least_its_size_in_the_input(tmp_path):
    p = _portrait_jpeg(tmp_path)  # letterboxed into 64x64 it is 32 wide and 64 high
    spec = PreprocessSpec(64, 64, pad=0)
    assert spec.decoded_size(800, 1600) == (64, 32)
    assert decode_image(p, draft_spec=spec).shape == (200, 100, 3)  # 1/8: still at least 64 high and 32 wide
    drafted, full = load_image(p, spec).astype(int), load_image(p, PreprocessSpec(64, 64, pad=0, draft=False))
    assert np.all(drafted[:, :16] == 0) and np.all(drafted[:, 48:] == 0)
    assert np.abs(drafted - full.astype(int)).max() <= 8


def test_draft_decoding_keeps_the_crop_box_at_least_the_input_size(tmp_path):
    p = _portrait_jpeg(tmp_path)
    spec = PreprocessSpec(64, 64, crop=0.5)  # the centred 400x400 box of the upright image, all red
    assert spec.decoded_size(800, 1600) == (256, 128)
    # the smallest DCT scale that keeps that: 1/4 (not 1/8, which would leave the box 50x50)
    assert decode_image(p, draft_spec=spec).shape == (400, 200, 3)
    drafted, full = load_image(p, spec).astype(int), load_image(p, PreprocessSpec(64, 64, crop=0.5, draft=False))
    assert np.abs(drafted - full.astype(int)).max() <= 8
    assert np.abs(drafted - (255, 0, 0)).max() <= 8


def _heic(path, colour=(200, 10, 10), size=(60, 40)):
    import pillow_heif

    pillow_heif.from_pillow(Image.new("RGB", size, colour)).save(str(path), quality=95)
    return path


def test_heic_photos_decode_through_pillow_heif_imported_only_for_them(tmp_path):
    from conftest import run_python

    heic, png = _heic(tmp_path / "IMG_0001.HEIC"), _save(Image.new("RGB", (8, 8), "blue"), tmp_path / "a.png", "PNG")
    out = run_python(f"""
import json, sys
from edgeclf.edge_runtime import PreprocessSpec, load_image
spec = PreprocessSpec(8, 8)
load_image({str(png)!r}, spec)
before = "pillow_heif" in sys.modules
with open({str(heic)!r}, "rb") as fh:
    data = fh.read()
pixels = [load_image({str(heic)!r}, spec)[4, 4].tolist(), load_image(data, spec)[4, 4].tolist()]
print(json.dumps({{"before": before, "pixels": pixels, "after": "pillow_heif" in sys.modules}}))
""")
    seen = json.loads(out.stdout)
    assert (seen["before"], seen["after"]) == (False, True)
    from_path, from_bytes = seen["pixels"]
    assert np.abs(np.array(from_path) - (200, 10, 10)).max() <= 6 and from_path == from_bytes


def test_heic_without_pillow_heif_says_what_to_install_and_a_corrupt_one_is_reported(tmp_path):
    from conftest import run_python

    heic = _heic(tmp_path / "photo.heic")
    out = run_python(f"""
import sys
sys.modules["pillow_heif"] = None  # not installed
from edgeclf.edge_runtime import ImageDecodeError, PreprocessSpec, load_image
try:
    load_image({str(heic)!r}, PreprocessSpec(8, 8))
except ImageDecodeError as exc:
    print(exc.reason)
""")
    assert out.stdout.strip() == "a HEIC/HEIF image, which needs pillow-heif to decode: pip install pillow-heif"
    data = heic.read_bytes()
    with pytest.raises(ImageDecodeError, match="truncated or corrupt"):
        load_image(data[: len(data) // 2], PreprocessSpec(8, 8))
    with pytest.raises(ImageDecodeError, match="not an image"):  # an MP4's ftyp box is not a HEIF image's
        load_image(b"\x00\x00\x00\x18ftypisom" + bytes(40), PreprocessSpec(8, 8))


def test_folders_pick_up_heic_and_avif_photos(tmp_path):
    from edgeclf.edge_runtime.preprocess import is_image_file

    assert all(is_image_file(n) for n in ("IMG_0001.HEIC", "a.heif", "b.avif", "c.JPG"))
    assert not is_image_file("clip.mp4")
    from PIL import features

    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF codec")
    avif = _save(Image.new("RGB", (16, 16), (10, 200, 10)), tmp_path / "g.avif", "AVIF")
    assert np.abs(load_image(avif, PreprocessSpec(8, 8))[4, 4].astype(int) - (10, 200, 10)).max() <= 6


def test_a_rotated_heic_photo_comes_out_upright_as_a_jpeg_does():
    import pillow_heif

    pillow_heif.register_heif_opener()
    stored = np.zeros((40, 80, 3), np.uint8)
    stored[:, :40], stored[:, 40:] = (255, 0, 0), (0, 0, 255)  # red left, blue right; EXIF 6: 90 degrees clockwise
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6
    for fmt in ("HEIF", "JPEG"):
        buf = io.BytesIO()
        img.save(buf, format=fmt, exif=exif.tobytes(), quality=95)
        upright = decode_image(buf.getvalue()).astype(int)
        assert upright.shape == (80, 40, 3), fmt  # turned once, not twice
        assert np.abs(upright[2, 20] - (255, 0, 0)).max() <= 8 and np.abs(upright[-3, 20] - (0, 0, 255)).max() <= 8


def test_a_heic_photo_decodes_at_full_size_not_from_its_embedded_thumbnail(tmp_path):
    """pillow-heif's draft() would hand over the embedded thumbnail, a separate lossy encode: not the same pixels."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    y, x = np.mgrid[0:192, 0:256]
    stored = np.stack([x, y, ((x // 8 + y // 8) % 2) * 255], -1).astype(np.uint8)  # sharp 8-pixel checks
    path = tmp_path / "IMG_0002.HEIC"
    Image.fromarray(stored).save(path, "HEIF", quality=95, thumbnails=[64])
    with Image.open(path) as img:
        assert img.info["thumbnails"] == [64]
        if img.draft("RGB", (32, 32)) is None:
            pytest.skip("this pillow-heif has no thumbnail draft() to refuse")
    spec = PreprocessSpec(32, 32)
    assert spec.draft
    full = load_image(path, PreprocessSpec(32, 32, draft=False))
    np.testing.assert_array_equal(load_image(path, spec), full)


def test_load_image_gives_the_pixels_of_decoding_then_resizing(tmp_path):
    """An RGB photo is resized without going through an array first: the pixels must stay exactly those."""
    from edgeclf.edge_runtime.preprocess import resize_pixels

    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    rgba = noise.convert("RGBA")
    rgba.putalpha(Image.fromarray(rng.integers(0, 256, (300, 400), dtype=np.uint8)))
    sources = [_save(noise, tmp_path / "photo.jpg", "JPEG", quality=90), _portrait_jpeg(tmp_path),
               _save(rgba, tmp_path / "alpha.png", "PNG"), _save(noise.convert("L"), tmp_path / "grey.jpg", "JPEG"),
               _save(noise.convert("CMYK"), tmp_path / "cmyk.jpg", "JPEG"),
               _save(noise, tmp_path / "photo.png", "PNG")]
    specs = [PreprocessSpec(24, 32), PreprocessSpec(24, 32, resize="bicubic"), PreprocessSpec(20, 20, crop=0.875),
             PreprocessSpec(20, 20, pad=114), PreprocessSpec(300, 400), PreprocessSpec(48, 64, draft=False)]
    for source in sources:
        for spec in specs:
            reference = resize_pixels(decode_image(source, background=spec.background,
                                                   draft_spec=spec if spec.draft else None), spec)
            np.testing.assert_array_equal(load_image(source, spec), reference, err_msg=f"{source.name} {spec}")
    given = Image.open(sources[1])  # the caller's own image: turned upright for the pixels, left as it was
    assert load_image(given, PreprocessSpec(40, 20)).shape == (40, 20, 3)
    assert given.size == (1600, 800) and given.getexif()[0x0112] == 6
