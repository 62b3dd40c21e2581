"""sepconv.io: every format round-trips, metadata survives, bad files fail with one clear line,
and outputs appear atomically or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

pytest.importorskip("imageio")
pytest.importorskip("tifffile")
nib = pytest.importorskip("nibabel")

from sepconv import io  # noqa: E402


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders a failed write might have left behind."""
    return [p.name for p in folder.iterdir() if "sepconv-tmp" in p.name]


# ----------------------------------------------------------------------------------------------
# round trips
# ----------------------------------------------------------------------------------------------

ROUND_TRIPS = {
    "grey.png": (rng(1).random((20, 30)) * 255).astype(np.uint8),
    "grey16.png": (rng(2).random((20, 30)) * 65535).astype(np.uint16),
    "rgb.png": (rng(3).random((20, 30, 3)) * 255).astype(np.uint8),
    "rgba.png": (rng(4).random((20, 30, 4)) * 255).astype(np.uint8),
    "stack.tif": rng(5).random((5, 20, 30)).astype(np.float32),
    "rgb.tiff": (rng(6).random((20, 30, 3)) * 255).astype(np.uint8),
    "int16.tif": (rng(7).standard_normal((4, 6, 8)) * 1000).astype(np.int16),
    "float64.tif": rng(8).standard_normal((12, 9)),
    "vol.nii.gz": rng(9).random((6, 7, 8)).astype(np.float32),
    "vol.nii": (rng(10).random((6, 7, 8)) * 100).astype(np.int16),
    "time.nii.gz": rng(11).random((5, 6, 7, 3)).astype(np.float64),
    "any.npy": rng(12).standard_normal((6, 7, 2)),
    "u8.npy": (rng(13).random((6, 7)) * 255).astype(np.uint8),
    "chunked.zarr": rng(14).random((10, 12)).astype(np.float32),
}


@pytest.mark.parametrize("name", sorted(ROUND_TRIPS))
def test_every_lossless_format_round_trips_exactly(tmp_path: Path, name: str) -> None:
    data = ROUND_TRIPS[name]
    channel = 2 if name.startswith(("rgb", "rgba")) else None
    info = io.ImageInfo("npy", data.shape, data.dtype, channel_axis=channel)
    path = tmp_path / name
    io.write(path, data, info)
    back, got = io.read(path)
    assert isinstance(back, np.ndarray)
    assert back.dtype == data.dtype and back.shape == data.shape
    np.testing.assert_array_equal(back, data)
    assert got.format == io.format_of(name)
    assert got.channel_axis == channel


def test_jpeg_round_trips_within_compression_error(tmp_path: Path) -> None:
    y, x = np.mgrid[:64, :96]
    img = np.stack([x * 2, y * 3, np.full_like(x, 128)], -1).astype(np.uint8)  # smooth
    io.write(tmp_path / "a.jpg", img, io.ImageInfo("png", img.shape, img.dtype, channel_axis=2))
    back, info = io.read(tmp_path / "a.jpg")
    assert back.shape == img.shape and back.dtype == np.uint8 and info.channel_axis == 2
    assert np.abs(back.astype(int) - img).mean() < 2.0


def test_multipage_tiff_written_by_tifffile_reads_as_a_stack(tmp_path: Path) -> None:
    import tifffile

    pages = (rng().random((7, 16, 12)) * 4000).astype(np.uint16)
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tif:
        for page in pages:
            tif.write(page, contiguous=True)
    data, info = io.read(tmp_path / "pages.tif")
    np.testing.assert_array_equal(data, pages)
    assert info.spatial_axes == (0, 1, 2) and info.channel_axis is None


def test_nifti_keeps_affine_header_and_reports_spacing_in_mm(tmp_path: Path) -> None:
    affine = np.array(
        [[0.0, 0.0, 2.5, -40.0], [0.8, 0.0, 0.0, 10.0], [0.0, 0.8, 0.0, -5.0], [0, 0, 0, 1]]
    )
    vol = rng().random((10, 12, 6)).astype(np.float32)
    img = nib.Nifti1Image(vol, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = b"sepconv test volume"
    nib.save(img, tmp_path / "in.nii.gz")
    data, info = io.read(tmp_path / "in.nii.gz")
    assert info.spacing == pytest.approx((0.8, 0.8, 2.5))
    assert info.spatial_axes == (0, 1, 2)
    out = (data * 2).astype(np.float64)
    io.write(tmp_path / "out.nii.gz", out, info)
    back = nib.load(tmp_path / "out.nii.gz")
    np.testing.assert_allclose(back.affine, affine)
    assert back.header["descrip"].tobytes().rstrip(b"\0") == b"sepconv test volume"
    assert back.get_data_dtype() == np.float64
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), out)


