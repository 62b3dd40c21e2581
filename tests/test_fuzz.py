"""Differential fuzz test: every sepconv filter against scipy.ndimage (issue #10).

One hypothesis strategy draws a whole call: the function (all 13 scipy.ndimage names), a 1-4-D
input of up to 12 samples per axis (sometimes an empty axis, sometimes rows of 64-140 so the
engine's tiled row path runs) in any supported dtype (8-64-bit integers with values near their
limits, float32/64 -- on numpy and dask, float32 also at a quarter to half of its maximum,
where a float64 result beyond the range is an infinity --, big-endian variants, bool) and
layout (contiguous, every other element,
transposed, reversed, broadcast), NaN/Inf placement in float input, every border mode (per
axis too), origins over their whole valid range, axes subsets spelled with negative numbers,
kernels of every length (even, longer than the axis) as float32, float64 or big-endian
arrays, the method of ``correlate``/``convolve``, the output (``None``, a dtype, an
``output=`` array, strided, big-endian or the input itself) and the backend (numpy; dask
with random chunks; torch CPU; the Triton GPU engine, run on CPU tensors by its interpreter;
CuPy arrays, a stand-in on numpy memory reaching that engine through DLPack).

The oracle is independent of sepconv: scipy.ndimage in float64 on the input converted to
float64. Where sepconv differs from scipy on purpose (README, ``sepconv.filters``' docstring),
the reference follows sepconv's documented definition, still computed without sepconv:

* integer outputs: ``clip(rint(ref), min, max)`` of the float64 result (round half to even,
  saturate), with the rounding allowed to go either way when ``ref`` lies within the
  tolerance of a ``.5`` boundary;
* ``mode='constant'`` with ``cval != 0`` for filters that scipy runs as several 1-D passes
  (scipy re-pads each pass with ``cval``): the dense correlation of the input padded once
  (the dense kernel is the impulse response of scipy's own filter, the padding ``np.pad``);
* non-finite input: the NaN/+Inf/-Inf pattern of scipy's direct correlation must be matched
  exactly: a chain of 1-D passes multiplies every tap (scipy's ``correlate1d``: ``0 * NaN``
  is NaN, ``inf * w1 + inf * w2`` with opposite signs is NaN), the N-D ``correlate`` skips
  zero weights. For ``uniform_filter`` scipy's running sum would smear NaN along the whole
  line, so there the dense correlation defines the pattern. Integer outputs of NaN results
  have no reference and are skipped; +-Inf saturates;
* ``gaussian_laplace``/``gaussian_gradient_magnitude`` are built from scipy's
  ``gaussian_filter`` terms: scipy's own versions smooth every axis even when ``axes`` is
  given (see ``_scipy_terms``);
* ``correlate``/``convolve`` with one mode per axis (scipy takes one): the dense correlation.

Tolerances are relative to the data's magnitude, ``scale = sum|w| * max|x|`` (plus ``|cval|``
when a constant border is involved): a sum of ``t`` products has a rounding error of at most
about ``t * eps * scale``, so ``tol = eps_work * (8 + 2 * taps) * scale`` where ``eps_work`` is
float32's for float32 and 8-bit input (computed in float32) and float64's otherwise; a float32
output adds its own rounding of ``|ref|``; plans run as the separable terms of a factorized
N-D kernel get ``FACTORIZED_ERROR`` times more (the fit's own rounding, partly cancelling
terms).

FFT precision: an FFT correlation's rounding error is not local. Every output mixes all
samples, so its error scales with the array's *largest* values (about
``eps * log2(N) * max|x| * sum|w|`` over the padded size ``N``), and a small output far from
a large one gets an error far above ``eps * |output|``: next to a 1e8 spike in 64x64 float64
noise, outputs of size ~1 were off by 2.5e-8 (1e10 eps of their own size) with
``method='fft'`` and by ~1 eps with ``method='direct'``. Relative to ``max|x| * sum|w|`` the
FFT error was measured at up to 0.4 eps * (log2(N) + 2) on these arrays (float32 input is
transformed in float64 at present); plans that may use FFT (``fft``, ``auto``) get
``FFT_ERROR = 4`` times that, or the direct bound if larger.

Size: ``SEPCONV_FUZZ_EXAMPLES`` (default 1000) examples for numpy, a fifth of that each for
dask and torch, a twentieth for the Triton engine, all derandomized (the same examples every
run): about 30 s once numba's cache is warm (the first run compiles ~80 engine signatures,
minutes on 2 cores).
``test_found_cases_match_scipy`` replays one small case of every failure class the fuzz has
found, so each stays covered whatever the random draw. For a long hunt:
``SEPCONV_FUZZ_EXAMPLES=5000 .venv/bin/pytest -p no:cacheprovider tests/test_fuzz.py``, with
``SEPCONV_FUZZ_RANDOM=1`` for a new draw each run.
A failure prints a copy-pasteable repro (imports included), the backend, the largest
difference and where it is.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

import sepconv
from _helpers import MODES, FakeArray, fake_cupy

HAVE_DASK = importlib.util.find_spec("dask") is not None
HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_TRITON = HAVE_TORCH and importlib.util.find_spec("triton") is not None
#: Backends that take torch tensors: ``triton`` is torch's with ``SEPCONV_TORCH_ENGINE=triton``
#: (CPU tensors through Triton's interpreter, ``tests/conftest.py``): the GPU engine's path.
TORCHES = ("torch", "triton")
#: Backends drawn like torch's (its dtypes, no read-only or reversed layouts): those and
#: ``cupy``, a stand-in cupy (``_helpers.fake_cupy``) whose arrays reach the Triton engine
#: through DLPack.
TORCH_LIKE = (*TORCHES, "cupy")
N_EXAMPLES = int(os.environ.get("SEPCONV_FUZZ_EXAMPLES", "1000"))
#: ``SEPCONV_FUZZ_RANDOM=1``: a new random draw each run (for hunts; ``make test`` replays the
#: same derandomized examples every time).
RANDOM_DRAW = os.environ.get("SEPCONV_FUZZ_RANDOM", "0") == "1"

#: np.pad's name for each scipy mode (checked against scipy for pads longer than the axis).
NP_PAD = {
    "reflect": "symmetric",
    "grid-mirror": "symmetric",
    "mirror": "reflect",
    "nearest": "edge",
    "wrap": "wrap",
    "grid-wrap": "wrap",
    "constant": "constant",
    "grid-constant": "constant",
}
FUNCTIONS = [
    "correlate1d",
    "convolve1d",
    "correlate",
    "convolve",
    "gaussian_filter",
    "gaussian_filter1d",
    "uniform_filter",
    "uniform_filter1d",
    "sobel",
    "prewitt",
    "laplace",
    "gaussian_laplace",
    "gaussian_gradient_magnitude",
]
INPUT_DTYPES = [
    "uint8",
    "int8",
    "uint16",
    "int16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float32",
    "float64",
    ">i2",
    ">u2",
    ">i4",
    ">i8",
    ">f4",
    ">f8",
    "bool",
]
#: torch.from_numpy takes native byte order only.
TORCH_DTYPES = [
    "uint8",
    "int8",
    "uint16",
    "int16",
    "int32",
    "int64",
    "float32",
    "float64",
    "bool",
]
OUTPUT_DTYPES = ["float32", "float64", "uint8", "int16", "int32", "uint32", "int64"]
OUTPUT_ARRAY_DTYPES = [*OUTPUT_DTYPES, ">f8", ">i2"]
#: max elements per array, by number of dimensions (keeps the dense references cheap)
MAX_AXIS = {1: 12, 2: 12, 3: 7, 4: 5}
#: cap on the number of taps of an N-D kernel (dense references loop over them)
MAX_TAPS = 4000
#: FFT tolerance, in units of eps * (log2(padded size) + 2) * max|x| * sum|w| (see the module
#: docstring and test_fft_error_is_relative_to_the_largest_value); measured up to 0.4
FFT_ERROR = 4.0
#: extra factor on the tolerance of plans run as separable terms of a factorized N-D kernel
FACTORIZED_ERROR = 8.0


def _fuzz_settings(n: int):
    return settings(
        max_examples=max(1, n),
        derandomize=not RANDOM_DRAW,
        database=None,
        deadline=None,
        print_blob=False,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


# ----------------------------------------------------------------------------------------------
# repro formatting
# ----------------------------------------------------------------------------------------------


def _lit(v: Any) -> str:
    """A Python expression for ``v`` (numpy arrays and dtypes included; nan/inf spelled)."""
    if isinstance(v, np.ndarray) and v.size == 0:
        return f"np.empty({v.shape!r}, dtype={str(v.dtype)!r})"
    if isinstance(v, np.ndarray):
        body = repr(v.tolist()).replace("nan", "np.nan").replace("inf", "np.inf")
        return f"np.array({body}, dtype={str(v.dtype)!r})"
    if isinstance(v, np.dtype):
        return f"np.dtype({str(v)!r})"
    if isinstance(v, float):
        if math.isnan(v):
            return "np.nan"
        if math.isinf(v):
            return "np.inf" if v > 0 else "-np.inf"
    if isinstance(v, (list, tuple)):
        items = ", ".join(_lit(i) for i in v)
        return f"[{items}]" if isinstance(v, list) else f"({items}{',' if len(v) == 1 else ''})"
    return repr(v)


# ----------------------------------------------------------------------------------------------
# the drawn case
# ----------------------------------------------------------------------------------------------


@dataclass
class Case:
    fn: str
    backend: str
    x: np.ndarray  # the numpy input (possibly a strided / big-endian view)
    x_expr: str  # Python expression that rebuilds x
    kwargs: dict[str, Any]  # passed to both sepconv and scipy
    extra: dict[str, Any] = field(default_factory=dict)  # sepconv only (method)
    out_kind: str = "none"  # none | dtype | array | strided | inplace
    out_dtype: str | None = None
    chunks: tuple[int, ...] | None = None
    nonfinite: str = "none"
    # what the reference needs to know
    filtered_axes: tuple[int, ...] = ()
    axis_modes: dict[int, str] = field(default_factory=dict)

    def output_expr(self) -> str:
        shape = self.x.shape
        if self.out_kind == "dtype":
            return f"np.dtype({self.out_dtype!r})"
        if self.out_kind == "array":
            return f"np.zeros({shape!r}, dtype={self.out_dtype!r})"
        if self.out_kind == "strided":
            wide = (*shape[:-1], 2 * shape[-1])
            return f"np.zeros({wide!r}, dtype={self.out_dtype!r})[..., ::2]"
        if self.out_kind == "inplace":
            return "x"
        return "None"

    def repro(self) -> str:
        lines = ["import numpy as np, sepconv", f"x = {self.x_expr}"]
        xin = "x"
        if self.backend == "dask":
            lines[0] += "; import dask.array as da"
            xin = f"da.from_array(x, chunks={self.chunks!r})"
        elif self.backend in TORCHES:
            lines[0] += "; import torch"
            xin = "torch.from_numpy(x)"
            if self.backend == "triton":
                lines.insert(
                    0,
                    "import os; os.environ.update(TRITON_INTERPRET='1', "
                    "SEPCONV_TORCH_ENGINE='triton')",
                )
        elif self.backend == "cupy":
            lines[:0] = [
                "import os; os.environ.update(TRITON_INTERPRET='1', SEPCONV_TORCH_ENGINE='triton')",
                "import sys; sys.path.insert(0, 'tests'); from _helpers import fake_cupy",
                "cupy = sys.modules['cupy'] = fake_cupy()",
            ]
            xin = "x.view(cupy.ndarray)"
        args = [xin]
        args += [f"{k}={_lit(v)}" for k, v in self.kwargs.items()]
        out = self.output_expr()
        if self.backend == "cupy" and self.out_kind in ("array", "strided"):
            out = f"{out}.view(cupy.ndarray)"
        elif self.backend == "cupy" and self.out_kind == "inplace":
            out = "xc"
            lines.append(f"xc = {xin}")
            args[0] = "xc"
        if out != "None":
            if self.backend in TORCHES and self.out_kind in ("array", "strided"):
                out = f"torch.from_numpy({out})"
            elif self.backend in TORCHES and self.out_kind == "inplace":
                out = "xt"
                lines.append("xt = torch.from_numpy(x)")
                args[0] = "xt"
            args.append(f"output={out}")
        args += [f"{k}={_lit(v)}" for k, v in self.extra.items()]
        call = f"sepconv.{self.fn}({', '.join(args)})"
        if self.backend == "dask" and self.out_kind in ("none", "dtype"):
            call += ".compute()"
        lines.append(f"y = {call}")
        return "\n".join(lines)

    def expected_dtype(self) -> np.dtype:
        return np.dtype(self.out_dtype) if self.out_dtype is not None else self.x.dtype


def _values(rng: np.random.Generator, dtype: np.dtype, shape, profile: str) -> np.ndarray:
    """Random values of ``dtype``: small, across the full range, or near the limits."""
    return _native_values(rng, dtype.newbyteorder("="), shape, profile).astype(dtype)


def _native_values(rng: np.random.Generator, dtype: np.dtype, shape, profile: str) -> np.ndarray:
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if profile == "small":
            lo, hi = max(int(info.min), -100), min(int(info.max), 100)
            return rng.integers(lo, hi, size=shape, endpoint=True).astype(dtype)
        if profile == "full":
            return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
        # limits: values within a few units of the top and bottom, some mid-range
        pick = rng.integers(0, 3, size=shape)
        k = rng.integers(0, 4, size=shape)
        top = np.array(info.max, dtype=dtype) - k.astype(dtype)
        bottom = np.array(info.min, dtype=dtype) + k.astype(dtype)
        mid = rng.integers(max(int(info.min), -100), min(int(info.max), 100) + 1, size=shape)
        return np.where(pick == 0, top, np.where(pick == 1, bottom, mid.astype(dtype)))
    if profile == "float-max" and dtype.itemsize <= 4:
        # a quarter to half of the float32 maximum: folded pairs, box sums and unnormalised
        # passes overflow in between where the float64 result does not
        top = float(np.finfo(dtype).max)
        sign = rng.choice([-1.0, 1.0], size=shape)
        return (sign * rng.uniform(0.25, 0.5, size=shape) * top).astype(dtype)
    scale = {"small": 1.0, "full": 1e3, "limits": 1e30, "float-max": 1e30}[profile]
    return (rng.standard_normal(shape) * scale).astype(dtype)


@st.composite
def _input(draw, backend: str):
    """(x, expression rebuilding x, nonfinite placement)."""
    ndim = draw(st.integers(1, 4))
    shape = [draw(st.integers(1, MAX_AXIS[ndim])) for _ in range(ndim)]
    if ndim in (2, 3) and draw(st.integers(0, 7)) == 0:
        # long rows: outer-axis passes over >= 64 (and, 3-D, > 2048) inner elements take the
        # engine's tiled row path instead of its short-row blocks
        shape[-1] = draw(st.integers(64, 140))
        if ndim == 3:
            shape[0] = draw(st.integers(1, 3))
            shape[1] = draw(st.integers(1, 20))
    if draw(st.integers(0, 20)) == 0:
        shape[draw(st.integers(0, ndim - 1))] = 0  # an empty axis
    shape = tuple(shape)
    dtypes = TORCH_DTYPES if backend in TORCH_LIKE else INPUT_DTYPES
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    # float-max: the numba engine reruns in float64 where an intermediate overflowed; the
    # torch path and the GPU engine accumulate in float32 (README), so not for them
    profiles = ["small", "full", "limits"] + (["float-max"] if backend in ("numpy", "dask") else [])
    profile = draw(st.sampled_from(profiles))
    seed = draw(st.integers(0, 2**32 - 1))
    # non-contiguous views: every other element, transposed, reversed, broadcast (stride 0);
    # torch.from_numpy takes neither negative strides nor read-only (broadcast) arrays
    layouts = ["C", "C", "step", "T"] + ([] if backend in TORCH_LIKE else ["neg", "bcast"])
    layout = draw(st.sampled_from(layouts if ndim > 1 else ["C", "step"]))
    rng = np.random.default_rng(seed)
    base_shape = shape
    bcast_axis = 0
    if layout == "step":
        base_shape = (*shape[:-1], 2 * shape[-1])
    elif layout == "T":
        base_shape = shape[::-1]
    elif layout == "bcast":
        bcast_axis = draw(st.integers(0, ndim - 1))
        base_shape = tuple(1 if a == bcast_axis else n for a, n in enumerate(shape))
    base = _values(rng, dtype, base_shape, profile)
    assert base.dtype == dtype
    nonfinite = "none"
    if dtype.kind == "f" and base.size and math.prod(shape):  # a broadcast view can be empty
        nonfinite = draw(st.sampled_from(["none", "none", "nan", "+inf", "-inf", "nan-slab"]))
        # placed in the base array, at a position the view sees
        pos = [draw(st.integers(0, n - 1)) for n in shape]
        if layout == "step":
            pos[-1] *= 2
        elif layout == "T":
            pos = pos[::-1]
        elif layout == "bcast":
            pos[bcast_axis] = 0
        value = {"nan": np.nan, "+inf": np.inf, "-inf": -np.inf, "nan-slab": np.nan}.get(nonfinite)
        if nonfinite == "nan-slab":
            ax = draw(st.integers(0, ndim - 1))
            sl: list[Any] = [slice(None)] * ndim
            sl[ax] = pos[ax]
            base[tuple(sl)] = value
        elif value is not None:
            base[tuple(pos)] = value
    if layout == "step":
        x, suffix = base[..., ::2], "[..., ::2]"
    elif layout == "T":
        x, suffix = base.T, ".T"
    elif layout == "neg":
        x, suffix = base[::-1], "[::-1]"
    elif layout == "bcast":
        x, suffix = np.broadcast_to(base, shape), f", {shape!r})"
    else:
        x, suffix = base, ""
    literal = _lit(base)
    if layout == "bcast":
        literal = "np.broadcast_to(" + literal
    return x, literal + suffix, nonfinite


def _mode(draw, naxes: int, allow_sequence: bool = True):
    if allow_sequence and naxes > 1 and draw(st.integers(0, 3)) == 0:
        return [draw(st.sampled_from(MODES)) for _ in range(naxes)]
    return draw(st.sampled_from(MODES))


def _axis_modes(mode, axes: tuple[int, ...]) -> dict[int, str]:
    if isinstance(mode, str):
        return dict.fromkeys(axes, mode)
    return dict(zip(axes, mode, strict=True))


def _axes(draw, ndim: int):
    """(axes argument, filtered axes in the order given)."""
    kind = draw(st.sampled_from(["none", "subset", "subset", "single"]))
    if kind == "none" or (ndim == 1 and kind == "subset"):
        return None, tuple(range(ndim))
    if kind == "single":
        a = draw(st.integers(-ndim, ndim - 1))
        return a, (a % ndim,)
    chosen = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    spelled = [a - ndim if draw(st.booleans()) else a for a in chosen]
    return spelled, tuple(chosen)


def _weights1d(draw, rng: np.random.Generator, k: int) -> np.ndarray:
    kind = draw(st.sampled_from(["random", "random", "symmetric", "antisymmetric", "integer"]))
    if kind == "symmetric":
        w = rng.standard_normal(k)
        w = w + w[::-1]
    elif kind == "antisymmetric":
        w = rng.standard_normal(k)
        w = w - w[::-1]  # odd k: the centre is exactly 0 (scipy's antisymmetric branch skips it)
        if not w.any():
            w = np.ones(k)
    elif kind == "integer":  # zeros included: 1-D passes multiply them (0 * NaN is NaN)
        w = rng.integers(-3, 4, size=k).astype(float)
    else:
        w = rng.standard_normal(k)
    dt = draw(st.sampled_from(["float32", "float64", ">f8"]))
    return w.astype(dt)


def _kernel_nd(draw, rng, kshape: tuple[int, ...], method: str) -> np.ndarray:
    dt = draw(st.sampled_from(["float32", "float64", ">f8"]))
    if method == "separable":
        structure = "cp1"
    elif method == "lowrank":
        structure = draw(st.sampled_from(["cp1", "cp2", "cp3"] + (["dense"] * (len(kshape) <= 2))))
    else:
        structure = draw(st.sampled_from(["dense", "dense", "cp1", "cp2", "sobel-like"]))
    if structure == "dense":
        K = rng.standard_normal(kshape)
    elif structure == "sobel-like":
        # an antisymmetric factor along one axis (exact zero centre when odd), smoothing others
        K = np.ones(())
        d = draw(st.integers(0, len(kshape) - 1))
        for i, k in enumerate(kshape):
            v = (
                np.arange(k) - (k - 1) / 2
                if i == d
                else 1.0 + np.minimum(np.arange(k), k - 1 - np.arange(k))
            )
            K = np.multiply.outer(K, v)
    else:
        rank = int(structure[2])
        # exact small-integer factors when float32 or a plan that needs an exact rank: float32
        # rounding of a float product would make the kernel full rank
        integer = dt == "float32" or method in ("separable", "lowrank")
        K = np.zeros(kshape)
        for _ in range(rank):
            term = np.ones(())
            for k in kshape:
                if integer:  # zeros included: scipy's N-D correlate skips zero weights
                    v = rng.integers(-3, 4, size=k)
                    v[rng.integers(0, k)] = rng.choice([-3, -2, -1, 1, 2, 3])
                else:
                    v = rng.standard_normal(k)
                term = np.multiply.outer(term, v.astype(float))
            K = K + term
    return np.asarray(K, dtype=dt)


def _sigma(draw, ndim: int) -> float:
    top = {1: 3.0, 2: 3.0, 3: 1.5, 4: 1.0}[ndim]
    return draw(st.sampled_from([0.5, 0.8, 1.0, 1.3, 2.0, 3.0]).filter(lambda s: s <= top))


@st.composite
def cases(draw, backend: str) -> Case:
    x, x_expr, nonfinite = draw(_input(backend))
    ndim = x.ndim
    fn = draw(st.sampled_from(FUNCTIONS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kw: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if fn in ("correlate1d", "convolve1d", "uniform_filter1d", "gaussian_filter1d"):
        axis = draw(st.integers(-ndim, ndim - 1))
        n = x.shape[axis]
        if fn == "gaussian_filter1d":
            kw["sigma"] = _sigma(draw, 1)
            kw["axis"] = axis
            kw["order"] = draw(st.integers(0, 3))
            if draw(st.booleans()):
                kw["truncate"] = draw(st.sampled_from([1.0, 2.5, 4.0]))
            elif draw(st.booleans()):
                kw["radius"] = draw(st.integers(0, 6))
        else:
            k = draw(st.integers(1, n + 3))
            if fn == "uniform_filter1d":
                kw["size"] = k
            else:
                kw["weights"] = _weights1d(draw, rng, k)
            kw["axis"] = axis
            kw["origin"] = draw(st.integers(-(k // 2), (k - 1) // 2))
        mode = _mode(draw, 1, allow_sequence=False)
        filtered = (axis % ndim,)
    elif fn in ("correlate", "convolve"):
        axes_arg, filtered = _axes(draw, ndim)
        # scipy maps a kernel to sorted axes but origins to the given order: use sorted axes
        order = np.argsort(filtered)
        filtered = tuple(filtered[i] for i in order)
        if isinstance(axes_arg, list):
            axes_arg = [axes_arg[i] for i in order]
        method = draw(st.sampled_from(["auto", "auto", "direct", "separable", "lowrank", "fft"]))
        kshape = []
        for a in filtered:
            kshape.append(draw(st.integers(1, x.shape[a] + 3)))
        while math.prod(kshape) > MAX_TAPS:
            kshape[int(np.argmax(kshape))] -= 1
        K = _kernel_nd(draw, rng, tuple(kshape), method)
        kw["weights"] = K
        if draw(st.booleans()):
            kw["origin"] = [draw(st.integers(-(k // 2), (k - 1) // 2)) for k in kshape]
        else:
            kmin = min(kshape)
            kw["origin"] = draw(st.integers(-(kmin // 2), (kmin - 1) // 2))
        mode = _mode(draw, len(filtered))  # scipy's correlate takes one: see reference()
        if axes_arg is not None:
            kw["axes"] = axes_arg
        if method != "auto" or draw(st.booleans()):
            extra["method"] = method
    elif fn in ("sobel", "prewitt"):
        kw["axis"] = draw(st.integers(-ndim, ndim - 1))
        filtered = tuple(range(ndim))
        mode = _mode(draw, ndim)
    else:  # gaussian_filter, uniform_filter, laplace, gaussian_laplace, ggm
        axes_arg, filtered = _axes(draw, ndim)
        if axes_arg is not None:
            kw["axes"] = axes_arg
        nax = len(filtered)
        if fn == "uniform_filter":
            sizes = [draw(st.integers(1, x.shape[a] + 3)) for a in filtered]
            while math.prod(sizes) > MAX_TAPS:
                sizes[int(np.argmax(sizes))] -= 1
            kw["size"] = sizes if nax > 1 or draw(st.booleans()) else sizes[0]
            if draw(st.booleans()):
                kw["origin"] = [draw(st.integers(-(s // 2), (s - 1) // 2)) for s in sizes]
        elif fn in ("gaussian_filter", "gaussian_laplace", "gaussian_gradient_magnitude"):
            if nax > 1 and draw(st.booleans()):
                sig = [_sigma(draw, ndim) for _ in filtered]
                if fn == "gaussian_filter" and draw(st.integers(0, 3)) == 0:
                    sig[draw(st.integers(0, nax - 1))] = 0.0  # an axis scipy skips
                kw["sigma"] = sig
            else:
                kw["sigma"] = _sigma(draw, ndim)
            if fn == "gaussian_filter" and draw(st.booleans()):
                kw["order"] = [draw(st.integers(0, 2)) for _ in filtered]
            if fn == "gaussian_filter" and draw(st.integers(0, 3)) == 0:
                kw["radius"] = [draw(st.integers(0, 4)) for _ in filtered]
            elif draw(st.booleans()):
                kw["truncate"] = draw(st.sampled_from([1.0, 2.5, 4.0]))
        mode = _mode(draw, nax)
    kw["mode"] = mode
    constant = any(
        m in ("constant", "grid-constant") for m in ([mode] if isinstance(mode, str) else mode)
    )
    if constant and draw(st.booleans()):
        kw["cval"] = draw(st.sampled_from([1.5, -2.25, 100.0]))
    # output
    out_kinds = ["none", "none", "dtype", "dtype", "array", "strided"]
    if x.dtype.isnative and x.dtype.kind != "b" and x.flags.writeable and backend != "dask":
        out_kinds.append("inplace")  # output=input (dask would read chunks it has written)
    if x.dtype.kind == "b":
        out_kinds = ["dtype", "array"]  # bool -> bool: no reference (scipy's rule is unclear)
    out_kind = draw(st.sampled_from(out_kinds))
    out_dtype = None
    if out_kind == "dtype":
        out_dtype = draw(st.sampled_from(OUTPUT_DTYPES))
    elif out_kind in ("array", "strided"):
        pool = OUTPUT_DTYPES if backend in TORCH_LIKE else OUTPUT_ARRAY_DTYPES
        out_dtype = draw(st.sampled_from(pool))
    elif out_kind == "inplace":
        out_dtype = str(x.dtype)
    chunks = None
    if backend == "dask":
        chunks = tuple(draw(st.integers(1, max(1, n))) for n in x.shape)
    return Case(
        fn=fn,
        backend=backend,
        x=x,
        x_expr=x_expr,
        kwargs=kw,
        extra=extra,
        out_kind=out_kind,
        out_dtype=out_dtype,
        chunks=chunks,
        nonfinite=nonfinite,
        filtered_axes=filtered,
        axis_modes=_axis_modes(
            mode, filtered if fn not in ("sobel", "prewitt") else tuple(range(ndim))
        ),
    )


# ----------------------------------------------------------------------------------------------
# the reference (scipy.ndimage in float64, or the dense correlation where sepconv is exact)
# ----------------------------------------------------------------------------------------------


def _scipy_whole(case: Case):
    """scipy's filter as ``f(x64, mode, cval)`` in float64."""
    kw = dict(case.kwargs)
    kw.pop("mode")
    kw.pop("cval", None)
    if "axes" in kw:  # scipy 1.17's correlate refuses axes=-1 (an int): pass the list
        kw["axes"] = list(case.filtered_axes)
    f = getattr(ndimage, case.fn)

    def whole(a, mode, cval):
        return f(a, **kw, output=np.float64, mode=mode, cval=cval)

    return whole


