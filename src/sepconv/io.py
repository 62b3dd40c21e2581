"""Images and volumes in and out: PNG/JPEG, TIFF, NIfTI, ``.npy`` and Zarr.

Needs the ``io`` extra (imageio, tifffile, nibabel, imagecodecs) and, for Zarr, the ``dask``
extra; each library is imported only when its format is used.

=========  ==========================  ===========================================================
format     suffixes                    notes
=========  ==========================  ===========================================================
png        ``.png``                    8/16-bit grey, grey + alpha, RGB, RGBA (16-bit colour by
                                       imagecodecs); channel axis last
jpeg       ``.jpg`` ``.jpeg``          8-bit grey or RGB (written at quality 95: lossy)
tiff       ``.tif`` ``.tiff``          any sepconv dtype; multi-page and 3-D stacks (series of
                                       equal shape stacked); RGB channel
nifti      ``.nii`` ``.nii.gz``        header and affine kept; ``spacing`` from the voxel sizes
                                       (mm); also complex64/128; no float16 or bool
npy        ``.npy``                    any sepconv dtype (bool, integer, float, complex);
                                       memory-mapped when read lazily
zarr       ``.zarr`` (a directory)     chunked, compressed; read lazily as a dask array
=========  ==========================  ===========================================================

:func:`read` returns the data and an :class:`ImageInfo` (format, spacing, channel axis, what
a writer needs to keep the metadata); :func:`write` writes an array in the format of the
path's suffix (or into an open binary file); :func:`atomic_file` gives an unnamed temporary
file beside the target (Linux ``O_TMPFILE``; nothing is left even after ``kill -9``) that is
linked into place only when writing succeeded, and :func:`atomic_output` a temporary *path*
(Zarr directories, writers that need a name). Errors in what the user gave (missing,
unreadable, corrupt or truncated file, a pipe or device instead of a file, unknown suffix, a
dtype the format cannot store) are ``ValueError`` with one line naming the file; a full disk
is an ``OSError`` (``errno.ENOSPC``) that says so. Data is handed out in native byte order.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib.util
import logging
import math
import os
import re
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeAlias

import numpy as np

__all__ = [
    "FORMATS",
    "SCHEDULERS",
    "FilterReport",
    "ImageInfo",
    "Terminated",
    "atomic_file",
    "atomic_output",
    "check_input",
    "check_writable",
    "create_zarr",
    "filter_file",
    "format_of",
    "open_zarr",
    "path_size",
    "read",
    "remove_stale_temporaries",
    "replace_atomically",
    "signals_as_exceptions",
    "write",
]

#: A file or directory name, as ``open`` takes it.
StrPath: TypeAlias = "str | os.PathLike[str]"

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
        Sample spacing per axis in millimetres (NIfTI voxel sizes), None when unknown (also
        for a NIfTI file whose spatial unit is "unknown": ``meta["voxel_size"]`` has the raw
        sizes then).
    channel_axis : int or None
        The colour/sample axis the file declares (RGB images: the last axis), else None.
    spatial_axes : tuple of int
        Axes a filter should run over by default (all but channel and NIfTI time axes).
    meta : dict
        Format details a writer uses to keep the metadata (NIfTI ``image``, TIFF
        ``photometric``, Zarr ``chunks`` and ``attributes``) and what the file stores when
        it differs from ``dtype`` (NIfTI ``stored_dtype`` and ``scaling`` = (slope, inter):
        scaled data is read as float32 from 8/16-bit or float32 storage, as float64 from
        32/64-bit integer or float64 storage).
    """

    format: str
    shape: tuple[int, ...]
    dtype: np.dtype
    spacing: tuple[float, ...] | None = None
    channel_axis: int | None = None
    spatial_axes: tuple[int, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)


def format_of(path: StrPath, name: str = "path") -> str:
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


def read(path: StrPath, *, lazy: bool = False) -> tuple[Any, ImageInfo]:
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
        Missing, unreadable, corrupt or truncated file, a pipe, device or socket instead of a
        regular file (a Zarr store: a directory), or an unknown suffix; one line naming the
        file. A damaged Zarr chunk read lazily raises the same when it is computed.

    Notes
    -----
    Data comes back in native byte order (big-endian files are converted; lazily read ones
    as a dask array that converts chunk by chunk), so ``info.dtype`` is never big-endian.

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
    check_input(text, fmt)
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
        if str(exc).startswith(("input ", f"{fmt} files need", "cannot read ")):
            raise
        raise ValueError(f"cannot read {text!r} as {fmt}: {_reason(exc)}") from exc
    except Exception as exc:  # corrupt files raise anything from struct.error to zlib.error
        raise ValueError(f"cannot read {text!r} as {fmt}: {_reason(exc)}") from exc
    if not lazy and not isinstance(data, np.ndarray):
        data = np.asarray(data)
    if data.ndim == 0 or data.size == 0:
        raise ValueError(f"input {text!r} holds no pixels (shape {tuple(data.shape)})")
    if np.dtype(data.dtype).kind not in "biufc":
        raise ValueError(
            f"input {text!r} has dtype {data.dtype}; sepconv filters numbers (bool, integers, "
            "floats or complex)"
        )
    data = _native(data, lazy)
    info.dtype = np.dtype(data.dtype)
    return data, info