def test_nifti_spacing_in_microns_is_converted_to_mm(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.diag([500.0, 500.0, 1000.0, 1]))
    img.header.set_xyzt_units("micron")
    nib.save(img, tmp_path / "um.nii")
    _, info = io.read(tmp_path / "um.nii")
    assert info.spacing == pytest.approx((0.5, 0.5, 1.0))


def test_nifti_from_another_format_gets_its_spacing_on_the_diagonal(tmp_path: Path) -> None:
    data = np.ones((3, 4, 5), np.float32)
    io.write(tmp_path / "n.nii", data, io.ImageInfo("npy", data.shape, data.dtype, (1, 2, 3)))
    assert np.allclose(nib.load(tmp_path / "n.nii").affine, np.diag([1.0, 2.0, 3.0, 1.0]))


def test_lazy_reads_memory_map_npy_and_give_dask_for_zarr(tmp_path: Path) -> None:
    pytest.importorskip("zarr")
    da = pytest.importorskip("dask.array")
    data = rng().random((20, 8)).astype(np.float32)
    np.save(tmp_path / "a.npy", data)
    lazy, _ = io.read(tmp_path / "a.npy", lazy=True)
    assert isinstance(lazy, np.memmap)
    z = io.create_zarr(tmp_path / "a.zarr", data.shape, (5, 8), data.dtype)
    z[...] = data
    z.attrs["origin"] = "test"
    lazy, info = io.read(tmp_path / "a.zarr", lazy=True)
    assert isinstance(lazy, da.Array) and lazy.chunks == ((5, 5, 5, 5), (8,))
    assert info.meta["chunks"] == (5, 8) and info.meta["attributes"] == {"origin": "test"}
    np.testing.assert_array_equal(lazy.compute(), data)
    io.write(tmp_path / "b.zarr", data * 2, info)  # chunks and attributes carried over
    z2 = io.open_zarr(tmp_path / "b.zarr")
    assert tuple(z2.chunks) == (5, 8) and dict(z2.attrs) == {"origin": "test"}


# ----------------------------------------------------------------------------------------------
# bad input: one clear line naming the file
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("a.png", b"garbage", "is not a PNG file"),
        ("a.jpg", b"\x89PNG\r\n\x1a\n", "is not a JPEG file"),
        ("a.tif", b"hello world", "is not a TIFF file"),
        ("a.npy", b"\x00" * 20, "is not a NPY file"),
        ("a.nii", b"\x00" * 400, "is not a NIFTI file"),
        ("a.nii.gz", b"not gzip", "is not a NIFTI file"),
        ("a.png", b"", "is empty"),
        ("a.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, "cannot read .* as png"),
        ("a.nii.gz", b"\x1f\x8b\x08\x00truncated", "cannot read .* as nifti"),
        ("a.npy", b"\x93NUMPY\x01\x00garbage", "cannot read .* as npy"),
    ],
)
def test_corrupt_or_misnamed_files_fail_with_one_line(tmp_path, name, content, match) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match) as err:
        io.read(path)
    assert "\n" not in str(err.value) and name in str(err.value)


