"""Images and volumes in and out: PNG/JPEG, TIFF, NIfTI, ``.npy`` and Zarr.

Needs the ``io`` extra (imageio, tifffile, nibabel) and, for Zarr, the ``dask`` extra; each
library is imported only when its format is used.

=========  ==========================  ===========================================================
format     suffixes                    notes
=========  ==========================  ===========================================================
png        ``.png``                    8/16-bit grey, 8-bit RGB(A); channel axis last
jpeg       ``.jpg`` ``.jpeg``          8-bit grey or RGB (written at quality 95: lossy)
tiff       ``.tif`` ``.tiff``          any sepconv dtype; multi-page and 3-D stacks; RGB channel
nifti      ``.nii`` ``.nii.gz``        header and affine kept; ``spacing`` from the voxel sizes (mm)
npy        ``.npy``                    any dtype; memory-mapped when read lazily
zarr       ``.zarr`` (a directory)     chunked, compressed; read lazily as a dask array
=========  ==========================  ===========================================================

:func:`read` returns the data and an :class:`ImageInfo` (format, spacing, channel axis, what
a writer needs to keep the metadata); :func:`write` writes an array in the format of the
path's suffix; :func:`atomic_output` gives a temporary path beside the target that replaces
it only when writing succeeded. Errors in what the user gave (missing, unreadable or corrupt
file, unknown suffix, a dtype the format cannot store) are ``ValueError`` with one line naming
the file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FORMATS",
    "SCHEDULERS",
    "FilterReport",
    "ImageInfo",
    "atomic_output",
    "check_writable",
    "create_zarr",
    "filter_file",
    "format_of",
    "open_zarr",
    "path_size",
    "read",
    "write",
]

#: Format name -> path suffixes (lower case).
FORMATS: dict[str, tuple[str, ...]] = {
    "png": (".png",),
    "jpeg": (".jpg", ".jpeg"),
    "tiff": (".tif", ".tiff"),
    "nifti": (".nii", ".nii.gz"),
    "npy": (".npy",),
    "zarr": (".zarr",),
}

_EXTRA = {
    "png": "io",
    "jpeg": "io",
    "tiff": "io",
    "nifti": "io",
    "zarr": "dask",
    "a dask.distributed scheduler": "dask",
}


@dataclass
class ImageInfo:
    """What :func:`read` learned about a file besides its pixels.

    Attributes
    ----------
    format : str
        One of :data:`FORMATS`.
    shape : tuple of int
        Array shape.
    dtype : numpy.dtype
        Array dtype.
    spacing : tuple of float or None
        Sample spacing per axis in millimetres (NIfTI voxel sizes), None when unknown.
    channel_axis : int or None
        The colour/sample axis the file declares (RGB images: the last axis), else None.
    spatial_axes : tuple of int
        Axes a filter should run over by default (all but channel and NIfTI time axes).
    meta : dict
        Format details a writer uses to keep the metadata (NIfTI ``image``, TIFF
        ``photometric``, Zarr ``chunks`` and ``attributes``).
    """

    format: str
    shape: tuple[int, ...]
    dtype: np.dtype
    spacing: tuple[float, ...] | None = None
    channel_axis: int | None = None
    spatial_axes: tuple[int, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)


def format_of(path: str | os.PathLike[str], name: str = "path") -> str:
    """The format of ``path`` from its suffix (``ValueError`` naming the known suffixes)."""
    p = os.fspath(path).rstrip("/\\").lower()
    for fmt, suffixes in FORMATS.items():
        if p.endswith(suffixes):
            return fmt
    known = ", ".join(s for suffixes in FORMATS.values() for s in suffixes)
    raise ValueError(f"{name} {os.fspath(path)!r} has an unknown format; use one of {known}")


def _need(module: str, fmt: str) -> Any:
    """Import ``module`` or say which extra provides it (``fmt``: what needed it)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        extra = _EXTRA.get(fmt, "io")
        what = f"{fmt} files" if fmt in FORMATS else fmt
        raise ValueError(
            f"{what} need the {module.split('.')[0]} package: pip install 'sepconv[{extra}]'"
        ) from None


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------


