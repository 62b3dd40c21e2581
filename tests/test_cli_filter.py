"""``sepconv filter``: files in, files out, against the in-memory library as the oracle.

CliRunner for most cases, real subprocesses of the installed ``sepconv`` script for exit
codes, stderr and the (absent) progress bar when output is not a terminal.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import sepconv
import sepconv.io
from sepconv import cli

iio = pytest.importorskip("imageio.v3")
nib = pytest.importorskip("nibabel")
pytest.importorskip("tifffile")

runner = CliRunner()
pytestmark = pytest.mark.engine


def run(*args: object):
    return runner.invoke(cli.app, ["filter", *map(str, args)])


def ok(result) -> str:
    """Exit 0, nothing on stderr, and exactly one summary line on stdout."""
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    return lines[0]


def user_error(result, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sepconv: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if "sepconv-tmp" in p.name]


def half_write(target) -> None:
    """Half a file into what ``io.write`` was given: an open (unnamed) file or a path."""
    if hasattr(target, "write"):
        target.write(b"\x89PNG half")
    else:
        Path(target).write_bytes(b"\x89PNG half")


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    y, x = np.mgrid[:96, :128]
    img = np.stack([(x % 32 < 16) * 220, (y % 24 < 12) * 180, (x + y) % 256], axis=-1).astype(
        np.uint8
    )
    path = tmp_path / "photo.png"
    iio.imwrite(path, img)
    return path


@pytest.fixture
def brain(tmp_path: Path) -> Path:
    """A NIfTI volume with anisotropic voxels (0.5 x 1 x 2.5 mm) and a rotated affine."""
    vol = np.random.default_rng(0).random((24, 20, 10)).astype(np.float32)
    vol[12, 10, 5] = 100.0
    affine = np.array(
        [[0.0, -1.0, 0.0, 30.0], [0.5, 0.0, 0.0, -12.0], [0.0, 0.0, 2.5, 4.0], [0, 0, 0, 1]]
    )
    img = nib.Nifti1Image(vol, affine)
    img.header.set_xyzt_units("mm")
    path = tmp_path / "brain.nii.gz"
    nib.save(img, path)
    return path


# ----------------------------------------------------------------------------------------------
# results equal the library
# ----------------------------------------------------------------------------------------------


def test_colour_photo_filters_spatial_axes_only_and_reports_the_plan(photo, tmp_path) -> None:
    line = ok(run(photo, tmp_path / "blur.png", "--kernel", "gaussian:sigma=2"))
    img = iio.imread(photo)
    expect = sepconv.gaussian_filter(img, 2.0, axes=(0, 1))  # uint8: rounded, saturated
    np.testing.assert_array_equal(iio.imread(tmp_path / "blur.png"), expect)
    for needle in (
        "96x128x3 uint8 -> uint8",
        "gaussian:sigma=2,ndim=2 (17x17 over axes 0,1)",
        "plan separable rank 1, exact",
        " s (read, filter, write)",
        "voxel/s",
    ):
        assert needle in line, line


def test_nifti_sigma_mm_is_isotropic_in_millimetres_and_keeps_the_header(brain, tmp_path):
    out = tmp_path / "smooth.nii.gz"
    line = ok(run(brain, out, "--sigma-mm", "2"))
    src, dst = nib.load(brain), nib.load(out)
    sigma = [2 / 0.5, 2 / 1.0, 2 / 2.5]  # voxels per axis
    expect = sepconv.gaussian_filter(np.asanyarray(src.dataobj), sigma)
    np.testing.assert_allclose(np.asanyarray(dst.dataobj), expect, atol=1e-5)
    np.testing.assert_allclose(dst.affine, src.affine)
    assert dst.header.get_zooms() == src.header.get_zooms()
    assert dst.header.get_xyzt_units() == ("mm", "unknown")
    assert "sigma=[4,2,0.8]" in line, line


def test_nifti_derivative_to_float_output(brain, tmp_path) -> None:
    ok(run(brain, tmp_path / "d.nii", "-k", "sobel:axis=2", "--dtype", "float64"))
    src = np.asanyarray(nib.load(brain).dataobj)
    got = np.asanyarray(nib.load(tmp_path / "d.nii").dataobj)
    assert got.dtype == np.float64
    K = sepconv.kernels.sobel(2, ndim=3)  # float32 input: computed in float32, as the library
    np.testing.assert_array_equal(got, sepconv.correlate(src, K, output=np.float64))
    np.testing.assert_allclose(got, sepconv.sobel(src.astype(np.float64), axis=2), atol=1e-4)


def test_tiff_stack_with_axes_mode_and_method(tmp_path: Path) -> None:
    import tifffile

    stack = (np.random.default_rng(1).random((6, 30, 40)) * 1000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", stack)
    K = np.outer([1.0, 2, 1], [1.0, 0, -1, 2])
    np.save(tmp_path / "k.npy", K)
    ok(
        run(
            tmp_path / "s.tif",
            tmp_path / "o.tif",
            "-k",
            tmp_path / "k.npy",
            "--axes",
            "1,2",
            "--mode",
            "wrap",
            "--method",
            "direct",
            "--dtype",
            "float32",
        )
    )
    expect = sepconv.correlate(stack, K, axes=(1, 2), mode="wrap", output=np.float32)
    np.testing.assert_allclose(iio.imread(tmp_path / "o.tif"), expect, rtol=1e-6)


def test_npy_with_chunks_runs_on_dask_and_equals_in_memory(tmp_path: Path) -> None:
    x = np.random.default_rng(2).standard_normal((40, 30, 20))
    np.save(tmp_path / "v.npy", x)
    line = ok(
        run(tmp_path / "v.npy", tmp_path / "o.npy", "-k", "gaussian:sigma=1.5", "--chunks", "7")
    )
    assert "dask chunks 7x7x7 on threads" in line
    np.testing.assert_allclose(
        np.load(tmp_path / "o.npy"), sepconv.gaussian_filter(x, 1.5), atol=1e-12
    )


def test_zarr_to_zarr_out_of_core_with_processes(tmp_path: Path) -> None:
    pytest.importorskip("zarr")
    pytest.importorskip("dask")
    from sepconv import io

    x = np.random.default_rng(3).random((32, 24, 16)).astype(np.float32)
    z = io.create_zarr(tmp_path / "in.zarr", x.shape, (8, 12, 16), x.dtype)
    z[...] = x
    line = ok(
        run(
            tmp_path / "in.zarr",
            tmp_path / "out.zarr",
            "-k",
            "laplacian_of_gaussian:sigma=1",
            "--scheduler",
            "processes",
            "--memory-limit",
            "64KiB",
            "--cval",
            "0.5",
            "--mode",
            "constant",
        )
    )
    assert "dask chunks 8x12x16 on processes" in line
    got, info = io.read(tmp_path / "out.zarr")
    assert info.meta["chunks"] == (8, 12, 16)
    K = sepconv.kernels.laplacian_of_gaussian(1.0, ndim=3)
    np.testing.assert_allclose(got, sepconv.correlate(x, K, mode="constant", cval=0.5), atol=2e-5)


# ----------------------------------------------------------------------------------------------
# never loses data
# ----------------------------------------------------------------------------------------------


def test_refuses_existing_output_without_overwrite_and_leaves_it_untouched(photo, tmp_path):
    out = tmp_path / "o.png"
    out.write_bytes(b"precious")
    user_error(run(photo, out, "-k", "box:size=3"), "exists; pass --overwrite")
    assert out.read_bytes() == b"precious"
    ok(run(photo, out, "-k", "box:size=3", "--overwrite"))
    assert iio.imread(out).shape == (96, 128, 3)
    assert leftovers(tmp_path) == []


def test_refuses_to_write_over_its_input_even_with_overwrite(photo) -> None:
    before = photo.read_bytes()
    user_error(run(photo, photo, "-k", "box:size=3", "--overwrite"), "is the input")
    assert photo.read_bytes() == before


def test_failure_while_writing_leaves_no_partial_output(photo, tmp_path, monkeypatch) -> None:
    from sepconv import io

    def broken(path, data, info=None, *, format=None):
        half_write(path)
        raise ValueError("simulated: the disk filled up")

    monkeypatch.setattr(io, "write", broken)
    out = tmp_path / "o.png"
    user_error(run(photo, out, "-k", "box:size=3"), "simulated")
    assert not out.exists() and leftovers(tmp_path) == []


def test_os_error_mid_run_is_one_line_exit_1_and_no_output(photo, tmp_path, monkeypatch):
    from sepconv import io

    def broken(path, data, info=None, *, format=None):
        half_write(path)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io, "write", broken)
    result = run(photo, tmp_path / "o.png", "-k", "box:size=3")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f"sepconv: error: no space left on device while writing {str(tmp_path / 'o.png')!r}"
    ), lines
    assert not (tmp_path / "o.png").exists() and leftovers(tmp_path) == []


# ----------------------------------------------------------------------------------------------
# user errors: one line, exit 2, nothing written
# ----------------------------------------------------------------------------------------------


def test_user_errors_are_one_line_and_write_nothing(photo, brain, tmp_path) -> None:
    out = tmp_path / "o.png"
    (tmp_path / "bad.png").write_bytes(b"not an image")
    cases = [
        ((tmp_path / "missing.png", out, "-k", "box:size=3"), ("does not exist",)),
        ((tmp_path / "bad.png", out, "-k", "box:size=3"), ("is not a PNG file",)),
        ((photo, tmp_path / "o.bmp", "-k", "box:size=3"), ("unknown format",)),
        ((photo, out, "-k", "gaussian:sigma=1,ndim=4"), ("4-D but", "only 3 dimensions")),
        ((photo, out, "-k", "gaussian:sigma=1,ndim=3"), ("3-D but 2 axes",)),
        ((photo, out), ("give a kernel",)),
        ((photo, out, "-k", "nope:x=1"), ("unknown kernel 'nope'",)),
        ((photo, out, "-k", "box:size=3", "--dtype", "float32"), ("PNG stores",)),
        ((photo, out, "-k", "box:size=3", "--dtype", "banana"), ("--dtype must be",)),
        ((photo, out, "-k", "box:size=3", "--mode", "edge"), ("--mode must be one of",)),
        ((photo, out, "-k", "box:size=3", "--chunks", "a,b"), ("--chunks must be",)),
        ((photo, out, "-k", "box:size=3", "--scheduler", "gpu"), ("--scheduler must be",)),
        ((photo, out, "-k", "box:size=3", "--axes", "0,2"), ("include the channel axis 2",)),
        ((photo, out, "-k", "box:size=3", "--channel-axis", "x"), ("--channel-axis must be",)),
        ((photo, out, "--sigma-mm", "2"), ("needs the voxel spacing",)),
        ((brain, tmp_path / "o.nii", "--sigma-mm", "2", "-k", "gaussian:sigma=1"), ("once",)),
        ((photo, out, "-k", "box:size=3", "--method", "separable", "--tol", "-1"), ("--tol must",)),
    ]
    for args, needles in cases:
        user_error(run(*args), *needles)
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("axis", ["7", "-4"])
def test_channel_axis_out_of_range_names_the_channel_axis_not_axes(photo, tmp_path, axis):
    # no --axes given: the bad value is the channel axis, and the message must say so
    out = tmp_path / "o.tif"
    line = user_error(run(photo, out, "-k", "gaussian:sigma=2", "--channel-axis", axis))
    assert "--channel-axis must be 'auto', 'none' or an axis in [-3, 2]" in line, line
    assert line.endswith(f"got {axis}") and "axes must" not in line, line
    with pytest.raises(ValueError, match=r"^channel_axis must .* got 7$"):
        sepconv.io.filter_file(photo, out, "box:size=3", channel_axis=7)
    assert not out.exists() and leftovers(tmp_path) == []
    # in range (negative too) still works
    ok(run(photo, out, "-k", "box:size=3", "--channel-axis", "-1"))


# ----------------------------------------------------------------------------------------------
# the real script: exit codes, stderr, no progress bar when not a terminal
# ----------------------------------------------------------------------------------------------


def _script() -> list[str]:
    exe = Path(sys.executable).with_name("sepconv")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "sepconv.cli"]


def test_real_script_bad_input_exits_2_with_one_stderr_line(tmp_path: Path) -> None:
    (tmp_path / "bad.nii.gz").write_bytes(b"\x1f\x8b corrupt")
    proc = subprocess.run(
        [
            *_script(),
            "filter",
            str(tmp_path / "bad.nii.gz"),
            str(tmp_path / "o.nii.gz"),
            "-k",
            "gaussian:sigma=1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sepconv: error: cannot read"), proc.stderr
    assert not (tmp_path / "o.nii.gz").exists() and leftovers(tmp_path) == []


def test_real_script_piped_prints_one_clean_line_and_no_progress_bar(tmp_path: Path) -> None:
    x = np.random.default_rng(4).random((64, 64, 64)).astype(np.float32)
    np.save(tmp_path / "v.npy", x)
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}
    proc = subprocess.run(
        [
            *_script(),
            "filter",
            str(tmp_path / "v.npy"),
            str(tmp_path / "o.npy"),
            "-k",
            "gaussian:sigma=2",
            "--chunks",
            "16",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no bar, no escape codes
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and "\x1b" not in proc.stdout, proc.stdout
    assert lines[0].startswith(f"{tmp_path / 'v.npy'} -> {tmp_path / 'o.npy'}: 64x64x64 float32")


def test_progress_bar_shows_after_the_delay_on_a_terminal_and_clears(monkeypatch) -> None:
    import io as pyio
    import time

    from rich.console import Console

    buf = pyio.StringIO()
    monkeypatch.setattr(cli, "err_console", Console(file=buf, force_terminal=True, width=80))
    bar = cli._DelayedProgress(delay=0.05)
    assert bar.enabled
    bar(1, 4, "filtering")
    time.sleep(0.3)
    bar(4, 4, "filtering")
    bar.close()
    assert "filtering" in buf.getvalue()
    quiet = cli._DelayedProgress(delay=0.0, enabled=False)
    time.sleep(0.05)
    quiet(1, 2, "filtering")
    quiet.close()
    assert quiet.bar is None


# ----------------------------------------------------------------------------------------------
# absurd parameters: one line and exit 2, never a traceback (issue 10)
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def square(tmp_path: Path) -> Path:
    np.save(tmp_path / "sq.npy", np.random.default_rng(9).random((100, 100)))
    return tmp_path / "sq.npy"


@pytest.mark.parametrize("spec", ["gaussian:sigma=1e308", "gaussian:sigma=1,truncate=1e308"])
def test_huge_gaussian_parameters_are_one_line_and_exit_2(square, tmp_path, spec) -> None:
    """Before: sigma=1e308 ended in an OverflowError traceback (exit 1)."""
    user_error(run(square, tmp_path / "o.npy", "-k", spec))
    assert leftovers(tmp_path) == [] and not (tmp_path / "o.npy").exists()


def test_box_of_a_billion_samples_is_one_line_and_exit_2_even_out_of_memory(square, tmp_path):
    """Before: numpy's MemoryError traceback after allocating gigabytes. The child's address
    space is capped at 3 GiB so that the test cannot take the machine's memory either way."""
    import resource

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    proc = subprocess.run(
        [*_script(), "filter", str(square), str(tmp_path / "o.npy"), "-k", "box:size=1000000000"],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=cap,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sepconv: error: "), proc.stderr
    assert proc.stdout == "" and leftovers(tmp_path) == []


# ----------------------------------------------------------------------------------------------
# honest time and progress
# ----------------------------------------------------------------------------------------------


def _report(**kw) -> sepconv.io.FilterReport:
    base = dict(
        input="a.npy", output="b.npy", shape=(1000, 1000), dtype_in="float32",
        dtype_out="float32", axes=(0, 1), kernel="box:size=3", kernel_shape=(3, 3),
        method="separable", rank=1, error=0.0, error_bound=0.0, seconds=3.0,
    )  # fmt: skip
    base.update(kw)
    return sepconv.io.FilterReport(**base)


def test_summary_time_and_throughput_leave_out_engine_compilation() -> None:
    """Before: 20 s of first-run compilation were reported as filtering time."""
    line = _report(compile_seconds=2.0).summary()
    assert "; 1.00 s (read, filter, write) + 2.00 s compiling/loading the numba engine" in line
    assert "1 Mvoxel/s, 4 MB/s" in line  # 1e6 voxels of 4 bytes in the 1.00 s
    plain = _report().summary()
    assert "3.00 s (read, filter, write), 333 kvoxel/s" in plain and "compiling" not in plain


def test_compile_clock_measures_numba_compilation_and_names_the_stage() -> None:
    import numba

    from sepconv.io import _CompileClock, _Stage

    seen: list[str] = []
    stage = _Stage(lambda done, total, what: seen.append(what))
    stage(0, 1, "filtering")

    @numba.njit(cache=False)
    def fresh(x):  # compiled on first call, in the clock
        return x * 2.0 + 1.0

    with _CompileClock(stage) as clock:
        t0 = time.perf_counter()
        assert fresh(1.0) == 3.0
        elapsed = time.perf_counter() - t0
    assert 0 < clock.seconds <= elapsed
    assert seen[1:] == ["loading/compiling the numba engine", "filtering"]
    with _CompileClock(_Stage(None)) as again:
        fresh(2.0)  # compiled already: nothing counted
    assert again.seconds == 0.0


def test_in_memory_filter_reports_the_plans_time_estimate_as_its_stage(tmp_path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((64, 64), np.float32))
    stages: list[tuple[int, int, str]] = []
    sepconv.io.filter_file(
        tmp_path / "a.npy", tmp_path / "b.npy", "box:size=5",
        progress=lambda d, t, s: stages.append((d, t, s)),
    )  # fmt: skip
    # one stage (numba loading or compiling the engine re-announces it: the same tuple)
    filtering = sorted({s for s in stages if s[2].startswith("filtering")})
    assert len(filtering) == 1 and filtering[0][:2] == (0, 1)
    assert "by the plan's time model" in filtering[0][2] and " s " in filtering[0][2]
    assert stages[0][2] == "reading" and stages[-1][2] == "writing"


def test_progress_bar_for_a_single_step_shows_elapsed_time_not_a_stuck_0_of_1(monkeypatch):
    """Before: a long in-memory filter showed '0/1' for its whole duration."""
    import io as pyio

    from rich.console import Console

    buf = pyio.StringIO()
    monkeypatch.setattr(cli, "err_console", Console(file=buf, force_terminal=True, width=100))
    bar = cli._DelayedProgress(delay=0.01)
    bar(0, 1, "filtering (about 3 s by the plan's time model)")
    time.sleep(0.4)
    bar(3, 8, "filtering")
    time.sleep(0.3)
    bar.close()
    text = buf.getvalue()
    assert "filtering (about 3 s by the plan's time model)" in text
    assert "0/1" not in text and "3/8" in text and "0:00:0" in text


@pytest.mark.parametrize(
    ("kernel", "dtype", "clipped"),
    [
        ("sobel:axis=0", None, True),
        ("log:sigma=1.5", None, True),
        ("gaussian:sigma=2", None, False),
        ("sobel:axis=1", "float32", False),
        ("sobel:axis=1", "int16", False),
    ],
)
def test_summary_says_when_an_unsigned_output_clips_negative_results(
    photo, tmp_path, kernel, dtype, clipped
) -> None:
    out = tmp_path / ("edges.png" if dtype is None else "edges.tif")
    args = [photo, out, "--kernel", kernel] + ([] if dtype is None else ["--dtype", dtype])
    line = ok(run(*args))
    assert ("negative results are clipped to 0 in uint8" in line) == clipped, line
    got = iio.imread(out)
    if clipped:  # the note is true: the library's float result has negative values there
        ref = sepconv.filter(iio.imread(photo).astype(np.float64), kernel, axes=(0, 1))
        assert (ref < -0.5).any() and got.min() == 0