def test_missing_unknown_and_unsupported_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        io.read(tmp_path / "nope.png")
    (tmp_path / "a.bmp").write_bytes(b"BM")
    with pytest.raises(ValueError, match=r"unknown format; use one of \.png"):
        io.read(tmp_path / "a.bmp")
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    with pytest.raises(ValueError, match=r"has dtype <U1; sepconv filters numbers \(bool"):
        io.read(tmp_path / "s.npy")
    np.save(tmp_path / "o.npy", np.array([None, 1], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"cannot read .* as npy"):
        io.read(tmp_path / "o.npy")  # pickles are never loaded


def test_zarr_group_is_named_as_such(tmp_path: Path) -> None:
    zarr = pytest.importorskip("zarr")
    zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    with pytest.raises(ValueError, match="is a Zarr group, not an array"):
        io.read(tmp_path / "g.zarr")


@pytest.mark.parametrize(
    ("name", "dtype", "shape", "channel", "match"),
    [
        ("a.png", np.float32, (8, 8), None, "PNG stores uint8 or uint16, not float32"),
        ("a.png", np.uint16, (8, 8, 5), 2, "RGB or RGBA, not 5 channels"),
        ("a.png", np.int16, (8, 8, 3), 2, "not int16 with 3 channel"),
        ("a.png", np.uint8, (4, 8, 8), None, "PNG stores one 2-D image"),
        ("a.jpg", np.uint16, (8, 8), None, "JPEG stores uint8"),
        ("a.jpg", np.uint8, (8, 8, 4), 2, "JPEG stores grey or RGB"),
    ],
)
def test_outputs_a_format_cannot_store_are_refused_up_front(name, dtype, shape, channel, match):
    with pytest.raises(ValueError, match=match):
        io.check_writable(name, dtype, shape, channel)


def test_wide_dtypes_are_fine_for_volume_formats() -> None:
    for name in ("a.tif", "a.nii.gz", "a.npy", "a.zarr"):
        for dt in (np.uint8, np.int16, np.uint32, np.int64, np.float32, np.float64):
            assert io.check_writable(name, dt, (4, 5, 6), None) == io.format_of(name)


# ----------------------------------------------------------------------------------------------
# never lose data
# ----------------------------------------------------------------------------------------------


def test_atomic_output_appears_only_when_complete(tmp_path: Path) -> None:
    target = tmp_path / "out.npy"
    with io.atomic_output(target) as tmp:
        assert not target.exists()
        assert Path(tmp).parent == tmp_path and tmp.endswith(".npy")
        io.write(tmp, np.arange(3.0))
        assert not target.exists()
    np.testing.assert_array_equal(np.load(target), np.arange(3.0))
    assert leftovers(tmp_path) == []


def test_error_while_writing_leaves_no_partial_output(tmp_path: Path) -> None:
    target = tmp_path / "out.tif"
    with pytest.raises(RuntimeError, match="disk on fire"):
        with io.atomic_output(target) as tmp:
            Path(tmp).write_bytes(b"II*\x00 half a file")
            raise RuntimeError("disk on fire")
    assert not target.exists() and leftovers(tmp_path) == []
    zarr_target = tmp_path / "out.zarr"
    with pytest.raises(KeyboardInterrupt):
        with io.atomic_output(zarr_target) as tmp:
            os.makedirs(os.path.join(tmp, "c", "0"))
            raise KeyboardInterrupt
    assert not zarr_target.exists() and leftovers(tmp_path) == []


def test_existing_output_needs_overwrite_and_survives_a_failed_replacement(tmp_path) -> None:
    target = tmp_path / "out.npy"
    np.save(target, np.zeros(2))
    with pytest.raises(ValueError, match="exists; pass --overwrite"):
        with io.atomic_output(target):
            pass  # pragma: no cover
    with pytest.raises(RuntimeError):
        with io.atomic_output(target, overwrite=True) as tmp:
            io.write(tmp, np.ones(2))
            raise RuntimeError("fail after writing")
    np.testing.assert_array_equal(np.load(target), np.zeros(2))  # the old file is intact
    with io.atomic_output(target, overwrite=True) as tmp:
        io.write(tmp, np.ones(2))
    np.testing.assert_array_equal(np.load(target), np.ones(2))
    assert leftovers(tmp_path) == []


def test_overwriting_a_zarr_directory_swaps_it_whole(tmp_path: Path) -> None:
    pytest.importorskip("zarr")
    target = tmp_path / "v.zarr"
    io.write(target, np.zeros((4, 4), np.float32))
    with io.atomic_output(target, overwrite=True) as tmp:
        io.write(tmp, np.ones((6, 6), np.float32))
    back, _ = io.read(target)
    np.testing.assert_array_equal(back, np.ones((6, 6)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.zarr"]


def test_never_writes_over_its_input_even_with_overwrite(tmp_path: Path) -> None:
    src = tmp_path / "in.npy"
    np.save(src, np.zeros(2))
    for target in (src, tmp_path / "." / "in.npy"):
        with pytest.raises(ValueError, match="is the input"):
            with io.atomic_output(target, overwrite=True, protect=[src]):
                pass  # pragma: no cover
    link = tmp_path / "link.npy"
    os.symlink(src, link)
    with pytest.raises(ValueError, match="is the input"):
        with io.atomic_output(link, overwrite=True, protect=[src]):
            pass  # pragma: no cover
    zsrc = tmp_path / "in.zarr"
    zsrc.mkdir()
    with pytest.raises(ValueError, match="inside it"):
        with io.atomic_output(zsrc / "inner.zarr", protect=[zsrc]):
            pass  # pragma: no cover


def test_output_folder_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"output directory .* does not exist"):
        with io.atomic_output(tmp_path / "missing" / "out.npy"):
            pass  # pragma: no cover


# ----------------------------------------------------------------------------------------------
# review of the CLI's file IO: what was silently lost or cut, or crashed after the work
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rgb", [False, True])
def test_tiff_with_one_series_per_write_reads_as_a_stack_of_all_of_them(tmp_path, rgb) -> None:
    """Before: only the first of the series (TiffWriter.write() calls) was read."""
    import tifffile

    shape = (5, 16, 12, 3) if rgb else (5, 16, 12)
    pages = (rng(20).random(shape) * 4000).astype(np.uint16)
    with tifffile.TiffWriter(tmp_path / "series.tif") as tif:
        for page in pages:
            tif.write(page, photometric="rgb" if rgb else "minisblack")
    with tifffile.TiffFile(tmp_path / "series.tif") as tif:
        assert len(tif.series) == 5  # what is tested
    data, info = io.read(tmp_path / "series.tif")
    np.testing.assert_array_equal(data, pages)
    assert info.channel_axis == (3 if rgb else None)
    assert info.spatial_axes == (0, 1, 2)


def test_tiff_series_of_different_shapes_or_dtypes_are_refused_naming_them(tmp_path) -> None:
    import tifffile

    with tifffile.TiffWriter(tmp_path / "mixed.tif") as tif:
        tif.write(np.zeros((40, 50), np.uint8))
        tif.write(np.zeros((20, 25), np.uint8))
        tif.write(np.zeros((40, 50), np.float32))
    with pytest.raises(ValueError, match="3 TIFF series of different shapes") as err:
        io.read(tmp_path / "mixed.tif")
    text = str(err.value)
    assert "\n" not in text and "mixed.tif" in text
    assert "40x50 uint8, 20x25 uint8, 40x50 float32" in text


@pytest.mark.parametrize("dtype", [np.float16, np.bool_])
@pytest.mark.parametrize("name", ["a.nii", "a.nii.gz"])
def test_nifti_refuses_float16_and_bool_up_front_with_a_way_out(name, dtype) -> None:
    hint = "--dtype uint8" if dtype is np.bool_ else "--dtype float32"
    with pytest.raises(ValueError, match=f"NIfTI cannot store {np.dtype(dtype)}.*{hint}") as err:
        io.check_writable(name, dtype, (4, 5, 6), None)
    assert "float32/64 or complex64/128" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("dtype", [np.int64, np.uint64, np.int8, np.uint32, ">f4"])
@pytest.mark.parametrize("source", [None, "nifti2"])
def test_nifti_writes_64_bit_integers(tmp_path, dtype, source) -> None:
    """Before: int64 and uint64 failed in nibabel (which needs the dtype said)."""
    data = (rng(21).random((4, 5, 6)) * 100).astype(dtype)
    info = None
    if source:
        nib.save(nib.Nifti2Image(np.zeros((4, 5, 6), np.int16), np.eye(4)), tmp_path / "s.nii")
        info = io.read(tmp_path / "s.nii")[1]
    io.write(tmp_path / "o.nii.gz", data, info)
    back = nib.load(tmp_path / "o.nii.gz")
    assert back.get_data_dtype() == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), data)