_FILE_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(mode: int) -> str | None:
    """What a non-regular, non-directory file is ('a named pipe (FIFO)', ...), else None."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return next((what for test, what in _FILE_KINDS if test(mode)), "not a regular file")


def check_input(path: StrPath, fmt: str | None = None) -> str:
    """Refuse an input that cannot be read as a file of its format; return the format.

    It must exist and be readable, and be a regular file, or a directory for Zarr: a named
    pipe, device or socket is refused at once (reading one could block forever).
    """
    text = os.fspath(path)
    fmt = fmt or format_of(text, "input")
    try:
        st = os.stat(text)
    except FileNotFoundError:
        raise ValueError(f"input {text!r} does not exist") from None
    except OSError as exc:
        raise ValueError(f"input {text!r} cannot be opened: {_reason(exc)}") from None
    what = _not_regular(st.st_mode)
    if what is not None:
        raise ValueError(
            f"input {text!r} is {what}, not a regular file; sepconv reads files (or a Zarr "
            "directory): save the data to a file first"
        )
    if fmt == "zarr" and not stat.S_ISDIR(st.st_mode):
        raise ValueError(f"input {text!r} is a file, not a Zarr directory")
    if fmt != "zarr" and stat.S_ISDIR(st.st_mode):
        raise ValueError(f"input {text!r} is a directory, not a {fmt} file")
    if not os.access(text, os.R_OK):
        raise ValueError(f"input {text!r} is not readable (permission denied)")
    _sniff(text, fmt)
    return fmt


def _native(data: Any, lazy: bool) -> Any:
    """``data`` in native byte order (a lazy big-endian memmap becomes a lazy dask array)."""
    dt = np.dtype(data.dtype)
    if dt.isnative:
        return data
    native = dt.newbyteorder("=")
    if isinstance(data, np.memmap) and lazy:
        try:
            import dask.array as da
        except ImportError:  # pragma: no cover - dask is an extra
            return np.asarray(data).astype(native)
        return da.from_array(data, chunks="auto").astype(native)
    if isinstance(data, np.ndarray) and not isinstance(data, np.memmap):
        if data.flags.writeable and data.flags.owndata:  # no second copy of a large array
            return data.byteswap(inplace=True).view(native)
        return data.astype(native)
    return data.astype(native)  # dask arrays: converted chunk by chunk


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
    # O_NONBLOCK: a file swapped for a FIFO since check_input must not hang the open
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        what = _not_regular(os.fstat(fd).st_mode)
        if what is not None:
            raise ValueError(f"input {path!r} is {what}, not a regular file")
        head = os.read(fd, 352)
    finally:
        os.close(fd)
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


#: PNG colour types with more than one sample per pixel (IHDR byte 25) that Pillow reads
#: at 8 bits even when the file stores 16: such files are read (and written) by imagecodecs.
_PNG_COLOUR = {2: "RGB", 4: "grey + alpha", 6: "RGBA"}


def _png_16bit_colour(path: str) -> bool:
    """Whether the PNG at ``path`` stores 16-bit samples of a colour type Pillow cuts to 8."""
    with open(path, "rb") as f:
        head = f.read(26)
    return len(head) >= 26 and head[12:16] == b"IHDR" and head[24] == 16 and head[25] in _PNG_COLOUR


def _reason(exc: BaseException) -> str:
    return _reason_text(str(exc)) or type(exc).__name__


def _reason_text(text: str) -> str:
    msg = " ".join(text.split())
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
    fmt = format_of(path)
    if fmt == "png" and _png_16bit_colour(path):  # Pillow would keep the top 8 bits only
        codecs = _need("imagecodecs", "png")
        with open(path, "rb") as f:
            data = np.asarray(codecs.png_decode(f.read()))
    else:
        iio = _need("imageio.v3", "png")
        data = np.asarray(iio.imread(path, plugin="pillow"))
    if data.ndim == 3 and data.shape[-1] in (1, 2, 3, 4):
        return data, _info(fmt, data, channel_axis=2)
    if data.ndim != 2:
        raise ValueError(f"expected a single 2-D image, got an array of shape {data.shape}")
    return data, _info(fmt, data)


#: Words in tifffile's log messages that mean the file is damaged (it logs and goes on).
_TIFF_DAMAGE = ("invalid", "corrupt", "truncat", "failed to read", "suspicious", "not enough")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _tiff_log() -> Iterator[list[str]]:
    """Collect tifffile's warnings instead of letting them reach stderr."""
    logger = logging.getLogger("tifffile")
    handler = _Collect()
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _read_tiff(path: str, lazy: bool) -> tuple[Any, ImageInfo]:
    tifffile = _need("tifffile", "tiff")
    with _tiff_log() as messages:
        try:
            with tifffile.TiffFile(path) as tif:
                kinds = [(tuple(s.shape), np.dtype(s.dtype)) for s in tif.series]
                if len(set(kinds)) > 1:  # refused below, outside this block's rewording
                    data = None
                elif len(kinds) > 1:  # one series per TiffWriter.write(): a stack of them
                    data = np.empty((len(kinds), *kinds[0][0]), kinds[0][1])
                    for i, s in enumerate(tif.series):
                        data[i] = s.asarray()
                else:
                    data = tif.series[0].asarray()
                axes = str(getattr(tif.series[0], "axes", ""))
                axes = ("Q" if len(kinds) > 1 else "") + axes
                photometric = getattr(tif.pages[0], "photometric", None)
        except Exception as exc:
            note = f" ({_reason_text(messages[0])})" if messages else ""
            raise ValueError(
                f"cannot read {path!r} as tiff: {_reason(exc)}{note}; is the file truncated "
                "or damaged?"
            ) from exc
    damage = [m for m in messages if any(w in m.lower() for w in _TIFF_DAMAGE)]
    if damage:  # tifffile read what it could: refuse rather than filter part of a file
        raise ValueError(
            f"cannot read {path!r} as tiff: the file is damaged or truncated "
            f"({_reason_text(damage[0])})"
        )
    if data is None:
        shown = ", ".join("x".join(map(str, shape)) + f" {dt}" for shape, dt in kinds[:6])
        more = f", ... ({len(kinds)} in all)" if len(kinds) > 6 else ""
        raise ValueError(
            f"input {path!r} holds {len(kinds)} TIFF series of different shapes or dtypes "
            f"({shown}{more}); sepconv reads one image or a stack of equal ones: save each "
            "series to its own file"
        )
    channel = None
    if len(axes) == data.ndim:
        for letter in ("S", "C"):
            if letter in axes:
                channel = axes.index(letter)
                break
    rgb = photometric is not None and int(photometric) == 2  # PHOTOMETRIC.RGB
    meta = {"photometric": "rgb" if rgb and channel == data.ndim - 1 else "minisblack"}
    return data, _info("tiff", data, channel_axis=channel, meta=meta)


#: NIfTI spatial units in millimetres ('unknown' is not here: its voxel sizes have no unit).
_NIFTI_MM = {"mm": 1.0, "meter": 1000.0, "micron": 1e-3}


def _nifti_scaled(img: Any, dtype: Any) -> np.ndarray:
    """The data of a NIfTI image with ``scl_slope``/``scl_inter`` applied, in ``dtype``."""
    slope, inter = _nifti_scaling(img)
    out = np.asarray(img.dataobj.get_unscaled()).astype(dtype)
    if slope != 1.0:
        out *= np.asarray(slope, dtype=dtype)
    if inter != 0.0:
        out += np.asarray(inter, dtype=dtype)
    return out


def _nifti_scaling(img: Any) -> tuple[float, float]:
    """(slope, inter) of a loaded NIfTI image: nibabel keeps them on ``dataobj``."""
    slope = getattr(img.dataobj, "slope", 1.0)
    inter = getattr(img.dataobj, "inter", 0.0)
    slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    return slope, inter


def _read_nifti(path: str, lazy: bool) -> tuple[Any, ImageInfo]:
    nib = _need("nibabel", "nifti")
    img = nib.load(path)
    stored = np.dtype(img.get_data_dtype()).newbyteorder("=")  # what, not which byte order
    slope, inter = _nifti_scaling(img)
    meta: dict[str, Any] = {"image": img, "stored_dtype": stored}
    if (slope, inter) != (1.0, 0.0):  # stored x slope + inter: float32 for 8/16-bit storage
        wide = stored.itemsize > 2 and stored != np.float32
        data = _nifti_scaled(img, np.float64 if wide else np.float32)
        meta["scaling"] = (slope, inter)
    else:
        data = np.asanyarray(img.dataobj)
    zooms = tuple(float(z) for z in img.header.get_zooms())
    unit = img.header.get_xyzt_units()[0]
    ndim = data.ndim
    meta["spatial_unit"] = unit
    meta["voxel_size"] = zooms[:ndim]
    to_mm = _NIFTI_MM.get(unit)
    spacing = (
        None
        if to_mm is None
        else tuple(z * to_mm if a < 3 else z for a, z in enumerate(zooms[:ndim]))
    )
    spatial = tuple(range(min(3, ndim)))  # axes 3+ are time / components
    return data, _info("nifti", data, spacing=spacing, spatial_axes=spatial, meta=meta)


def _read_npy(path: str, lazy: bool) -> tuple[Any, ImageInfo]:
    data = np.load(path, mmap_mode="r" if lazy else None, allow_pickle=False)
    if not isinstance(data, np.ndarray):  # pragma: no cover - .npz renamed to .npy
        raise ValueError("not a single array")
    return data, _info("npy", data)


def open_zarr(path: StrPath, mode: str = "r") -> Any:
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


class _ZarrChunks:
    """A Zarr array for ``dask.array.from_array`` whose damaged chunks fail with one line.

    Decompression errors in a chunk (a corrupt or truncated chunk file) surface as a
    ``ValueError`` naming the store and the region, whichever scheduler computes it.
    """

    def __init__(self, array: Any, path: str) -> None:
        self.array = array
        self.path = path
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return np.asarray(self.array[key])
        except Exception as exc:
            where = _region(key)
            raise ValueError(
                f"cannot read {self.path!r} as zarr: the chunk(s) at {where} are damaged "
                f"({_reason(exc)})"
            ) from None


