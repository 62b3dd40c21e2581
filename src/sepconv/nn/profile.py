"""An honest per-layer profiler: counted cost, the roofline bound, and measured time.

For every leaf module a forward pass runs through: parameters, multiply-accumulates (MACs:
convolutions ``prod(k) C_in/groups C_out`` per output element, linear layers
``in_features out_features``; bias additions counted apart, normalisation and activations
cost no MACs), bytes moved (input + output + parameters, each once), the roofline time
``max(MACs / R, bytes / B)`` from this machine's measured GEMM rate ``R`` (a float32 matmul)
and copy bandwidth ``B`` (a large tensor copy), and the measured time of the layer run alone
on its real input (warm-up, then the median). The totals add the end-to-end latency of the
whole model, which also includes what leaf modules do not see (residual additions, functional
calls in ``forward``) and Python overhead.

The timed model is a prepared copy (the original is never changed): evaluation mode,
batch norm folded into the preceding convolution, a memory format (channels-last for 2-D and
3-D inputs when it is faster), ``torch.inference_mode``, optionally ``torch.compile``;
``Profile.settings`` records which.

On a CUDA device (``device='cuda'``) the copy and its input move to the GPU, times are CUDA
events around replays of CUDA graphs (the host clock would time asynchronous launches), and
the roofline uses the GPU's measured device-to-device copy bandwidth and matrix-multiply rate
at each layer's precision (:func:`machine_rates` with ``device=``).
"""

from __future__ import annotations

import copy
import itertools
import math
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .. import cost
from .._timing import median_time, sample_times
from .._torch_threads import torch_threads
from .._validate import check_nonnegative_int
from ._table import markdown_table, text_table

__all__ = ["LayerProfile", "MachineRates", "Profile", "count", "machine_rates", "profile"]

MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


# ----------------------------------------------------------------------------------------------
# timing on a CUDA device (also convert's clock for latency budgets)
# ----------------------------------------------------------------------------------------------

#: CUDA: calls (replays of the captured graph) per timed sample.
CUDA_INNER = 20


class _HostClock:
    """``perf_counter`` marks: the clock of synchronous (CPU) work."""

    def mark(self) -> float:
        return time.perf_counter()

    def seconds(self, start: float, end: float) -> float:
        return end - start


class _CudaClock:
    """CUDA events recorded on the current stream of the current device: ``seconds`` waits for
    the end event, then reads the GPU time between the two (``elapsed_time``, milliseconds)."""

    def mark(self) -> Any:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, start: Any, end: Any) -> float:
        end.synchronize()
        return float(start.elapsed_time(end)) / 1e3


def _timed_samples(
    run: Callable[[], object], clock: Any, *, repeats: int, warmup: int, inner: int
) -> list[float]:
    """``repeats`` samples of seconds per call of ``run`` after ``warmup`` untimed calls; each
    sample spans ``inner`` calls between two marks of ``clock`` (a :class:`_HostClock` or a
    :class:`_CudaClock`: the marks are taken in the order of the calls, so events time the
    device's work, not the host's asynchronous launches)."""
    for _ in range(warmup):
        run()
    samples = []
    for _ in range(repeats):
        start = clock.mark()
        for _ in range(inner):
            run()
        end = clock.mark()
        samples.append(clock.seconds(start, end) / inner)
    return samples