def read(path: str | os.PathLike[str], *, lazy: bool = False) -> tuple[Any, ImageInfo]:
    """Read an image or volume.

    Parameters
    ----------
    path : str or path-like
        A file (or a Zarr directory) whose suffix says its format (:data:`FORMATS`).
    lazy : bool, optional
        Return a dask array where the format allows reading part of it (Zarr always reads
        lazily; ``.npy`` is memory-mapped); other formats are read into memory either way.

    Returns
    -------
    data : numpy.ndarray or dask.array.Array
    info : ImageInfo

    Raises
    ------
    ValueError
        Missing, unreadable or corrupt file, or an unknown suffix; one line naming the file.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from sepconv import io
    >>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> io.write(path, np.arange(6, dtype=np.uint8).reshape(2, 3))
    >>> data, info = io.read(path)
    >>> info.format, info.shape, str(info.dtype)
    ('npy', (2, 3), 'uint8')
    """
    text = os.fspath(path)
    fmt = format_of(text, "input")
    if not os.path.exists(text):
        raise ValueError(f"input {text!r} does not exist")
    if fmt != "zarr" and os.path.isdir(text):
        raise ValueError(f"input {text!r} is a directory, not a {fmt} file")
    if not os.access(text, os.R_OK):
        raise ValueError(f"input {text!r} is not readable (permission denied)")
    _sniff(text, fmt)
    reader = {
        "png": _read_imageio,
        "jpeg": _read_imageio,
        "tiff": _read_tiff,
        "nifti": _read_nifti,
        "npy": _read_npy,
        "zarr": _read_zarr,
    }[fmt]
    try:
        data, info = reader(text, lazy)
    except ValueError as exc:
        if str(exc).startswith(("input ", f"{fmt} files need")):
            raise
        raise ValueError(f"cannot read {text!r} as {fmt}: {_reason(exc)}") from exc
    except Exception as exc:  # corrupt files raise anything from struct.error to zlib.error
        raise ValueError(f"cannot read {text!r} as {fmt}: {_reason(exc)}") from exc
    if not lazy and not isinstance(data, np.ndarray):
        data = np.asarray(data)
    if data.ndim == 0 or data.size == 0:
        raise ValueError(f"input {text!r} holds no pixels (shape {tuple(data.shape)})")
    if np.dtype(data.dtype).kind not in "iuf":
        raise ValueError(
            f"input {text!r} has dtype {data.dtype}; sepconv filters real numbers "
            "(integers or floats)"
        )
    return data, info


#: How each file format begins (a corrupt or misnamed file fails here with a clear message).
_MAGIC: dict[str, tuple[bytes, ...]] = {
    "png": (b"\x89PNG\r\n\x1a\n",),
    "jpeg": (b"\xff\xd8\xff",),
    "tiff": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),
    "npy": (b"\x93NUMPY",),
}


def _sniff(path: str, fmt: str) -> None:
    if fmt == "zarr":
        return
    with open(path, "rb") as f:
        head = f.read(352)
    if not head:
        raise ValueError(f"input {path!r} is empty (0 bytes)")
    magic = _MAGIC.get(fmt)
    if fmt == "nifti":
        if path.lower().endswith(".gz"):
            magic = (b"\x1f\x8b",)
        elif len(head) >= 4:
            sizes = {int.from_bytes(head[:4], order) for order in ("little", "big")}
            if sizes & {348, 540}:  # sizeof_hdr of NIfTI-1 / NIfTI-2
                return
            magic = ()
    if magic is not None and not head.startswith(magic):
        raise ValueError(
            f"input {path!r} is not a {fmt.upper()} file (it starts with {head[:8]!r}); "
            "is the suffix right?"
        )


def _reason(exc: BaseException) -> str:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg if len(msg) < 200 else msg[:197] + "..."


def _info(fmt: str, data: Any, **kw: Any) -> ImageInfo:
    shape = tuple(int(n) for n in data.shape)
    channel = kw.pop("channel_axis", None)
    spatial = kw.pop("spatial_axes", None)
    if spatial is None:
        spatial = tuple(a for a in range(len(shape)) if a != channel)
    return ImageInfo(
        fmt, shape, np.dtype(data.dtype), channel_axis=channel, spatial_axes=spatial, **kw
    )