def _region(key: Any) -> str:
    parts = key if isinstance(key, tuple) else (key,)
    out = []
    for k in parts:
        if isinstance(k, slice):
            out.append(f"{'' if k.start is None else k.start}:{'' if k.stop is None else k.stop}")
        else:
            out.append(str(k))
    return "[" + ", ".join(out) + "]"


def _read_zarr(path: str, lazy: bool) -> tuple[Any, ImageInfo]:
    import dask.array as da

    z = open_zarr(path)
    data = da.from_array(
        _ZarrChunks(z, path), chunks=tuple(z.chunks), name=False, asarray=False, fancy=False
    )
    attrs = dict(z.attrs)
    info = _info("zarr", data, meta={"chunks": tuple(z.chunks), "attributes": attrs})
    return (data if lazy else data.compute()), info


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------

_PNG = {np.dtype(np.uint8), np.dtype(np.uint16)}
#: The real dtypes a NIfTI file can hold (float16 and bool have no NIfTI data type code).
_NIFTI_DTYPES = {
    np.dtype(t) for t in ("i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f4", "f8", "c8", "c16")
}


def check_writable(
    path: StrPath,
    dtype: Any,
    shape: Sequence[int],
    channel_axis: int | None,
    *,
    name: str | None = None,
) -> str:
    """Refuse, before any work, an array that ``path``'s format cannot store; return the format.

    PNG stores uint8 or uint16 (grey, grey + alpha, RGB, RGBA); JPEG uint8 grey or RGB
    with the channel axis last; NIfTI 8- to 64-bit integers, float32, float64, complex64 and
    complex128 (not float16 or bool); TIFF, ``.npy`` and Zarr any sepconv dtype. ``name``: how
    the messages call the output (default: ``path``).
    """
    fmt = format_of(path, "output")
    dt = np.dtype(dtype)
    shape = tuple(shape)
    name = os.fspath(path) if name is None else name
    if fmt in ("png", "jpeg"):
        channels = shape[-1] if len(shape) == 3 else 1
        if len(shape) not in (2, 3) or (len(shape) == 3 and channel_axis not in (2, -1)):
            raise ValueError(
                f"output {name!r}: {fmt.upper()} stores one 2-D image (rows, columns[, colour "
                f"last]), not shape {shape}; write .tif, .npy, .nii.gz or .zarr instead"
            )
        allowed = _PNG if fmt == "png" else {np.dtype(np.uint8)}
        if dt not in allowed:
            what = "uint8 or uint16" if fmt == "png" else "uint8"
            raise ValueError(
                f"output {name!r}: {fmt.upper()} stores {what}, not {dt} with {channels} "
                f"channel(s); pass --dtype uint8 or write .tif/.npy/.nii.gz"
            )
        if fmt == "jpeg" and channels not in (1, 3):
            raise ValueError(f"output {name!r}: JPEG stores grey or RGB, not {channels} channels")
        if channels not in (1, 2, 3, 4):
            raise ValueError(
                f"output {name!r}: PNG stores grey, grey + alpha, RGB or RGBA, not {channels} "
                "channels; write .tif/.npy/.nii.gz instead"
            )
    if fmt == "nifti" and dt.newbyteorder("=") not in _NIFTI_DTYPES:
        hint = "--dtype uint8" if dt.kind == "b" else "--dtype float32"
        raise ValueError(
            f"output {name!r}: NIfTI cannot store {dt}; it stores int8/16/32/64, "
            f"uint8/16/32/64, float32/64 or complex64/128: pass {hint} or write .tif/.npy/.zarr"
        )
    return fmt


def create_zarr(
    path: StrPath,
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
    path: StrPath | BinaryIO,
    data: np.ndarray,
    info: ImageInfo | None = None,
    *,
    format: str | None = None,
) -> None:
    """Write ``data`` to ``path`` in the format of its suffix (or ``format``), not atomically.

    ``info`` (from :func:`read`) carries metadata over where both files are the same format
    family: the NIfTI header and affine, TIFF photometric, Zarr chunks and attributes. A NIfTI
    written from another format gets an affine with ``info.spacing`` on the diagonal (unit mm).

    ``path`` may also be a binary file open for writing (what :func:`atomic_file` gives);
    then ``format`` is required: a format name or a suffix (``'.nii.gz'`` for gzipped
    NIfTI). A file that ``write`` created is removed again if writing fails; a full disk is
    an ``OSError`` with ``errno.ENOSPC`` that says so and names the file. Use
    :func:`atomic_file` / :func:`atomic_output` for a path that appears only once complete.
    """
    if hasattr(path, "write"):
        if format is None:
            raise ValueError("write to an open file needs format= (e.g. 'npy' or '.nii.gz')")
        suffix = _suffix_of(format)
        channel = None if info is None else info.channel_axis
        label = str(getattr(path, "name", "the output stream"))
        check_writable(f"x{suffix}", data.dtype, data.shape, channel, name=label)
        if suffix == ".zarr":
            raise ValueError("a Zarr store is a directory: write it to a path, not a file")
        _write_stream(path, suffix, data, info)  # type: ignore[arg-type]
        return
    text = os.fspath(path)
    suffix = _suffix_of(format) if format is not None else _suffix_of_path(text)
    channel = None if info is None else info.channel_axis
    check_writable(
        text if format is None else f"x{suffix}", data.dtype, data.shape, channel, name=text
    )
    created = not os.path.lexists(text)
    try:
        with _write_failures(text):
            if suffix == ".zarr":
                meta = info.meta if info is not None and info.format == "zarr" else {}
                chunks = meta.get("chunks") or _auto_chunks(data.shape, data.dtype)
                attrs = meta.get("attributes")
                z = create_zarr(text, data.shape, chunks, data.dtype, attributes=attrs)
                _fill_zarr(z, data)
            else:
                with open(text, "xb" if created else "wb") as f:
                    _write_stream(f, suffix, data, info)
    except BaseException:
        if created:
            _remove(text)
        raise


def _fill_zarr(z: Any, data: np.ndarray) -> None:
    """``z[...] = data``, one row of chunks at a time in a worker thread this one waits for.

    zarr 3 writes on its own event-loop thread: a Ctrl-C or SIGTERM that interrupted the
    main thread inside ``z[...] = data`` left that loop writing chunks after the caller
    had removed the temporary store (which they recreated), and pending writes that asyncio
    reported at exit. Here the signal stops the worker between rows and waits for the row
    being written, so nothing is written once the exception leaves this function.
    """
    stop, finished = threading.Event(), threading.Event()
    failures: list[BaseException] = []
    step = max(1, int(z.chunks[0])) if data.ndim else 1

    def work() -> None:
        try:
            if data.ndim == 0:
                z[...] = data
                return
            for lo in range(0, data.shape[0], step):
                if stop.is_set():
                    return
                z[lo : lo + step] = data[lo : lo + step]
        except BaseException as exc:  # handed to the caller's thread
            failures.append(exc)
        finally:
            finished.set()

    # waited for on an Event: a Thread.join interrupted by a signal may mark the thread
    # as stopped while it still runs (CPython's _wait_for_tstate_lock clean-up)
    threading.Thread(target=work, name="sepconv-zarr-write", daemon=True).start()
    try:
        while not finished.wait(0.05):  # wakes for signals, which raise here
            pass
    except BaseException as interrupted:
        stop.set()
        while not finished.is_set():
            with contextlib.suppress(BaseException):  # a second Ctrl-C: still wait
                finished.wait(0.05)
        raise interrupted
    if failures:
        raise failures[0]