def _png16(path: Path, data: np.ndarray, colour: int) -> None:
    """A 16-bit PNG written by hand (zlib, filter 0): Pillow cannot write 16-bit colour."""
    import struct
    import zlib

    height, width = data.shape[:2]
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in data)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(("colour", "channels"), [(2, 3), (6, 4), (4, 2)])
def test_16_bit_colour_png_is_read_and_written_at_full_depth(tmp_path, colour, channels) -> None:
    """Before: refused (Pillow reads it as uint8: 33375 -> 130). Read by imagecodecs; the
    reference is the file's samples as a hand-written encoder stored them; what sepconv writes
    is checked through Pillow, which reads the top 8 bits of each sample."""
    data = rng(22).integers(0, 65536, (6, 7, channels), dtype=np.uint16)
    _png16(tmp_path / "c16.png", data, colour)
    back, info = io.read(tmp_path / "c16.png")
    assert back.dtype == np.uint16 and info.channel_axis == 2
    np.testing.assert_array_equal(back, data)
    io.write(tmp_path / "o.png", back, info)
    again, _ = io.read(tmp_path / "o.png")
    np.testing.assert_array_equal(again, data)
    from PIL import Image

    with Image.open(tmp_path / "o.png") as img:
        top = np.asarray(img)
    if channels == 2:  # Pillow reads 16-bit grey + alpha as "LA": its grey is the top byte
        np.testing.assert_array_equal(top[..., 0], (data[..., 0] >> 8).astype(np.uint8))
    else:
        np.testing.assert_array_equal(top, (data >> 8).astype(np.uint8))


