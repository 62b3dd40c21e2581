"""The work a filter hands to a backend: one small value, built in one place.

Every public filter turns its arguments into a :class:`Job` and hands it, with the input,
the result's dtype, an ``output`` array (or None) and ``workers``, to the backend of the
input's array library (:mod:`sepconv.backends`). A job is either

* a sum of **separable terms**, ``sum_r weight_r * (passes_r applied to x)``, each pass a 1-D
  correlation ``(axis, weights, origin)``; or
* a **dense kernel** run by direct correlation or FFT over ``axes`` with ``origins``;

with the border ``modes`` per filtered axis, ``cval``, and a ``reduction``: ``'sum'`` adds
the terms, ``'hypot'`` combines them as the root of the sum of their squares (Gaussian
gradient magnitude). A job of terms may also carry the dense ``kernel`` the terms factorize
(``correlate``): then NaN/Inf data gets that kernel's direct correlation, whatever runs.

Two rules every executor follows are written here once:

* **pass order**: the passes of a term run in increasing axis order (:func:`ordered`);
* **cval carry**: in constant mode the padded input of a 2-D filter is ``cval`` outside the
  data, so after a pass with weights ``w`` the right padding for the next pass is
  ``cval * sum(w)`` (:func:`carry`), which makes separable passes equal the dense
  correlation exactly for any ``cval`` (scipy re-pads every pass with ``cval``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ._modes import fold_pass

__all__ = [
    "REDUCTIONS",
    "Job",
    "Pass",
    "Term",
    "carry",
    "chain",
    "dense_job",
    "halos",
    "ordered",
    "stages",
    "terms_job",
]

#: A 1-D correlation pass: ``(axis, weights, origin)``.
Pass = tuple[int, np.ndarray, int]
#: A separable term: ``(weight, passes)``.
Term = tuple[float, Sequence[Pass]]
#: How the results of a job's terms are combined.
REDUCTIONS = ("sum", "hypot")


def ordered(passes: Sequence[Pass]) -> list[Pass]:
    """The passes of one term in the order they run: increasing axis."""
    return sorted(passes, key=lambda p: p[0])


def stages(passes: Sequence[Pass], ndim: int, fuse_max: int | None = None) -> list[list[Pass]]:
    """The passes of one term in running order, grouped into the stages an engine runs: one
    pass each, except the last two when they run along the last two axes of an ``ndim``-D
    array (and have at most ``fuse_max`` taps each, when given): one fused 2-D stage."""
    run = ordered(passes)
    out = [[p] for p in run]
    if len(run) >= 2 and run[-1][0] == ndim - 1 and run[-2][0] == ndim - 2:
        if fuse_max is None or max(len(run[-1][1]), len(run[-2][1])) <= fuse_max:
            out = [*out[:-2], list(run[-2:])]
    return out


def carry(cval: float, weights: np.ndarray) -> float:
    """The constant-mode padding value after a pass with ``weights`` (``cval * sum(w)``).

    A NaN or infinite ``cval`` is read through the non-zero taps one by one, as the dense
    correlation reads it: ``inf`` through taps of both signs is NaN. (``inf * sum(w)`` would
    take its sign from the rounding residue of an antisymmetric derivative's sum.)
    """
    if math.isfinite(cval):
        return cval * float(np.sum(weights))
    w = np.asarray(weights, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return float(np.sum(cval * w[w != 0]))


def chain(passes: Sequence[Pass], cval: float) -> Iterator[tuple[Pass, float]]:
    """``(pass, cval it pads with)`` in running order, the cval carried from pass to pass."""
    c = cval
    for p in ordered(passes):
        yield p, c
        c = carry(c, p[1])


def halos(passes: Sequence[Pass]) -> dict[int, tuple[int, int]]:
    """Samples read before and after each output, per axis, by a chain of passes."""
    out: dict[int, tuple[int, int]] = {}
    for axis, w, origin in passes:
        left = len(w) // 2 + origin
        lo, hi = out.get(axis, (0, 0))
        out[axis] = (lo + left, hi + len(w) - 1 - left)
    return out


@dataclass(frozen=True, eq=False)
class Job:
    """What to compute; see the module docstring.

    Attributes
    ----------
    terms : tuple of (weight, tuple of (axis, weights, origin))
        Separable terms (empty for a dense job).
    modes : mapping of axis -> canonical mode
        Border rule per filtered axis (``_modes.MODES`` values).
    cval : float
        Value beyond the border in constant mode (may be NaN or Inf); ``cval_imag`` holds the
        imaginary part of a complex one.
    method : {'passes', 'direct', 'fft', 'recursive'}
        How a dense ``kernel`` runs; ``'passes'`` runs the terms; ``'recursive'`` runs the
        one term's Gaussian passes as IIR filters (``gaussians``; numpy backend only, chosen
        by :func:`sepconv.plan.plan_passes` within a caller's ``tol``).
    kernel : ndarray or None
        The dense kernel (float64, one axis per entry of ``axes``): run by 'direct'/'fft', or
        the kernel the terms factorize, whose direct correlation NaN/Inf data must get.
    axes, origins : tuple of int
        Axes of ``kernel`` and its origin on each.
    reduction : {'sum', 'hypot'}
        How the terms' results combine.
    macs : float
        Multiply-adds per output element (sets the thread count).
    """

    terms: tuple[Term, ...]
    modes: dict[int, str]
    cval: float
    method: str = "passes"
    kernel: np.ndarray | None = None
    axes: tuple[int, ...] = ()
    origins: tuple[int, ...] = ()
    reduction: str = "sum"
    macs: float = field(default=0.0)
    #: Imaginary part of a complex ``cval`` (complex data: ``sepconv.filters`` runs the real
    #: and imaginary parts as real jobs; backends only ever see ``cval_imag == 0``).
    cval_imag: float = 0.0
    #: ``(axis, sigma, order)`` of each Gaussian pass, for ``method='recursive'``.
    gaussians: tuple[tuple[int, float, int], ...] = ()

    def __post_init__(self) -> None:
        if self.method not in (
            "passes",
            "direct",
            "fft",
            "recursive",
        ):  # pragma: no cover - internal
            raise ValueError(f"unknown job method {self.method!r}")
        if self.reduction not in REDUCTIONS:  # pragma: no cover - internal
            raise ValueError(f"unknown reduction {self.reduction!r}")
        if not self.macs:
            macs = sum(len(w) for _, passes in self.terms for _, w, _ in passes)
            if self.kernel is not None and self.dense:
                macs = self.kernel.size
            object.__setattr__(self, "macs", float(max(1, macs)))

    def dense_kernel(self) -> np.ndarray:
        """The dense kernel (a job of terms without one has none to give)."""
        if self.kernel is None:  # pragma: no cover - internal
            raise ValueError("this job has no dense kernel")
        return self.kernel

    @property
    def dense(self) -> bool:
        """Whether the dense kernel runs (direct or FFT) rather than the terms."""
        return self.method in ("direct", "fft")

    def halos(self) -> dict[int, tuple[int, int]]:
        """Samples read before and after each output per axis (the widest over the terms,
        or the dense kernel's)."""
        if self.dense:
            assert self.kernel is not None
            return {
                a: (k // 2 + o, k - 1 - (k // 2 + o))
                for a, k, o in zip(self.axes, self.kernel.shape, self.origins, strict=True)
            }
        out: dict[int, tuple[int, int]] = {}
        for _, passes in self.terms:
            for a, (lo, hi) in halos(passes).items():
                plo, phi = out.get(a, (0, 0))
                out[a] = (max(plo, lo), max(phi, hi))
        return out

    def folded(self, shape: Sequence[int], *, nonfinite: bool = False) -> Job:
        """The job with passes much longer than their axis folded onto the border extension
        (:func:`sepconv._modes.fold_pass`; exact for finite data). ``self`` if none is.

        With ``nonfinite`` (the data may hold NaN/Inf), only passes whose taps are all nonzero
        and of one sign are folded: summing such taps keeps every NaN and every signed
        infinity of the unfolded sum (``inf * w1 + inf * w2`` is ``inf * (w1 + w2)`` when
        ``w1`` and ``w2`` have one sign; a zero tap's ``inf * 0`` is NaN, so those are not
        folded). Gaussians and boxes are such passes: a huge ``sigma`` or ``size`` on lazy
        (dask) data, whose finiteness is unknown, costs what the axis length allows.
        """

        def fold(w: np.ndarray, o: int, a: int) -> tuple[np.ndarray, int]:
            if nonfinite and not (bool(np.all(w > 0)) or bool(np.all(w < 0))):
                return w, o
            return fold_pass(w, o, shape[a], self.modes[a])

        terms = tuple(
            (weight, tuple((a, *fold(w, o, a)) for a, w, o in passes))
            for weight, passes in self.terms
        )
        changed = any(
            len(f[1]) != len(p[1])
            for (_, fp), (_, pp) in zip(terms, self.terms, strict=True)
            for f, p in zip(fp, pp, strict=True)
        )
        return replace(self, terms=terms, macs=0.0) if changed else self


def terms_job(
    terms: Sequence[tuple[float, Sequence[Pass]]],
    modes: Mapping[int, str],
    cval: float | complex,
    *,
    reduction: str = "sum",
    kernel: np.ndarray | None = None,
    axes: Sequence[int] = (),
    origins: Sequence[int] = (),
    drop_deltas: bool = False,
    balance: bool = True,
) -> Job:
    """A job of separable terms.

    Passes with the single weight ``[1.0]`` change nothing and are dropped; with
    ``drop_deltas`` so is any centred unit impulse (``[0, 1, 0]``: the other axes of a named
    kernel such as ``laplace``, which scipy does not pass over at all -- a user's own 1-D
    weights are kept, as their zero taps read NaN like scipy's ``correlate1d``). Every pass
    is scaled by a power of two to an L1 norm in (0.5, 1] and its term's weight by the
    inverse (:func:`_balanced`: exact, and no pass result leaves the data's range), unless
    ``balance=False``: for passes an engine may replace by a formula of its own that reads
    the term's weight but not the taps (a recursive Gaussian).
    """
    clean = tuple(
        _balanced(
            float(weight),
            [(int(a), np.asarray(w, dtype=np.float64), int(o)) for a, w, o in passes],
            drop_deltas,
            balance,
        )
        for weight, passes in terms
    )
    return Job(
        clean or ((0.0, ()),),
        dict(modes),
        complex(cval).real,
        kernel=kernel,
        axes=tuple(axes),
        origins=tuple(origins),
        reduction=reduction,
        cval_imag=complex(cval).imag,
    )


def dense_job(
    kernel: np.ndarray,
    axes: Sequence[int],
    origins: Sequence[int],
    modes: Mapping[int, str],
    cval: float | complex,
    method: str,
) -> Job:
    """A job running a dense kernel by ``method`` ('direct' or 'fft')."""
    c = complex(cval)
    return Job(
        (), dict(modes), c.real, method, kernel, tuple(axes), tuple(origins), cval_imag=c.imag
    )


def _balanced(
    weight: float, passes: Sequence[Pass], drop_deltas: bool, balance: bool = True
) -> tuple[float, tuple[Pass, ...]]:
    """One term with every pass's taps scaled by a power of two to an L1 norm in (0.5, 1] and
    the weight by the product of the inverses; identity passes dropped (after scaling).

    Exact in binary floating point: every product and sum of a pass is scaled by a power of
    two, and the weight scales the result back, bit for bit (barring subnormal taps). What
    it changes is the range of the intermediates: no pass amplifies its input, so a float32
    computation overflows in between only where its result would. Integer factors (a float32
    kernel's exact ``2**-27 * outer([1], [5595013, 257502336, 13717046])``, or a Sobel
    kernel given to ``correlate``: ``[1, 2, 1]``) otherwise multiply the data by up to
    ``2**28`` before the weight brings it back: ``1.3e30`` in float32 read as ``inf``.
    """
    shifts = []
    for _, w, _ in passes:
        l1 = float(np.abs(w).sum())
        e = 0
        if balance and l1 > 0 and math.isfinite(l1):
            e = math.ceil(math.log2(l1))
            e -= 1 if math.ldexp(1.0, e - 1) >= l1 else 0  # log2 rounding at powers of two
            e += 1 if math.ldexp(1.0, e) < l1 else 0
        shifts.append(e)
    # The weight takes the sum of the shifts at once, and only as much of it as keeps it a
    # finite normal number (a 1.7e308 weight cannot take the 2**4 of two [1, 1, 1] passes,
    # though the filter's result is finite); the passes keep the rest of their scale, which
    # they had as given.
    total = sum(shifts)
    wexp = math.frexp(weight)[1] if weight != 0 and math.isfinite(weight) else 0
    hi, lo = 1024 - wexp, -1021 - wexp
    applied = min(total, hi) if total > 0 else max(total, min(lo, 0))
    excess = total - applied
    while excess:  # undo the unapplied part of the shifts that point its way, one at a time
        step = 1 if excess > 0 else -1
        for i, e in enumerate(shifts):
            if excess and e * step > 0:
                shifts[i] -= step
                excess -= step
    weight = math.ldexp(weight, applied)
    out = []
    for (a, w, o), e in zip(passes, shifts, strict=True):
        if e:
            w = np.ldexp(w, -e)
        if not _identity(w, o, drop_deltas):
            out.append((a, w, o))
    return weight, tuple(out)


def _identity(w: np.ndarray, origin: int, deltas: bool) -> bool:
    """A 1-D kernel that copies its input: ``[1.0]``, or (``deltas``) one tap of 1 at the
    centre and zeros elsewhere."""
    w = np.asarray(w)
    if len(w) == 1:
        return bool(w[0] == 1.0)
    centre = len(w) // 2 + origin
    return deltas and bool(w[centre] == 1.0) and int(np.count_nonzero(w)) == 1


def size_of(shape: Sequence[int]) -> int:
    """Number of elements of an array of ``shape`` (torch tensors' ``.size`` is a method)."""
    return math.prod(int(n) for n in shape)


# ----------------------------------------------------------------------------------------------
# the engine of one pass (the numpy backend runs by it, the planner reports it)
# ----------------------------------------------------------------------------------------------

#: Equivalent direct taps of the constant-time pass engines, measured on 2 cores with float32
#: 4096^2 data (``benchmarks/run.py``): a direct pass costs about one unit per tap, running
#: sums (box weights, ``engine.running``) cost about as much as 24 taps whatever the size,
#: a pass by 1-D FFTs (``engine.fft_pass``, float64, finite data only) about as much as 256
#: (direct passes of 257 taps: 0.8-0.9 s; FFT passes: 0.55-0.75 s), a recursive Gaussian
#: pass (``engine.recursive``, an approximation, only within ``tol``) about as much as 48
#: (43 ms a pass on 4096^2, about 48 float64 multiply-adds per sample: direct passes of 33
#: taps take 30 ms).
RUNNING_TAPS = 24
FFT_PASS_TAPS = 256
RECURSIVE_TAPS = 48
#: A pass that is diagonal in a real transform of the bare line (``wrap``; ``reflect`` or
#: ``mirror`` with centred symmetric taps: DCT) needs no padding: 95-150 ms on 4096^2
#: whatever its length, direct passes of 129 taps 89-160 ms (measured the same way).
DIAGONAL_TAPS = 128


def is_box(weights: np.ndarray) -> bool:
    """Whether a pass's weights are all the same positive value (a moving average)."""
    w = np.asarray(weights)
    return len(w) > 1 and bool(w[0] > 0) and bool(np.all(w == w[0]))


def pass_engine(
    weights: np.ndarray, *, finite: bool = True, mode: str | None = None, origin: int = 0
) -> str:
    """The exact engine of one 1-D pass: ``'running'`` (box weights of at least
    :data:`RUNNING_TAPS`), ``'fft'`` (finite data only -- an FFT spreads a NaN over its line
    -- and at least :data:`FFT_PASS_TAPS` taps, or :data:`DIAGONAL_TAPS` where the canonical
    ``mode`` and ``origin`` make the pass diagonal in a transform of the bare line) or
    ``'direct'``. The numpy backend runs every pass of a filter by this rule;
    :func:`sepconv.plan.plan_passes` reports it.

    Examples
    --------
    >>> pass_engine(np.full(101, 1 / 101)), pass_engine(np.hanning(300)), pass_engine([1, 2])
    ('running', 'fft', 'direct')
    >>> pass_engine(np.hanning(201), mode="reflect"), pass_engine(np.hanning(201), mode="nearest")
    ('fft', 'direct')
    """
    w = np.asarray(weights)
    k = len(w)
    if k >= RUNNING_TAPS and is_box(w):
        return "running"
    if finite and k >= (DIAGONAL_TAPS if _diagonal(w, mode, origin) else FFT_PASS_TAPS):
        return "fft"
    return "direct"


def _diagonal(w: np.ndarray, mode: str | None, origin: int) -> bool:
    """Whether ``engine.fft_pass`` transforms the bare line (see ``engine.fft._diagonal``)."""
    if mode == "wrap":
        return True
    return (
        mode in ("reflect", "mirror")
        and origin == 0
        and len(w) % 2 == 1
        and bool(np.array_equal(w, w[::-1]))
    )