def _read_imageio(path: str, lazy: bool) -> tuple[Any, ImageInfo]:
    iio = _need("imageio.v3", "png")
    data = np.asarray(iio.imread(path, plugin="pillow"))
    fmt = format_of(path)
    if data.ndim == 3 and data.shape[-1] in (1, 2, 3, 4):
        return data, _info(fmt, data, channel_axis=2)
    if data.ndim != 2:
        raise ValueError(f"expected a single 2-D image, got an array of shape {data.shape}")
    return data, _info(fmt, data)


def _read_tiff(path: str, lazy: bool) -> tuple[Any, ImageInfo]:
    tifffile = _need("tifffile", "tiff")
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        data = series.asarray()
        axes = str(getattr(series, "axes", ""))
        photometric = getattr(tif.pages[0], "photometric", None)
    channel = None
    if len(axes) == data.ndim:
        for letter in ("S", "C"):
            if letter in axes:
                channel = axes.index(letter)
                break
    rgb = photometric is not None and int(photometric) == 2  # PHOTOMETRIC.RGB
    meta = {"photometric": "rgb" if rgb and channel == data.ndim - 1 else "minisblack"}
    return data, _info("tiff", data, channel_axis=channel, meta=meta)


def _read_nifti(path: str, lazy: bool) -> tuple[Any, ImageInfo]:
    nib = _need("nibabel", "nifti")
    img = nib.load(path)
    data = np.asanyarray(img.dataobj)
    zooms = tuple(float(z) for z in img.header.get_zooms())
    unit = img.header.get_xyzt_units()[0]
    to_mm = {"meter": 1000.0, "micron": 1e-3}.get(unit, 1.0)  # 'mm' and 'unknown': mm
    ndim = data.ndim
    spacing = tuple(z * to_mm if a < 3 else z for a, z in enumerate(zooms[:ndim]))
    spatial = tuple(range(min(3, ndim)))  # axes 3+ are time / components
    return data, _info("nifti", data, spacing=spacing, spatial_axes=spatial, meta={"image": img})


def _read_npy(path: str, lazy: bool) -> tuple[Any, ImageInfo]:
    data = np.load(path, mmap_mode="r" if lazy else None, allow_pickle=False)
    if not isinstance(data, np.ndarray):  # pragma: no cover - .npz renamed to .npy
        raise ValueError("not a single array")
    return data, _info("npy", data)


def open_zarr(path: str | os.PathLike[str], mode: str = "r") -> Any:
    """Open the Zarr array at ``path`` (``ValueError`` for a group or a non-Zarr directory)."""
    zarr = _need("zarr", "zarr")
    text = os.fspath(path)
    try:
        return zarr.open_array(text, mode=mode)
    except Exception as exc:
        try:
            zarr.open_group(text, mode="r")
        except Exception:
            raise ValueError(f"no Zarr array at {text!r} ({_reason(exc)})") from exc
        raise ValueError(
            f"{text!r} is a Zarr group, not an array; give the path of an array inside it"
        ) from exc


def _read_zarr(path: str, lazy: bool) -> tuple[Any, ImageInfo]:
    import dask.array as da

    z = open_zarr(path)
    data = da.from_zarr(z)
    attrs = dict(z.attrs)
    info = _info("zarr", data, meta={"chunks": tuple(z.chunks), "attributes": attrs})
    return (data if lazy else data.compute()), info


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------

_PNG = {np.dtype(np.uint8), np.dtype(np.uint16)}