def test_16_bit_grey_png_written_by_hand_is_read_at_full_depth(tmp_path) -> None:
    data = rng(23).integers(0, 65536, (6, 7), dtype=np.uint16)
    _png16(tmp_path / "g16.png", data, 0)
    back, info = io.read(tmp_path / "g16.png")
    assert back.dtype == np.uint16 and info.channel_axis is None
    np.testing.assert_array_equal(back, data)


@pytest.mark.parametrize(
    ("channels", "source", "extrasamples"),
    [(2, "png", (2,)), (2, "npy", (0,)), (3, "png", ()), (4, "png", (2,)), (5, "npy", (0,) * 4)],
)
@pytest.mark.parametrize("depth", [(), (3,)])
def test_channel_last_tiff_is_one_page_per_image_with_interleaved_samples(
    tmp_path, channels, source, extrasamples, depth
) -> None:
    """Before: a grey + alpha image (40, 50, 2) became 40 pages of 50 x 2 (axes QYX)."""
    import tifffile

    shape = (*depth, 40, 50, channels)
    data = (rng(24).random(shape) * 255).astype(np.uint8)
    info = io.ImageInfo(source, shape, data.dtype, channel_axis=len(shape) - 1)
    io.write(tmp_path / "c.tif", data, info)
    with tifffile.TiffFile(tmp_path / "c.tif") as tif:
        assert len(tif.pages) == (depth[0] if depth else 1)
        assert tif.pages[0].shape == (40, 50, channels)
        assert tif.series[0].axes.endswith("YXS")
        assert tuple(int(e) for e in tif.pages[0].extrasamples) == extrasamples
        np.testing.assert_array_equal(tif.asarray(), data)
    back, got = io.read(tmp_path / "c.tif")
    np.testing.assert_array_equal(back, data)
    assert got.channel_axis == len(shape) - 1


def test_one_sample_channel_last_tiff_is_a_grey_image(tmp_path) -> None:
    import tifffile

    data = (rng(25).random((40, 50, 1)) * 255).astype(np.uint8)
    io.write(tmp_path / "g.tif", data, io.ImageInfo("png", data.shape, data.dtype, channel_axis=2))
    with tifffile.TiffFile(tmp_path / "g.tif") as tif:
        assert len(tif.pages) == 1 and tif.pages[0].shape == (40, 50)
        np.testing.assert_array_equal(tif.asarray(), data[..., 0])