def _scipy_terms(case: Case) -> tuple[list[Any], str]:
    """The filter as linear terms ``f(x64, mode, cval)`` (scipy filters) and how to combine
    them: ``sum``, or ``norm`` for the gradient magnitude.

    ``gaussian_laplace`` and ``gaussian_gradient_magnitude`` are always built here from
    ``gaussian_filter`` terms: scipy 1.17's own versions ignore ``axes`` for the smoothing
    (``sigma`` goes to every axis of the input, and a per-axis ``sigma`` must have ``ndim``
    entries) and use ``mode[i]`` for every axis of term ``i``, while sepconv (and scipy's
    documentation, "the axes over which to apply the filter") filters only ``axes``, each
    with its own mode."""
    fn, kw = case.fn, case.kwargs
    if fn == "gaussian_laplace" or fn == "gaussian_gradient_magnitude":
        axes = case.filtered_axes
        sig = kw["sigma"]
        sigmas = sig if isinstance(sig, list) else [sig] * len(axes)
        trunc = kw.get("truncate", 4.0)
        d = 2 if fn == "gaussian_laplace" else 1
        terms = []
        for i in range(len(axes)):
            orders = [d if j == i else 0 for j in range(len(axes))]

            def term(a, mode, cval, orders=orders):
                return ndimage.gaussian_filter(
                    a, sigmas, orders, np.float64, mode, cval, trunc, axes=axes
                )

            terms.append(term)
        return terms, "sum" if fn == "gaussian_laplace" else "norm"
    return [_scipy_whole(case)], "sum"