def _suffix_of(format: str) -> str:
    """The file suffix for a format name ('nifti' -> '.nii') or a suffix ('.nii.gz')."""
    text = format.lower()
    if text in FORMATS:
        return FORMATS[text][0]
    suffixes = {s for group in FORMATS.values() for s in group}
    if text in suffixes:
        return text
    raise ValueError(f"format must be one of {sorted(FORMATS)} or a suffix, got {format!r}")


def _suffix_of_path(path: str) -> str:
    base = os.path.basename(path.rstrip("/\\")).lower()
    format_of(path, "output")
    return max((s for g in FORMATS.values() for s in g if base.endswith(s)), key=len)


def _write_stream(f: BinaryIO, suffix: str, data: np.ndarray, info: ImageInfo | None) -> None:
    """Write ``data`` into the open binary file ``f`` as a ``suffix`` file."""
    channel = None if info is None else info.channel_axis
    if suffix in (".png", ".jpg", ".jpeg"):
        img = data[..., 0] if data.ndim == 3 and data.shape[-1] == 1 else data
        img = np.ascontiguousarray(img)
        # encoded in memory, then written here: a failed write is one clean OSError
        if suffix == ".png" and img.dtype == np.uint16 and img.ndim == 3:  # 16-bit colour
            encoded = _need("imagecodecs", "png").png_encode(img)
        else:
            iio = _need("imageio.v3", "png" if suffix == ".png" else "jpeg")
            kw = {"quality": 95} if suffix != ".png" else {}
            encoded = iio.imwrite("<bytes>", img, extension=suffix, **kw)
        f.write(encoded)
    elif suffix in (".tif", ".tiff"):
        tifffile = _need("tifffile", "tiff")
        last = channel is not None and data.ndim >= 3 and channel % data.ndim == data.ndim - 1
        photometric = "minisblack"
        if info is not None and info.format == "tiff":
            photometric = info.meta.get("photometric", "minisblack")
        elif last and data.shape[-1] in (3, 4):
            photometric = "rgb"
        layout: dict[str, Any] = {}
        if last and data.shape[-1] == 1:  # one sample: a grey image (as PNG writes it)
            data = data[..., 0]
        elif last:  # samples interleaved in each page, not one page per row
            layout["planarconfig"] = "contig"
            if photometric != "rgb" and data.shape[-1] == 2 and info and info.format == "png":
                layout["extrasamples"] = ["unassalpha"]  # grey + alpha
        tifffile.imwrite(f, data, photometric=photometric, **layout)
    elif suffix in (".nii", ".nii.gz"):
        _write_nifti(f, suffix, data, info)
    elif suffix == ".npy":
        np.save(f, data, allow_pickle=False)
    else:  # pragma: no cover - _suffix_of only returns known suffixes
        raise ValueError(f"cannot write {suffix} to a file")
    f.flush()


def _write_nifti(f: BinaryIO, suffix: str, data: np.ndarray, info: ImageInfo | None) -> None:
    import gzip

    nib = _need("nibabel", "nifti")
    source = None if info is None else info.meta.get("image")
    if source is not None:
        img = type(source)(data, source.affine, source.header.copy(), dtype=data.dtype)
    else:
        spacing = (info.spacing if info is not None else None) or ()
        affine = np.eye(4)
        for a, s in enumerate(spacing[:3]):
            affine[a, a] = s
        img = nib.Nifti1Image(data, affine, dtype=data.dtype)  # int64 needs it said
        if spacing:
            img.header.set_xyzt_units("mm")
    img.header.set_data_dtype(data.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    if suffix == ".nii.gz":  # as nibabel writes it: level 1, no name or time in the header
        with gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=1, mtime=0) as gz:
            img.to_file_map(img.make_file_map({"image": gz}))
    else:
        img.to_file_map(img.make_file_map({"image": f}))


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


class _OutputError(OSError):
    """An ``OSError`` whose message says everything (no ``[Errno N]`` prefix)."""

    def __str__(self) -> str:
        return str(self.strerror)


def _bytes(n: float) -> str:
    for scale, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


@contextlib.contextmanager
def _write_failures(name: str) -> Iterator[None]:
    """Raise an ``OSError`` of the block as :func:`_write_failure`'s one line, where it has one."""
    try:
        yield
    except OSError as exc:
        failure = _write_failure(exc, name)
        if failure is None:
            raise
        raise failure from None


def _write_failure(exc: BaseException, name: str) -> OSError | None:
    """A one-line ``OSError`` for a write that failed for lack of space, else None.

    Libraries report a full disk as ``ENOSPC``/``EDQUOT``, or (numpy's ``tofile``, used by
    tifffile) as "N requested and M written" with no errno; the free space decides then.
    """
    if not isinstance(exc, OSError):
        return None
    folder = os.path.dirname(os.path.abspath(name))
    try:
        st = os.statvfs(folder)
        free: int | None = st.f_bavail * st.f_frsize
    except (OSError, AttributeError):  # pragma: no cover - no statvfs
        free = None
    where = "" if free is None else f" ({_bytes(free)} free in {folder})"
    short = re.search(r"(\d+) requested and (\d+) written", str(exc))
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT) or (
        code is None and short is not None and free is not None and free < int(short[1])
    ):
        what = "disk quota exceeded" if code == errno.EDQUOT else "no space left on device"
        return _OutputError(code or errno.ENOSPC, f"{what} while writing {name!r}{where}")
    if code == errno.EFBIG:
        return _OutputError(code, f"file too large for this file system or limit: {name!r}")
    if short is not None:
        return _OutputError(
            errno.EIO, f"short write to {name!r}: {short[2]} of {short[1]} bytes written{where}"
        )
    return None


#: Every temporary sepconv writes beside an output has this in its name.
_TMP_TAG = ".sepconv-tmp"
#: A temporary untouched this long whose owner cannot be checked is an abandoned one.
STALE_SECONDS = 24 * 3600.0


def _host_id() -> str:
    import hashlib
    import socket

    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


def _split_output(text: str) -> tuple[str, str, str]:
    """(folder, stem, suffix) of an output path; the suffix keeps its case."""
    parent = os.path.dirname(os.path.abspath(text))
    base = os.path.basename(text.rstrip("/\\"))
    fmt = format_of(text, "output")
    longest_first = sorted(FORMATS[fmt], key=len, reverse=True)
    suffix = next(s for s in longest_first if base.lower().endswith(s))
    cut = len(base) - len(suffix)
    return parent, base[:cut], base[cut:]


def _temp_path(text: str) -> str:
    """A fresh temporary name beside ``text``: ``.STEM.<host>-<pid>-<random>.sepconv-tmpSUFFIX``."""
    import secrets

    parent, stem, suffix = _split_output(text)
    tag = f"{_host_id()}-{os.getpid()}-{secrets.token_hex(4)}"
    return os.path.join(parent, f".{stem}.{tag}{_TMP_TAG}{suffix}")


def _remove(path: str) -> None:
    """Remove a file or directory tree; retried briefly (a late writer may recreate it)."""
    for delay in (0.0, 0.02, 0.05, 0.1, 0.2):
        time.sleep(delay)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.lexists(path):
                os.unlink(path)
        except FileNotFoundError:
            pass
        if not os.path.lexists(path):
            return


def _newest_mtime(path: str) -> float:
    newest = os.lstat(path).st_mtime
    if os.path.isdir(path) and not os.path.islink(path):
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                with contextlib.suppress(OSError):
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
    return newest