def check_writable(
    path: str | os.PathLike[str], dtype: Any, shape: Sequence[int], channel_axis: int | None
) -> str:
    """Refuse, before any work, an array that ``path``'s format cannot store; return the format.

    PNG stores uint8 (grey, grey + alpha, RGB, RGBA) and uint16 grey; JPEG uint8 grey or RGB
    with the channel axis last; NIfTI, TIFF, ``.npy`` and Zarr any sepconv dtype.
    """
    fmt = format_of(path, "output")
    dt = np.dtype(dtype)
    shape = tuple(shape)
    name = os.fspath(path)
    if fmt in ("png", "jpeg"):
        channels = shape[-1] if len(shape) == 3 else 1
        if len(shape) not in (2, 3) or (len(shape) == 3 and channel_axis not in (2, -1)):
            raise ValueError(
                f"output {name!r}: {fmt.upper()} stores one 2-D image (rows, columns[, colour "
                f"last]), not shape {shape}; write .tif, .npy, .nii.gz or .zarr instead"
            )
        allowed = _PNG if fmt == "png" else {np.dtype(np.uint8)}
        if dt not in allowed or (dt == np.uint16 and channels > 1):
            what = "uint8 or 16-bit grey uint16" if fmt == "png" else "uint8"
            raise ValueError(
                f"output {name!r}: {fmt.upper()} stores {what}, not {dt} with {channels} "
                f"channel(s); pass --dtype uint8 or write .tif/.npy/.nii.gz"
            )
        if fmt == "jpeg" and channels not in (1, 3):
            raise ValueError(f"output {name!r}: JPEG stores grey or RGB, not {channels} channels")
    return fmt


def create_zarr(
    path: str | os.PathLike[str],
    shape: Sequence[int],
    chunks: Sequence[int],
    dtype: Any,
    *,
    compress: bool = True,
    attributes: dict[str, Any] | None = None,
) -> Any:
    """A new Zarr array at ``path`` (zarr 2 or 3; default compression unless ``compress=False``)."""
    zarr = _need("zarr", "zarr")
    kw: dict[str, Any] = {"shape": tuple(shape), "chunks": tuple(chunks), "dtype": np.dtype(dtype)}
    if hasattr(zarr, "create_array"):  # zarr >= 3
        if not compress:
            kw["compressors"] = None
        z = zarr.create_array(os.fspath(path), **kw)
    else:  # pragma: no cover - zarr 2
        if not compress:
            kw["compressor"] = None
        z = zarr.open_array(os.fspath(path), mode="w-", **kw)
    if attributes:
        z.attrs.update(attributes)
    return z


def write(
    path: str | os.PathLike[str],
    data: np.ndarray,
    info: ImageInfo | None = None,
    *,
    format: str | None = None,
) -> None:
    """Write ``data`` to ``path`` in the format of its suffix (or ``format``), not atomically.

    ``info`` (from :func:`read`) carries metadata over where both files are the same format
    family: the NIfTI header and affine, TIFF photometric, Zarr chunks and attributes. A NIfTI
    written from another format gets an affine with ``info.spacing`` on the diagonal.
    Use :func:`atomic_output` for a path that appears only once complete.
    """
    fmt = format or format_of(path, "output")
    text = os.fspath(path)
    channel = None if info is None else info.channel_axis
    check_writable(
        text if format is None else f"x{FORMATS[fmt][0]}", data.dtype, data.shape, channel
    )
    if fmt in ("png", "jpeg"):
        iio = _need("imageio.v3", fmt)
        kw = {"quality": 95} if fmt == "jpeg" else {}
        img = data[..., 0] if data.ndim == 3 and data.shape[-1] == 1 else data
        iio.imwrite(text, np.ascontiguousarray(img), extension=FORMATS[fmt][0], **kw)
    elif fmt == "tiff":
        tifffile = _need("tifffile", "tiff")
        photometric = "minisblack"
        if info is not None and info.format == "tiff":
            photometric = info.meta.get("photometric", "minisblack")
        elif (
            channel is not None
            and channel % data.ndim == data.ndim - 1
            and data.shape[-1]
            in (
                3,
                4,
            )
        ):
            photometric = "rgb"
        tifffile.imwrite(text, data, photometric=photometric)
    elif fmt == "nifti":
        nib = _need("nibabel", "nifti")
        source = None if info is None else info.meta.get("image")
        if source is not None:
            img = type(source)(data, source.affine, source.header.copy())
        else:
            spacing = (info.spacing if info is not None else None) or ()
            affine = np.eye(4)
            for a, s in enumerate(spacing[:3]):
                affine[a, a] = s
            img = nib.Nifti1Image(data, affine)
        img.header.set_data_dtype(data.dtype)
        img.header.set_slope_inter(1.0, 0.0)
        nib.save(img, text)
    elif fmt == "npy":
        with open(text, "xb" if not os.path.exists(text) else "wb") as f:
            np.save(f, data, allow_pickle=False)
    elif fmt == "zarr":
        meta = info.meta if info is not None and info.format == "zarr" else {}
        chunks = meta.get("chunks") or _auto_chunks(data.shape, data.dtype)
        z = create_zarr(text, data.shape, chunks, data.dtype, attributes=meta.get("attributes"))
        z[...] = data
    else:  # pragma: no cover - format_of only returns known formats
        raise ValueError(f"unknown format {fmt!r}")