def _reach(case: Case) -> dict[int, int]:
    """An upper bound of the kernel's extent (either side) along each filtered axis."""
    kw = case.kwargs
    if case.fn in ("sobel", "prewitt", "laplace"):
        return dict.fromkeys(case.filtered_axes, 1)
    if case.fn in ("correlate", "convolve"):
        return {a: k for a, k in zip(case.filtered_axes, kw["weights"].shape, strict=True)}
    if case.fn in ("correlate1d", "convolve1d"):
        return {case.filtered_axes[0]: len(kw["weights"])}
    if case.fn == "uniform_filter1d":
        return {case.filtered_axes[0]: kw["size"]}
    if case.fn == "uniform_filter":
        s = kw["size"]
        sizes = s if isinstance(s, list) else [s] * len(case.filtered_axes)
        return dict(zip(case.filtered_axes, sizes, strict=True))
    return {a: r + 1 for a, r in _gaussian_radii(case).items()}


def _gaussian_radii(case: Case) -> dict[int, int]:
    """Radius of the Gaussian pass along each filtered axis (sigma 0: no pass)."""
    kw = case.kwargs
    n = len(case.filtered_axes)
    sig = kw["sigma"]
    sigmas = sig if isinstance(sig, list) else [sig] * n
    rad = kw.get("radius")
    radii = rad if isinstance(rad, list) else [rad] * n
    trunc = kw.get("truncate", 4.0)
    return {
        a: r if r is not None else int(trunc * s + 0.5)
        for a, s, r in zip(case.filtered_axes, sigmas, radii, strict=True)
        if s > 1e-15
    }