def test_csv_kernel_with_a_utf8_byte_order_mark_and_trailing_commas_loads(tmp_path) -> None:
    """Before: Excel's "CSV UTF-8" failed on '\\ufeff1', and '1,2,1,' rows were refused."""
    from sepconv import kernels

    want = np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])
    text = "1,2,1,\r\n2,4,2,\r\n1,2,1,\r\n"
    (tmp_path / "k.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    np.testing.assert_array_equal(kernels.from_spec(str(tmp_path / "k.csv")), want)
    (tmp_path / "m.csv").write_text("1, 2, 1 ,\n2,4,2\n1,2,1\n")  # some rows only
    np.testing.assert_array_equal(kernels.from_spec(str(tmp_path / "m.csv")), want)
    (tmp_path / "two.csv").write_text("1,2,1,,\n2,4,2,,\n")  # one empty field dropped, not two
    with pytest.raises(ValueError, match="cannot read kernel file"):
        kernels.from_spec(str(tmp_path / "two.csv"))


def test_summary_writes_a_negative_nifti_intercept_as_a_minus() -> None:
    """Before: 'uint8 x 2 + -5'."""
    report = io.FilterReport(
        "a.nii", "b.nii", (4, 5), "uint8", "float32", (0, 1), "box:size=3", (3, 3), "direct",
        None, 0.0, 0.0, 1.0, dtype_read="float32", scaling=(2.0, -5.0),
    )  # fmt: skip
    assert "4x5 uint8 x 2 - 5 (NIfTI scaling, read as float32) -> float32" in report.summary()
    report.scaling = (2.0, 5.0)
    assert "uint8 x 2 + 5 (NIfTI" in report.summary()
    report.scaling = (2.0, 0.0)
    assert "uint8 x 2 (NIfTI" in report.summary()


# ---------------------------------------------------------------------------------------------
# bool and complex data through the files (reference: scipy.ndimage in float64/complex128)
# ---------------------------------------------------------------------------------------------


def _read_back(path: Path) -> np.ndarray:
    data, _ = io.read(path)
    return np.asarray(data)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("suffix", [".npy", ".tif", ".nii.gz", ".zarr"])
@pytest.mark.parametrize("chunks", [None, 5])
def test_complex_data_is_filtered_and_written_complex(tmp_path, dtype, suffix, chunks) -> None:
    if suffix == ".zarr":
        pytest.importorskip("zarr")
    g = rng(31)
    x = (g.standard_normal((9, 11, 6)) + 1j * g.standard_normal((9, 11, 6))).astype(dtype)
    np.save(tmp_path / "c.npy", x)
    out = tmp_path / f"o{suffix}"
    io.filter_file(tmp_path / "c.npy", out, "gaussian:sigma=1.2", chunks=chunks)
    got = _read_back(out)
    assert got.dtype == dtype and got.shape == x.shape
    ref = ndimage.gaussian_filter(x.astype(np.complex128), 1.2)
    tol = 1e-5 if dtype == np.complex64 else 1e-12
    np.testing.assert_allclose(got, ref, rtol=0, atol=tol * np.abs(ref).max())
    again = tmp_path / f"again{suffix}"  # the complex file is an input too
    io.filter_file(out, again, "box:size=3", dtype=np.complex128)
    want = ndimage.uniform_filter(got.astype(np.complex128), 3)
    np.testing.assert_allclose(_read_back(again), want, rtol=0, atol=1e-12 * np.abs(want).max())


def test_complex_data_into_a_real_dtype_is_refused_before_anything_is_written(tmp_path) -> None:
    np.save(tmp_path / "c.npy", np.ones((4, 5), np.complex64))
    with pytest.raises(ValueError, match=r"dtype float32 cannot hold the filtered complex64") as e:
        io.filter_file(tmp_path / "c.npy", tmp_path / "o.nii.gz", "box:size=3", dtype="float32")
    assert "complex64 or complex128" in str(e.value) and "c.npy" in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npy"]


@pytest.mark.parametrize("suffix", [".npy", ".tif", ".zarr"])
def test_bool_masks_are_filtered_into_bool_by_majority(tmp_path, suffix) -> None:
    """A bool result is the float64 result rounded (half to even) and saturated to 0/1 (the
    documented difference from scipy, whose cast makes any non-zero value True)."""
    if suffix == ".zarr":
        pytest.importorskip("zarr")
    mask = rng(32).random((12, 13)) > 0.6
    np.save(tmp_path / "m.npy", mask)
    out = tmp_path / f"o{suffix}"
    io.filter_file(tmp_path / "m.npy", out, "box:size=3")
    got = _read_back(out)
    ref = ndimage.uniform_filter(mask.astype(np.float64), 3)
    assert got.dtype == np.bool_
    np.testing.assert_array_equal(got, np.clip(np.rint(ref), 0, 1).astype(bool))
    io.filter_file(tmp_path / "m.npy", tmp_path / "f.npy", "box:size=3", dtype="float32")
    np.testing.assert_allclose(np.load(tmp_path / "f.npy"), ref, rtol=0, atol=1e-6)


def test_write_into_an_open_file_names_that_file_in_its_refusal(tmp_path) -> None:
    with open(tmp_path / "t.bin", "wb") as fh, pytest.raises(ValueError) as err:
        io.write(fh, np.zeros((3, 4), np.float16), format=".nii.gz")
    assert f"output {str(tmp_path / 't.bin')!r}: NIfTI cannot store float16" in str(err.value)


@pytest.mark.parametrize("limit", ["lots", 0, -5, "1 parsec"])
def test_a_bad_memory_limit_is_refused_also_for_an_in_memory_run(tmp_path, limit) -> None:
    """Before: accepted silently unless the run used dask (where it is read)."""
    pytest.importorskip("dask")
    np.save(tmp_path / "a.npy", np.zeros((4, 5)))
    with pytest.raises(ValueError, match=r"memory_limit must be"):
        io.filter_file(tmp_path / "a.npy", tmp_path / "o.npy", "box:size=3", memory_limit=limit)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]