def _abandoned(host: str | None, pid: int | None, path: str) -> bool:
    """Whether a temporary's writer is gone: its process died (same host) or it is stale."""
    if host == _host_id() and pid is not None:
        if pid == os.getpid():
            return False  # this process writes it (another output of the same run)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # EPERM: alive, another user's
            pass
    try:
        return time.time() - _newest_mtime(path) > STALE_SECONDS
    except OSError:
        return False


def remove_stale_temporaries(path: StrPath) -> list[str]:
    """Remove what an earlier, killed run left beside the output ``path``; return the names.

    Temporaries are recognised by sepconv's naming (``.STEM.<host>-<pid>-<random>.sepconv-tmp
    SUFFIX``) and removed when the process that made them is gone (same host, pid no longer
    running) or, when that cannot be checked (another host, an older sepconv), when nothing
    in them changed for :data:`STALE_SECONDS`. A previous Zarr output that a killed
    swap left aside (``....sepconv-tmp.zarr.old``) is put back when ``path`` is missing.
    Single-file outputs on Linux use unnamed temporaries and leave nothing to clean.
    """
    text = os.fspath(path)
    parent, stem, suffix = _split_output(text)
    pattern = re.compile(
        r"\."
        + re.escape(stem)
        + r"\.(?:(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-)?[A-Za-z0-9_]+"
        + re.escape(_TMP_TAG + suffix)
        + r"(?P<old>\.old)?"
    )
    removed: list[str] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m is None:
            continue
        pid = None if m["pid"] is None else int(m["pid"])
        if not _abandoned(m["host"], pid, entry.path):
            continue
        if m["old"] and not os.path.lexists(text):
            try:
                os.rename(entry.path, text)
            except OSError:  # never delete a previous output that could not be put back
                continue
            removed.append(f"{entry.name} (the previous output, put back)")
            continue
        _remove(entry.path)
        if not os.path.lexists(entry.path):
            removed.append(entry.name)
    return removed


def _check_output(text: str, overwrite: bool, protect: Sequence[StrPath]) -> str:
    """The checks :func:`atomic_output` makes before anything is written; returns the folder."""
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
    with contextlib.suppress(OSError):
        remove_stale_temporaries(text)
    exists = os.path.lexists(text)
    if exists and not overwrite:
        raise ValueError(f"output {text!r} exists; pass --overwrite to replace it")
    is_dir = format_of(text, "output") == "zarr"
    if exists and os.path.isdir(text) != is_dir:
        kind = "a directory" if os.path.isdir(text) else "a file"
        raise ValueError(f"output {text!r} exists and is {kind}; remove it or choose another name")
    return parent


@contextlib.contextmanager
def atomic_output(
    path: StrPath, *, overwrite: bool = False, protect: Sequence[StrPath] = ()
) -> Iterator[str]:
    """A temporary path beside ``path`` that becomes ``path`` only if the block succeeds.

    Refuses (``ValueError``, before the block runs) to write over any path in ``protect``
    (the inputs) or inside it, over an existing ``path`` unless ``overwrite``, and into a
    directory that does not exist. The temporary has the same suffix, so writers pick the
    same format. Files are moved into place with one atomic rename (a hard link when not
    overwriting, so a file that appeared meanwhile is not clobbered); a Zarr directory that
    replaces an existing one is swapped in with two renames, the old one being removed only
    after the new one is in place. On any error (or Ctrl-C, SIGTERM, SIGHUP in
    ``sepconv filter``) the temporary is deleted and the target is left as it was; what a
    killed process (``kill -9``) left is removed by the next run on the same output
    (:func:`remove_stale_temporaries`). For a single file, :func:`atomic_file` leaves
    nothing even then.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from sepconv import io
    >>> folder = tempfile.mkdtemp()
    >>> with io.atomic_output(os.path.join(folder, "y.npy")) as tmp:
    ...     io.write(tmp, np.zeros(3))
    >>> os.listdir(folder)  # the temporary became y.npy
    ['y.npy']
    """
    text = os.fspath(path)
    _check_output(text, overwrite, protect)
    is_dir = format_of(text, "output") == "zarr"
    tmp = _temp_path(text)  # writers create it (exclusively); the random part keeps it ours
    try:
        with _write_failures(text):
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
                _remove(old)
            elif is_dir:
                os.rename(tmp, text)
            else:
                _place_file(tmp, text, overwrite)
    finally:
        if os.path.lexists(tmp):
            _remove(tmp)


def replace_atomically(path: StrPath, write: Callable[[str], Any]) -> None:
    """Write one file of any kind (a torch checkpoint, a TorchScript model) with
    ``write(tmp)`` to a temporary name beside ``path``, then rename it into place.

    ``path`` is replaced whole or left as it was; on any error (Ctrl-C included) the
    temporary is removed. The file gets an ordinary new file's mode (``0o666`` less the umask;
    the temporary is created ``0600``). Unlike :func:`atomic_output` it replaces an existing
    file: callers check ``overwrite`` themselves.
    """
    import tempfile

    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _place_file(tmp: str, target: str, overwrite: bool) -> None:
    """Move the written file ``tmp`` to ``target`` (synced first when replacing a file)."""
    if overwrite:
        if os.path.lexists(target):
            _fsync_path(tmp)
        os.replace(tmp, target)
    else:
        _link_no_clobber(tmp, target)


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


class Terminated(BaseException):
    """Raised in the main thread by :func:`signals_as_exceptions` for SIGTERM or SIGHUP.

    A ``BaseException`` like ``KeyboardInterrupt``, so ``except Exception`` does not swallow
    it and every ``finally`` (the temporaries of :func:`atomic_output`) runs on the way out.
    """

    def __init__(self, signum: int) -> None:
        import signal

        super().__init__(signum)
        self.signum = int(signum)
        try:
            self.name = signal.Signals(signum).name
        except ValueError:  # pragma: no cover - not a known signal number
            self.name = f"signal {signum}"