def _impulse(term, ndim: int, reach: dict[int, int]) -> tuple[np.ndarray, list[int]]:
    """Impulse response of a linear filter (constant 0 border) on a grid reaching ``reach``
    either side of the centre ``L``; the correlation weight at offset ``d`` (output ``i``
    reads input ``i + d``) is ``resp[L - d]``."""
    L = [reach.get(a, 0) for a in range(ndim)]
    grid = np.zeros([2 * r + 1 for r in L])
    grid[tuple(L)] = 1.0
    return term(grid, "constant", 0.0), L


def _pass_radius(case: Case) -> dict[int, int]:
    """Half-width of the 1-D passes scipy runs along each axis (gaussians, sobel/prewitt)."""
    if case.fn in ("sobel", "prewitt"):
        return dict.fromkeys(range(case.x.ndim), 1)
    if not case.fn.startswith("gaussian"):
        return {}
    return _gaussian_radii(case)


def _nonzero_taps(resp: np.ndarray, L: list[int]):
    """The nonzero weights and their offsets (scipy's N-D correlate skips zero weights)."""
    idx = np.nonzero(resp)
    offsets = np.stack([L[a] - idx[a] for a in range(resp.ndim)], axis=1)
    return offsets, resp[idx]


def _box_taps(resp: np.ndarray, L: list[int], radius: dict[int, int]):
    """Every offset in the box a chain of 1-D passes reads (the nonzero weights' bounding box
    and each pass's full width), zero weights included: scipy's correlate1d multiplies every
    tap, so 0 * NaN is NaN there, unlike scipy's N-D correlate, which skips zero weights."""
    ndim = resp.ndim
    nz = np.nonzero(resp)
    ranges = []
    for a in range(ndim):
        lo = -radius.get(a, 0)
        hi = radius.get(a, 0)
        if len(nz[a]):
            lo = min(lo, L[a] - int(nz[a].max()))
            hi = max(hi, L[a] - int(nz[a].min()))
        ranges.append(np.arange(lo, hi + 1))
    grids = np.meshgrid(*ranges, indexing="ij")
    offsets = np.stack([g.ravel() for g in grids], axis=1)
    weights = resp[tuple(np.asarray(L)[a] - offsets[:, a] for a in range(ndim))]
    return offsets, weights