def _auto_chunks(shape: Sequence[int], dtype: Any, target: int = 2**22) -> tuple[int, ...]:
    """Chunks of about ``target`` bytes, as close to cubes as the shape allows."""
    itemsize = np.dtype(dtype).itemsize
    chunks = [int(n) for n in shape]
    while np.prod(chunks) * itemsize > target and max(chunks) > 1:
        a = int(np.argmax(chunks))
        chunks[a] = (chunks[a] + 1) // 2
    return tuple(max(1, c) for c in chunks)


# ----------------------------------------------------------------------------------------------
# never lose data
# ----------------------------------------------------------------------------------------------


def _same_file(a: str, b: str) -> bool:
    ra, rb = os.path.realpath(a), os.path.realpath(b)
    if ra == rb:
        return True
    inside = rb.startswith(ra.rstrip(os.sep) + os.sep) or ra.startswith(rb.rstrip(os.sep) + os.sep)
    if inside:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    protect: Sequence[str | os.PathLike[str]] = (),
) -> Iterator[str]:
    """A temporary path beside ``path`` that becomes ``path`` only if the block succeeds.

    Refuses (``ValueError``, before the block runs) to write over any path in ``protect``
    (the inputs) or inside it, over an existing ``path`` unless ``overwrite``, and into a
    directory that does not exist. The temporary has the same suffix, so writers pick the
    same format. Files are moved into place with one atomic rename; a Zarr directory that
    replaces an existing one is swapped in with two renames, the old one being removed only
    after the new one is in place. On any error (or Ctrl-C) the temporary is deleted and the
    target is left as it was.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from sepconv import io
    >>> target = os.path.join(tempfile.mkdtemp(), "y.npy")
    >>> with io.atomic_output(target) as tmp:
    ...     io.write(tmp, np.zeros(3))
    >>> os.path.exists(target)
    True
    """
    text = os.fspath(path)
    for p in protect:
        if _same_file(os.fspath(p), text):
            raise ValueError(
                f"output {text!r} is the input {os.fspath(p)!r} (or inside it); sepconv never "
                "writes over its input: choose another output path"
            )
    parent = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(parent):
        raise ValueError(f"output directory {parent!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"output directory {parent!r} is not writable")
    exists = os.path.lexists(text)
    if exists and not overwrite:
        raise ValueError(f"output {text!r} exists; pass --overwrite to replace it")
    is_dir = format_of(text, "output") == "zarr"
    if exists and os.path.isdir(text) != is_dir:
        kind = "a directory" if os.path.isdir(text) else "a file"
        raise ValueError(f"output {text!r} exists and is {kind}; remove it or choose another name")
    base = os.path.basename(text.rstrip("/\\"))
    suffix = next(s for s in FORMATS[format_of(text)] if base.lower().endswith(s))
    stem = base[: len(base) - len(suffix)]
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".sepconv-tmp{suffix}", dir=parent)
    os.close(fd)
    os.unlink(tmp)  # writers create it (exclusively); the unique name stays reserved enough
    try:
        yield tmp
        if not os.path.lexists(tmp):
            raise ValueError(f"nothing was written to {text!r}")
        if is_dir and os.path.isdir(text):
            old = tmp + ".old"
            os.rename(text, old)
            try:
                os.rename(tmp, text)
            except BaseException:
                os.rename(old, text)
                raise
            shutil.rmtree(old, ignore_errors=True)
        elif is_dir:
            os.rename(tmp, text)
        elif overwrite:
            os.replace(tmp, text)
        else:
            _link_no_clobber(tmp, text)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.lexists(tmp):
            os.unlink(tmp)