@contextlib.contextmanager
def signals_as_exceptions(names: Sequence[str] = ("SIGTERM", "SIGHUP")) -> Iterator[None]:
    """Within the block, the signals ``names`` raise :class:`Terminated` in the main thread.

    So ``kill`` (SIGTERM) or a closed terminal (SIGHUP) clean up as Ctrl-C does; the next
    such signal while cleaning up is ignored. Previous handlers come back after the block.
    Outside the main thread (where handlers cannot be set) it does nothing.
    """
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signums = [getattr(signal, n) for n in names if hasattr(signal, n)]

    def handler(signum: int, frame: Any) -> None:
        for s in signums:
            signal.signal(s, signal.SIG_IGN)  # one clean-up, not a second one half-way
        raise Terminated(signum)

    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _open_unnamed(folder: str) -> int | None:
    """An unnamed file in ``folder`` (Linux ``O_TMPFILE``), or None where unsupported."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.open(folder, flag | os.O_RDWR | os.O_CLOEXEC, 0o666)
    except OSError:  # EOPNOTSUPP, EISDIR (old kernels), EINVAL: the file system cannot
        return None


def _link_unnamed(fd: int, target: str, overwrite: bool) -> None:
    """Give the unnamed file ``fd`` the name ``target`` (never clobbering unless overwrite)."""
    parent = os.path.dirname(os.path.abspath(target))
    name = os.path.basename(target)
    source = f"/proc/self/fd/{fd}"
    dirfd = os.open(parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_CLOEXEC)
    try:
        if not overwrite:
            try:  # dst_dir_fd makes this linkat(..., AT_SYMLINK_FOLLOW): the file, not /proc's link
                os.link(source, name, dst_dir_fd=dirfd)
            except FileExistsError:
                raise ValueError(
                    f"output {target!r} appeared while writing; not replaced"
                ) from None
            return
        if os.path.lexists(target):
            os.fsync(fd)
        tmp = os.path.basename(_temp_path(target))
        os.link(source, tmp, dst_dir_fd=dirfd)
        try:
            os.replace(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dirfd)
            raise
    finally:
        os.close(dirfd)


@contextlib.contextmanager
def atomic_file(
    path: StrPath, *, overwrite: bool = False, protect: Sequence[StrPath] = ()
) -> Iterator[BinaryIO]:
    """An open binary file that becomes ``path`` only if the block succeeds.

    The same checks and guarantees as :func:`atomic_output` (never over an input, never
    over an existing file without ``overwrite``, never clobbering a file that appeared
    meanwhile), for single-file formats. On Linux the file has no name until it is complete
    (``O_TMPFILE``, then linked into place), so even ``kill -9`` or a power cut leaves
    nothing behind; elsewhere (or where the file system cannot) it is a named temporary as
    in :func:`atomic_output`. Write to it with :func:`write` and ``format=``.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from sepconv import io
    >>> target = os.path.join(tempfile.mkdtemp(), "y.nii.gz")
    >>> with io.atomic_file(target) as f:
    ...     io.write(f, np.zeros((2, 3, 4), np.float32), format=".nii.gz")
    >>> io.read(target)[1].shape
    (2, 3, 4)
    """
    text = os.fspath(path)
    if format_of(text, "output") == "zarr":
        raise ValueError(f"output {text!r} is a Zarr directory: use atomic_output")
    parent = _check_output(text, overwrite, protect)
    fd = _open_unnamed(parent)
    if fd is None:
        with atomic_output(text, overwrite=overwrite, protect=protect) as tmp:
            with open(tmp, "xb") as f:
                yield f
        return
    with os.fdopen(fd, "w+b") as f:
        with contextlib.suppress(AttributeError):
            f.raw.name = f"/proc/self/fd/{fd}"  # type: ignore[attr-defined]  # tifffile wants str
        with _write_failures(text):
            yield f
            f.flush()
            _link_unnamed(fd, text, overwrite)


def path_size(path: StrPath) -> int:
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
    """What :func:`filter_file` did (the CLI's summary line is made from it).

    ``dtype_in`` is what the file stores; a scaled NIfTI (``scaling`` = slope, inter) was
    read as ``dtype_read``. ``seconds`` is the whole run, ``compile_seconds`` the part of it
    spent compiling (or loading from numba's cache) the engine in this process, which
    :meth:`summary` reports apart. ``removed`` names what a killed earlier run had left.
    """

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
    compile_seconds: float = 0.0
    dtype_read: str | None = None
    scaling: tuple[float, float] | None = None
    removed: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype_in).itemsize

    def summary(self) -> str:
        """One line: shape, dtypes, kernel, plan, time (without compilation) and throughput."""
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
        dtype_in = self.dtype_in
        if self.scaling is not None:
            slope, inter = self.scaling
            sign = "-" if inter < 0 else "+"
            dtype_in += f" x {slope:.6g}" + (f" {sign} {abs(inter):.6g}" if inter else "")
            dtype_in += f" (NIfTI scaling, read as {self.dtype_read})"
        compiled = max(0.0, min(self.compile_seconds, self.seconds))
        seconds = self.seconds - compiled
        t = max(seconds, 1e-9)
        timing = f"{seconds:.2f} s (read, filter, write)"
        if compiled >= 0.01:
            timing += f" + {compiled:.2f} s compiling/loading the numba engine (not counted)"
        if self.scheduler not in (None, "threads", "sync"):
            timing += " (incl. the workers' start-up and engine compilation)"
        notes = "".join(f"; note: {n}" for n in self.notes)
        return (
            f"{self.input} -> {self.output}: {shape} {dtype_in} -> {self.dtype_out}, "
            f"kernel {self.kernel} ({ks} over axes {','.join(map(str, self.axes))}), "
            f"plan {plan}{mode}; {timing}, "
            f"{_rate(np.prod(self.shape) / t, 'voxel/s')}, {_rate(self.nbytes / t, 'B/s')}"
            f"{notes}"
        )


def _rate(value: float, unit: str) -> str:
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _kernel_for(
    spec: Any,
    naxes: int,
    spacing: Sequence[float] | None,
    sigma_mm: float | None,
    method: str = "auto",
) -> tuple[Any, str]:
    """The kernel for ``naxes`` filtered axes, and the spec it was built from: the dense
    array, or the separable terms of a named kernel that is built from them (when ``method``
    runs terms; see ``kernels.spec_terms``).

    A named kernel that takes ``ndim`` gets ``ndim=naxes`` unless the spec fixes it (by
    ``ndim=`` or a bracketed per-axis list); ``sigma_mm`` sets ``sigma`` per axis to
    ``sigma_mm / spacing`` so a Gaussian is isotropic in millimetres.
    """
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
    if text.lower().endswith((".npy", ".csv")):
        return kernels.from_spec(text), text
    given, allowed = kernels.spec_parameters(text)  # kernels' errors for a malformed spec
    if sigma_mm is not None:
        if "sigma" not in allowed:
            name = text.partition(":")[0]
            raise ValueError(f"--sigma-mm needs a kernel with a sigma; {name!r} has none")
        if "sigma" in given:
            raise ValueError("give the width once: sigma in --kernel or --sigma-mm, not both")
        assert spacing is not None
        text = kernels.extend_spec(text, {"sigma": [sigma_mm / s for s in spacing]})
    else:  # ndim where the kernel takes it and the spec leaves it open, as from_spec adds it
        adapted, _ = kernels.spec_parameters(text, ndim=naxes)
        text = kernels.extend_spec(text, {k: v for k, v in adapted.items() if k not in given})
    terms = kernels.spec_terms(text) if method in ("auto", "separable", "lowrank") else None
    return (kernels.from_spec(text) if terms is None else terms), text


def filter_file(
    input: StrPath,
    output: StrPath,
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
    before any pixel is read where possible (formats, paths, the input being a regular file,
    kernel against the data's dimensions, what the output format can store). The output
    appears atomically and only when complete (:func:`atomic_file` for single files: nothing
    is left even by ``kill -9``; :func:`atomic_output` for Zarr), and what an earlier killed
    run left beside it is removed first (:func:`remove_stale_temporaries`). Zarr input, or
    ``chunks``, runs on dask (:mod:`sepconv.dask`), slab by slab within ``memory_limit``;
    ``scheduler`` is 'threads' (default), 'processes', 'sync' or the address of a
    ``dask.distributed`` scheduler. A NIfTI file with ``scl_slope``/``scl_inter`` is read,
    filtered and by default written as float32 when it stores 8/16-bit integers or float32,
    and as float64 when it stores 32/64-bit integers or float64 (float32 holds integers
    exactly only up to 2**24); ``dtype`` float64 reads and filters it in float64, any other
    ``dtype`` is what is written.
    ``--sigma-mm`` is refused for a NIfTI file whose spatial unit is 'unknown'.

    ``progress``, if given, is called as ``progress(done, total, stage)``; ``stage`` says
    what runs (reading, loading/compiling the numba engine, filtering with the plan's time
    estimate, writing).
    """
    # 1. names, options and the input file, before anything is created
    src, dst = os.fspath(input), os.fspath(output)
    in_fmt, suffix, removed = _check_names(src, dst, scheduler)
    use_dask = in_fmt == "zarr" or chunks is not None or scheduler is not None
    if importlib.util.find_spec("dask") is not None:  # checked also where it goes unused
        from ._validate import check_memory_limit

        check_memory_limit(memory_limit)
    stage = _Stage(progress)
    protect = [src, *_kernel_file(kernel)]  # never written over, even with overwrite
    with _CompileClock(stage) as clock, _atomic_target(dst, suffix, overwrite, protect) as target:
        t0 = time.perf_counter()
        # 2. read (native byte order; scaled NIfTI as float32, or float64 for wide storage)
        stage(0, 1, "reading")
        data, info = read(src, lazy=use_dask)
        # 3. axes and kernel, checked against the data
        channel, ax = _filter_axes(info, axes, channel_axis)
        K, spec, kshape, nterms, negative = _checked_kernel(kernel, info, ax, sigma_mm, src, method)
        # 4. what the output format can store, the plan
        out_dtype = np.dtype(info.dtype if dtype is None else dtype)
        if info.dtype.kind == "c" and out_dtype.kind != "c":
            raise ValueError(
                f"dtype {out_dtype} cannot hold the filtered {info.dtype} data of {src!r}: "
                "filtering complex data gives complex values; pass complex64 or complex128 "
                "(or write the real and imaginary parts as separate real files)"
            )
        check_writable(dst, out_dtype, info.shape, channel)
        data, info = _rescaled(data, info, out_dtype)
        plan = _plan(K, kshape, nterms, info, ax, method, tol)
        kw = dict(mode=mode, cval=cval, axes=ax, method=method, tol=tol, workers=workers)
        out_info = ImageInfo(
            info.format, info.shape, out_dtype, info.spacing, channel, ax, dict(info.meta)
        )
        out = _Output(out_dtype, out_info, target, suffix)
        # 5. filter (in memory or on dask) and write
        used_chunks, sched_name = None, None
        if use_dask:
            used_chunks, sched_name = _filter_dask(
                data, K, kw, out, chunks, scheduler, memory_limit, stage
            )
        else:
            _filter_in_memory(data, K, kw, out, plan, stage)
        seconds = time.perf_counter() - t0
    f = plan.factorization
    meta = info.meta
    return FilterReport(
        input=src,
        output=dst,
        shape=info.shape,
        dtype_in=str(meta.get("stored_dtype", info.dtype)),
        dtype_out=str(out_dtype),
        axes=ax,
        kernel=spec,
        kernel_shape=kshape,
        method=plan.method,
        rank=plan.rank,
        error=0.0 if f is None else float(f.error),
        error_bound=0.0 if f is None else float(f.error_bound),
        seconds=seconds,
        chunks=used_chunks,
        scheduler=sched_name,
        compile_seconds=clock.seconds,
        dtype_read=str(info.dtype),
        scaling=meta.get("scaling"),
        removed=tuple(removed),
        notes=_clipping_notes(out_dtype, negative),
    )


def _check_names(src: str, dst: str, scheduler: str | None) -> tuple[str, str, list[str]]:
    """Input format and output suffix from the names, the scheduler, the input file; what a
    killed earlier run left beside the output, removed (the names)."""
    in_fmt = format_of(src, "input")
    suffix = _suffix_of_path(dst)
    if scheduler is not None and scheduler not in SCHEDULERS and "://" not in scheduler:
        raise ValueError(
            f"scheduler must be one of {list(SCHEDULERS)} or a dask.distributed address "
            f"like tcp://host:8786, got {scheduler!r}"
        )
    check_input(src, in_fmt)
    removed: list[str] = []
    if os.path.isdir(os.path.dirname(os.path.abspath(dst))) and not _same_file(src, dst):
        with contextlib.suppress(OSError):
            removed = remove_stale_temporaries(dst)
    return in_fmt, suffix, removed


def _plan(
    K: Any,
    kshape: tuple[int, ...],
    nterms: int | None,
    info: ImageInfo,
    ax: tuple[int, ...],
    method: str,
    tol: float | None,
) -> Any:
    """The plan for the kernel (or a named kernel's own ``nterms`` terms) on the data."""
    from ._validate import check_tol
    from .plan import make_plan, plan_terms

    data_shape, size = [info.shape[a] for a in ax], int(np.prod(info.shape))
    if nterms is not None:
        check_tol(tol)
        return plan_terms(kshape, nterms, data_shape, size=size)
    return make_plan(K, data_shape, method=method, tol=tol, size=size)


@dataclass
class _Output:
    """What the result becomes: its dtype, its image info, where and in which format."""

    dtype: np.dtype
    info: ImageInfo
    target: Any  # an open file, or the temporary path of a Zarr store
    suffix: str

    def write(self, result: Any) -> None:
        write(self.target, result, self.info, format=self.suffix)


@contextlib.contextmanager
def _atomic_target(dst: str, suffix: str, overwrite: bool, protect: Sequence[str]) -> Iterator[Any]:
    """An unnamed file (single-file formats) or a temporary directory path (Zarr), never
    over a path in ``protect`` (the input and a kernel file)."""
    if suffix == ".zarr":
        with atomic_output(dst, overwrite=overwrite, protect=protect) as tmp:
            yield tmp
    else:
        with atomic_file(dst, overwrite=overwrite, protect=protect) as f:
            yield f


def _kernel_file(kernel: Any) -> list[str]:
    """The kernel's file (a ``.npy``/``.csv`` spec) as a one-item list, else empty."""
    if isinstance(kernel, (str, os.PathLike)):
        text = os.fspath(kernel).strip()
        if text.lower().endswith((".npy", ".csv")):
            return [text]
    return []


def _filter_axes(
    info: ImageInfo, axes: Sequence[int] | None, channel_axis: int | str | None
) -> tuple[int | None, tuple[int, ...]]:
    """The channel axis and the filtered axes (default: the file's spatial axes)."""
    from ._modes import normalize_axes

    ndim = len(info.shape)
    if channel_axis == "auto":
        channel = info.channel_axis
    elif channel_axis is None or (isinstance(channel_axis, str) and channel_axis == "none"):
        channel = None
    else:
        channel = int(channel_axis)
        if not -ndim <= channel < ndim:
            raise ValueError(
                f"channel_axis must be 'auto', 'none' or an axis in [{-ndim}, {ndim - 1}] for "
                f"the {ndim}-D input, got {channel}"
            )
        channel %= ndim
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
    return channel, ax


def _has_negative_taps(K: Any) -> bool:
    """Whether a kernel (dense, or separable terms) has a negative value: terms are
    multiplied out when small, else any negative factor or weight counts."""
    if isinstance(K, np.ndarray):
        return bool((K < 0).any())
    if math.prod(len(v) for v in K[0][1]) <= 2**20:
        dense = sum(
            w * functools.reduce(np.multiply.outer, [np.asarray(v, float) for v in vecs])
            for w, vecs in K
        )
        return bool((np.asarray(dense) < 0).any())
    return any(w < 0 or any((np.asarray(v) < 0).any() for v in vecs) for w, vecs in K)


def _clipping_notes(out_dtype: np.dtype, negative: bool) -> tuple[str, ...]:
    """What the summary says when an unsigned output must clip the kernel's negative
    results (an edge detector into uint8 keeps half its edges)."""
    dt = np.dtype(out_dtype)
    if dt.kind != "u" or not negative:
        return ()
    return (
        f"the kernel has negative taps, so negative results are clipped to 0 in {dt}; "
        "--dtype float32 into .tif, .npy or .nii keeps them",
    )


def _checked_kernel(
    kernel: Any,
    info: ImageInfo,
    ax: tuple[int, ...],
    sigma_mm: float | None,
    src: str,
    method: str = "auto",
) -> tuple[Any, str, tuple[int, ...], int | None, bool]:
    """The kernel for the filtered axes, refused when it cannot fit the data:
    ``(kernel, spec, shape, nterms, has negative taps)``. A named kernel that is a sum of
    separable terms by construction (and a method that runs terms) stays its spec text
    (``nterms`` terms): ``filters.filter`` runs it as 1-D passes, never building it dense;
    anything else is the dense array (``nterms`` None)."""
    ndim = len(info.shape)
    if sigma_mm is not None and info.format == "nifti" and info.spacing is None:
        sizes = ", ".join(f"{z:g}" for z in info.meta.get("voxel_size", ())[: len(ax)])
        raise ValueError(
            f"--sigma-mm: {src!r} has no spatial unit (its NIfTI header says "
            f"{info.meta.get('spatial_unit', 'unknown')!r}), so its voxel sizes ({sizes}) "
            "are not known to be mm; give sigma in voxels (--kernel gaussian:sigma=...) or "
            "set the unit in the header (nibabel: img.header.set_xyzt_units('mm'))"
        )
    spacing = None if info.spacing is None else tuple(info.spacing[a] for a in ax)
    K, spec = _kernel_for(kernel, len(ax), spacing, sigma_mm, method)
    shape = tuple(K.shape) if isinstance(K, np.ndarray) else tuple(len(v) for v in K[0][1])
    if len(shape) > ndim:
        raise ValueError(
            f"kernel {spec} is {len(shape)}-D but {src!r} has only {ndim} dimensions "
            f"(shape {info.shape})"
        )
    if len(shape) != len(ax):
        raise ValueError(
            f"kernel {spec} is {len(shape)}-D but {len(ax)} axes {ax} of {src!r} (shape "
            f"{info.shape}) are filtered; pass --axes with {len(shape)} axes or a "
            f"{len(ax)}-D kernel"
        )
    if isinstance(K, np.ndarray):
        return K, spec, shape, None, _has_negative_taps(K)
    return spec, spec, shape, len(K), _has_negative_taps(K)


def _rescaled(data: Any, info: ImageInfo, out_dtype: np.dtype) -> tuple[Any, ImageInfo]:
    """A scaled NIfTI read as float32 is read again in float64 when float64 is asked for."""
    if info.meta.get("scaling") is None or out_dtype != np.float64 or info.dtype == out_dtype:
        return data, info
    data = _nifti_scaled(info.meta["image"], np.float64)
    return data, ImageInfo(
        info.format,
        info.shape,
        np.dtype(np.float64),
        info.spacing,
        info.channel_axis,
        info.spatial_axes,
        info.meta,
    )


class _Stage:
    """Forwards ``progress(done, total, stage)`` calls and remembers the last one."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.last: tuple[int, int, str] = (0, 1, "reading")

    def __call__(self, done: int, total: int, stage: str) -> None:
        self.last = (done, total, stage)
        if self.progress is not None:
            self.progress(done, total, stage)

    def compiling(self, active: bool) -> None:
        if self.progress is None:
            return
        done, total, stage = self.last
        self.progress(done, total, "loading/compiling the numba engine" if active else stage)


class _CompileClock:
    """Wall time during which numba compiles (or loads from its cache) in this process.

    Listens to numba's ``numba:compiler_lock`` events (any thread); overlapping compilations
    count once. Tells ``stage`` so a progress bar can say what the wait is.
    """

    def __init__(self, stage: _Stage) -> None:
        self.seconds = 0.0
        self.stage = stage
        self._depth = 0
        self._start = 0.0
        self._lock = threading.Lock()
        self._listener: Any = None

    def __enter__(self) -> _CompileClock:
        try:
            from numba.core import event
        except ImportError:  # pragma: no cover - numba is a dependency
            return self
        clock = self

        class Listener(event.Listener):
            def on_start(self, ev: Any) -> None:
                clock._enter()

            def on_end(self, ev: Any) -> None:
                clock._exit()

        self._listener = Listener()
        event.register("numba:compiler_lock", self._listener)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._listener is not None:
            from numba.core import event

            event.unregister("numba:compiler_lock", self._listener)
            self._listener = None

    def _enter(self) -> None:
        with self._lock:
            self._depth += 1
            first = self._depth == 1
            if first:
                self._start = time.perf_counter()
        if first:
            self.stage.compiling(True)

    def _exit(self) -> None:
        with self._lock:
            self._depth = max(0, self._depth - 1)
            last = self._depth == 0
            if last:
                self.seconds += time.perf_counter() - self._start
        if last:
            self.stage.compiling(False)


def _seconds(t: float) -> str:
    if t < 60:
        return f"{t:.2g} s" if t < 10 else f"{t:.0f} s"
    return f"{t / 60:.1f} min"


def _filter_in_memory(
    data: Any, K: Any, kw: dict[str, Any], out: _Output, plan: Any, stage: _Stage
) -> None:
    from . import filters

    estimate = float(getattr(plan, "time_ms", float("nan"))) / 1000.0
    label = "filtering"
    if np.isfinite(estimate) and estimate > 0:
        label += f" (about {_seconds(estimate)} by the plan's time model)"
    stage(0, 1, label)
    result = filters.filter(np.asarray(data), K, output=out.dtype, **kw)
    stage(1, 1, "writing")
    out.write(result)


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


def _filter_dask(
    data: Any,
    K: Any,
    kw: dict[str, Any],
    out: _Output,
    chunks: Any,
    scheduler: str | None,
    memory_limit: int | str,
    stage: _Stage,
) -> tuple[tuple[int, ...], str]:
    """Filter on dask into ``target`` (a Zarr path, or an open file written at the end)."""
    from concurrent.futures import ThreadPoolExecutor

    import dask
    import dask.array as da

    from . import dask as sdask
    from . import filters

    ndim = len(out.info.shape)
    parsed = _parse_chunks(chunks, ndim)
    x = data if isinstance(data, da.Array) else da.from_array(data, chunks=parsed or "auto")
    if parsed is not None and isinstance(data, da.Array):
        x = x.rechunk(parsed)
    if any(len(set(c[:-1])) > 1 or (len(c) > 1 and c[-1] > c[0]) for c in x.chunks):
        x = x.rechunk(x.chunksize)  # regular chunks (what a Zarr output needs)
    y: Any = filters.filter(x, K, output=out.dtype, **kw)
    sched: Any = scheduler or "threads"
    name = sched
    with contextlib.ExitStack() as stack:
        if isinstance(scheduler, str) and "://" in scheduler:
            distributed = _need("distributed", "a dask.distributed scheduler")
            try:
                client = distributed.Client(scheduler, timeout=10, set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise ValueError(
                    f"cannot reach the dask scheduler at {scheduler!r}: {exc}"
                ) from None
            stack.callback(client.close)
            sched = client
        elif sched == "threads":
            # our own pool, shut down (running tasks finished, queued ones dropped) before
            # the temporary is removed on an error or a signal: no chunk is written after
            pool = ThreadPoolExecutor(dask.system.CPU_COUNT)
            stack.callback(pool.shutdown, wait=True, cancel_futures=True)
            stack.enter_context(dask.config.set(pool=pool))
        total = int(np.prod(y.numblocks))

        def report(done: int, _total: int) -> None:
            stage(done, total, "filtering")

        report(0, total)
        if out.suffix == ".zarr":
            attrs = (out.info.meta if out.info.format == "zarr" else {}).get("attributes")
            z = create_zarr(out.target, y.shape, y.chunksize, out.dtype, attributes=attrs)
            sdask.store(y, z, memory_limit=memory_limit, scheduler=sched, progress=report)
        else:
            result = np.empty(y.shape, dtype=out.dtype)
            sdask.store(y, result, memory_limit=memory_limit, scheduler=sched, progress=report)
            stage(total, total, "writing")
            out.write(result)
    return tuple(int(c) for c in y.chunksize), str(name)