def _dense_correlate(x64, offsets, weights, case: Case, cval: float) -> np.ndarray:
    """sum_d w[d] * padded(x)[i + d] with the input padded once per axis (np.pad); every
    listed tap is multiplied, zero weights included."""
    ndim = x64.ndim
    if x64.size == 0:
        return np.zeros(x64.shape)
    pads = [int(np.abs(offsets[:, a]).max()) if len(offsets) else 0 for a in range(ndim)]
    P = x64
    for a in range(ndim):
        if pads[a] == 0:
            continue
        mode = NP_PAD[case.axis_modes[a]]
        width = [(0, 0)] * ndim
        width[a] = (pads[a], pads[a])
        if mode == "constant":
            P = np.pad(P, width, mode="constant", constant_values=cval)
        else:
            P = np.pad(P, width, mode=mode)
    out = np.zeros(x64.shape)
    for d, w in zip(offsets, weights, strict=True):
        sl = tuple(slice(pads[a] + d[a], pads[a] + d[a] + x64.shape[a]) for a in range(ndim))
        out += w * P[sl]
    return out


def _multipass_in_scipy(case: Case) -> bool:
    """scipy runs this filter as several 1-D passes (each re-padded with cval)."""
    kw = case.kwargs
    if case.fn in ("sobel", "prewitt"):
        return case.x.ndim > 1
    if case.fn == "gaussian_filter":
        sig = kw["sigma"]
        sigmas = sig if isinstance(sig, list) else [sig] * len(case.filtered_axes)
        return sum(s > 1e-15 for s in sigmas) > 1
    if case.fn == "uniform_filter":
        s = kw["size"]
        sizes = s if isinstance(s, list) else [s] * len(case.filtered_axes)
        return sum(v > 1 for v in sizes) > 1
    if case.fn in ("gaussian_laplace", "gaussian_gradient_magnitude"):
        return len(case.filtered_axes) > 1
    return False


