"""sepconv.io and ``sepconv filter`` when things go wrong (issue 10): damaged or truncated files,
pipes and devices instead of files, big-endian data, a full disk, and being killed mid-write
(SIGTERM, SIGHUP, SIGKILL) must end in one clear line and leave no partial or temporary file.
NIfTI scaling and spatial units are read honestly.

References are numpy, scipy.ndimage and nibabel, never sepconv's own output.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

pytest.importorskip("imageio")
tifffile = pytest.importorskip("tifffile")
nib = pytest.importorskip("nibabel")

from sepconv import cli, io  # noqa: E402

runner = CliRunner()
LINUX = sys.platform.startswith("linux") and os.path.isdir("/proc/self/fd")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "sepconv-tmp" in p.name)


def one_error_line(result, status: int = 2) -> str:
    assert result.exit_code == status, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sepconv: error: "), result.stderr
    return lines[0]


def script() -> list[str]:
    exe = Path(sys.executable).with_name("sepconv")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "sepconv.cli"]


def truncated(path: Path, fraction: float = 0.5) -> Path:
    data = path.read_bytes()
    out = path.with_name("cut-" + path.name)
    out.write_bytes(data[: int(len(data) * fraction)])
    return out


# ----------------------------------------------------------------------------------------------
# damaged and truncated files: one line naming the file (io.read and the CLI)
# ----------------------------------------------------------------------------------------------


def _volume() -> np.ndarray:
    return np.random.default_rng(0).random((12, 40, 50)).astype(np.float32)


def _truncated_tiff(tmp_path: Path) -> Path:
    tifffile.imwrite(tmp_path / "v.tif", _volume())
    return truncated(tmp_path / "v.tif")


def _truncated_png(tmp_path: Path) -> Path:
    import imageio.v3 as iio

    img = (np.random.default_rng(1).random((120, 160)) * 255).astype(np.uint8)
    iio.imwrite(tmp_path / "i.png", img)
    return truncated(tmp_path / "i.png")


def _truncated_nifti(tmp_path: Path, name: str) -> Path:
    nib.save(nib.Nifti1Image(_volume(), np.eye(4)), tmp_path / name)
    return truncated(tmp_path / name)


def _truncated_npy(tmp_path: Path) -> Path:
    np.save(tmp_path / "v.npy", _volume())
    return truncated(tmp_path / "v.npy")


TRUNCATED = {
    "tiff": (_truncated_tiff, "is the file truncated or damaged"),
    "png": (_truncated_png, "truncated"),
    "nii": (lambda p: _truncated_nifti(p, "v.nii"), "damaged"),
    "nii.gz": (lambda p: _truncated_nifti(p, "v.nii.gz"), "end-of-stream"),
    "npy": (_truncated_npy, "cannot read"),
}


@pytest.mark.parametrize("kind", sorted(TRUNCATED))
@pytest.mark.parametrize("lazy", [False, True])
def test_truncated_files_fail_in_read_with_one_line_and_print_nothing(
    tmp_path, capfd, kind, lazy
) -> None:
    make, needle = TRUNCATED[kind]
    path = make(tmp_path)
    with pytest.raises(ValueError, match="cannot read") as err:
        io.read(path, lazy=lazy)
    msg = str(err.value)
    assert "\n" not in msg and repr(str(path)) in msg and needle in msg, msg
    out, errs = capfd.readouterr()
    assert out == "" and errs == ""  # tifffile logs "invalid page offset": not on stderr


def test_truncated_tiff_through_the_real_script_is_exactly_one_stderr_line(tmp_path) -> None:
    """Before: tifffile's own log line came first, so stderr had two lines."""
    path = _truncated_tiff(tmp_path)
    proc = subprocess.run(
        [*script(), "filter", str(path), str(tmp_path / "o.tif"), "-k", "box:size=3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("sepconv: error: cannot read") and "truncated" in lines[0]
    assert not (tmp_path / "o.tif").exists() and leftovers(tmp_path) == []


def _zarr_with_a_corrupt_chunk(tmp_path: Path) -> tuple[Path, np.ndarray]:
    pytest.importorskip("zarr")
    pytest.importorskip("dask")
    x = _volume()
    z = io.create_zarr(tmp_path / "v.zarr", x.shape, (4, 20, 25), x.dtype)
    z[...] = x
    chunk = next(
        p
        for p in sorted((tmp_path / "v.zarr").rglob("*"))
        if p.is_file() and p.stat().st_size > 100
    )
    chunk.write_bytes(b"this is not a compressed chunk")
    return tmp_path / "v.zarr", x


@pytest.mark.parametrize("lazy", [False, True])
def test_corrupt_zarr_chunk_is_one_line_naming_the_store_and_region(tmp_path, lazy) -> None:
    path, _ = _zarr_with_a_corrupt_chunk(tmp_path)
    with pytest.raises(ValueError) as err:
        data, _ = io.read(path, lazy=lazy)
        data.compute()  # lazy: the damaged chunk is met here
    msg = str(err.value)
    assert "\n" not in msg, msg
    assert msg.startswith(f"cannot read {str(path)!r} as zarr: the chunk(s) at [")
    assert "are damaged" in msg


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_corrupt_zarr_chunk_through_the_cli_is_one_line_and_exit_2(tmp_path, scheduler) -> None:
    """Before: a 118-line traceback from the zstd codec, exit 1."""
    path, _ = _zarr_with_a_corrupt_chunk(tmp_path)
    out = tmp_path / "o.zarr"
    result = runner.invoke(
        cli.app,
        ["filter", str(path), str(out), "-k", "box:size=3", "--scheduler", scheduler],
    )
    line = one_error_line(result)
    assert "as zarr: the chunk(s) at" in line, line
    assert not out.exists() and leftovers(tmp_path) == []


# ----------------------------------------------------------------------------------------------
# pipes, devices and sockets are refused at once (a FIFO used to block forever)
# ----------------------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_named_pipe_input_is_refused_at_once_not_read_forever(tmp_path) -> None:
    fifo = tmp_path / "stream.npy"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            io.read(fifo)
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)
        else:  # pragma: no cover - the bug: it read something
            outcome.append(None)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout=20)
    if worker.is_alive():  # the old code blocks in open(); let it go before failing
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        pytest.fail("io.read blocked on a named pipe")
    assert isinstance(outcome[0], ValueError)
    assert "is a named pipe (FIFO), not a regular file" in str(outcome[0])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_named_pipe_input_through_the_real_script_exits_2_quickly(tmp_path) -> None:
    fifo = tmp_path / "in.png"
    os.mkfifo(fifo)
    proc = subprocess.run(
        [*script(), "filter", str(fifo), str(tmp_path / "o.png"), "-k", "box:size=3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "named pipe (FIFO)" in lines[0], proc.stderr
    assert leftovers(tmp_path) == [] and not (tmp_path / "o.png").exists()


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_character_device_behind_a_symlink_is_refused(tmp_path) -> None:
    link = tmp_path / "zeros.npy"
    os.symlink("/dev/zero", link)
    with pytest.raises(ValueError, match="is a character device, not a regular file"):
        io.read(link)


def test_zarr_path_that_is_a_file_is_refused(tmp_path) -> None:
    (tmp_path / "x.zarr").write_bytes(b"{}")
    with pytest.raises(ValueError, match="is a file, not a Zarr directory"):
        io.read(tmp_path / "x.zarr")


# ----------------------------------------------------------------------------------------------
# byte order: data always comes back native
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lazy", [False, True])
def test_big_endian_npy_is_read_in_native_byte_order(tmp_path, lazy) -> None:
    if lazy:
        pytest.importorskip("dask")
    x = (np.arange(60, dtype=np.int64).reshape(6, 10) * 997 - 20000).astype(">i2")
    np.save(tmp_path / "be.npy", x)
    data, info = io.read(tmp_path / "be.npy", lazy=lazy)
    assert info.dtype == np.dtype(np.int16) and info.dtype.isnative
    assert np.dtype(data.dtype).isnative
    np.testing.assert_array_equal(np.asarray(data), x.astype(np.int16))


def test_big_endian_zarr_is_read_lazily_in_native_byte_order(tmp_path) -> None:
    zarr = pytest.importorskip("zarr")
    pytest.importorskip("dask")
    x = np.arange(24, dtype=">f8").reshape(4, 6) / 7
    z = zarr.open_array(
        str(tmp_path / "be.zarr"), mode="w", shape=x.shape, chunks=(2, 3), dtype=x.dtype
    )
    z[...] = x
    data, info = io.read(tmp_path / "be.zarr", lazy=True)
    assert info.dtype == np.float64 and data.dtype.isnative
    np.testing.assert_array_equal(data.compute(), x.astype(np.float64))


def _anatomical() -> Path:
    from nibabel.testing import data_path

    path = Path(data_path) / "anatomical.nii"
    if not path.exists():  # pragma: no cover - nibabel without its test data
        pytest.skip("nibabel's test data (anatomical.nii) is not installed")
    return path


def test_big_endian_nifti_from_nibabel_is_read_native() -> None:
    path = _anatomical()
    stored = nib.load(path).get_data_dtype()
    assert stored == np.dtype(">i2")  # the point of this file
    data, info = io.read(path)
    assert data.dtype == np.dtype(np.int16) and data.dtype.isnative and info.dtype.isnative
    np.testing.assert_array_equal(data, np.asanyarray(nib.load(path).dataobj))


@pytest.mark.engine
def test_big_endian_nifti_through_the_cli_equals_scipy(tmp_path) -> None:
    """Before: a 69-line traceback (or a '>i2' output)."""
    path = _anatomical()
    out = tmp_path / "smooth.nii"
    result = runner.invoke(cli.app, ["filter", str(path), str(out), "-k", "gaussian:sigma=1.5"])
    assert result.exit_code == 0, result.output
    assert "33x41x25 int16 -> int16" in result.stdout, result.stdout
    x = np.asanyarray(nib.load(path).dataobj).astype(np.float64)
    ref = np.clip(np.rint(ndimage.gaussian_filter(x, 1.5)), -32768, 32767)
    got = np.asanyarray(nib.load(out).dataobj)
    assert got.dtype.newbyteorder("=") == np.int16  # the header keeps its byte order
    assert np.abs(got.astype(np.float64) - ref).max() <= 1  # rounding of a .5 tie at most
    assert np.mean(got == ref) > 0.99
    np.testing.assert_allclose(nib.load(out).affine, nib.load(path).affine)


# ----------------------------------------------------------------------------------------------
# NIfTI: scaled integers and spatial units
# ----------------------------------------------------------------------------------------------


def _scaled_nifti(path: Path, unit: str | None = "mm") -> np.ndarray:
    raw = (np.random.default_rng(3).random((16, 18, 20)) * 4000 - 2000).astype(np.int16)
    img = nib.Nifti1Image(raw, np.diag([0.5, 0.5, 2.0, 1.0]))
    img.header.set_slope_inter(0.25, 10.0)
    if unit:
        img.header.set_xyzt_units(unit)
    nib.save(img, path)
    return raw.astype(np.float64) * 0.25 + 10.0


def test_scaled_nifti_reads_as_float32_and_reports_stored_dtype_and_scaling(tmp_path) -> None:
    physical = _scaled_nifti(tmp_path / "s.nii")
    data, info = io.read(tmp_path / "s.nii")
    assert data.dtype == np.float32 and info.dtype == np.float32  # not float64: 2x, not 4x
    assert info.meta["stored_dtype"] == np.int16 and info.meta["scaling"] == (0.25, 10.0)
    np.testing.assert_allclose(data, physical, rtol=1e-7)


@pytest.mark.engine
@pytest.mark.parametrize(("dtype", "atol"), [(None, 2e-3), ("float64", 1e-9)])
def test_scaled_nifti_through_the_cli_writes_float32_or_the_asked_dtype(tmp_path, dtype, atol):
    """Before: written as float64 (4x the int16 file) and reported as float64 input."""
    physical = _scaled_nifti(tmp_path / "s.nii")
    out = tmp_path / "o.nii"
    args = ["filter", str(tmp_path / "s.nii"), str(out), "-k", "gaussian:sigma=1"]
    result = runner.invoke(cli.app, args + (["--dtype", dtype] if dtype else []))
    assert result.exit_code == 0, result.output
    want = np.dtype(dtype or np.float32)
    assert f"16x18x20 int16 x 0.25 + 10 (NIfTI scaling, read as {want}) -> {want}" in result.stdout
    written = nib.load(out)
    assert written.get_data_dtype() == want
    got = np.asanyarray(written.dataobj)
    np.testing.assert_allclose(got, ndimage.gaussian_filter(physical, 1.0), atol=atol)
    if dtype is None:
        assert out.stat().st_size < 2.2 * (tmp_path / "s.nii").stat().st_size


def test_nifti_without_a_spatial_unit_has_no_mm_spacing(tmp_path) -> None:
    _scaled_nifti(tmp_path / "u.nii", unit=None)
    _, info = io.read(tmp_path / "u.nii")
    assert info.spacing is None
    assert info.meta["spatial_unit"] == "unknown"
    assert info.meta["voxel_size"] == pytest.approx((0.5, 0.5, 2.0))


def test_sigma_mm_on_a_nifti_without_spatial_unit_is_refused_with_a_way_out(tmp_path) -> None:
    """Before: the voxel sizes were silently taken as millimetres."""
    _scaled_nifti(tmp_path / "u.nii", unit=None)
    out = tmp_path / "o.nii"
    line = one_error_line(
        runner.invoke(cli.app, ["filter", str(tmp_path / "u.nii"), str(out), "--sigma-mm", "2"])
    )
    assert "has no spatial unit" in line and "--kernel gaussian:sigma=" in line, line
    assert not out.exists() and leftovers(tmp_path) == []


def test_nifti_written_from_other_formats_says_its_unit_is_mm(tmp_path) -> None:
    data = np.ones((3, 4, 5), np.float32)
    io.write(tmp_path / "n.nii.gz", data, io.ImageInfo("npy", data.shape, data.dtype, (1, 2, 3)))
    assert nib.load(tmp_path / "n.nii.gz").header.get_xyzt_units()[0] == "mm"


# ----------------------------------------------------------------------------------------------
# a full disk: one line that says so, nothing left behind
# ----------------------------------------------------------------------------------------------


def test_no_space_while_writing_a_path_says_so_and_removes_the_partial_file(
    tmp_path, monkeypatch
) -> None:
    def full(f, suffix, data, info):
        f.write(b"\x93NUMPY half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io, "_write_stream", full)
    target = tmp_path / "o.npy"
    with pytest.raises(OSError) as err:
        io.write(target, np.zeros(10))
    assert err.value.errno == errno.ENOSPC
    assert str(err.value).startswith(f"no space left on device while writing {str(target)!r}")
    assert not target.exists()


def test_short_write_without_errno_on_a_full_disk_is_called_no_space(tmp_path, monkeypatch):
    """numpy's tofile (under tifffile) says '1048576 requested and 524256 written'."""

    def short(f, suffix, data, info):
        raise OSError("1048576 requested and 524256 written")

    class Full:
        f_bavail, f_frsize = 0, 4096

    monkeypatch.setattr(io, "_write_stream", short)
    monkeypatch.setattr(io.os, "statvfs", lambda path: Full())
    with pytest.raises(OSError, match=r"no space left on device while writing .*0 B free"):
        with io.atomic_file(tmp_path / "o.tif") as f:
            io.write(f, np.zeros((4, 4), np.float32), format="tiff")
    assert list(tmp_path.iterdir()) == []


def test_no_space_through_the_cli_is_one_line_exit_1_and_nothing_left(tmp_path, monkeypatch):
    np.save(tmp_path / "in.npy", np.zeros((20, 30), np.float32))

    def full(f, suffix, data, info):
        f.write(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io, "_write_stream", full)
    for name in ("o.npy", "o.tif", "o.nii.gz"):
        result = runner.invoke(
            cli.app, ["filter", str(tmp_path / "in.npy"), str(tmp_path / name), "-k", "box:size=3"]
        )
        line = one_error_line(result, status=1)
        assert line.startswith(
            f"sepconv: error: no space left on device while writing {str(tmp_path / name)!r}"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy"]


def _can_mount_tmpfs() -> bool:
    if not LINUX or not shutil_which("unshare"):
        return False
    probe = subprocess.run(
        [
            "unshare",
            "-rm",
            "sh",
            "-c",
            "mount -t tmpfs -o size=64k tmpfs /mnt",
        ],
        capture_output=True,
        timeout=30,
    )
    return probe.returncode == 0


def shutil_which(name: str) -> str | None:
    import shutil

    return shutil.which(name)


@pytest.mark.engine
@pytest.mark.skipif(not LINUX, reason="needs Linux namespaces")
def test_real_full_disk_on_a_tiny_tmpfs_for_every_format(tmp_path) -> None:
    """A 256 KiB tmpfs in a private mount namespace (``unshare -rm``; skipped where not
    allowed). Before: imageio's ``__del__`` traceback for PNG, "3145728 requested and 1048448
    written" for TIFF and .npy."""
    if not _can_mount_tmpfs():
        pytest.skip("cannot mount a tmpfs in a user namespace here")
    import imageio.v3 as iio

    img = (np.random.default_rng(5).random((512, 512, 3)) * 255).astype(np.uint8)  # 768 KiB
    iio.imwrite(tmp_path / "in.png", img)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    names = ["o.png", "o.tif", "o.npy", "o.nii.gz", "o.zarr"]
    runs = "\n".join(
        f"{' '.join(script())} filter {tmp_path / 'in.png'} {mnt / n} -k box:size=3"
        f' 2>>{tmp_path / "err.txt"}; echo "$?" >>{tmp_path / "rc.txt"}'
        for n in names
    )
    shell = (
        f"mount -t tmpfs -o size=256k tmpfs {mnt}\n{runs}\nls -A {mnt} >{tmp_path / 'left.txt'}\n"
    )
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", shell], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    codes = (tmp_path / "rc.txt").read_text().split()
    lines = (tmp_path / "err.txt").read_text().strip().splitlines()
    assert codes == ["1"] * len(names), (codes, lines)
    assert len(lines) == len(names), lines  # one line each, no traceback
    for name, line in zip(names, lines, strict=True):
        assert line.startswith(
            f"sepconv: error: no space left on device while writing {str(mnt / name)!r}"
        ), line
    assert (tmp_path / "left.txt").read_text().split() == []  # nothing, not even hidden


# ----------------------------------------------------------------------------------------------
# atomic_file: unnamed until complete; the guarantees of atomic_output
# ----------------------------------------------------------------------------------------------


@pytest.mark.skipif(not LINUX, reason="O_TMPFILE is Linux")
def test_atomic_file_has_no_name_until_complete(tmp_path) -> None:
    target = tmp_path / "o.npy"
    with io.atomic_file(target) as f:
        io.write(f, np.arange(5.0), format="npy")
        assert list(tmp_path.iterdir()) == []  # not even a hidden temporary
    np.testing.assert_array_equal(np.load(target), np.arange(5.0))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # like a plain new file


@pytest.mark.parametrize("unnamed", [True, False])
def test_atomic_file_keeps_every_atomic_output_guarantee(tmp_path, monkeypatch, unnamed) -> None:
    if not unnamed:
        monkeypatch.setattr(io, "_open_unnamed", lambda folder: None)  # the named fallback
    elif not LINUX:
        pytest.skip("O_TMPFILE is Linux")
    src = tmp_path / "in.npy"
    np.save(src, np.zeros(2))
    with pytest.raises(ValueError, match="is the input"):
        with io.atomic_file(src, overwrite=True, protect=[src]):
            pass  # pragma: no cover
    target = tmp_path / "o.npy"
    with pytest.raises(ValueError, match="appeared while writing"):
        with io.atomic_file(target) as f:
            io.write(f, np.ones(3), format="npy")
            target.write_bytes(b"someone else's")
    assert target.read_bytes() == b"someone else's"  # not clobbered
    with pytest.raises(ValueError, match="exists; pass --overwrite"):
        with io.atomic_file(target):
            pass  # pragma: no cover
    with pytest.raises(RuntimeError):
        with io.atomic_file(target, overwrite=True) as f:
            f.write(b"half")
            raise RuntimeError("failed half-way")
    assert target.read_bytes() == b"someone else's"
    with io.atomic_file(target, overwrite=True) as f:
        io.write(f, np.ones(3), format="npy")
    np.testing.assert_array_equal(np.load(target), np.ones(3))
    assert leftovers(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == [
        "in.npy",
        "o.npy",
    ]


# ----------------------------------------------------------------------------------------------
# stale temporaries of killed runs
# ----------------------------------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_dead_or_long_gone_runs_are_removed_others_kept(tmp_path) -> None:
    host = io._host_id()
    dead = tmp_path / f".o.{host}-{_dead_pid()}-0123abcd.sepconv-tmp.npy"
    dead.write_bytes(b"partial")
    zdead = tmp_path / f".o.{host}-{_dead_pid()}-89abcdef.sepconv-tmp.zarr"
    (zdead / "c" / "0").mkdir(parents=True)
    (zdead / "c" / "0" / "0").write_bytes(b"chunk")
    alive = tmp_path / f".o.{host}-{os.getppid()}-00000000.sepconv-tmp.npy"  # a live process
    alive.write_bytes(b"being written")
    old_style = tmp_path / ".o.k2j4_x9q.sepconv-tmp.npy"  # an older sepconv: no pid, 2 days old
    old_style.write_bytes(b"old")
    two_days = time.time() - 2 * 86400
    os.utime(old_style, (two_days, two_days))
    fresh_other_host = tmp_path / ".o.ffffff-12345-00000000.sepconv-tmp.npy"
    fresh_other_host.write_bytes(b"another machine, now")
    unrelated = [
        tmp_path / ".other.abc-1-2.sepconv-tmp.npy",
        tmp_path / ".o.npy",
        tmp_path / "o.sepconv-tmp.npy",
    ]
    for p in unrelated:
        p.write_bytes(b"not ours")
    if fresh_other_host.name.split(".")[2].startswith(host):  # pragma: no cover - 1 in 16M
        pytest.skip("this host's id collides with the test's")
    removed = io.remove_stale_temporaries(tmp_path / "o.npy")
    assert sorted(removed) == sorted([dead.name, old_style.name])
    assert not dead.exists() and not old_style.exists()
    assert alive.exists() and fresh_other_host.exists() and all(p.exists() for p in unrelated)
    assert io.remove_stale_temporaries(tmp_path / "o.zarr") == [zdead.name]
    assert not zdead.exists()


def test_previous_zarr_output_left_aside_by_a_killed_swap_is_put_back(tmp_path) -> None:
    aside = tmp_path / f".v.{io._host_id()}-{_dead_pid()}-0000beef.sepconv-tmp.zarr.old"
    aside.mkdir()
    (aside / "zarr.json").write_text("{}")
    removed = io.remove_stale_temporaries(tmp_path / "v.zarr")
    assert removed == [f"{aside.name} (the previous output, put back)"]
    assert (tmp_path / "v.zarr" / "zarr.json").read_text() == "{}"


# ----------------------------------------------------------------------------------------------
# killed mid-write: SIGTERM and SIGHUP clean up like Ctrl-C; SIGKILL leaves nothing for single
# files (unnamed temporary) and the next run removes a Zarr temporary
# ----------------------------------------------------------------------------------------------

_MAIN = "import sys; from sepconv.cli import main; sys.argv[0] = 'sepconv'; main()"
_MAIN_NAMED = (
    "import sys; import sepconv.io as io; io._open_unnamed = lambda folder: None; "
    "from sepconv.cli import main; sys.argv[0] = 'sepconv'; main()"
)


@pytest.fixture(scope="module")
def big_input(tmp_path_factory) -> Path:
    """27 MiB of noise: as .nii.gz a second or more of writing (gzip); as .zarr, many chunks."""
    folder = tmp_path_factory.mktemp("big")
    x = np.random.default_rng(7).random((192, 192, 192), dtype=np.float32)
    np.save(folder / "in.npy", x)
    return folder / "in.npy"


def _unnamed_bytes_written(pid: int) -> int:
    """Bytes written so far into an unnamed (O_TMPFILE) file the process holds, else 0."""
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        fds = list(fd_dir.iterdir())
    except OSError:
        return 0
    for fd in fds:
        try:
            link = os.readlink(fd)
            if "/#" in link and link.endswith("(deleted)"):
                info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
                return int(info.split("pos:")[1].split()[0])
        except (OSError, IndexError, ValueError):
            continue
    return 0


def _named_bytes_written(folder: Path) -> int:
    total = 0
    for p in folder.iterdir():
        if "sepconv-tmp" in p.name:
            try:  # the writer renames and removes files while we look (chunk .partial files)
                files = [p] if p.is_file() else [q for q in p.rglob("*") if q.is_file()]
                for q in files:
                    total += q.stat().st_size
            except FileNotFoundError:
                continue
    return total


def _kill_mid_write(
    main: str, src: Path, out: Path, sig: int, extra=()
) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            main,
            "filter",
            str(src),
            str(out),
            "-k",
            "gaussian:sigma=1",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            written = _unnamed_bytes_written(proc.pid) or _named_bytes_written(out.parent)
            if written > 1 << 20:  # a MiB of output written: mid-write
                break
            time.sleep(0.005)
        else:
            pytest.fail(f"the run ended (or hung) before writing: {proc.poll()}")
        os.kill(proc.pid, sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # pragma: no cover
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):  # closed on every path (no ResourceWarning)
            if pipe is not None:
                pipe.close()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.engine
@pytest.mark.skipif(not LINUX, reason="reads /proc to find the moment of writing")
@pytest.mark.parametrize(
    ("sig", "suffix", "named"),
    [
        (signal.SIGTERM, ".nii.gz", False),
        (signal.SIGHUP, ".nii.gz", False),
        (signal.SIGKILL, ".nii.gz", False),
        (signal.SIGTERM, ".zarr", True),
        (signal.SIGKILL, ".zarr", True),
        (signal.SIGKILL, ".nii.gz", True),
    ],
)
def test_killed_mid_write_leaves_nothing_or_the_next_run_cleans_up(
    big_input, tmp_path, sig, suffix, named
) -> None:
    """Before: SIGTERM/SIGHUP/SIGKILL left 190-350 MB ``.out.XXXX.sepconv-tmp.npy`` files and
    ``.sepconv-tmp.zarr`` directories that nothing removed."""
    out = tmp_path / f"o{suffix}"
    main = _MAIN_NAMED if named and suffix != ".zarr" else _MAIN
    extra = ("--chunks", "32") if suffix == ".zarr" else ()
    done = _kill_mid_write(main, big_input, out, sig, extra)
    assert not out.exists()
    if sig != signal.SIGKILL:
        assert done.returncode == 128 + sig, done.stderr
        lines = done.stderr.strip().splitlines()
        assert lines == [f"sepconv: terminated by {signal.Signals(sig).name}; nothing was written"]
        assert "Traceback" not in done.stderr
    else:
        assert done.returncode == -signal.SIGKILL
    left = leftovers(tmp_path)
    if sig != signal.SIGKILL or not named:
        assert left == []  # SIGTERM/SIGHUP clean up; SIGKILL: the temporary had no name
        return
    assert len(left) == 1  # a named temporary cannot survive kill -9 otherwise
    small = tmp_path / "small.npy"
    x = np.random.default_rng(8).random((20, 24), dtype=np.float32)
    np.save(small, x)
    nxt = subprocess.run(
        [sys.executable, "-c", main, "filter", str(small), str(out), "-k", "gaussian:sigma=1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert nxt.returncode == 0, nxt.stderr
    assert nxt.stderr.strip() == f"sepconv: removed what an interrupted run left: {left[0]}"
    assert leftovers(tmp_path) == []
    got, _ = io.read(out)
    np.testing.assert_allclose(got, ndimage.gaussian_filter(x.astype(np.float64), 1.0), atol=1e-5)


# ----------------------------------------------------------------------------------------------
# review of the CLI's file IO: kernel files, NIfTI dtypes, multi-series TIFF, 16-bit colour PNG
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "spelling"),
    [
        (".npy", "same"),
        (".npy", "dot"),
        (".npy", "symlink"),
        (".npy", "hardlink"),
        (".csv", "symlink"),  # an output named .csv is no format: links named .npy
        (".csv", "hardlink"),
    ],
)
def test_overwrite_never_writes_over_the_kernel_file(tmp_path, suffix, spelling) -> None:
    """Before: `filter a.npy kk.npy -k kk.npy --overwrite` replaced the kernel by the result."""
    np.save(tmp_path / "a.npy", np.random.default_rng(0).random((30, 40)))
    kernel = tmp_path / f"kk{suffix}"
    if suffix == ".npy":
        np.save(kernel, np.ones((3, 3)) / 9)
    else:
        kernel.write_text("1,2,1\n2,4,2\n1,2,1\n")
    before = kernel.read_bytes()
    out = {
        "same": kernel,
        "dot": tmp_path / "." / kernel.name,
        "symlink": tmp_path / "link.npy",
        "hardlink": tmp_path / "hard.npy",
    }[spelling]
    if spelling == "symlink":
        os.symlink(kernel, out)
    elif spelling == "hardlink":
        os.link(kernel, out)
    args = ["filter", str(tmp_path / "a.npy"), str(out), "-k", str(kernel), "--overwrite"]
    line = one_error_line(runner.invoke(cli.app, args))
    assert "is the input" in line and kernel.name in line
    assert kernel.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_overwrite_never_writes_over_the_kernel_file_through_the_library(tmp_path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((30, 40)))
    np.save(tmp_path / "kk.npy", np.ones((3, 3)) / 9)
    before = (tmp_path / "kk.npy").read_bytes()
    for kernel in (str(tmp_path / "kk.npy"), f" {tmp_path / 'kk.npy'} ", tmp_path / "kk.npy"):
        with pytest.raises(ValueError, match="is the input"):
            io.filter_file(tmp_path / "a.npy", tmp_path / "kk.npy", kernel, overwrite=True)
    assert (tmp_path / "kk.npy").read_bytes() == before


@pytest.mark.parametrize(
    ("input_dtype", "option", "hint"),
    [
        ("float16", [], "float32"),
        ("float64", ["--dtype", "float16"], "float32"),
        ("float64", ["--dtype", "bool"], "uint8"),
    ],
)
def test_nifti_output_of_a_dtype_nifti_cannot_hold_is_one_line_before_filtering(
    tmp_path, input_dtype, option, hint
) -> None:
    """Before: a nibabel traceback (HeaderDataError) after reading and filtering."""
    np.save(tmp_path / "a.npy", np.random.default_rng(1).random((6, 7, 8)).astype(input_dtype))
    out = tmp_path / "o.nii.gz"
    args = ["filter", str(tmp_path / "a.npy"), str(out), "-k", "gaussian:sigma=1", *option]
    line = one_error_line(runner.invoke(cli.app, args))
    assert "NIfTI cannot store" in line and f"--dtype {hint}" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]


@pytest.mark.engine
def test_int64_into_nifti_through_the_cli_equals_scipy(tmp_path) -> None:
    """Before: exit 2 after filtering, with nibabel's hint for Python callers."""
    x = np.random.default_rng(2).integers(-(10**12), 10**12, (9, 10, 11), dtype=np.int64)
    np.save(tmp_path / "a.npy", x)
    out = tmp_path / "o.nii"
    args = ["filter", str(tmp_path / "a.npy"), str(out), "-k", "gaussian:sigma=1"]
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    got = np.asanyarray(nib.load(out).dataobj)
    assert got.dtype == np.int64
    ref = ndimage.gaussian_filter(x.astype(np.float64), 1.0)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9 * np.abs(x).max())


@pytest.mark.engine
def test_multi_series_tiff_through_the_cli_is_filtered_as_the_whole_stack(tmp_path) -> None:
    """Before: '40x50 uint8 -> uint8': four of the five pages silently dropped."""
    pages = (np.random.default_rng(3).random((5, 40, 50)) * 255).astype(np.uint8)
    with tifffile.TiffWriter(tmp_path / "mp.tif") as tif:
        for page in pages:
            tif.write(page)
    out = tmp_path / "o.tif"
    result = runner.invoke(
        cli.app, ["filter", str(tmp_path / "mp.tif"), str(out), "-k", "box:size=3"]
    )
    assert result.exit_code == 0, result.output
    assert "5x40x50 uint8 -> uint8" in result.stdout
    ref = np.clip(np.rint(ndimage.uniform_filter(pages.astype(np.float64), 3)), 0, 255)
    got = tifffile.imread(out)
    assert got.shape == pages.shape
    assert np.abs(got.astype(np.float64) - ref).max() <= 1  # a .5 tie at most
    assert np.mean(got == ref) > 0.99


def test_16_bit_colour_png_through_the_cli_keeps_16_bits(tmp_path) -> None:
    """Before: refused with one line (Pillow would cut it to 8 bits). Now filtered at full
    depth into a 16-bit RGB PNG; reference: scipy in float64 on the spatial axes, rounded."""
    from scipy import ndimage

    from test_io import _png16

    data = np.random.default_rng(5).integers(0, 65536, (6, 7, 3), dtype=np.uint16)
    _png16(tmp_path / "rgb16.png", data, 2)
    out = tmp_path / "o.png"
    result = runner.invoke(
        cli.app, ["filter", str(tmp_path / "rgb16.png"), str(out), "-k", "box:size=3"]
    )
    assert result.exit_code == 0, result.output
    assert "6x7x3 uint16 -> uint16" in result.stdout
    got, info = io.read(out)
    ref = ndimage.uniform_filter(data.astype(np.float64), (3, 3, 1))
    assert got.dtype == np.uint16 and info.channel_axis == 2
    assert np.abs(got - np.rint(ref)).max() <= 1  # a fixed-point .5 tie at most


@pytest.mark.engine
def test_scaled_nifti_with_32_bit_integer_storage_is_read_and_written_as_float64(tmp_path):
    """float32 holds integers exactly only up to 2**24: int32 x slope needs float64."""
    raw = np.random.default_rng(4).integers(2**30, 2**31 - 1, (8, 9, 10), dtype=np.int32) | 1
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(0.5, -3.0)
    nib.save(img, tmp_path / "s.nii")
    physical = raw.astype(np.float64) * 0.5 - 3.0
    data, info = io.read(tmp_path / "s.nii")
    assert data.dtype == np.float64 and info.meta["stored_dtype"] == np.int32
    np.testing.assert_array_equal(data, physical)  # float32 would be off by up to 64
    out = tmp_path / "o.nii"
    result = runner.invoke(
        cli.app, ["filter", str(tmp_path / "s.nii"), str(out), "-k", "box:size=3"]
    )
    assert result.exit_code == 0, result.output
    assert "int32 x 0.5 - 3 (NIfTI scaling, read as float64) -> float64" in result.stdout
    got = np.asanyarray(nib.load(out).dataobj)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ndimage.uniform_filter(physical, 3), rtol=1e-12)


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs pthread_kill")
def test_ctrl_c_while_writing_zarr_leaves_no_temporary_and_no_pending_writes(tmp_path) -> None:
    """Before: zarr's event-loop thread went on writing chunks after the temporary was
    removed (recreating it) and asyncio reported destroyed pending tasks at exit."""
    pytest.importorskip("zarr")
    data = np.random.default_rng(5).random((64, 256, 512)).astype(np.float32)  # 32 MiB
    interrupted = 0
    for delay in (0.02, 0.05, 0.1, 0.2):
        main = threading.main_thread().ident
        timer = threading.Timer(delay, signal.pthread_kill, (main, signal.SIGINT))
        timer.start()
        try:
            with io.atomic_output(tmp_path / "o.zarr", overwrite=True) as tmp:
                io.write(tmp, data)
            time.sleep(delay)  # the signal, had the write been quicker
        except KeyboardInterrupt:
            interrupted += 1
            time.sleep(0.5)  # a late writer would recreate the temporary meanwhile
            assert leftovers(tmp_path) == []
            assert not [t for t in threading.enumerate() if t.name == "sepconv-zarr-write"]
        finally:
            timer.join()
    if not interrupted:
        pytest.skip("every write finished before the signal")