def _link_no_clobber(tmp: str, target: str) -> None:
    """Move ``tmp`` to ``target`` atomically, failing if ``target`` appeared meanwhile."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise ValueError(f"output {target!r} appeared while writing; not replaced") from None
    except OSError:  # file systems without hard links
        if os.path.lexists(target):
            raise ValueError(f"output {target!r} appeared while writing; not replaced") from None
        os.replace(tmp, target)
        return
    os.unlink(tmp)


def path_size(path: str | os.PathLike[str]) -> int:
    """Bytes of a file, or of all files under a directory (a Zarr store)."""
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


# ----------------------------------------------------------------------------------------------
# filter a file into another (the work behind `sepconv filter`)
# ----------------------------------------------------------------------------------------------

SCHEDULERS = ("threads", "processes", "sync")


@dataclass
class FilterReport:
    """What :func:`filter_file` did (the CLI's summary line is made from it)."""

    input: str
    output: str
    shape: tuple[int, ...]
    dtype_in: str
    dtype_out: str
    axes: tuple[int, ...]
    kernel: str
    kernel_shape: tuple[int, ...]
    method: str
    rank: int | None
    error: float
    error_bound: float
    seconds: float
    chunks: tuple[int, ...] | None = None
    scheduler: str | None = None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype_in).itemsize

    def summary(self) -> str:
        """One line: shape, dtypes, kernel, plan, time and throughput."""
        shape = "x".join(map(str, self.shape))
        ks = "x".join(map(str, self.kernel_shape))
        if self.rank is None:
            plan = self.method
        else:
            exact = "exact" if self.error <= 1e-12 else f"error {self.error:.2g}"
            plan = f"{self.method} rank {self.rank}, {exact}, bound {self.error_bound:.2g}"
        mode = (
            ""
            if self.chunks is None
            else (f", dask chunks {'x'.join(map(str, self.chunks))} on {self.scheduler}")
        )
        t = max(self.seconds, 1e-9)
        return (
            f"{self.input} -> {self.output}: {shape} {self.dtype_in} -> {self.dtype_out}, "
            f"kernel {self.kernel} ({ks} over axes {','.join(map(str, self.axes))}), "
            f"plan {plan}{mode}; {self.seconds:.2f} s (read, filter, write), "
            f"{_rate(np.prod(self.shape) / t, 'voxel/s')}, {_rate(self.nbytes / t, 'B/s')}"
        )


def _rate(value: float, unit: str) -> str:
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _kernel_for(
    spec: Any, naxes: int, spacing: Sequence[float] | None, sigma_mm: float | None
) -> tuple[np.ndarray, str]:
    """The kernel for ``naxes`` filtered axes, and the spec it was built from.

    A named kernel that takes ``ndim`` gets ``ndim=naxes`` unless the spec fixes it (by
    ``ndim=`` or a bracketed per-axis list); ``sigma_mm`` sets ``sigma`` per axis to
    ``sigma_mm / spacing`` so a Gaussian is isotropic in millimetres.
    """
    import inspect

    from . import kernels

    if sigma_mm is not None:
        from ._validate import check_positive_float

        sigma_mm = check_positive_float(sigma_mm, "sigma_mm")
        if spec is None:
            spec = "gaussian"
        if not isinstance(spec, str) or spec.lower().endswith((".npy", ".csv")):
            raise ValueError(
                f"--sigma-mm needs a named kernel with a sigma (e.g. gaussian), got {spec!r}"
            )
        if spacing is None:
            raise ValueError(
                "--sigma-mm needs the voxel spacing, which only NIfTI input carries; give "
                "sigma in samples instead (--kernel gaussian:sigma=...)"
            )
    if spec is None:
        raise ValueError("give a kernel: --kernel SPEC (e.g. gaussian:sigma=2) or --sigma-mm MM")
    if not isinstance(spec, str):
        K = kernels.from_spec(spec)
        return K, "<array>"
    text = spec.strip()
    name, sep, rest = text.partition(":")
    builder = kernels.KERNELS.get(name.strip().lower())
    if builder is None or text.lower().endswith((".npy", ".csv")):
        return kernels.from_spec(text), text
    params = inspect.signature(builder).parameters
    keys = {p.partition("=")[0].strip() for p in rest.split(",")} if sep else set()
    extra = []
    if sigma_mm is not None:
        if "sigma" not in params:
            raise ValueError(f"--sigma-mm needs a kernel with a sigma; {name!r} has none")
        if "sigma" in keys:
            raise ValueError("give the width once: sigma in --kernel or --sigma-mm, not both")
        assert spacing is not None
        sigmas = [sigma_mm / s for s in spacing]
        extra.append("sigma=[" + ",".join(f"{s:.6g}" for s in sigmas) + "]")
    elif "ndim" in params and "ndim" not in keys and "[" not in rest:
        extra.append(f"ndim={naxes}")
    if extra:
        text = text + ("," if sep and rest.strip() else ":" if not sep else "") + ",".join(extra)
    return kernels.from_spec(text), text