def reference(case: Case, x64: np.ndarray) -> tuple[np.ndarray, float, str]:
    """(float64 reference, sum of |taps| over all terms, which reference was used)."""
    terms, combine = _scipy_terms(case)
    reach = _reach(case)
    impulses = [_impulse(t, x64.ndim, reach) for t in terms]
    wsum = float(sum(np.abs(resp).sum() for resp, _ in impulses))
    cval = float(case.kwargs.get("cval", 0.0))
    per_axis_dense = case.fn in ("correlate", "convolve") and not isinstance(
        case.kwargs["mode"], str
    )  # scipy's N-D correlate takes a single mode
    dense = (
        per_axis_dense
        or (cval != 0 and _multipass_in_scipy(case))
        or (case.fn.startswith("uniform_filter") and case.nonfinite != "none")
    )
    if not dense and case.fn not in ("gaussian_laplace", "gaussian_gradient_magnitude"):
        ref = _scipy_whole(case)(x64, case.kwargs["mode"], cval)
        how = f"scipy.ndimage.{case.fn}(x.astype(np.float64), output=np.float64, ...)"
        return np.asarray(ref, dtype=np.float64), wsum, how
    if not dense:
        parts = [t(x64, case.kwargs["mode"], cval) for t in terms]
        how = f"{case.fn} as scipy.ndimage.gaussian_filter terms (order 1 or 2 per axis)"
    else:
        if per_axis_dense:  # scipy.ndimage.correlate's rule: zero weights are skipped
            taps = [_nonzero_taps(resp, L) for resp, L in impulses]
        else:  # a chain of 1-D passes (scipy's correlate1d) multiplies every tap
            radius = _pass_radius(case)
            taps = [_box_taps(resp, L, radius) for resp, L in impulses]
        parts = [_dense_correlate(x64, off, w, case, cval) for off, w in taps]
        how = "dense correlation of the input padded once (np.pad), scipy impulse response"
    if combine == "norm":
        with np.errstate(invalid="ignore", over="ignore"):
            ref = np.sqrt(sum(p * p for p in parts))
    else:
        with np.errstate(invalid="ignore"):
            ref = sum(parts[1:], parts[0])
    return np.asarray(ref, dtype=np.float64), wsum, how


def _work_eps(case: Case) -> float:
    dt = case.x.dtype
    f32 = (dt.kind == "f" and dt.itemsize == 4) or (dt.kind in "iub" and dt.itemsize == 1)
    return float(np.finfo(np.float32 if f32 else np.float64).eps)


def _taps_count(case: Case, reach: dict[int, int]) -> int:
    if case.fn in ("correlate", "convolve"):
        return int(case.kwargs["weights"].size)
    return int(sum(2 * r + 1 for r in reach.values())) * max(1, len(case.filtered_axes))


def tolerance(case: Case, x64: np.ndarray, ref: np.ndarray, wsum: float) -> np.ndarray:
    finite = x64[np.isfinite(x64)]
    xmax = float(np.abs(finite).max()) if finite.size else 0.0
    cval = abs(float(case.kwargs.get("cval", 0.0)))
    scale = wsum * max(xmax, cval, 1e-300)
    eps = _work_eps(case)
    ntaps = _taps_count(case, _reach(case))
    rel = eps * (8 + 2 * ntaps)
    if case.fn in ("correlate", "convolve") and case.extra.get("method", "auto") in (
        "auto",
        "separable",
        "lowrank",
    ):
        # a factorized plan adds the fit's rounding (an "exact" SVD/CP fit reproduces the
        # kernel to ~10 eps) and rounding in separable terms that partly cancel: 50 eps of
        # max|x| * sum|w| was seen for a rank-3 2x4x2 kernel
        rel *= FACTORIZED_ERROR
    if case.extra.get("method") == "fft" or (
        case.fn in ("correlate", "convolve") and case.extra.get("method", "auto") == "auto"
    ):
        npad = math.prod(n + k for n, k in zip(x64.shape, _full_kshape(case), strict=True))
        rel = max(rel, eps * FFT_ERROR * (math.log2(npad) + 2))
    tol = np.full(ref.shape, rel * scale)
    if np.dtype(case.expected_dtype()).itemsize == 4 and case.expected_dtype().kind == "f":
        with np.errstate(invalid="ignore"):
            tol = tol + np.where(np.isfinite(ref), np.abs(ref), 0) * float(np.finfo(np.float32).eps)
    return tol


def _full_kshape(case: Case) -> list[int]:
    shape = [1] * case.x.ndim
    if case.fn in ("correlate", "convolve"):
        for a, k in zip(case.filtered_axes, case.kwargs["weights"].shape, strict=True):
            shape[a] = k
    return shape


# ----------------------------------------------------------------------------------------------
# running sepconv and comparing
# ----------------------------------------------------------------------------------------------


def run_sepconv(case: Case) -> tuple[Any, Any, np.ndarray]:
    """(returned object, the output argument, the result as a numpy array)."""
    x = case.x
    if case.backend == "dask":
        import dask.array as da

        xin: Any = da.from_array(x, chunks=case.chunks)
    elif case.backend in TORCHES:
        import torch

        xin = torch.from_numpy(x)
    elif case.backend == "cupy":
        xin = x.view(FakeArray)
    else:
        xin = x
    output: Any = None
    if case.out_kind == "dtype":
        output = np.dtype(case.out_dtype)
    elif case.out_kind in ("array", "strided"):
        shape = x.shape
        if case.out_kind == "array":
            output = np.zeros(shape, dtype=case.out_dtype)
        else:
            output = np.zeros((*shape[:-1], 2 * shape[-1]), dtype=case.out_dtype)[..., ::2]
        if case.backend in TORCHES:
            import torch

            output = torch.from_numpy(output)
        elif case.backend == "cupy":
            output = output.view(FakeArray)
    elif case.out_kind == "inplace":
        output = xin
    before = os.environ.get("SEPCONV_TORCH_ENGINE")
    cupy_before = sys.modules.get("cupy")
    if case.backend in ("triton", "cupy"):
        os.environ["SEPCONV_TORCH_ENGINE"] = "triton"
    if case.backend == "cupy":
        sys.modules["cupy"] = fake_cupy()
    try:
        # the interpreter computes with numpy, which warns of inf - inf (a GPU does not)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            res = getattr(sepconv, case.fn)(xin, **case.kwargs, output=output, **case.extra)
    finally:
        if before is None:
            os.environ.pop("SEPCONV_TORCH_ENGINE", None)
        else:
            os.environ["SEPCONV_TORCH_ENGINE"] = before
        if case.backend == "cupy":
            if cupy_before is None:
                del sys.modules["cupy"]
            else:
                sys.modules["cupy"] = cupy_before
    if case.backend == "cupy":
        assert type(res) is FakeArray, f"a cupy input returned {type(res).__name__}"
    target = output if case.out_kind in ("array", "strided", "inplace") else res
    if case.backend == "dask" and case.out_kind in ("none", "dtype"):
        target = res.compute()
    if case.backend in TORCHES:
        target = target.numpy()
    return res, output, np.asarray(target)


def _fmt_index(i) -> str:
    return "(" + ", ".join(str(int(v)) for v in i) + ")"


@contextlib.contextmanager
def fixed_point_plans() -> Iterator[list[float]]:
    """The error bounds (output LSB) of the ``engine.fixed`` plans made in the block: the
    plans of the jobs the fixed-point engine runs (the numpy backend asks for one exactly
    when it runs a job there)."""
    from sepconv.engine import fixed

    bounds: list[float] = []
    original = fixed.plan

    def spy(*args: Any, **kwargs: Any) -> Any:
        made = original(*args, **kwargs)
        if made is not None:
            bounds.append(float(made.error))
        return made

    fixed.plan = spy
    try:
        yield bounds
    finally:
        fixed.plan = original