def _cuda_device(device: Any) -> torch.device:
    """``device`` with its index (``'cuda'``: the current device)."""
    dev = torch.device(device)
    if dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _cuda_runner(
    fn: Callable[[], object], device: torch.device
) -> tuple[Callable[[], object], bool]:
    """``(run, graphed)``: ``fn`` captured in a CUDA graph (``run`` replays it; the launch
    overhead of eager kernels is what graphs remove), or ``fn`` itself when it cannot be
    captured. Call within ``torch.cuda.device(device)``.

    ``fn`` runs three times on a side stream first (lazy initialisation, cuDNN's algorithm
    choice and the allocator's warm-up must not happen during capture), as torch's CUDA graph
    notes prescribe. The tensors ``fn`` reads must stay alive while ``run`` is used. A call
    that launches no kernel (an empty graph) runs eagerly too.
    """
    stream = torch.cuda.Stream(device=device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    current = torch.cuda.current_stream(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with torch.cuda.graph(graph):
                fn()
            failed = False
        except RuntimeError:  # not capturable (host synchronisation, unsupported op)
            torch.cuda.set_stream(current)  # a failed capture_end skips leaving its stream
            torch.cuda.synchronize(device)
            failed = True
    # torch warns of an empty graph when ``fn`` launches no kernel (a view such as Flatten)
    empty = [w for w in caught if "CUDA Graph is empty" in str(w.message)]
    for w in caught:
        if w not in empty:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if failed or empty:
        return fn, False
    return graph.replay, True


def cuda_samples(
    fn: Callable[[], object],
    device: Any,
    *,
    repeats: int,
    warmup: int,
    inner: int = CUDA_INNER,
    graph: bool = True,
) -> tuple[list[float], bool]:
    """Samples of seconds per call of ``fn()`` on a CUDA device, and whether a graph ran.

    CUDA events around ``inner`` replays of a CUDA graph of the call (``graph=False``, or a
    call that cannot be captured: around ``inner`` eager calls, launch overhead included),
    ``repeats`` samples after ``warmup`` untimed runs. Call under ``torch.inference_mode()``
    or ``torch.no_grad()`` when ``fn`` runs a model.
    """
    dev = _cuda_device(device)
    with torch.cuda.device(dev):
        run, graphed = _cuda_runner(fn, dev) if graph else (fn, False)
        samples = _timed_samples(run, _CudaClock(), repeats=repeats, warmup=warmup, inner=inner)
    return samples, graphed


def _cuda_seconds(module: nn.Module, x: Tensor, repeats: int, warmup: int) -> float:
    """Median seconds of ``module(x)`` on ``x``'s CUDA device (events around graph replays;
    eager calls when the module cannot be captured)."""
    samples, _ = cuda_samples(lambda: module(x), x.device, repeats=repeats, warmup=warmup)
    return statistics.median(samples)


# ----------------------------------------------------------------------------------------------
# machine rates
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MachineRates:
    """Measured rates of this machine at ``threads`` threads (float32), or of a CUDA device.

    ``bandwidth_curve`` holds ``(bytes moved, copy bytes/s)`` pairs from copies of growing
    size: working sets that stay in cache move faster than main memory
    (``bandwidth_bytes_per_s``, the largest copy), and the smallest copies include the fixed
    cost of one call. The roofline uses the bandwidth measured at the layer's own bytes moved
    (a cache-aware roofline), interpolated log-linearly.

    ``device`` is ``'cpu'`` or the GPU's name (``torch.cuda.get_device_name``); for a GPU,
    ``threads`` is 0, the bandwidth is that of device-to-device copies and ``gemm_rates``
    holds the matrix-multiply rate per precision (``'float32'`` with TF32 off, which is also
    ``gemm_macs_per_s``, ``'tf32'``, ``'bfloat16'``, ``'float16'``, ``'float64'``).
    """

    gemm_macs_per_s: float
    bandwidth_bytes_per_s: float
    threads: int
    bandwidth_curve: tuple[tuple[int, float], ...] = ()
    device: str = "cpu"
    gemm_rates: tuple[tuple[str, float], ...] = ()

    def gemm(self, precision: str | None = None) -> float:
        """Matrix-multiply rate (MAC/s) at ``precision`` (a key of ``gemm_rates``; else, or
        when not measured, ``gemm_macs_per_s``)."""
        return dict(self.gemm_rates).get(precision or "", self.gemm_macs_per_s)

    def bandwidth(self, nbytes: float) -> float:
        """Copy bandwidth for a working set of ``nbytes`` (main memory beyond the curve)."""
        curve = self.bandwidth_curve
        if not curve:
            return self.bandwidth_bytes_per_s
        if nbytes <= curve[0][0]:
            return curve[0][1]
        for (s0, b0), (s1, b1) in itertools.pairwise(curve):
            if nbytes <= s1:
                f = math.log(nbytes / s0) / math.log(s1 / s0)
                return b0 + f * (b1 - b0)
        return self.bandwidth_bytes_per_s

    def roofline(
        self, macs: float, nbytes: float, precision: str | None = None
    ) -> tuple[float, str]:
        """``(time, bound)``: ``max(macs / R, bytes / B(bytes))`` and which term is larger
        (``R``: the GEMM rate at ``precision``, see :meth:`gemm`)."""
        tc = macs / self.gemm(precision)
        tm = nbytes / self.bandwidth(nbytes) if nbytes else 0.0
        return (tc, "compute") if tc >= tm else (tm, "memory")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bandwidth_curve"] = [list(p) for p in self.bandwidth_curve]
        d["gemm_rates"] = dict(self.gemm_rates)
        return d


_RATES: dict[int, MachineRates] = {}


#: Sizes (bytes per tensor) of the copies behind the bandwidth curve.
COPY_SIZES = tuple(2**k for k in range(13, 28, 2))  # 8 KiB ... 128 MiB


def machine_rates(
    threads: int | None = None, *, refresh: bool = False, device: Any = None
) -> MachineRates:
    """Measure (once per thread count or GPU, then cached) the GEMM rate and memory bandwidth.

    Peak rates, so the best of several runs: GEMM from float32 square matmuls of 1024, 1536
    and 2048 (``n**3`` MACs each); bandwidth from tensor copies of 8 KiB to 128 MiB (read +
    write bytes), the largest being main memory. Takes about two seconds.

    ``device='cuda'`` (or ``'cuda:N'``, a ``torch.device``) measures that GPU instead, cached
    per device name: device-to-device copies of 64 KiB to 1 GiB (read + write bytes; CUDA
    graphs and events, best of 7 samples; the largest copy is device memory, smaller ones fit
    in L2) and square matmuls of 4096 and 8192 per precision (float32 with TF32 off, TF32,
    bfloat16, float16, float64; events around eager calls). ``threads`` does not apply.

    Examples
    --------
    >>> r = machine_rates()  # doctest: +SKIP
    >>> r.gemm_macs_per_s / 1e9, r.bandwidth_bytes_per_s / 1e9  # doctest: +SKIP
    (88.1, 21.6)
    """
    if device is not None:
        dev = _check_device(device, None)
        _cpu_only_threads(threads, dev)
        if dev.type == "cuda":
            return _cuda_rates(dev, refresh)
    if threads is not None:
        threads = check_nonnegative_int(threads, "threads", minimum=1)
    with torch_threads(threads) as n:
        if n in _RATES and not refresh:
            return _RATES[n]
        gen = torch.Generator().manual_seed(0)
        gemm = 0.0
        curve = []
        with torch.inference_mode():
            for size in (1024, 1536, 2048):
                a = torch.randn(size, size, generator=gen)
                b = torch.randn(size, size, generator=gen)
                out = torch.empty(size, size)
                t = min(sample_times(lambda: torch.matmul(a, b, out=out), repeats=5))  # noqa: B023
                gemm = max(gemm, size**3 / t)
            for nbytes in COPY_SIZES:
                src = torch.ones(nbytes // 4)
                dst = torch.empty_like(src)
                inner = max(1, 2**22 // nbytes)
                t = min(
                    sample_times(lambda: dst.copy_(src), repeats=7, warmup=2, inner=inner)  # noqa: B023
                )
                curve.append((2 * nbytes, 2 * nbytes / t))
        rates = MachineRates(gemm, curve[-1][1], n, tuple(curve))
        _RATES[n] = rates
        return rates


#: CUDA: bytes per tensor of the device-to-device copies behind the bandwidth curve.
CUDA_COPY_SIZES = tuple(2**k for k in range(16, 31, 2))  # 64 KiB ... 1 GiB
#: CUDA: sizes of the square matmuls, and the precisions timed: (dtype, float32 matmul
#: precision while timing; None: left as it is).
CUDA_GEMM_SIZES = (4096, 8192)
CUDA_PRECISIONS: dict[str, tuple[torch.dtype, str | None]] = {
    "float32": (torch.float32, "highest"),
    "tf32": (torch.float32, "high"),
    "bfloat16": (torch.bfloat16, None),
    "float16": (torch.float16, None),
    "float64": (torch.float64, None),
}

_CUDA_RATES: dict[str, MachineRates] = {}


@contextmanager
def _matmul_precision(precision: str | None) -> Iterator[bool]:
    """``torch.set_float32_matmul_precision(precision)`` for the block (None: unchanged),
    restored afterwards; yields False, changing nothing, when the current setting cannot be
    read (torch refuses to when its legacy and new TF32 flags were both set)."""
    if precision is None:
        yield True
        return
    try:
        old = torch.get_float32_matmul_precision()
    except RuntimeError:
        yield False
        return
    torch.set_float32_matmul_precision(precision)
    try:
        yield True
    finally:
        torch.set_float32_matmul_precision(old)


def _cuda_rates(dev: torch.device, refresh: bool) -> MachineRates:
    dev = _cuda_device(dev)
    name = torch.cuda.get_device_name(dev)
    if name in _CUDA_RATES and not refresh:
        return _CUDA_RATES[name]
    curve: list[tuple[int, float]] = []
    gemm: dict[str, float] = {}
    with torch.inference_mode(), torch.cuda.device(dev):
        free, _ = torch.cuda.mem_get_info(dev)
        for nbytes in CUDA_COPY_SIZES:
            if nbytes > free // 8 and curve:
                break
            src = torch.ones(nbytes // 4, device=dev)
            dst = torch.empty_like(src)
            samples, _ = cuda_samples(
                lambda: dst.copy_(src),  # noqa: B023
                dev,
                repeats=7,
                warmup=2,
                inner=10,
            )
            curve.append((2 * nbytes, 2 * nbytes / min(samples)))
        gen = torch.Generator(device=dev).manual_seed(0)
        for key, (dtype, precision) in CUDA_PRECISIONS.items():
            with _matmul_precision(precision) as settable:
                if not settable and key != "float32":
                    continue  # float32: measured as configured
                best = 0.0
                for n in CUDA_GEMM_SIZES:
                    a = torch.randn(n, n, device=dev, dtype=dtype, generator=gen)
                    b = torch.randn(n, n, device=dev, dtype=dtype, generator=gen)
                    out = torch.empty(n, n, device=dev, dtype=dtype)
                    samples, _ = cuda_samples(
                        lambda: torch.matmul(a, b, out=out),  # noqa: B023
                        dev,
                        repeats=5,
                        warmup=1,
                        inner=2,
                        graph=False,
                    )
                    best = max(best, n**3 / min(samples))
                gemm[key] = best
    torch.cuda.empty_cache()
    rates = MachineRates(
        gemm["float32"], curve[-1][1], 0, tuple(curve), device=name, gemm_rates=tuple(gemm.items())
    )
    _CUDA_RATES[name] = rates
    return rates


def _tf32(conv: bool) -> bool:
    """Whether float32 convolutions (cuDNN) or matmuls (cuBLAS) may use TF32 now."""
    try:
        if conv:
            return bool(torch.backends.cudnn.allow_tf32)
        return torch.get_float32_matmul_precision() != "highest"
    except RuntimeError:  # legacy and new TF32 flags both set: torch answers the new ones only
        backend = (
            getattr(torch.backends.cudnn, "conv", None) if conv else torch.backends.cuda.matmul
        )
        return getattr(backend, "fp32_precision", "") == "tf32"


def _precision(module: nn.Module, dtype: torch.dtype) -> str:
    """The key of :attr:`MachineRates.gemm_rates` a layer of ``dtype`` computes at on a GPU."""
    if dtype != torch.float32:
        return str(dtype).removeprefix("torch.")
    return "tf32" if _tf32(isinstance(module, _CONVS + _TRANSPOSED)) else "float32"


# ----------------------------------------------------------------------------------------------
# counting
# ----------------------------------------------------------------------------------------------


@dataclass
class LayerProfile:
    """One leaf module of the profiled model (times in seconds; sums over repeated calls)."""

    name: str
    type: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    macs: int
    bias_adds: int
    bytes: int
    calls: int = 1
    roofline_s: float | None = None
    bound: str = ""
    measured_s: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """Measured / roofline time (None when either is missing or zero)."""
        if self.measured_s is None or not self.roofline_s:
            return None
        return self.measured_s / self.roofline_s

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["output_shape"] = list(self.output_shape)
        d["ratio"] = self.ratio
        return d


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _macs(module: nn.Module, x: Tensor, y: Tensor) -> tuple[int, int]:
    """(MACs, bias additions) of one call (batched or not)."""
    if y.numel() == 0:  # no output (zero channels or features, an empty batch): no work
        return 0, 0
    if isinstance(module, _CONVS):
        d = len(module.kernel_size)
        per = cost.conv_macs(
            module.in_channels,
            module.out_channels,
            tuple(module.kernel_size),
            dims=d,
            groups=module.groups,
        )
        out_pixels = y.numel() // module.out_channels
        return per * out_pixels, (y.numel() if module.bias is not None else 0)
    if isinstance(module, _TRANSPOSED):
        k = math.prod(module.kernel_size)
        per_in = k * module.in_channels * module.out_channels // module.groups
        return per_in * (x.numel() // module.in_channels), (
            y.numel() if module.bias is not None else 0
        )
    if isinstance(module, nn.Linear):
        rows = y.numel() // module.out_features
        return rows * module.in_features * module.out_features, (
            y.numel() if module.bias is not None else 0
        )
    return 0, 0


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (name, m)
        for name, m in model.named_modules()
        if not any(True for _ in m.children()) and not isinstance(m, nn.Identity)
    ]


def _nbytes(t: Any) -> int:
    if isinstance(t, Tensor):
        return t.numel() * t.element_size()
    if isinstance(t, (tuple, list)):
        return sum(_nbytes(v) for v in t)
    return 0


def _first_tensor(t: Any) -> Tensor | None:
    if isinstance(t, Tensor):
        return t
    if isinstance(t, (tuple, list)):
        for v in t:
            f = _first_tensor(v)
            if f is not None:
                return f
    return None


@contextmanager
def _eval(model: nn.Module) -> Iterator[None]:
    """Evaluation mode for the duration (BN running statistics must not change)."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.training = mode


def count(model: nn.Module, example: Any) -> list[LayerProfile]:
    """Per-leaf parameters, MACs, bias additions and bytes for one forward pass on ``example``.

    The model runs in evaluation mode without gradients and is left unchanged. Rows follow
    the order of first call; a module called several times has its costs summed (``calls``).

    Examples
    --------
    >>> import torch
    >>> rows = count(torch.nn.Conv2d(3, 8, 3, padding=1), torch.zeros(1, 3, 8, 8))
    >>> rows[0].macs, rows[0].bias_adds, rows[0].params
    (13824, 512, 224)
    """
    rows: dict[str, LayerProfile] = {}
    handles = []

    def hook(name: str) -> Callable[..., None]:
        def fn(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            x = _first_tensor(args)
            y = _first_tensor(out)
            if x is None or y is None:
                macs = adds = 0
            else:
                macs, adds = _macs(module, x, y)
            pbytes = sum(p.numel() * p.element_size() for p in module.parameters(recurse=False))
            nbytes = _nbytes(args) + _nbytes(out) + pbytes
            if name in rows:
                r = rows[name]
                r.calls += 1
                r.macs += macs
                r.bias_adds += adds
                r.bytes += nbytes
                return
            rows[name] = LayerProfile(
                name=name,
                type=type(module).__name__,
                input_shape=tuple(x.shape) if x is not None else (),
                output_shape=tuple(y.shape) if y is not None else (),
                params=sum(p.numel() for p in module.parameters(recurse=False)),
                macs=macs,
                bias_adds=adds,
                bytes=nbytes,
            )

        return fn

    for name, m in _leaves(model):
        handles.append(m.register_forward_hook(hook(name)))
    try:
        with _eval(model), torch.no_grad():
            _call(model, example)
    finally:
        for h in handles:
            h.remove()
    return list(rows.values())


def _call(model: nn.Module, example: Any) -> Any:
    return model(*example) if isinstance(example, tuple) else model(example)


# ----------------------------------------------------------------------------------------------
# preparing the timed copy
# ----------------------------------------------------------------------------------------------

_BNS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _fold_batchnorm(model: nn.Module, example: Any) -> list[tuple[str, str]]:
    """Fold every BN whose input is exactly the output of the conv called just before it.

    Returns the folded ``(conv, bn)`` name pairs; the caller checks the outputs still agree.
    """
    calls: list[tuple[str, nn.Module, Any, Any]] = []
    handles = []
    for name, m in _leaves(model):
        handles.append(
            m.register_forward_hook(
                lambda mod, args, out, name=name: calls.append((name, mod, args, out))
            )
        )
    try:
        with torch.no_grad():
            _call(model, example)
    finally:
        for h in handles:
            h.remove()
    uses: dict[int, int] = {}
    for _, _, args, _ in calls:
        for a in args if isinstance(args, tuple) else (args,):
            if isinstance(a, Tensor):
                uses[id(a)] = uses.get(id(a), 0) + 1
    pairs = []
    for (cname, conv, _, cout), (bname, bn, bargs, _) in itertools.pairwise(calls):
        if (
            isinstance(conv, _CONVS)
            and isinstance(bn, _BNS)
            and bn.track_running_stats
            and bargs
            and bargs[0] is cout
            and uses.get(id(cout), 0) == 1
        ):
            pairs.append((cname, bname))
    done: set[str] = set()
    for cname, bname in pairs:
        if cname in done or bname in done:
            continue
        fused = torch.nn.utils.fusion.fuse_conv_bn_eval(
            model.get_submodule(cname),  # type: ignore[type-var]
            model.get_submodule(bname),  # type: ignore[arg-type]
        )
        model.set_submodule(cname, fused)
        model.set_submodule(bname, nn.Identity())
        done.update((cname, bname))
    return pairs


def _to_format(t: Any, fmt: torch.memory_format) -> Any:
    if isinstance(t, Tensor):
        if (t.ndim == 4 and fmt == torch.channels_last) or (
            t.ndim == 5 and fmt == torch.channels_last_3d
        ):
            return t.contiguous(memory_format=fmt)
        return t
    if isinstance(t, tuple):
        return tuple(_to_format(v, fmt) for v in t)
    return t


def _format_for(example: Any, name: str) -> torch.memory_format:
    x = _first_tensor(example)
    if name == "contiguous" or x is None:
        return torch.contiguous_format
    if x.ndim == 4:
        return torch.channels_last
    if x.ndim == 5:
        return torch.channels_last_3d
    return torch.contiguous_format


_FORMAT_NAMES = {
    torch.contiguous_format: "contiguous",
    torch.channels_last: "channels_last",
    torch.channels_last_3d: "channels_last_3d",
}


# ----------------------------------------------------------------------------------------------
# the profile
# ----------------------------------------------------------------------------------------------


@dataclass
class Profile:
    """The result of :func:`profile`: one row per leaf module, totals, and how it was timed."""

    model: str
    input_shape: tuple[int, ...]
    layers: list[LayerProfile]
    params: int
    settings: dict[str, Any] = field(default_factory=dict)
    rates: MachineRates | None = None
    latency_s: float | None = None

    @property
    def macs(self) -> int:
        """Total multiply-accumulates (convolutions and linear layers, bias apart)."""
        return sum(r.macs for r in self.layers)

    @property
    def bias_adds(self) -> int:
        return sum(r.bias_adds for r in self.layers)

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.layers)

    @property
    def roofline_s(self) -> float | None:
        if self.rates is None:
            return None
        return sum(r.roofline_s or 0.0 for r in self.layers)

    @property
    def measured_layers_s(self) -> float | None:
        if not any(r.measured_s is not None for r in self.layers):
            return None
        return sum(r.measured_s or 0.0 for r in self.layers)

    @property
    def timing_warning(self) -> str | None:
        """Why the measured times disagree, when the sum of layers and the end-to-end latency
        differ by more than :data:`TIMING_DISAGREEMENT` either way (else None).

        Both numbers stay in the table and the totals; this says which one not to trust.
        """
        total, latency = self.measured_layers_s, self.latency_s
        if not total or not latency:
            return None
        factor = max(total / latency, latency / total)
        if factor < TIMING_DISAGREEMENT:
            return None
        both = f"sum of layers {total * 1e3:.3f} ms vs end-to-end {latency * 1e3:.3f} ms"
        how = self.settings.get("compile")
        if how:
            return (
                f"the timings differ {factor:.0f}x ({both}): the end-to-end time is of the "
                f"compiled model ({'inductor' if how is True else how}), the layers run "
                "eagerly one by one; compare layers with each other, not with the end-to-end "
                "time."
            )
        if total > latency:
            return (
                f"the per-layer times are not trustworthy: they add up to {factor:.0f}x the "
                f"end-to-end time ({both}). Each layer is timed alone, so fixed costs of a "
                "call (Python dispatch, waking torch's worker threads, time slices lost to "
                "other processes on a busy machine) count once per layer and dominate layers "
                "this small; the end-to-end time is the one to quote. Retry with one thread "
                "(--threads 1), more repeats, or on an idle machine."
            )
        return (
            f"the end-to-end time is {factor:.0f}x the sum of layers ({both}): the model "
            "spends it outside its leaf modules (Python code in forward, residual additions, "
            "functional calls) or the run was disturbed by other processes; the per-layer "
            "times do not explain the latency."
        )

    def outliers(self, factor: float = 2.0, *, min_time: float = 0.0) -> list[LayerProfile]:
        """Layers measured more than ``factor`` times slower or faster than their roofline.

        Layers whose roofline time is below ``min_time`` seconds (too small to time
        reliably) are not reported.
        """
        out = []
        for r in self.layers:
            q = r.ratio
            if q is None or (r.roofline_s or 0.0) < min_time:
                continue
            if q > factor or q < 1.0 / factor:
                out.append(r)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": 1,
            "model": self.model,
            "input_shape": list(self.input_shape),
            "settings": dict(self.settings),
            "machine": None if self.rates is None else self.rates.to_dict(),
            "layers": [r.to_dict() for r in self.layers],
            "totals": {
                "params": self.params,
                "macs": self.macs,
                "bias_adds": self.bias_adds,
                "bytes": self.bytes,
                "roofline_s": self.roofline_s,
                "measured_layers_s": self.measured_layers_s,
                "latency_s": self.latency_s,
            },
            "warnings": [w for w in (self.timing_warning,) if w],
        }

    def rows(self) -> list[list[str]]:
        """The table as strings (the columns of :data:`COLUMNS`)."""
        out = []
        for r in self.layers:
            ratio = r.ratio
            out.append(
                [
                    r.name,
                    r.type,
                    "x".join(str(n) for n in r.output_shape),
                    f"{r.params:,}",
                    f"{r.macs:,}",
                    f"{r.bias_adds:,}",
                    _size(r.bytes),
                    _us(r.roofline_s) + (f" {r.bound[0]}" if r.bound else ""),
                    _us(r.measured_s),
                    ""
                    if ratio is None
                    else f"{ratio:.2f}" + (" !" if ratio > 2 or ratio < 0.5 else ""),
                    r.note,
                ]
            )
        return out

    def summary(self) -> list[str]:
        # millions beside the exact counts from where they have two significant digits
        # (a 3,696-parameter model is not "0.00M")
        params_m = f" ({self.params / 1e6:.2f}M)" if self.params >= 100_000 else ""
        macs_m = f" ({self.macs / 1e6:.1f}M mult-adds)" if self.macs >= 1_000_000 else ""
        lines = [
            f"{self.model} {tuple(self.input_shape)}: {self.params:,} params{params_m}, "
            f"{self.macs:,} MACs{macs_m}, {self.bias_adds:,} bias adds, {_size(self.bytes)} moved"
        ]
        if self.rates is not None and self.rates.device != "cpu":
            r = self.rates
            gemm = ", ".join(f"{k} {v / 1e12:.1f}" for k, v in r.gemm_rates)
            lines.append(
                f"device: {r.device}: GEMM (TMAC/s) {gemm} (float32: TF32 off); copy "
                f"bandwidth {r.bandwidth_bytes_per_s / 1e9:.0f} GB/s (device memory; up to "
                f"{max((b for _, b in r.bandwidth_curve), default=0) / 1e9:.0f} GB/s in L2); "
                f"roofline total {_us(self.roofline_s)} us"
            )
        elif self.rates is not None:
            r = self.rates
            lines.append(
                f"machine: GEMM {r.gemm_macs_per_s / 1e9:.1f} GMAC/s, copy bandwidth "
                f"{r.bandwidth_bytes_per_s / 1e9:.1f} GB/s (main memory; up to "
                f"{max((b for _, b in r.bandwidth_curve), default=0) / 1e9:.0f} GB/s in cache), "
                f"{r.threads} threads; roofline total "
                f"{_us(self.roofline_s)} us"
            )
        if self.latency_s is not None:
            lines.append(
                f"measured: end-to-end median {self.latency_s * 1e3:.3f} ms, sum of layers "
                f"{(self.measured_layers_s or 0) * 1e3:.3f} ms"
            )
            warning = self.timing_warning
            if warning:
                lines.append(f"WARNING: {warning}")
        if self.settings:
            lines.append("timed as: " + ", ".join(f"{k}={v}" for k, v in self.settings.items()))
        return lines

    def __str__(self) -> str:
        return text_table(COLUMNS, self.rows(), self.summary(), left=(0, 1))

    def to_markdown(self) -> str:
        return markdown_table(COLUMNS, self.rows(), self.summary())


#: Sum of per-layer times and end-to-end latency differing by more than this factor (either
#: way) get :attr:`Profile.timing_warning`.
TIMING_DISAGREEMENT = 3.0

#: Columns of the profile table (times in microseconds; ``c``/``m``: compute/memory bound).
COLUMNS = [
    "layer",
    "type",
    "output",
    "params",
    "MACs",
    "bias adds",
    "bytes",
    "roofline us",
    "measured us",
    "ratio",
    "note",
]


def _us(t: float | None) -> str:
    if t is None:
        return ""
    return f"{t * 1e6:.1f}"


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


def example_input(model: nn.Module, shape: Sequence[int]) -> Tensor:
    """Seeded standard normal input of ``shape`` on the model's device, in its dtype."""
    try:
        param = next(model.parameters())
        device, dtype = param.device, param.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    gen = torch.Generator().manual_seed(0)
    return torch.randn(tuple(shape), generator=gen, dtype=dtype).to(device)


def _check_shape(input_shape: Any) -> tuple[int, ...]:
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise TypeError(
            f"input_shape must be a sequence of positive integers such as (1, 3, 224, 224), "
            f"got {input_shape!r}"
        )
    shape = tuple(check_nonnegative_int(n, "input_shape", minimum=1) for n in input_shape)
    if len(shape) < 2:
        raise ValueError(
            f"input_shape must include the batch and channel axes, e.g. (1, 3, 224, 224), "
            f"got {shape}"
        )
    return shape


def _check_device(device: Any, model: nn.Module | None, *, visible: bool = True) -> torch.device:
    """``device`` as a ``torch.device`` (None: where ``model``'s first parameter is, the CPU
    without any); a CPU or CUDA device, and a CUDA device must be visible (``visible=False``:
    need not, for a custom clock). Shared with :func:`sepconv.nn.convert`."""
    if device is None:
        try:
            dev = next(model.parameters()).device  # type: ignore[union-attr]
        except StopIteration:
            dev = torch.device("cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(
                f"device must be 'cpu', 'cuda', 'cuda:N' or a torch.device, got {device!r}"
            ) from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be a CPU or a CUDA device, got {str(dev)!r}")
    if dev.type == "cuda" and visible:
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(dev)!r} is not available (no CUDA device is visible)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {str(dev)!r} is not available ({torch.cuda.device_count()} CUDA "
                "devices are visible)"
            )
    return dev


def _cpu_only_threads(threads: Any, dev: torch.device) -> None:
    if dev.type == "cuda" and threads is not None:
        raise ValueError(
            f"threads applies to CPU timing only, got threads={threads!r} with device "
            f"{str(dev)!r} (leave it out)"
        )


def profile(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    measure: bool = True,
    device: Any = None,
    threads: int | None = None,
    fold_bn: bool = True,
    memory_format: str = "auto",
    inference_mode: bool = True,
    compile: bool | str = False,
    warmup: int = 3,
    repeats: int = 10,
    name: str | None = None,
) -> Profile:
    """Per-layer parameters, MACs, bytes, roofline time and measured time of any model.

    Parameters
    ----------
    model : nn.Module
        Any model taking one tensor; never modified (timing uses a prepared copy).
    input_shape : sequence of int
        Full input shape including the batch axis, e.g. ``(1, 3, 224, 224)``.
    measure : bool
        Time the layers and the whole model (False: counts only, no machine rates).
    device : str or torch.device, optional
        Where to time: ``'cpu'``, ``'cuda'``, ``'cuda:N'``; default: the model's device. On a
        GPU the timed copy and the input go to the device (the model stays where it is),
        every time is the median of CUDA events around replays of a CUDA graph of the call
        (eager calls for what cannot be captured; ``settings['clock']`` says how many), and
        the roofline uses the GPU's measured copy bandwidth and matrix-multiply rate at the
        precision each layer computes in (float32 convolutions at TF32 when cuDNN allows it,
        as it does by default).
    threads : int, optional
        ``torch.set_num_threads`` for the measurement (restored afterwards); default: as is.
        CPU only.
    fold_bn : bool
        Fold batch norm into the convolution before it (checked: the prepared copy must give
        the original's output, else folding is undone and the settings say so).
    memory_format : {'auto', 'channels_last', 'contiguous'}
        ``'auto'`` times the whole model in both (2-D/3-D inputs) and keeps the faster.
    inference_mode : bool
        Time under ``torch.inference_mode()`` (else ``torch.no_grad()``).
    compile : bool or {'inductor', 'torchscript'}
        Compile the whole model for the end-to-end latency (True: ``'inductor'``, i.e.
        ``torch.compile`` with frozen weights; ``'torchscript'``: frozen and optimized for
        inference, often the fastest on CPU); the layers are still timed eagerly.
    warmup, repeats : int
        Calls before timing, and timed calls (the median is reported).
    name : str, optional
        The model's name in the table (default: its class name).

    Returns
    -------
    Profile
        ``layers`` (one :class:`LayerProfile` per leaf module), ``params``, ``macs``,
        ``bias_adds``, ``bytes``, ``roofline_s``, ``measured_layers_s``, ``latency_s``,
        ``settings``, ``rates``; ``timing_warning`` says why the per-layer sum and the
        end-to-end time disagree when they differ by more than 3x (else None);
        ``outliers()`` lists layers beyond 2x of their roofline;
        ``str()`` and ``to_markdown()`` give the table, ``to_dict()`` a JSON-ready dict.

    Examples
    --------
    >>> from sepconv.nn import profile
    >>> from sepconv.nn.models import mobilenet_v1
    >>> p = profile(mobilenet_v1(), (1, 3, 224, 224), measure=False)
    >>> round(p.macs / 1e6), round(p.params / 1e6, 1)
    (569, 4.2)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    shape = _check_shape(input_shape)
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(
            f"memory_format must be one of {list(MEMORY_FORMATS)}, got {memory_format!r}"
        )
    if compile not in (False, True, *COMPILERS):
        raise ValueError(
            f"compile must be False, True or one of {list(COMPILERS)}, got {compile!r}"
        )
    warmup = check_nonnegative_int(warmup, "warmup", minimum=0)
    repeats = check_nonnegative_int(repeats, "repeats", minimum=1)
    if threads is not None:  # torch.set_num_threads(0) raises a RuntimeError of its own
        threads = check_nonnegative_int(threads, "threads", minimum=1)
    # counting alone needs no device (models on the meta device count too)
    dev = _check_device(device, model) if measure or device is not None else None
    if dev is not None:
        _cpu_only_threads(threads, dev)
    example = example_input(model, shape)
    try:
        layers = count(model, example)
    except RuntimeError as exc:
        raise ValueError(f"input_shape {shape} does not fit the model: {exc}") from None
    params = sum(p.numel() for p in model.parameters())
    result = Profile(name or type(model).__name__, shape, layers, params)
    if not measure or dev is None:
        return result
    if dev.type == "cuda":
        dev = _cuda_device(dev)
        result.rates = _cuda_rates(dev, refresh=False)
        _measure(
            model, example, result, fold_bn, memory_format, inference_mode, compile, warmup,
            repeats, dev,
        )  # fmt: skip
        return result
    with torch_threads(threads) as n:
        result.rates = machine_rates(n)
        _measure(
            model, example, result, fold_bn, memory_format, inference_mode, compile, warmup,
            repeats, dev,
        )  # fmt: skip
    return result


def _seconds(
    device: torch.device, graphed: list[bool]
) -> Callable[[Callable[[], object], int, int, bool], float]:
    """``seconds(fn, repeats, warmup, graph)``: the median seconds of ``fn()`` on ``device``
    (CPU: ``perf_counter``; CUDA: :func:`cuda_samples`, appending to ``graphed`` whether a
    CUDA graph ran)."""
    if device.type != "cuda":

        def host(fn: Callable[[], object], repeats: int, warmup: int, graph: bool = True) -> float:
            return median_time(fn, repeats=repeats, warmup=warmup)

        return host

    def seconds(fn: Callable[[], object], repeats: int, warmup: int, graph: bool = True) -> float:
        samples, g = cuda_samples(fn, device, repeats=repeats, warmup=warmup, graph=graph)
        graphed.append(g)
        return statistics.median(samples)

    return seconds


def _measure(
    model: nn.Module,
    example: Tensor,
    result: Profile,
    fold_bn: bool,
    memory_format: str,
    inference_mode: bool,
    compile: bool | str,
    warmup: int,
    repeats: int,
    device: torch.device,
) -> None:
    assert result.rates is not None
    grad_ctx = torch.inference_mode if inference_mode else torch.no_grad
    cuda = device.type == "cuda"
    graphed: list[bool] = []
    seconds = _seconds(device, graphed)
    prepared = copy.deepcopy(model).eval()
    settings: dict[str, Any] = (
        {"device": str(device), "device_name": result.rates.device}
        if cuda
        else {"threads": result.rates.threads}
    )
    folded: list[tuple[str, str]] = []
    with _eval(model), torch.no_grad():
        reference = model(example)
    if fold_bn:  # on the model's own device, before the copy moves
        folded = _fold_batchnorm(prepared, example)
        with torch.no_grad():
            check = prepared(example)
        scale = float(reference.abs().max()) if isinstance(reference, Tensor) else 1.0
        if not (
            isinstance(check, Tensor)
            and isinstance(reference, Tensor)
            and torch.allclose(check, reference, rtol=1e-3, atol=1e-4 * max(scale, 1e-30))
        ):
            prepared = copy.deepcopy(model).eval()
            folded = []
            settings["fold_bn"] = "undone (outputs changed)"
        else:
            settings["fold_bn"] = f"{len(folded)} batch norms folded"
    else:
        settings["fold_bn"] = False
    if example.device != device:
        prepared = prepared.to(device)
        example = example.to(device)
    fmt = _format_for(example, memory_format)
    with grad_ctx():
        if memory_format == "auto" and fmt != torch.contiguous_format:
            timed = {}
            for f in (torch.contiguous_format, fmt):
                m = copy.deepcopy(prepared).to(memory_format=f)  # type: ignore[call-overload]
                x = _to_format(example, f)
                timed[f] = seconds(lambda: m(x), 3, 1, True)  # noqa: B023
            fmt = min(timed, key=lambda f: timed[f])
        prepared = prepared.to(memory_format=fmt)  # type: ignore[call-overload]
        x = _to_format(example, fmt)
    graphed.clear()
    settings["memory_format"] = _FORMAT_NAMES[fmt]
    settings["inference_mode"] = inference_mode
    settings["compile"] = compile
    settings["warmup"] = warmup
    settings["repeats"] = repeats

    # per-layer: each leaf alone on its captured input
    inputs: dict[str, tuple[Any, ...]] = {}
    handles = []
    leaves = dict(_leaves(prepared))
    for lname, m in leaves.items():
        handles.append(
            m.register_forward_pre_hook(
                lambda mod, args, lname=lname: inputs.setdefault(
                    lname, tuple(a.clone() if isinstance(a, Tensor) else a for a in args)
                )
            )
        )
    try:
        with grad_ctx():
            prepared(x)
    finally:
        for h in handles:
            h.remove()
    folded_into = {b: c for c, b in folded}
    with grad_ctx():
        for row in result.layers:
            if row.name in folded_into:
                row.note = f"folded into {folded_into[row.name]}"
                row.roofline_s, row.bound, row.measured_s = 0.0, "", 0.0
                continue
            m = leaves.get(row.name)
            args = inputs.get(row.name)
            if m is None or args is None:
                continue
            t = seconds(lambda: m(*args), repeats, warmup, True)  # noqa: B023
            out = m(*args)
            first = _first_tensor(args)
            macs, _ = _macs(m, first, _first_tensor(out))  # type: ignore[arg-type]
            pbytes = sum(p.numel() * p.element_size() for p in m.parameters(recurse=False))
            nbytes = _nbytes(args) + _nbytes(out) + pbytes
            precision = _precision(m, first.dtype) if cuda and first is not None else None
            rt, bound = result.rates.roofline(macs * row.calls, nbytes * row.calls, precision)
            row.roofline_s, row.bound, row.measured_s = rt, bound, t * row.calls
            if row.name in {c for c, _ in folded}:
                row.note = "batch norm folded in"
            if row.calls > 1:
                row.note = (row.note + "; " if row.note else "") + f"{row.calls} calls"
        layer_graphs = sum(graphed)
        if not compile:
            result.latency_s = seconds(lambda: prepared(x), repeats, warmup, True)
    if compile:
        with torch.no_grad():
            t0 = time.perf_counter()
            runner = compiled(prepared, x, compile)
            if cuda:
                torch.cuda.synchronize(device)
            settings["compile_s"] = round(time.perf_counter() - t0, 2)
            # compiled code runs eagerly on a GPU: events around calls, launches included
            result.latency_s = seconds(lambda: runner(x), repeats, warmup + 2, False)
    if cuda:
        whole = "eager calls (compiled)" if compile else (
            "a CUDA graph" if graphed[-1] else "eager calls (not capturable)"
        )  # fmt: skip
        settings["clock"] = (
            f"CUDA events; layers: CUDA graphs for {layer_graphs} of {len(graphed) - 1}, "
            f"whole model: {whole}"
        )
    result.settings = settings


#: Whole-model compilers :func:`profile` (``compile=``) and the benchmark know.
COMPILERS = ("inductor", "torchscript")


def compiled(model: nn.Module, example: Tensor, how: str | bool) -> Callable[..., Any]:
    """``model`` compiled for CPU inference (call under ``torch.no_grad()``), run once.

    ``'inductor'`` (or True): ``torch.compile`` with frozen weights (constant-folded and
    prepacked for oneDNN). ``'torchscript'``: ``torch.jit.optimize_for_inference`` of the
    scripted model (freezing, conv + BN + ReLU fusion, prepacked oneDNN convs); TorchScript is
    deprecated in torch >= 2.9 and its deprecation warning is silenced here.
    """
    how = "inductor" if how is True else how
    if how == "inductor":
        runner: Callable[..., Any] = torch.compile(model, options={"freezing": True})
    elif how == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            runner = torch.jit.optimize_for_inference(torch.jit.script(model.eval()))
    else:
        raise ValueError(f"compile must be False, True or one of {list(COMPILERS)}, got {how!r}")
    runner(example)
    return runner