def _parse_chunks(chunks: Any, ndim: int) -> Any:
    if chunks is None or isinstance(chunks, (int, tuple)):
        return chunks
    text = str(chunks).strip().lower()
    if text == "auto":
        return "auto"
    try:
        values = tuple(int(p) for p in text.replace("x", ",").split(",") if p.strip())
    except ValueError:
        raise ValueError(
            f"chunks must be 'auto', an int or one int per axis (e.g. 64,256,256), got {chunks!r}"
        ) from None
    if not values or min(values) < 1 or len(values) not in (1, ndim):
        raise ValueError(
            f"chunks must be 'auto', a positive int or {ndim} positive ints, got {chunks!r}"
        )
    return values[0] if len(values) == 1 else values


def filter_file(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    kernel: Any = None,
    *,
    sigma_mm: float | None = None,
    mode: str | Sequence[str] = "reflect",
    cval: float = 0.0,
    axes: Sequence[int] | None = None,
    channel_axis: int | str | None = "auto",
    method: str = "auto",
    tol: float | None = None,
    dtype: Any = None,
    workers: int | None = None,
    chunks: Any = None,
    scheduler: str | None = None,
    memory_limit: int | str = "256MiB",
    overwrite: bool = False,
    progress: Any = None,
) -> FilterReport:
    """Filter the image or volume in ``input`` with ``kernel`` and write it to ``output``.

    The work behind ``sepconv filter``; parameters are the CLI's options. Everything is checked
    before any pixel is read where possible (formats, paths, kernel against the data's
    dimensions, what the output format can store). The output appears atomically and only
    when complete (:func:`atomic_output`). Zarr input, or ``chunks``, runs on dask
    (:mod:`sepconv.dask`), slab by slab within ``memory_limit``; ``scheduler`` is 'threads'
    (default), 'processes', 'sync' or the address of a ``dask.distributed`` scheduler.

    ``progress``, if given, is called as ``progress(done, total, stage)``.
    """
    import time

    from . import filters
    from ._modes import normalize_axes
    from .plan import make_plan

    src, dst = os.fspath(input), os.fspath(output)
    in_fmt = format_of(src, "input")
    format_of(dst, "output")
    if scheduler is not None and scheduler not in SCHEDULERS and "://" not in scheduler:
        raise ValueError(
            f"scheduler must be one of {list(SCHEDULERS)} or a dask.distributed address "
            f"like tcp://host:8786, got {scheduler!r}"
        )
    if not os.path.exists(src):
        raise ValueError(f"input {src!r} does not exist")
    with atomic_output(dst, overwrite=overwrite, protect=[src]) as tmp:
        use_dask = in_fmt == "zarr" or chunks is not None or scheduler is not None
        t0 = time.perf_counter()
        data, info = read(src, lazy=use_dask)
        ndim = len(info.shape)
        if channel_axis == "auto":
            channel = info.channel_axis
        elif channel_axis is None or (isinstance(channel_axis, str) and channel_axis == "none"):
            channel = None
        else:
            channel = normalize_axes(int(channel_axis), ndim)[0]
        if axes is None:
            ax = tuple(a for a in info.spatial_axes if a != channel)
            if channel is not None and channel not in info.spatial_axes:
                ax = tuple(a for a in range(ndim) if a != channel)
        else:
            ax = normalize_axes(tuple(axes), ndim)
            if channel is not None and channel in ax:
                raise ValueError(
                    f"axes {tuple(axes)} include the channel axis {channel}; colour channels "
                    "are not filtered across (pass --channel-axis none to do so)"
                )
        spacing = None if info.spacing is None else tuple(info.spacing[a] for a in ax)
        K, spec = _kernel_for(kernel, len(ax), spacing, sigma_mm)
        if K.ndim > ndim:
            raise ValueError(
                f"kernel {spec} is {K.ndim}-D but {src!r} has only {ndim} dimensions "
                f"(shape {info.shape})"
            )
        if K.ndim != len(ax):
            raise ValueError(
                f"kernel {spec} is {K.ndim}-D but {len(ax)} axes {ax} of {src!r} (shape "
                f"{info.shape}) are filtered; pass --axes with {K.ndim} axes or a "
                f"{len(ax)}-D kernel"
            )
        out_dtype = np.dtype(info.dtype if dtype is None else dtype)
        check_writable(dst, out_dtype, info.shape, channel)
        plan = make_plan(
            K, [info.shape[a] for a in ax], method=method, tol=tol, size=int(np.prod(info.shape))
        )
        kw = dict(mode=mode, cval=cval, axes=ax, method=method, tol=tol, workers=workers)
        out_info = ImageInfo(
            info.format, info.shape, out_dtype, info.spacing, channel, ax, dict(info.meta)
        )
        if not use_dask:
            if progress is not None:
                progress(0, 1, "filtering")
            result = filters.correlate(np.asarray(data), K, output=out_dtype, **kw)
            if progress is not None:
                progress(1, 1, "writing")
            write(tmp, result, out_info)
            used_chunks, sched_name = None, None
        else:
            used_chunks, sched_name = _filter_dask(
                data, K, kw, out_dtype, out_info, tmp, chunks, scheduler, memory_limit, progress
            )
        seconds = time.perf_counter() - t0
    f = plan.factorization
    return FilterReport(
        input=src,
        output=dst,
        shape=info.shape,
        dtype_in=str(info.dtype),
        dtype_out=str(out_dtype),
        axes=ax,
        kernel=spec,
        kernel_shape=tuple(K.shape),
        method=plan.method,
        rank=None if f is None else f.rank,
        error=0.0 if f is None else float(f.error),
        error_bound=0.0 if f is None else float(f.error_bound),
        seconds=seconds,
        chunks=used_chunks,
        scheduler=sched_name,
    )