def check(case: Case) -> None:
    x_before = case.x.copy()
    x64 = case.x.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        ref, wsum, how = reference(case, x64)
    header = (
        f"\n--- repro ({case.backend} backend) ---\n{case.repro()}\n---\n"
        f"input {case.x.dtype} shape {case.x.shape}, nonfinite={case.nonfinite}, "
        f"output {case.out_kind}:{case.out_dtype}; reference: {how}\n"
    )
    try:
        with fixed_point_plans() as bounds:
            res, output, got = run_sepconv(case)
    except Exception as exc:
        raise AssertionError(f"{header}raised {type(exc).__name__}: {exc}") from exc

    # the input is left alone (unless it is the output)
    if case.out_kind != "inplace":
        same = (case.x == x_before) | (
            (case.x != case.x) & (x_before != x_before) if case.x.dtype.kind == "f" else False
        )
        assert np.all(same), f"{header}the input was modified"
    if output is not None and case.out_kind != "dtype":
        assert res is output, f"{header}returned {type(res).__name__}, not the output array"
    want = case.expected_dtype()
    assert got.shape == case.x.shape, f"{header}shape {got.shape} != {case.x.shape}"
    assert got.dtype.newbyteorder("=") == want.newbyteorder("="), (
        f"{header}dtype {got.dtype} != {want}"
    )

    tol = tolerance(case, x64, ref, wsum)
    g = got.astype(np.float64)
    if want.kind in "iu" and bounds:
        # the fixed-point engine's promise: before rounding, within its plan's analytic bound
        # (< 0.5 LSB), so an exact value that close to a rounding boundary may round either way
        tol = tol + max(bounds)
        header += f"fixed-point plan error bound {max(bounds):.3g} LSB\n"
    if want.kind in "iu":
        info = np.iinfo(want)
        lo_b, hi_b = float(info.min), float(info.max)
        with np.errstate(invalid="ignore"):
            lo = np.clip(np.rint(ref - tol), lo_b, hi_b)
            hi = np.clip(np.rint(ref + tol), lo_b, hi_b)
            expect = np.clip(np.rint(ref), lo_b, hi_b)
            ok = ((g >= lo) & (g <= hi)) | np.isnan(ref)  # NaN has no integer reference
        diff = np.where(np.isnan(ref), 0, np.abs(g - expect))
        exp_show = expect
    else:
        with np.errstate(invalid="ignore"):
            diff = np.abs(g - ref)
            finite_ok = np.isfinite(ref) & np.isfinite(g) & (diff <= tol)
            nan_ok = np.isnan(ref) & np.isnan(g)
            inf_ok = np.isinf(ref) & (g == ref)
            # a finite reference beyond the output dtype's range is an infinity of its sign
            # there (within tol of the range's end: either)
            top = float(np.finfo(want).max)
            signed_inf = np.isinf(g) & (np.sign(g) == np.sign(ref))
            beyond = np.isfinite(ref) & (np.abs(ref) >= top - tol) & signed_inf
            ok = finite_ok | nan_ok | inf_ok | beyond
        exp_show = ref
    if not ok.all():
        bad = np.argwhere(~ok)
        with np.errstate(invalid="ignore"):
            d = np.where(~ok, np.where(np.isnan(diff), np.inf, diff), -1)
        worst = np.unravel_index(int(np.argmax(d)), d.shape)
        raise AssertionError(
            f"{header}{len(bad)} of {ok.size} elements wrong; worst at {_fmt_index(worst)}: "
            f"got {got[worst]!r}, expected {exp_show[worst]!r} (scipy float64 {ref[worst]!r}, "
            f"tol {tol[worst]:.3g}), max abs diff {float(d.max()):.4g}; "
            f"first wrong at {_fmt_index(bad[0])}"
        )


def make_case(
    fn: str,
    x: np.ndarray,
    backend: str = "numpy",
    output: str | None = None,
    chunks: tuple[int, ...] | None = None,
    **kwargs: Any,
) -> Case:
    """A hand-written case (C-contiguous x): ``output`` is None, a dtype name, or
    ``"array:<dtype>"`` for an output array; ``method`` goes to sepconv only."""
    ndim = x.ndim
    extra = {"method": kwargs.pop("method")} if "method" in kwargs else {}
    kwargs.setdefault("mode", "reflect")
    if fn in ("correlate1d", "convolve1d", "uniform_filter1d", "gaussian_filter1d"):
        filtered: tuple[int, ...] = (kwargs.get("axis", -1) % ndim,)
    elif fn in ("sobel", "prewitt"):
        filtered = tuple(range(ndim))
    else:
        axes = kwargs.get("axes")
        axes = range(ndim) if axes is None else [axes] if isinstance(axes, int) else axes
        filtered = tuple(a % ndim for a in axes)
    out_kind, out_dtype = "none", None
    if output is not None:
        out_kind, _, out_dtype = output.rpartition(":")
        out_kind = out_kind or "dtype"
    return Case(
        fn=fn, backend=backend, x=x, x_expr=_lit(x), kwargs=kwargs, extra=extra,
        out_kind=out_kind, out_dtype=out_dtype, chunks=chunks,
        nonfinite="none" if np.isfinite(x.astype(np.float64)).all() else "nan",
        filtered_axes=filtered, axis_modes=_axis_modes(kwargs["mode"], filtered),
    )  # fmt: skip


_U8 = np.array([[0, 200, 30, 7], [250, 10, 90, 255], [5, 255, 128, 0]], dtype=np.uint8)
_NAN = np.arange(30.0).reshape(5, 6)
_NAN[1, 2] = np.nan
_K33 = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75], [1.0, 3.0, -2.0]])

#: one small case per failure class the fuzz found (issue #10), each a one-line repro
_W_INTEGER_FACTORS = np.array(
    [[0.04168609529733658, 1.9185419082641602, 0.10219995677471161]], dtype=np.float32
)
_K_CP_INTEGERS = np.array(
    [[[-2, -2, -6, -6, 10], [4, -2, 6, 12, -14]], [[4, -8, 0, 12, -8], [-2, 4, 0, -6, 4]],
     [[6, -6, 6, 18, -18], [-6, 6, -6, -18, 18]], [[-6, 8, -4, -18, 16], [5, -6, 4, 15, -14]]],
    dtype=np.float32,
)  # fmt: skip