def _filter_dask(
    data, K, kw, out_dtype, out_info, tmp, chunks, scheduler, memory_limit, progress
) -> tuple[tuple[int, ...], str]:
    import dask.array as da

    from . import dask as sdask
    from . import filters

    ndim = len(out_info.shape)
    parsed = _parse_chunks(chunks, ndim)
    x = data if isinstance(data, da.Array) else da.from_array(data, chunks=parsed or "auto")
    if parsed is not None and isinstance(data, da.Array):
        x = x.rechunk(parsed)
    if any(len(set(c[:-1])) > 1 or (len(c) > 1 and c[-1] > c[0]) for c in x.chunks):
        x = x.rechunk(x.chunksize)  # regular chunks (what a Zarr output needs)
    y = filters.correlate(x, K, output=out_dtype, **kw)
    client = None
    sched: Any = scheduler or "threads"
    name = sched
    if isinstance(scheduler, str) and "://" in scheduler:
        distributed = _need("distributed", "a dask.distributed scheduler")
        try:
            client = distributed.Client(scheduler, timeout=10, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ValueError(f"cannot reach the dask scheduler at {scheduler!r}: {exc}") from None
        sched = client
    try:
        total = int(np.prod(y.numblocks))

        def report(done: int, _total: int) -> None:
            if progress is not None:
                progress(done, total, "filtering")

        report(0, total)
        if format_of(tmp) == "zarr":
            meta = out_info.meta if out_info.format == "zarr" else {}
            target = create_zarr(
                tmp, y.shape, y.chunksize, out_dtype, attributes=meta.get("attributes")
            )
            sdask.store(y, target, memory_limit=memory_limit, scheduler=sched, progress=report)
        else:
            target = np.empty(y.shape, dtype=out_dtype)
            sdask.store(y, target, memory_limit=memory_limit, scheduler=sched, progress=report)
            if progress is not None:
                progress(total, total, "writing")
            write(tmp, target, out_info)
    finally:
        if client is not None:
            client.close()
    return tuple(int(c) for c in y.chunksize), str(name)