FOUND = {
    # unsigned 8/16-bit input, antisymmetric pass along an outer axis: garbage
    "sobel-uint8-axis0": lambda: make_case("sobel", _U8, axis=0),
    "prewitt-uint16-axis0-int32": lambda: make_case(
        "prewitt", _U8.astype(np.uint16) * 257, axis=0, output="int32"
    ),
    "ggm-uint16": lambda: make_case(
        "gaussian_gradient_magnitude", _U8.astype(np.uint16), sigma=1.0
    ),
    # saturation at the top of integer ranges wrapped to the bottom
    "int64-near-max": lambda: make_case(
        "uniform_filter1d", np.full(5, 2**63 - 1, dtype=np.int64) - np.arange(5), size=3
    ),
    "inf-to-int64": lambda: make_case(
        "correlate1d", np.array([1.0, np.inf, -2.0]), weights=np.array([1.0]), output="int64"
    ),
    "torch-float32-to-uint32": lambda: make_case(
        "correlate1d",
        np.array([3.0, 1e30], dtype=np.float32),
        backend="torch",
        weights=np.array([1.0]),
        output="uint32",
    ),
    # an exact value 0.0027 LSB from a rounding boundary (36.5027): the fixed-point plan's bound
    # is 0.0051 LSB, so 36 and 37 both keep its promise (found by a random draw)
    "fixed-point-near-tie": lambda: make_case(
        "gaussian_filter1d",
        np.array([[207, 235, 15, 163], [39, 185, 216, 73]], dtype=np.uint8),
        sigma=0.5,
        axis=0,
    ),
    # the exact integer factors of a float32 kernel (2**-27 * [5595013, 257502336, 13717046])
    # run unscaled overflowed float32 data of 1e30
    "integer-factors-float32-1e30": lambda: make_case(
        "correlate",
        np.array([[1.3e29, -1.3e29, 6.4e29, 1.0e29, -5.4e29, 3.6e29, 1.3e30]], dtype=np.float32),
        backend="torch",
        weights=_W_INTEGER_FACTORS,
        method="lowrank",
    ),
    # an integer result of a float32 kernel's CP fit, exact only to float32 rounding: off by 1
    "float32-kernel-cp-uint16": lambda: make_case(
        "correlate",
        np.array([[[33375, 55746], [60367, 41743]]], dtype=np.uint16),
        weights=_K_CP_INTEGERS,
        method="lowrank",
    ),
    # a float32 kernel's CP fit exact only to float32 rounding (1.6e-7): a float32 result of
    # uint16 data (computed in float64) 1.7e-3 off; the fit is now polished toward float64
    "float32-kernel-cp-polish": lambda: make_case(
        "correlate",
        np.array([[[85]]], dtype=np.uint16),
        weights=np.array([[[18, 18], [0, 0]], [[-36, -12], [12, -4]]], dtype=np.float32),
        output="float32",
        method="lowrank",
    ),
    # NaN spread through FFT plans
    "nan-fft": lambda: make_case("correlate", _NAN, weights=_K33, method="fft"),
    # big-endian integers in, or a big-endian output array: numba TypingError
    "big-endian-int16-input": lambda: make_case("gaussian_filter", _U8.astype(">i2"), sigma=1.0),
    "big-endian-output-array": lambda: make_case(
        "correlate", _NAN.copy(), weights=_K33, mode="nearest", output="array:>i2"
    ),
    # bool input refused
    "bool-input": lambda: make_case("sobel", _U8 > 100, output="float64"),
    # torch FFT of a 1-element kernel: negative strides handed to torch.from_numpy
    "torch-fft-1x1": lambda: make_case(
        "correlate",
        np.array([65], dtype=np.int8),
        backend="torch",
        weights=np.array([0.72]),
        method="fft",
        output="uint8",
    ),
    # dask: NaN into an integer output warned (RuntimeWarning: invalid value in cast)
    "dask-nan-to-int": lambda: make_case(
        "uniform_filter1d",
        np.array([1.0, np.nan, 3.0]),
        backend="dask",
        chunks=(2,),
        size=1,
        output="array:int16",
    ),
    # an empty filtered axis in 'nearest' mode: ValueError "negative dimensions"
    "empty-axis-nearest": lambda: make_case(
        "correlate1d", np.empty((0, 3)), weights=np.array([1.0, 2.0]), axis=0, mode="nearest"
    ),
    # a kernel longer than a short axis with its taps folded: inf * sum(w) is -inf where
    # scipy's tap-by-tap sum (inf * w1 + inf * w2, opposite signs) is NaN
    "short-axis-inf-fold": lambda: make_case(
        "gaussian_filter1d", np.array([np.inf]), sigma=2.0, order=2, mode="nearest"
    ),
    # float32 gradient magnitude squares overflow (1e30**2 > float32 max): inf + RuntimeWarning
    "ggm-float32-overflow": lambda: make_case(
        "gaussian_gradient_magnitude",
        np.array([1e30, -1e30, 3e30, 0.0, 2e30], dtype=np.float32),
        sigma=1.0,
    ),
}


@pytest.mark.engine
@pytest.mark.parametrize("name", sorted(FOUND))
def test_found_cases_match_scipy(name: str) -> None:
    case = FOUND[name]()
    have = {
        "numpy": True,
        "dask": HAVE_DASK,
        "torch": HAVE_TORCH,
        "triton": HAVE_TRITON,
        "cupy": HAVE_TRITON,
    }
    if not have[case.backend]:
        pytest.skip(f"{case.backend} is not installed")
    check(case)


# ----------------------------------------------------------------------------------------------
# the tests
# ----------------------------------------------------------------------------------------------


@pytest.mark.engine
@_fuzz_settings(N_EXAMPLES)
@given(case=cases("numpy"))
def test_numpy_filters_match_scipy_ndimage(case: Case) -> None:
    check(case)


@pytest.mark.engine
@pytest.mark.skipif(not HAVE_DASK, reason="dask is not installed")
@_fuzz_settings(N_EXAMPLES // 5)
@given(case=cases("dask"))
def test_dask_filters_match_scipy_ndimage(case: Case) -> None:
    check(case)


@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
@_fuzz_settings(N_EXAMPLES // 5)
@given(case=cases("torch"))
def test_torch_cpu_filters_match_scipy_ndimage(case: Case) -> None:
    check(case)


@pytest.mark.skipif(not HAVE_TRITON, reason="torch and triton are not installed")
@_fuzz_settings(max(N_EXAMPLES // 20, 10))
@given(case=cases("triton"))
def test_triton_engine_filters_match_scipy_ndimage(case: Case) -> None:
    """The GPU engine's path (CUDA tensors run it; here CPU tensors in Triton's interpreter,
    so fewer examples: each call is slow)."""
    check(case)


@pytest.mark.skipif(not HAVE_TRITON, reason="torch and triton are not installed")
@_fuzz_settings(max(N_EXAMPLES // 20, 10))
@given(case=cases("cupy"))
def test_cupy_arrays_match_scipy_ndimage(case: Case) -> None:
    """CuPy arrays (a stand-in: numpy memory through DLPack) on the GPU engine's path."""
    check(case)


@pytest.mark.engine
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fft_error_is_relative_to_the_largest_value(dtype: str) -> None:
    """FFT's rounding error scales with the array's largest value, not with each output: far
    from a 1e8 spike, outputs of size ~1 may be off by ~1e-8 (float64). The fuzz tolerance
    for FFT plans (FFT_ERROR) holds here, and the direct method keeps local precision."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 64)).astype(dtype)
    x[5, 7] = 1e8
    K = rng.standard_normal((7, 7))
    ref = ndimage.correlate(x.astype(np.float64), K)
    eps = float(np.finfo(dtype).eps)
    wsum = float(np.abs(K).sum())
    npad = (64 + 6) ** 2
    fft = sepconv.correlate(x, K, method="fft").astype(np.float64)
    fft_err = float(np.abs(fft - ref).max())
    assert fft_err <= FFT_ERROR * eps * (math.log2(npad) + 2) * wsum * 1e8, fft_err
    far = np.ones(ref.shape, dtype=bool)
    far[: 5 + 4, : 7 + 4] = False  # outputs whose 7x7 window misses the spike
    local = wsum * float(np.abs(np.where(far, x, 0)).max())
    direct = sepconv.correlate(x, K, method="direct").astype(np.float64)
    direct_err = float(np.abs(direct - ref)[far].max())
    assert direct_err <= eps * (8 + 2 * K.size) * local, direct_err
