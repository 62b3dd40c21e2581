"""Replace the convolutions of any model by their optimal structured factorizations.

:func:`convert` walks a model, picks convolutions by a policy (names or a slice in forward
order; a per-layer error tolerance; a total MAC budget), factorizes each with
:func:`sepconv.nn.factorize`'s closed forms and reports what every layer costs and loses.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .._timing import _samples
from .._torch_threads import torch_threads
from .._validate import check_bool, check_nonnegative_int, check_positive_float, check_tol
from ._table import markdown_table, text_table
from .factorize import (
    KINDS,
    LayerReport,
    Rank,
    _as_conv,
    _Conv,
    _costs,
    _decompose,
    _Decomposition,
    _exact_tol,
    _factorize,
    _last_stage,
    _relative,
)
from .layers import LAYERS, _StructuredConv
from .profile import (
    _FORMAT_NAMES,
    _check_device,
    _cuda_seconds,
    _eval,
    _fold_batchnorm,
    count,
    example_input,
)

__all__ = ["ConvertReport", "convert", "load_converted", "save_converted"]

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
#: The reason a transposed convolution is left alone (it is listed in the report when all
#: convolutions are considered, ``layers=None``).
TRANSPOSED_REASON = (
    "transposed conv: left alone (sepconv's structured layers are forward convolutions; "
    "a factorized transposed conv would need transposed stages)"
)


@dataclass
class ConvertReport:
    """The result of :func:`convert`: one row per convolution the policy looked at.

    Attributes
    ----------
    layers : list of LayerReport
        In forward order (registration order when no input was given).
    kind, policy : str
        The structure and the rank policy (``'exact'``, ``'rank=2'``, ``'tol=0.1'``,
        ``'mac_budget=0.5'``).
    macs_before, macs_after : int or None
        Whole-model MACs (convolutions and linear layers) for one sample of the calibration or
        example input; None without one.
    params_before, params_after : int
        Whole-model parameters.
    model_output_error : float or None
        ``||f(x) - g(x)|| / ||f(x)||`` of the original and converted model outputs on the
        calibration batch (evaluation mode).
    order : str
        ``'forward'`` or ``'registration'`` (no input to run).
    seconds : float
        Wall time of the conversion.
    notes : list of str
    latency_before, latency_after : float or None
        Measured seconds per call of the whole original and converted models (prepared alike,
        timed taking turns), with ``latency_budget`` or ``measure``; else None.
    layer_times : dict of str to (float, float)
        Measured seconds of each timed layer before (the conv, batch norm folded in) and
        after (its replacement; the conv again when left alone).
    timing : dict
        How it was timed: device, threads, clock, input shape, batch norm folding, memory
        format, and for the latency policy the rounds (predicted and measured fraction).
    """

    layers: list[LayerReport]
    kind: str
    policy: str
    macs_before: int | None
    macs_after: int | None
    params_before: int
    params_after: int
    model_output_error: float | None = None
    order: str = "forward"
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    latency_before: float | None = None
    latency_after: float | None = None
    layer_times: dict[str, tuple[float, float]] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)

    @property
    def converted(self) -> list[LayerReport]:
        return [r for r in self.layers if r.converted]

    @property
    def latency_fraction(self) -> float | None:
        """``latency_after / latency_before`` (measured), None when not timed."""
        if not self.latency_before or self.latency_after is None:
            return None
        return self.latency_after / self.latency_before

    @property
    def mac_fraction(self) -> float | None:
        """``macs_after / macs_before`` of the whole model."""
        if not self.macs_before or self.macs_after is None:
            return None
        return self.macs_after / self.macs_before

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": 1,
            "kind": self.kind,
            "policy": self.policy,
            "order": self.order,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "model_output_error": self.model_output_error,
            "seconds": self.seconds,
            "notes": list(self.notes),
            "latency_before_s": self.latency_before,
            "latency_after_s": self.latency_after,
            "timing": copy.deepcopy(self.timing),
            "layers": [self._layer_dict(r) for r in self.layers],
        }

    def _layer_dict(self, r: LayerReport) -> dict[str, Any]:
        d = r.to_dict()
        before, after = self.layer_times.get(r.name, (None, None))
        d["time_before_s"], d["time_after_s"] = before, after
        return d

    def columns(self) -> list[str]:
        """The table's columns (with measured times when the layers were timed)."""
        if not self.layer_times:
            return list(COLUMNS)
        return [*COLUMNS[:5], "ms before", "ms after", *COLUMNS[5:]]

    def rows(self) -> list[list[str]]:
        out = []
        for r in self.layers:
            rank = "" if r.rank is None else str(r.rank)
            out.append(
                [
                    r.name,
                    r.kind if r.converted else "-",
                    rank if r.converted else "",
                    f"{r.macs_before:,}",
                    f"{r.macs_after:,}",
                    f"{r.params_before:,}",
                    f"{r.params_after:,}",
                    _err(r.weight_error),
                    _err(r.output_error),
                    r.note,
                ]
            )
            if self.layer_times:
                times = self.layer_times.get(r.name)
                out[-1][5:5] = ["", ""] if times is None else [_ms(times[0]), _ms(times[1])]
        return out

    def summary(self) -> list[str]:
        n = len(self.converted)
        lines = [
            f"convert kind={self.kind!r} policy {self.policy}: {n} of {len(self.layers)} convs "
            f"replaced in {self.seconds:.2f} s (order: {self.order})"
        ]
        if self.macs_before is not None and self.macs_after is not None:
            lines.append(
                f"model MACs {self.macs_before:,} -> {self.macs_after:,} "
                f"({self.macs_after / max(self.macs_before, 1):.1%}), params "
                f"{self.params_before:,} -> {self.params_after:,}"
            )
        else:
            lines.append(
                f"params {self.params_before:,} -> {self.params_after:,}; MACs per output pixel "
                "(pass calibration= or input_shape= for totals)"
            )
        if self.latency_before is not None and self.latency_after is not None:
            t = self.timing
            where = t.get("device", "")
            if "threads" in t:
                where += f", {t['threads']} threads"
            lines.append(
                f"measured latency {self.latency_before * 1e3:.3f} ms -> "
                f"{self.latency_after * 1e3:.3f} ms ({self.latency_fraction:.1%}) on {where}, "
                f"input {tuple(t.get('input_shape', ()))}, {t.get('memory_format', '')}, "
                f"{t.get('fold_bn', '')}; clock: {t.get('clock', '')}"
            )
            if t.get("rounds"):
                lines.append(
                    "whole models measured along the greedy path (step: predicted -> measured "
                    "fraction): "
                    + ", ".join(
                        f"{r['step']}: {r['predicted']:.3f} -> {r['measured']:.3f}"
                        for r in t["rounds"]
                    )
                )
        if self.model_output_error is not None:
            lines.append(
                f"model output error on the calibration batch: {self.model_output_error:.3g}"
            )
        lines += [f"note: {n_}" for n_ in self.notes]
        return lines

    def __str__(self) -> str:
        cols = self.columns()
        return text_table(cols, self.rows(), self.summary(), left=(0, 1, len(cols) - 1))

    def to_markdown(self) -> str:
        return markdown_table(self.columns(), self.rows(), self.summary())


#: Columns of the conversion table.
COLUMNS = [
    "layer",
    "kind",
    "rank",
    "MACs before",
    "MACs after",
    "params before",
    "params after",
    "weight error",
    "output error",
    "note",
]


def _err(e: float | None) -> str:
    return "" if e is None else f"{e:.3g}"


def _ms(t: float) -> str:
    return f"{t * 1e3:.3f}"


# ----------------------------------------------------------------------------------------------
# policy helpers
# ----------------------------------------------------------------------------------------------


def _inside_structured(model: nn.Module) -> set[str]:
    """Names of convs that are stages of sepconv structured layers (never converted again)."""
    names = set()
    for name, m in model.named_modules():
        if isinstance(m, _StructuredConv):
            for sub, _ in m.named_modules():
                if sub:
                    names.add(f"{name}.{sub}" if name else sub)
    return names


def _record(
    model: nn.Module, convs: dict[str, nn.Module], example: Any, keep: bool
) -> tuple[list[str], dict[str, tuple[tuple[int, ...], ...]], dict[str, Tensor], Any]:
    """Run ``model`` once: the order convs are first called in, the spatial input size of
    every call (a conv the forward calls twice, weights shared, costs twice), their first
    call's inputs (if ``keep``) and the model's output."""
    order: list[str] = []
    sizes: dict[str, tuple[tuple[int, ...], ...]] = {}
    inputs: dict[str, Tensor] = {}
    handles = []

    def hook(name: str) -> Any:
        def fn(module: nn.Module, args: tuple[Any, ...]) -> None:
            if not args or not isinstance(args[0], Tensor):
                return
            size = tuple(args[0].shape[2:])
            if name in sizes:
                sizes[name] += (size,)
                return
            order.append(name)
            sizes[name] = (size,)
            if keep:
                inputs[name] = args[0].detach()

        return fn

    for name, m in convs.items():
        handles.append(m.register_forward_pre_hook(hook(name)))
    try:
        with _eval(model), torch.no_grad():
            out = model(*example) if isinstance(example, tuple) else model(example)
    finally:
        for h in handles:
            h.remove()
    return order, sizes, inputs, out


def _select(layers: Any, order: list[str], structured: set[str]) -> list[str]:
    if layers is None:
        return list(order)
    if isinstance(layers, slice):
        return order[layers]
    if isinstance(layers, str):
        layers = [layers]
    if not isinstance(layers, Sequence) or not all(isinstance(n, str) for n in layers):
        raise TypeError(
            "layers must be None, a slice over the convolutions in forward order, or a list of "
            f"layer names, got {layers!r}"
        )
    known = set(order)
    bad = [n for n in layers if n not in known]
    if bad:
        why = ""
        inside = [n for n in bad if n in structured]
        if inside:
            why = f" ({inside} are stages of sepconv structured layers, already factorized)"
        shown = ", ".join(order[:8]) + (", ..." if len(order) > 8 else "")
        raise ValueError(
            f"layers names {bad} that are not convolutions of the model{why}; its convolutions "
            f"are: {shown}"
        )
    wanted = set(layers)
    return [n for n in order if n in wanted]


def _skip_reason(c: _Conv, kind: str) -> str:
    if c.is_pointwise:
        return "1x1 conv: nothing to factorize"
    if c.is_depthwise:
        return "depthwise conv: already the cheapest structure"
    if kind == "spatial" and c.dims == 1:
        return "1-D conv: kind='spatial' needs 2-D or 3-D"
    return ""


def _clip_rank(dec: _Decomposition, rank: Any) -> tuple[Rank, str]:
    """The requested rank, clipped to the layer's range (with a note when clipped)."""
    top = dec.max_rank()
    if dec.kind == "tucker2":
        # (r_in, r_out), each clipped to its mode's maximum, then the decomposition's own check
        assert isinstance(top, tuple)
        pair = (rank, rank) if isinstance(rank, int) else tuple(rank)
        if len(pair) != 2:
            dec.check_rank(pair)  # raises, naming the allowed range
        want = (int(pair[0]), int(pair[1]))
        got = dec.check_rank((min(want[0], top[0]), min(want[1], top[1])))
        assert isinstance(got, tuple)
        return got, (f"rank {want} clipped to {got}" if got != want else "")
    if isinstance(top, tuple):
        r1, r2 = (rank, rank) if isinstance(rank, int) else tuple(rank)
        c1 = min(r1, top[0])
        c2 = min(r2, c1 * dec.c.kernel[1], dec.c.cout_g * dec.c.kernel[2])
        note = f"rank {(r1, r2)} clipped to {(c1, c2)}" if (c1, c2) != (r1, r2) else ""
        return (c1, c2), note
    if isinstance(rank, (tuple, list)):
        raise ValueError(f"rank must be an integer for kind={dec.kind!r}, got {rank!r}")
    if rank > top:
        return int(top), f"rank {rank} clipped to the layer's maximum {top}"
    return int(rank), ""


Option = tuple[str, Rank]  # (kind, rank): one structured replacement of a layer
Point = tuple[float, float, Option | None]  # (cost: MACs or seconds, squared error, option)


def _hull(points: list[Point]) -> list[Point]:
    """Lower convex hull of (cost, error2) points, from the most costly to the cheapest.

    Consecutive hull points have increasing error per saved cost: the greedy budget
    allocation only ever needs the next hull point of each layer.
    """
    pts = sorted(set(points), key=lambda p: (p[0], p[1]))
    # keep, for each cost, the smallest error
    best: dict[float, Point] = {}
    for p in pts:
        if p[0] not in best or p[1] < best[p[0]][1]:
            best[p[0]] = p
    pts = sorted(best.values(), key=lambda p: p[0])
    hull: list[Point] = []
    for p in pts:
        while len(hull) >= 2:
            (x1, y1, _), (x2, y2, _) = hull[-2], hull[-1]
            # remove hull[-1] if it lies on or above the segment hull[-2] -> p
            if (y2 - y1) * (p[0] - x1) >= (p[1] - y1) * (x2 - x1):
                hull.pop()
            else:
                break
        hull.append(p)
    # from the dense point (most cost) downwards; drop points with more error for more cost
    hull.reverse()
    out = [hull[0]]
    for p in hull[1:]:
        if p[1] >= out[-1][1]:
            out.append(p)
    return out


class _Greedy:
    """Lagrangian allocation on convex hulls: each step moves the one layer whose next hull
    point costs the least squared error per unit of cost saved."""

    def __init__(self, hulls: dict[str, list[Point]]) -> None:
        self.hulls = hulls
        self.pos = dict.fromkeys(hulls, 0)

    def step(self) -> float | None:
        """Take the best move; returns the cost it saves (None when no layer can move)."""
        best = None
        for name, h in self.hulls.items():
            i = self.pos[name]
            if i + 1 >= len(h):
                continue
            saved = h[i][0] - h[i + 1][0]
            slope = (h[i + 1][1] - h[i][1]) / saved
            if best is None or slope < best[0]:
                best = (slope, name, saved)
        if best is None:
            return None
        _, name, saved = best
        self.pos[name] += 1
        return saved

    def run(self, total: float, target: float) -> tuple[float, bool]:
        """Steps until ``total`` (less the savings) is at most ``target``: (total, reached)."""
        while total > target:
            saved = self.step()
            if saved is None:
                return total, False
            total -= saved
        return total, True

    def chosen(self) -> dict[str, Option]:
        out: dict[str, Option] = {}
        for n, i in self.pos.items():
            option = self.hulls[n][i][2]
            if option is not None:
                out[n] = option
        return out

    def cost(self, name: str) -> float:
        return self.hulls[name][self.pos[name]][0]


def _kind_points(lay: _Layer, kind: str, multiple: int | None = None) -> list[Point]:
    """Every candidate rank of ``kind`` cheaper in MACs than the conv, with its squared error
    (candidates rounded up to ``multiple``)."""
    assert lay.conv is not None
    dec = lay.decs[kind]
    ranks = dec.candidates()
    if multiple is not None:
        ranks = list(dict.fromkeys(dec.round_up(r, multiple) for r in ranks))
    pts: list[Point] = []
    for r in ranks:
        macs = lay.costs(kind, r)[0]
        if macs < lay.macs:
            pts.append((macs, dec.error2(r), (kind, r)))
    return pts


def _mac_points(lay: _Layer, multiple: int | None = None) -> list[Point]:
    """The dense point and every candidate of every kind the layer weighs."""
    pts: list[Point] = [(lay.macs, 0.0, None)]
    for kind in lay.decs:
        pts += _kind_points(lay, kind, multiple)
    return pts


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


# ----------------------------------------------------------------------------------------------
# measured time on the target
# ----------------------------------------------------------------------------------------------

#: A clock for :func:`convert`'s latency policy: ``timer(module, x)`` returns the seconds one
#: call ``module(x)`` takes (the default measures it; tests inject deterministic ones).
Timer = Callable[[nn.Module, Tensor], float]

#: Timed calls per module (the median is used) and untimed calls before them.
TIMING_REPEATS = 7
TIMING_WARMUP = 2
#: Candidate ranks timed per layer at most (spread along the layer's (MACs, error) hull).
MAX_TIMED = 8
#: Whole-model measurements along the greedy path at most (a bisection on measured latency),
#: and the predicted step (fraction of the original latency) below which it stops.
LATENCY_ROUNDS = 8
LATENCY_RESOLUTION = 0.01


@dataclass
class _Timing:
    """How modules are timed on the target: device, threads, and the clock."""

    device: torch.device
    threads: int | None
    timer: Timer | None
    repeats: int = TIMING_REPEATS
    warmup: int = TIMING_WARMUP

    def times(
        self, modules: dict[Any, nn.Module], x: Tensor | dict[Any, Tensor]
    ) -> dict[Any, float]:
        """Seconds per call of every module on ``x`` (CPU: the modules take turns round by
        round, so none is always timed first, and each keeps its fastest call, since other
        processes only ever add time; CUDA: the median of events around graph replays)."""
        xs = x if isinstance(x, dict) else dict.fromkeys(modules, x)
        if self.timer is not None:
            out = {}
            for k, m in modules.items():
                t = self.timer(m, xs[k])
                if isinstance(t, bool) or not isinstance(t, (int, float)) or not t >= 0:
                    raise ValueError(
                        f"timer must return a number of seconds >= 0, got {t!r} for "
                        f"{type(m).__name__}"
                    )
                out[k] = float(t)
            return out
        with torch.inference_mode():
            if self.device.type == "cuda":
                return {
                    k: _cuda_seconds(m, xs[k], self.repeats, self.warmup)
                    for k, m in modules.items()
                }
            with torch_threads(self.threads):
                fns = {k: functools.partial(m, xs[k]) for k, m in modules.items()}
                samples = _samples(fns, self.repeats, self.warmup, 1, None)
                # the fastest call: other processes on the machine only ever add time
                return {k: min(v) for k, v in samples.items()}

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {"device": str(self.device)}
        if self.device.type == "cpu":
            out["threads"] = self.threads if self.threads is not None else torch.get_num_threads()
        out["clock"] = (
            "custom timer"
            if self.timer is not None
            else (
                "CUDA events, CUDA graphs"
                if self.device.type == "cuda"
                else "perf_counter, fastest of the repeats, modules alternating"
            )
        )
        out["repeats"] = self.repeats
        out["warmup"] = self.warmup
        return out


def _check_timing(device: Any, threads: Any, timer: Any, model: nn.Module) -> _Timing:
    dev = _check_device(device, model, visible=timer is None)
    if threads is not None:
        threads = check_nonnegative_int(threads, "threads", minimum=1)
    if timer is not None and not callable(timer):
        raise TypeError(
            f"timer must be a callable timer(module, x) -> seconds, got {type(timer).__name__}"
        )
    return _Timing(dev, threads, timer)


def _format_for(x: Tensor) -> torch.memory_format:
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.ndim, torch.contiguous_format)


@dataclass
class _Target:
    """The prepared copy of the model that is timed (the original is never changed)."""

    model: nn.Module
    x: Tensor
    fmt: torch.memory_format
    settings: dict[str, Any]


def _prepare(model: nn.Module, example: Tensor, timing: _Timing, fmt: Any = None) -> _Target:
    """``model`` as :func:`sepconv.nn.profile` times it: an evaluation-mode copy on the device,
    batch norm folded into the conv before it (undone if the outputs change), and the memory
    format (channels-last for 2-D/3-D inputs when it is faster; ``fmt`` imposes one)."""
    prepared = copy.deepcopy(model).eval().to(timing.device)
    x = example.detach().to(timing.device)
    settings: dict[str, Any] = {}
    with torch.no_grad():
        reference = prepared(x)
        folded = _fold_batchnorm(prepared, x)
        check = prepared(x)
    if folded:
        scale = float(reference.abs().max()) if isinstance(reference, Tensor) else 1.0
        if not (
            isinstance(check, Tensor)
            and isinstance(reference, Tensor)
            and torch.allclose(check, reference, rtol=1e-3, atol=1e-4 * max(scale, 1e-30))
        ):
            prepared = copy.deepcopy(model).eval().to(timing.device)
            folded = []
            settings["fold_bn"] = "undone (outputs changed)"
    settings.setdefault("fold_bn", f"{len(folded)} batch norms folded")
    if fmt is None:
        fmt = _format_for(x)
        if fmt != torch.contiguous_format:
            alt = copy.deepcopy(prepared).to(memory_format=fmt)  # type: ignore[call-overload]
            t_plain = timing.times({0: prepared}, x)[0]
            t_alt = timing.times({0: alt}, x.contiguous(memory_format=fmt))[0]
            if t_alt >= t_plain:
                fmt = torch.contiguous_format
    prepared = prepared.to(memory_format=fmt)  # type: ignore[call-overload]
    x = x.contiguous(memory_format=fmt)
    settings["memory_format"] = _FORMAT_NAMES[fmt]
    settings["inference_mode"] = True
    return _Target(prepared, x, fmt, settings)


def _reformat(target: _Target, fmt: torch.memory_format) -> _Target:
    """The prepared model and input in another memory format."""
    model = copy.deepcopy(target.model).to(memory_format=fmt)  # type: ignore[call-overload]
    x = target.x.contiguous(memory_format=fmt)
    return _Target(model, x, fmt, {**target.settings, "memory_format": _FORMAT_NAMES[fmt]})


def _capture(target: _Target, names: list[str]) -> dict[str, Tensor]:
    """The input of each named conv in one forward pass of the prepared model."""
    inputs: dict[str, Tensor] = {}
    handles = []
    for name in names:
        m = target.model.get_submodule(name)

        def hook(mod: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
            if name not in inputs and args and isinstance(args[0], Tensor):
                inputs[name] = args[0].clone()

        handles.append(m.register_forward_pre_hook(hook))
    try:
        with torch.inference_mode():
            target.model(target.x)
    finally:
        for h in handles:
            h.remove()
    return inputs


def _structure(c: _Conv, kind: str, rank: Rank, bias: bool, target: _Target) -> nn.Module:
    """A structured layer of ``kind`` and ``rank`` with the conv's geometry, for timing only
    (default weights: the time does not depend on their values); ``bias`` as the prepared conv
    has it (a folded batch norm adds one)."""
    key = "depth_multiplier" if kind == "depthwise" else "rank"
    kwargs = c.layer_kwargs()
    kwargs.update(bias=bias, device=target.x.device)
    layer = LAYERS[kind][c.dims](c.cin, c.cout, **{key: rank}, **kwargs).eval()
    return layer.to(memory_format=target.fmt)  # type: ignore[call-overload]


def _swapped(target: _Target, modules: dict[str, nn.Module]) -> nn.Module:
    """A copy of the prepared model with some convs swapped for (timing) modules."""
    model = copy.deepcopy(target.model)
    for name, new in modules.items():
        _set_module(model, name, new)
    return model


# ----------------------------------------------------------------------------------------------
# convert
# ----------------------------------------------------------------------------------------------


def convert(
    model: nn.Module,
    kind: str | Sequence[str] = "depthwise",
    *,
    layers: Sequence[str] | slice | None = None,
    rank: int | Sequence[int] | str | None = None,
    tol: float | None = None,
    mac_budget: float | None = None,
    latency_budget: float | None = None,
    rank_multiple: int | None = None,
    calibration: Tensor | None = None,
    input_shape: Sequence[int] | None = None,
    measure: bool = False,
    device: str | torch.device | None = None,
    threads: int | None = None,
    timer: Timer | None = None,
    inplace: bool = False,
) -> tuple[nn.Module, ConvertReport]:
    """Replace a model's convolutions by depthwise-separable, spatial, CP or Tucker-2 forms.

    Parameters
    ----------
    model : nn.Module
        Any model (torchvision, timm, MONAI or your own; 1-D, 2-D and 3-D convolutions).
    kind : {'depthwise', 'spatial', 'cp', 'tucker2', 'auto'} or sequence of them
        The structure (see :func:`sepconv.nn.factorize`). Several kinds (a sequence, or
        ``'auto'``: depthwise, spatial and Tucker-2, :data:`AUTO_KINDS`) are weighed per
        layer: a budget spends them all along one (cost, error) hull per layer, so each layer
        gets the kind and rank with the least squared error per saved MAC or second; ``tol``
        and the exact policy take the kind costing the fewest MACs; ``rank`` needs one kind.
        The report names each layer's kind.
    layers : list of str or slice, optional
        Which convolutions to consider: names (as in ``model.named_modules()``), or a slice
        over all convolutions in forward order (``slice(0, 5)``: the first five). Default: all.
    rank : int, (int, int) or 'vbmf', optional
        The same rank for every chosen layer (clipped to each layer's maximum, noted; a pair
        for tucker2 ``(r_in, r_out)`` and 3-D spatial), or ``'vbmf'``: each layer's rank by
        analytic empirical VBMF (as :func:`sepconv.nn.factorize`); a VBMF rank whose layer
        would cost more MACs than the conv leaves the layer alone.
    tol : float, optional
        Per-layer relative weight error: each layer gets the smallest rank meeting it. With
        ``calibration`` the rank is chosen by ``tol`` first; the refit on the layer's inputs
        then lowers the output error and may move the weight error above ``tol``.
    mac_budget : float, optional
        The converted model may use at most this fraction of the original model's MACs
        (convolutions and linear layers, for the calibration or example input). Ranks are
        lowered greedily where the squared relative weight error per saved MAC is smallest
        (along each layer's convex hull of (MACs, error) options). Needs ``calibration`` or
        ``input_shape``.
    latency_budget : float, optional
        The converted model's measured latency may be at most this fraction of the original's,
        on ``device`` for the input of ``input_shape`` (or one sample of ``calibration``).
        Both models are timed as :func:`sepconv.nn.profile` times them (evaluation mode, batch
        norm folded, channels-last when faster, inference mode; CUDA events around CUDA
        graph replays on a GPU). Each eligible layer's candidate ranks (up to 8 along its
        (MACs, error) hull) are timed on the layer's real input against the conv itself; a
        candidate measured slower than the conv is never used. Ranks are then lowered
        greedily where the squared weight error per saved second is smallest, the whole
        model is built and timed, and if it misses the budget the target is corrected by the
        measured/predicted ratio (up to 4 rounds). The report gives the times. Needs
        ``calibration`` or ``input_shape``.
    rank_multiple : int, optional
        Round every rank (each entry of a pair) up to a multiple of this, never above the
        full rank; with a budget, the candidate ranks are rounded.
    calibration : Tensor, optional
        A batch of model inputs. Gives the forward order and exact MACs, refines every new
        layer's last stage by least squares on its real inputs, and reports output errors
        per layer and for the whole model. The inputs of every chosen conv are held in memory
        during the conversion: keep the batch modest (8-64 samples).
    input_shape : sequence of int, optional
        Input shape (with batch axis) of an example input (random), for order and MACs
        without calibration; with a latency budget or ``measure``, the timed input.
    measure : bool
        Time every selected layer before and after, and the whole model before and after, as
        the latency policy does (implied by ``latency_budget``). Needs ``calibration`` or
        ``input_shape``.
    device : str or torch.device, optional
        Where to time (``'cpu'``, ``'cuda'``, ``'cuda:1'``); default: the model's device. The
        model itself stays where it is.
    threads : int, optional
        torch threads while timing on the CPU (restored afterwards); default: as set.
    timer : callable, optional
        ``timer(module, x) -> seconds`` replaces the measurement (deterministic tests,
        another clock).
    inplace : bool
        Modify ``model`` itself; by default a deep copy is converted and ``model`` is left
        unchanged.

    At most one of ``rank``, ``tol``, ``mac_budget`` and ``latency_budget``; with none, every
    layer gets the smallest rank that reproduces it exactly (to float rounding), which for
    trained weights usually costs more than the original (those layers are left alone and
    reported). 1x1 and depthwise convs are left alone, as is any layer whose factorized form
    would cost more MACs than the original (the latency policy: more time), and every layer
    the policy did not pick; all appear in the report with the reason. Stages of sepconv
    structured layers are not convolutions of the model for this purpose.

    Returns
    -------
    model : nn.Module
        The converted model (the argument itself with ``inplace=True``).
    report : ConvertReport
        Per layer: kind, rank, MACs and params before/after, weight error, output error on
        the calibration batch, measured time before/after (when timed); totals;
        ``str(report)`` is a table.

    Raises
    ------
    TypeError
        ``model`` is not a module; ``layers`` is not names or a slice; ``calibration`` is not
        a tensor; ``timer`` is not callable.
    ValueError
        Unknown ``kind``; more than one policy; a budget outside (0, 1] or without an input;
        ``layers`` naming something that is not a convolution of the model;
        ``calibration``/``input_shape`` that do not fit the model; an unknown or unavailable
        ``device``. Nothing is changed when an error is raised.

    Examples
    --------
    >>> import torch
    >>> from sepconv.nn import convert
    >>> from sepconv.nn.models import small_cnn
    >>> model = small_cnn(width=16, depth=2)
    >>> new, report = convert(model, "depthwise", rank=1, input_shape=(1, 3, 32, 32))
    >>> [r.name for r in report.converted]
    ['stem.conv', 'blocks.0.0', 'blocks.1.0']
    >>> report.macs_after < report.macs_before
    True
    >>> new, report = convert(model, "tucker2", latency_budget=0.8, input_shape=(1, 3, 32, 32),
    ...                       threads=2)  # doctest: +SKIP
    >>> report.latency_after <= 0.8 * report.latency_before  # doctest: +SKIP
    True
    """
    t0 = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    policy_args = _check_policy(
        kind, rank, tol, mac_budget, latency_budget, calibration, input_shape, measure
    )
    kinds = policy_args.kinds
    label = _label(kinds)
    multiple = (
        None
        if rank_multiple is None
        else check_nonnegative_int(rank_multiple, "rank_multiple", minimum=1)
    )
    inplace = check_bool(inplace, "inplace")
    timing = _check_timing(device, threads, timer, model) if policy_args.measure else None
    if timing is None and device is not None:  # unused without measuring, but not unread:
        _check_device(device, model, visible=False)  # a typo ('cdua') is still refused
    structured = _inside_structured(model)
    convs: dict[str, nn.Module] = {
        n: m for n, m in model.named_modules() if isinstance(m, _CONV_TYPES) and n not in structured
    }
    # transposed convs are reported (left alone) when every conv is considered; names and
    # slices select among the forward convolutions only, as before
    transposed: dict[str, nn.Module] = {}
    if layers is None:
        transposed = {
            n: m
            for n, m in model.named_modules()
            if isinstance(m, _TRANSPOSED) and n not in structured
        }
    params_before = sum(p.numel() for p in model.parameters())
    trace = _trace(model, {**convs, **transposed}, calibration, input_shape)
    selected = _select(layers, trace.order, structured)  # transposed ones only with None
    chosen = _analyse({**convs, **transposed}, selected, kinds, trace)
    target = None
    if timing is not None:
        target = _prepare(model, _timed_input(model, calibration, input_shape), timing)
    budget = policy_args.latency_budget
    converted_target = target
    if budget is not None:
        assert timing is not None and target is not None
        policy, converted_target = _choose_by_latency(
            chosen, label, budget, multiple, trace, timing, target
        )
    else:
        policy = _choose_ranks(
            chosen, rank, policy_args.tol, policy_args.mac_budget, multiple, trace
        )
    new_modules = _factorize_layers(chosen, label, trace, policy)
    # replace (nothing above changed the model)
    target_model = model if inplace else copy.deepcopy(model)
    for name, new in new_modules.items():
        _set_module(target_model, name, new)
    result = _report(target_model, chosen, label, policy, trace, params_before)
    if timing is not None:
        assert target is not None
        assert converted_target is not None
        _measure_result(
            result, chosen, budget, target_model, trace, timing, target, converted_target
        )
    result.seconds = time.perf_counter() - t0
    return target_model, result


# ----------------------------------------------------------------------------------------------
# the steps of convert
# ----------------------------------------------------------------------------------------------


@dataclass
class _Policy:
    kinds: tuple[str, ...]
    tol: float | None
    mac_budget: float | None
    latency_budget: float | None
    measure: bool


def _check_budget(value: Any, name: str, calibration: Any, input_shape: Any) -> float:
    value = check_positive_float(value, name)
    if value > 1:
        what = "MACs" if name == "mac_budget" else "latency"
        raise ValueError(
            f"{name} must be a fraction of the original {what} in (0, 1], got {value!r}"
        )
    if calibration is None and input_shape is None:
        why = "MACs" if name == "mac_budget" else "times"
        raise ValueError(f"{name} needs calibration= or input_shape= ({why} depend on the input)")
    return value


def _check_policy(
    kind: Any,
    rank: Any,
    tol: Any,
    mac_budget: Any,
    latency_budget: Any,
    calibration: Any,
    input_shape: Any,
    measure: Any,
) -> _Policy:
    """``kind``, and at most one rank policy (``rank``, ``tol`` or a budget), checked."""
    kinds = _check_kinds(kind)
    policies = (
        ("rank", rank),
        ("tol", tol),
        ("mac_budget", mac_budget),
        ("latency_budget", latency_budget),
    )
    given = [n for n, v in policies if v is not None]
    if len(given) > 1:
        raise ValueError(
            "give at most one of rank, tol, mac_budget and latency_budget, got "
            + " and ".join(given)
        )
    tol = check_tol(tol)
    if rank is not None and len(kinds) > 1:
        raise ValueError(
            f"rank={rank!r} fixes the rank of one kind; with several kinds ({_label(kinds)}) "
            "give tol, mac_budget or latency_budget, which choose the kind per layer"
        )
    if isinstance(rank, str):
        if rank != "vbmf":
            raise ValueError(f"rank must be an integer, a pair of integers or 'vbmf', got {rank!r}")
    elif rank is not None:
        ranks = (rank,) if not isinstance(rank, (tuple, list)) else tuple(rank)
        for r in ranks:
            if isinstance(r, bool) or not isinstance(r, int):
                raise TypeError(f"rank must be a positive integer, a pair or 'vbmf', got {rank!r}")
            if r < 1:
                raise ValueError(f"rank must be an integer >= 1, got {rank!r}")
    if mac_budget is not None:
        mac_budget = _check_budget(mac_budget, "mac_budget", calibration, input_shape)
    if latency_budget is not None:
        latency_budget = _check_budget(latency_budget, "latency_budget", calibration, input_shape)
    measure = check_bool(measure, "measure")
    if measure and calibration is None and input_shape is None:
        raise ValueError("measure=True needs calibration= or input_shape= (the timed input)")
    return _Policy(kinds, tol, mac_budget, latency_budget, measure or latency_budget is not None)


#: The kinds ``kind='auto'`` weighs per layer: those with closed-form optima. CP is fitted by
#: alternating least squares for every candidate rank (slow on wide layers, and a best fit
#: may not exist); name it in a sequence to include it.
AUTO_KINDS = ("depthwise", "spatial", "tucker2")


def _check_kinds(kind: Any) -> tuple[str, ...]:
    """``kind`` as a tuple of kinds: one name, ``'auto'`` (:data:`AUTO_KINDS`) or a sequence."""
    allowed = f"one of {list(KINDS)}, 'auto', or a sequence of kinds"
    if isinstance(kind, str):
        if kind == "auto":
            return AUTO_KINDS
        if kind in KINDS:
            return (kind,)
        raise ValueError(f"kind must be {allowed}, got {kind!r}")
    if isinstance(kind, (list, tuple)) and kind:
        bad = [k for k in kind if not isinstance(k, str) or k not in KINDS]
        if bad:
            raise ValueError(f"kind must be {allowed}; {bad[0]!r} in {kind!r} is not a kind")
        return tuple(dict.fromkeys(kind))
    if isinstance(kind, (list, tuple)):
        raise ValueError(f"kind must be {allowed}, got an empty {type(kind).__name__}")
    raise TypeError(f"kind must be {allowed}, got {type(kind).__name__}")


def _label(kinds: tuple[str, ...]) -> str:
    """The kinds as the report names them: ``'tucker2'``, ``'depthwise+tucker2'``."""
    return "+".join(kinds)


@dataclass
class _Trace:
    """What one forward pass of the model on the example input showed (nothing without one)."""

    order: list[str]  # convs in forward order (then those that did not run), else registration
    order_kind: str = "registration"
    # spatial input size of each call (weights shared: more than one)
    sizes: dict[str, tuple[tuple[int, ...], ...]] = field(default_factory=dict)
    inputs: dict[str, Tensor] = field(default_factory=dict)  # a conv's input (calibration)
    reference: Any = None  # the model's output on the calibration batch
    calibration: Tensor | None = None
    model_macs: int | None = None  # per sample
    notes: list[str] = field(default_factory=list)
    timing_rounds: list[dict[str, Any]] = field(default_factory=list)  # latency policy
    timing_pick: float | None = None  # measured fraction of the chosen step

    @property
    def ran(self) -> bool:
        return self.order_kind == "forward"


def _example(model: nn.Module, calibration: Any, input_shape: Any) -> tuple[Tensor | None, str]:
    """The input the model is run on, and the parameter that gave it (for error messages)."""
    if calibration is not None:
        if not isinstance(calibration, Tensor):
            raise TypeError(
                f"calibration must be a torch.Tensor batch of model inputs, got "
                f"{type(calibration).__name__}"
            )
        if calibration.is_floating_point() and not bool(torch.isfinite(calibration).all()):
            bad = int((~torch.isfinite(calibration)).sum())
            raise ValueError(
                f"calibration must be finite: {bad} of its {calibration.numel()} values are "
                "NaN or Inf (they would turn the fitted weights into NaN)"
            )
        return calibration, "calibration"
    if input_shape is None:
        return None, ""
    try:
        shape = tuple(int(n) for n in input_shape)
    except (TypeError, ValueError):
        raise TypeError(
            f"input_shape must be a sequence of integers, got {input_shape!r}"
        ) from None
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(
            f"input_shape must be positive integers including the batch axis, got {shape}"
        )
    return example_input(model, shape), "input_shape"


def _trace(
    model: nn.Module, convs: dict[str, nn.Module], calibration: Any, input_shape: Any
) -> _Trace:
    """Run the model once on the example input (if any): forward order, sizes, MACs."""
    example, what = _example(model, calibration, input_shape)
    if example is None:
        return _Trace(list(convs))
    try:
        order, sizes, inputs, reference = _record(model, convs, example, calibration is not None)
        # per sample, like the layers' totals
        model_macs = sum(r.macs for r in count(model, example)) // example.shape[0]
    except (RuntimeError, ValueError) as exc:  # a model's own shape checks raise either
        raise ValueError(
            f"{what} of shape {tuple(example.shape)} does not fit the model: "
            f"{' '.join(str(exc).split())[:300]}"
        ) from None
    trace = _Trace(order, "forward", sizes, inputs, reference, calibration, model_macs)
    unused = [n for n in convs if n not in order]
    if unused:
        trace.notes.append(f"{len(unused)} conv(s) not run by the forward pass: {unused[:5]}")
        order += unused  # listed (and left alone) after the ones that ran
    return trace


@dataclass
class _Layer:
    """A selected convolution on its way through :func:`convert`."""

    name: str
    conv: _Conv | None  # None: a transposed conv (always left alone)
    macs: int  # of the dense conv: total over its calls when the model ran, else per pixel
    params: int
    # spatial input size of each call, when the model was run (weights shared: several)
    calls: tuple[tuple[int, ...], ...] = ()
    decs: dict[str, _Decomposition] = field(default_factory=dict)  # by kind; {}: left alone
    kind: str | None = None  # the chosen kind (with ``rank``)
    rank: Rank | None = None  # None: kept dense (by a budget)
    rank_note: str = ""
    report: LayerReport | None = None
    time_before: float | None = None  # measured, seconds (the prepared conv)
    time_after: float | None = None
    timed: dict[Any, float] = field(default_factory=dict)  # option (kind, rank) -> seconds
    errors: dict[Any, float] = field(default_factory=dict)  # option -> squared weight error

    @property
    def size(self) -> tuple[int, ...] | None:
        """The spatial input size of the first call (None: the model was not run)."""
        return self.calls[0] if self.calls else None

    def costs(self, kind: str, rank: Rank) -> tuple[int, int]:
        """(MACs, params) of this conv as ``kind`` at ``rank``, as :attr:`macs` counts."""
        assert self.conv is not None
        return _call_costs(self.conv, kind, rank, self.calls)

    def choose(self, option: Option | None) -> None:
        """Replace the conv by ``option`` (kind, rank); None keeps it dense."""
        self.kind, self.rank = (None, None) if option is None else option

    def leave(self, kind: str, reason: str) -> None:
        self.decs = {}
        unit = "per_output_pixel" if self.size is None else "total"
        m, p = self.macs, self.params  # before = after: rank None, not converted
        self.report = LayerReport(
            self.name, kind, None, False, m, m, p, p, macs_unit=unit, note=reason
        )


def _analyse(
    convs: dict[str, nn.Module], selected: list[str], kinds: tuple[str, ...], trace: _Trace
) -> list[_Layer]:
    """Every selected conv: its dense cost, and its decomposition of every kind that applies
    to it, unless it is left alone."""
    kind = _label(kinds)
    out = []
    for name in selected:
        module = convs[name]
        if isinstance(module, _TRANSPOSED):
            calls = trace.sizes.get(name, ())
            lay = _Layer(name, None, *_transposed_costs(module, calls), calls=calls)
            lay.leave(kind, TRANSPOSED_REASON)
            out.append(lay)
            continue
        c = _as_conv(module, name)
        calls = trace.sizes.get(name, ())
        lay = _Layer(name, c, *_call_costs(c, None, None, calls), calls=calls)
        usable = [k for k in kinds if not _skip_reason(c, k)]
        reason = "" if usable else _skip_reason(c, kinds[0])
        if trace.ran and name not in trace.sizes:
            reason = "not run by the forward pass on the given input: left alone"
        if reason:
            lay.leave(kind, reason)
        else:
            lay.decs = {k: _decompose(c, k) for k in usable}
        out.append(lay)
    return out


def _call_costs(
    c: _Conv, kind: str | None, rank: Rank | None, calls: Sequence[tuple[int, ...]]
) -> tuple[int, int]:
    """(MACs, params) of the conv (kind None) or a factorized form: MACs summed over the
    spatial input sizes of its calls (totals for one sample), per output pixel without."""
    if not calls:
        return _costs(c, kind, rank, None)
    per_call = [_costs(c, kind, rank, size) for size in calls]
    return sum(m for m, _ in per_call), per_call[0][1]


def _transposed_costs(module: nn.Module, calls: Sequence[tuple[int, ...]]) -> tuple[int, int]:
    """(MACs, params) of a transposed conv, counted as :func:`sepconv.nn.profile` counts
    them (``prod(k) C_in C_out / groups`` per input element): totals for one sample over the
    input sizes of its calls, else per output pixel (rounded)."""
    assert isinstance(module, _TRANSPOSED)
    per_in = math.prod(module.kernel_size) * module.in_channels * module.out_channels
    per_in //= module.groups
    params = sum(p.numel() for p in module.parameters(recurse=False))
    if calls:
        return sum(per_in * math.prod(size) for size in calls), params
    return round(per_in / math.prod(module.stride)), params


def _choose_ranks(
    layers: list[_Layer],
    rank: Any,
    tol: float | None,
    mac_budget: float | None,
    multiple: int | None,
    trace: _Trace,
) -> str:
    """Each layer's rank by the policy; returns the policy's name."""
    active = [lay for lay in layers if lay.decs]
    suffix = "" if multiple is None else f", rank_multiple={multiple}"
    if mac_budget is not None:
        assert trace.model_macs is not None
        greedy = _Greedy({lay.name: _hull(_mac_points(lay, multiple)) for lay in active})
        _, reached = greedy.run(trace.model_macs, mac_budget * trace.model_macs)
        if not reached:
            trace.notes.append(
                f"mac_budget {mac_budget:g} not reachable: every eligible layer is at its "
                "cheapest useful rank"
            )
        chosen = greedy.chosen()
        for lay in active:
            lay.choose(chosen.get(lay.name))
        return f"mac_budget={mac_budget:g}{suffix}"
    for lay in active:
        # each kind's rank by the policy; with several kinds, the one costing the fewest MACs
        # (then the smallest error) wins
        best: tuple[tuple[int, float], Option, str] | None = None
        for kind, dec in lay.decs.items():
            note = ""
            if rank == "vbmf":
                r = dec.vbmf_rank()
            elif rank is not None:
                r, note = _clip_rank(dec, rank)
            else:
                assert lay.conv is not None
                exact = _exact_tol(lay.conv.dtype)
                r = dec.rank_for(exact if tol is None else max(tol, exact), None)
            if multiple is not None:
                rounded = dec.round_up(r, multiple)
                if rounded != r:
                    more = f"rank {r} rounded up to {rounded} (rank_multiple={multiple})"
                    note = "; ".join(n for n in (note, more) if n)
                r = rounded
            assert lay.conv is not None
            key = (0, 0.0)
            if len(lay.decs) > 1:
                key = (lay.costs(kind, r)[0], dec.error2(r))
            if best is None or key < best[0]:
                best = (key, (kind, r), note)
        assert best is not None
        lay.choose(best[1])
        lay.rank_note = best[2]
    if rank is not None:
        return f"rank={rank}{suffix}"
    return ("exact" if tol is None else f"tol={tol:g}") + suffix


def _timed_input(model: nn.Module, calibration: Any, input_shape: Any) -> Tensor:
    """The input the latency is measured on: ``input_shape``, else one calibration sample."""
    if input_shape is not None:
        return example_input(model, tuple(int(n) for n in input_shape))
    assert isinstance(calibration, Tensor)
    return calibration[:1]


@dataclass
class _Timed:
    """One layer timed in one memory format: the prepared conv and candidate forms."""

    before: float
    ranks: dict[Any, float]  # option (kind, rank) -> seconds
    modules: dict[Any, nn.Module]  # option -> timing module


def _time_layers(
    layers: list[_Layer],
    options: Callable[[_Layer], list[Option]],
    timing: _Timing,
    target: _Target,
) -> dict[str, _Timed]:
    """Time every layer's prepared conv and its structured forms ``options(layer)`` (kind,
    rank), each on the conv's real input in the prepared model."""
    inputs = _capture(target, [lay.name for lay in layers if lay.size is not None])
    out: dict[str, _Timed] = {}
    for lay in layers:
        x = inputs.get(lay.name)
        if x is None:
            continue
        dense = target.model.get_submodule(lay.name)
        bias = getattr(dense, "bias", None) is not None
        modules: dict[Any, nn.Module] = {None: dense}
        for option in options(lay):
            assert lay.conv is not None
            modules[option] = _structure(lay.conv, *option, bias, target)
        t = timing.times(modules, x)
        before = t.pop(None)
        del modules[None]
        out[lay.name] = _Timed(before, t, modules)
    return out


def _timed_per_kind(kinds: int) -> int:
    """Candidates timed per kind: ``MAX_TIMED`` with one kind, fewer each with several."""
    return MAX_TIMED if kinds <= 1 else max(4, MAX_TIMED // kinds + 2)


def _latency_candidates(lay: _Layer, multiple: int | None) -> list[Option]:
    """For each kind the layer weighs, up to ``_timed_per_kind`` ranks along that kind's own
    (MACs, error) hull, spread over it (each kind's hull, not the union's: a kind cheap in
    MACs may be slow on the target, so every kind gets timed)."""
    most = _timed_per_kind(len(lay.decs))
    out: list[Option] = []
    for kind in lay.decs:
        hull = _hull([(lay.macs, 0.0, None), *_kind_points(lay, kind, multiple)])[1:]
        for _, e2, option in hull:
            lay.errors[option] = e2
        options = [o for _, _, o in hull if o is not None]
        if len(options) > most:
            options = [options[round(i * (len(options) - 1) / (most - 1))] for i in range(most)]
        out += options
    return out


@dataclass
class _Pick:
    """The outcome of the latency search in one memory format."""

    target: _Target
    times: dict[str, _Timed]
    chosen: dict[str, Option]
    measured: float  # latency fraction of the picked step (1.0: nothing replaced)
    error2: float  # sum of the chosen ranks' squared errors
    rounds: list[dict[str, Any]]


def _search(
    active: list[_Layer],
    budget: float,
    timing: _Timing,
    base: _Target,
    target: _Target,
    candidates: dict[str, list[Option]],
) -> _Pick:
    """The latency search in ``target``'s memory format against the original ``base``:
    candidates timed per layer, the greedy path on their (time, error) hulls, and a
    bisection along it on the measured latency of the whole model."""
    times = _time_layers(active, lambda lay: candidates.get(lay.name, []), timing, target)
    by_name = {lay.name: lay for lay in active}
    hulls: dict[str, list[Point]] = {}
    for lay in active:
        tl = times.get(lay.name)
        if tl is None:
            continue
        faster = [(t, lay.errors[o], o) for o, t in tl.ranks.items() if t < tl.before]
        if faster:
            hulls[lay.name] = _hull([(tl.before, 0.0, None), *faster])
    # the greedy path: each step the move with the least squared error per saved second
    greedy = _Greedy(hulls)
    base_t = timing.times({0: base.model}, base.x)[0]
    path: list[tuple[float, dict[str, Option]]] = [(base_t, {})]
    while (saved := greedy.step()) is not None:
        path.append((path[-1][0] - saved, greedy.chosen()))
    rounds: list[dict[str, Any]] = []
    measured: dict[int, float] = {0: 1.0}  # step 0 is the original model itself

    def ratio(k: int) -> float:
        """Measured latency of the model at step ``k`` of the path over the original's."""
        if k not in measured:
            swaps = {n: times[n].modules[o] for n, o in path[k][1].items()}
            t = timing.times(
                {"before": base.model, "after": _swapped(target, swaps)},
                {"before": base.x, "after": target.x},
            )
            measured[k] = t["after"] / t["before"] if t["before"] > 0 else 1.0
            rounds.append(
                {"memory_format": _FORMAT_NAMES[target.fmt], "step": k,
                 "predicted": path[k][0] / base_t if base_t > 0 else 1.0,
                 "measured": measured[k], "layers": len(swaps),
                 "exhausted": k == len(path) - 1}
            )  # fmt: skip
        return measured[k]

    # the first step predicted to meet the budget, then bisection on measured fractions:
    # ``lo`` misses the budget, ``hi`` meets it (the least compressed such step found)
    first = next((k for k, (t, _) in enumerate(path) if t <= budget * base_t), len(path) - 1)
    lo, hi = 0, None
    if first > 0 and ratio(first) <= budget:
        hi = first
    elif first > 0:
        lo = first
        if first < len(path) - 1 and ratio(len(path) - 1) <= budget:
            hi = len(path) - 1
    while (
        hi is not None
        and hi - lo > 1
        and len(rounds) < LATENCY_ROUNDS
        and path[lo][0] - path[hi][0] > LATENCY_RESOLUTION * base_t
    ):
        mid = (lo + hi) // 2
        if ratio(mid) <= budget:
            hi = mid
        else:
            lo = mid
    # a step that meets the budget, else the fastest measured (the original if none is faster)
    pick = hi if hi is not None else min(measured, key=lambda k: (measured[k], k))
    chosen = path[pick][1]
    error2 = sum(by_name[n].errors[o] for n, o in chosen.items())
    return _Pick(target, times, chosen, measured[pick], error2, rounds)


def _choose_by_latency(
    layers: list[_Layer],
    label: str,
    budget: float,
    multiple: int | None,
    trace: _Trace,
    timing: _Timing,
    target: _Target,
) -> tuple[str, _Target]:
    """Each layer's rank by measured time: greedy on the (time, error) hulls of the candidates
    measured faster than the conv, then bisection along the greedy path on the measured
    latency of the whole model. The memory format of the original is tried first; if that
    misses the budget, the other one too (the converted model may prefer it), and the better
    outcome is kept. Returns the policy's name and the converted model's timing format."""
    active = [lay for lay in layers if lay.decs]
    candidates = {lay.name: _latency_candidates(lay, multiple) for lay in active}
    picks = [_search(active, budget, timing, target, target, candidates)]
    other = torch.contiguous_format if target.fmt != torch.contiguous_format else None
    if other is None:
        fmt = _format_for(target.x)
        other = fmt if fmt != torch.contiguous_format else None
    if picks[0].measured > budget and other is not None:
        alt = _reformat(target, other)
        picks.append(_search(active, budget, timing, target, alt, candidates))
    # meeting the budget with the least squared error; if neither meets it, the fastest
    best = min(
        picks,
        key=lambda p: (0, p.error2, p.measured) if p.measured <= budget else (1, p.measured, 0),
    )
    trace.timing_rounds = [r for p in picks for r in p.rounds]
    trace.timing_pick = best.measured
    for lay in active:
        tl = best.times.get(lay.name)
        if tl is None:
            continue
        lay.time_before = tl.before
        lay.timed = dict(tl.ranks)
        option = best.chosen.get(lay.name)
        lay.choose(option)
        lay.time_after = lay.timed[option] if option is not None else lay.time_before
        if option is None and not any(t < tl.before for t in tl.ranks.values()):
            if tl.ranks:
                fastest = min(tl.ranks.values())
                lay.leave(
                    label,
                    f"no {label} form measured faster than the conv ({len(tl.ranks)} ranks "
                    f"timed, fastest {fastest * 1e3:.3g} ms vs {tl.before * 1e3:.3g} ms)",
                )
            else:
                lay.leave(label, "no candidate rank cheaper in MACs to time")
    suffix = "" if multiple is None else f", rank_multiple={multiple}"
    return f"latency_budget={budget:g}{suffix}", best.target


def _factorize_layers(
    layers: list[_Layer], label: str, trace: _Trace, policy: str
) -> dict[str, nn.Module]:
    """The new module of every layer its rank makes cheaper (the others are left alone)."""
    new_modules: dict[str, nn.Module] = {}
    by_time = policy.startswith("latency_budget")
    for lay in layers:
        if not lay.decs:
            continue
        assert lay.conv is not None
        r, kind = lay.rank, lay.kind
        if r is None or kind is None:
            lay.leave(label, f"kept dense by the {'latency' if by_time else 'MAC'} budget")
            continue
        ma, _ = lay.costs(kind, r)
        if ma >= lay.macs and not by_time:
            lay.leave(
                kind, f"factorized form (rank {r}) would cost more: {ma:,} >= {lay.macs:,} MACs"
            )
            continue
        x = trace.inputs.get(lay.name)
        y = None
        if x is not None:
            with torch.no_grad():
                y = lay.conv.module(x)
        dec = lay.decs[kind]
        layer, report = _factorize(lay.conv, dec, r, x, y, name=lay.name, note=lay.rank_note)
        if lay.size is not None:  # totals over every call (a calibrated report counts one)
            report.macs_before, report.macs_after = lay.macs, ma
            report.macs_unit = "total"
        if x is not None and len(lay.calls) > 1:
            report.note = "; ".join(
                n
                for n in (report.note, f"called {len(lay.calls)} times: refit on its first call")
                if n
            )
        new_modules[lay.name] = layer
        lay.report = report
    return new_modules


def _report(
    converted: nn.Module,
    layers: list[_Layer],
    kind: str,
    policy: str,
    trace: _Trace,
    params_before: int,
) -> ConvertReport:
    """Totals of the converted model, and its output error on the calibration batch."""
    rows = [lay.report for lay in layers if lay.report is not None]
    macs_after = None
    if trace.model_macs is not None:
        macs_after = trace.model_macs - sum(
            r.macs_before - r.macs_after for r in rows if r.converted
        )
    model_error = None
    if trace.calibration is not None and isinstance(trace.reference, Tensor):
        with _eval(converted), torch.no_grad():
            out = converted(trace.calibration)
        if isinstance(out, Tensor) and out.shape == trace.reference.shape:
            model_error = _relative(out, trace.reference)
    return ConvertReport(
        layers=rows,
        kind=kind,
        policy=policy,
        macs_before=trace.model_macs,
        macs_after=macs_after,
        params_before=params_before,
        params_after=sum(p.numel() for p in converted.parameters()),
        model_output_error=model_error,
        order=trace.order_kind,
        notes=trace.notes,
    )


def _measure_result(
    result: ConvertReport,
    layers: list[_Layer],
    budget: float | None,
    converted: nn.Module,
    trace: _Trace,
    timing: _Timing,
    target: _Target,
    converted_target: _Target,
) -> None:
    """Per-layer times before/after (timed now unless the latency policy did) and the whole
    models, original and converted, prepared alike and timed taking turns."""
    options: dict[str, Option] = {
        lay.name: (lay.report.kind, lay.report.rank)
        for lay in layers
        if lay.report is not None and lay.report.converted and lay.report.rank is not None
    }
    todo = [lay for lay in layers if lay.time_before is None]
    if todo:
        timed = _time_layers(
            todo,
            lambda lay: [options[lay.name]] if lay.name in options else [],
            timing,
            converted_target,
        )
        for lay in todo:
            tl = timed.get(lay.name)
            if tl is not None:
                lay.time_before = tl.before
                lay.timed.update(tl.ranks)
    for lay in layers:
        if lay.time_before is None:
            continue
        option = options.get(lay.name)
        after = lay.timed.get(option, lay.time_before) if option is not None else lay.time_before
        result.layer_times[lay.name] = (lay.time_before, after)
    final = _prepare(converted, target.x, timing, fmt=converted_target.fmt)
    t = timing.times(
        {"before": target.model, "after": final.model}, {"before": target.x, "after": final.x}
    )
    result.latency_before, result.latency_after = t["before"], t["after"]
    result.timing = {
        **timing.settings(),
        "input_shape": list(target.x.shape),
        **target.settings,
        "memory_format_converted": final.settings["memory_format"],
        "fold_bn_converted": final.settings["fold_bn"],
        "rounds": trace.timing_rounds,
        # the whole-model fraction the chosen step measured when it was chosen (the final
        # measurement above is a new one, and as noisy as the machine)
        "chosen_fraction": trace.timing_pick,
    }
    frac = result.latency_fraction
    if budget is not None and frac is not None and frac > budget:
        rounds = trace.timing_rounds
        met = [r for r in rounds if r["measured"] <= budget]
        if met and trace.timing_pick is not None and trace.timing_pick <= budget:
            why = (
                f"the chosen step measured {trace.timing_pick:.3f} when it was chosen; the "
                "difference is timing noise"
            )
        elif any(r["exhausted"] for r in rounds):
            why = "every faster candidate used"
        else:
            why = f"after {len(rounds)} whole-model measurements"
        result.notes.append(
            f"latency_budget {budget:g} not reached in the final measurement: {frac:.3f} of "
            f"the original ({why})"
        )


# ----------------------------------------------------------------------------------------------
# saving and loading a converted model: state dict + what replaced which conv
# ----------------------------------------------------------------------------------------------

#: ``format`` of the files :func:`save_converted` writes.
CHECKPOINT_FORMAT = "sepconv.nn.converted"


def _layer_spec(name: str, layer: nn.Module) -> dict[str, Any]:
    """Class and constructor arguments that rebuild a structured layer (weights apart)."""
    classes = {cls.__name__ for by_dims in LAYERS.values() for cls in by_dims.values()}
    cls_name = type(layer).__name__
    if cls_name not in classes or not isinstance(layer, _StructuredConv):
        raise TypeError(f"{name} is a {cls_name}, not a sepconv structured layer")
    geo = layer.geometry
    last = _last_stage(layer)
    kwargs: dict[str, Any] = {
        "in_channels": layer.in_channels,
        "out_channels": layer.out_channels,
        "kernel_size": list(geo.kernel_size),
        "stride": list(geo.stride),
        "padding": geo.padding if isinstance(geo.padding, str) else list(geo.padding),
        "dilation": list(geo.dilation),
        "padding_mode": geo.padding_mode,
        "groups": layer.groups,
        "bias": last.bias is not None,
    }
    if hasattr(layer, "depth_multiplier"):
        if not all(
            isinstance(getattr(layer, n), nn.Identity) for n in ("bn1", "act1", "bn2", "act2")
        ):
            raise TypeError(f"{name}: a depthwise-separable layer with a norm or activation")
        kwargs["depth_multiplier"] = layer.depth_multiplier
    else:
        rank = layer.rank
        kwargs["rank"] = list(rank) if isinstance(rank, tuple) else rank
    dtype = str(last.weight.dtype).removeprefix("torch.")
    return {"name": name, "class": cls_name, "kwargs": kwargs, "dtype": dtype}


def save_converted(
    model: nn.Module,
    report: ConvertReport,
    path: str | Any,
    *,
    source: str | None = None,
    source_kwargs: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> None:
    """Write a converted model as a state dict plus what is needed to rebuild it.

    The file (``torch.save``; loads with ``weights_only=True``) holds the state dict, one
    entry per replaced convolution (its name, the structured layer's class and constructor
    arguments), the conversion report, and optionally the model's ``source`` (a name in
    :data:`sepconv.nn.models.MODELS` or ``'package.module:factory'``) with the keyword
    arguments it was built with. :func:`load_converted` rebuilds it. The file is written to a
    temporary name in the same folder and renamed: no partial file is left on failure.

    Parameters
    ----------
    model : nn.Module
        The model :func:`convert` returned.
    report : ConvertReport
        Its report (names the replaced layers).
    path : str or path-like
    source, source_kwargs : optional
        How to build the original architecture (for :func:`load_converted` without a model).
    overwrite : bool
        Replace an existing file (refused by default).

    Raises
    ------
    ValueError
        ``path`` exists and ``overwrite`` is False, or its folder does not exist.
    TypeError
        A layer named as converted in ``report`` is not a structured layer of ``model``.
    """
    from pathlib import Path

    target = Path(path)
    if target.exists() and not check_bool(overwrite, "overwrite"):
        raise ValueError(f"path {str(target)!r} exists: give overwrite=True to replace it")
    if not target.parent.is_dir():
        raise ValueError(f"path {str(target)!r}: folder {str(target.parent)!r} does not exist")
    modules = dict(model.named_modules())
    for r in report.converted:
        if r.name not in modules:
            raise TypeError(f"report names {r.name!r}, which is not a module of the model")
        _layer_spec(r.name, modules[r.name])  # raises unless it is a structured layer
    # every structured layer of the model, not only the report's: a model converted twice
    # holds the first conversion's layers too (nested stages are their own layers' business)
    # (a structured layer with a norm or activation inside cannot come from convert: it is
    # part of the architecture the source builds, and is left to it)
    converted = {r.name for r in report.converted}
    specs: list[dict[str, Any]] = []
    for name, m in modules.items():
        inside = any(s["name"] == "" or name.startswith(s["name"] + ".") for s in specs)
        if not isinstance(m, _StructuredConv) or inside:
            continue
        try:
            specs.append(_layer_spec(name, m))
        except TypeError:
            if name in converted:
                raise
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "source": None if source is None else {"model": source, "kwargs": source_kwargs or {}},
        "replacements": specs,
        "state_dict": model.state_dict(),
        "report": report.to_dict(),
    }
    from ..io import replace_atomically

    replace_atomically(target, lambda tmp: torch.save(checkpoint, tmp))


def _import_factory(spec: str) -> Any:
    """A model factory: a name of :data:`sepconv.nn.models.MODELS` or ``'module:attr'``
    (imported with the current directory first on the path, as ``python -m`` does)."""
    import importlib
    import os
    import sys

    from . import models

    if ":" not in spec:
        if spec not in models.MODELS:
            raise ValueError(
                f"source model must be one of {sorted(models.MODELS)} or "
                f"'package.module:factory', got {spec!r}"
            )
        return models.MODELS[spec]
    mod_name, _, attr = spec.partition(":")
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    importlib.invalidate_caches()
    try:
        return getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"source model {spec!r} cannot be imported: {exc}") from None
    finally:
        if added:
            sys.path.remove(cwd)


def load_converted(path: str | Any, model: nn.Module | None = None) -> nn.Module:
    """Rebuild a model written by :func:`save_converted` (or ``sepconv convert``).

    Parameters
    ----------
    path : str or path-like
        The checkpoint (loaded with ``torch.load(..., weights_only=True)`` on the CPU).
    model : nn.Module, optional
        The original architecture (any weights); it is modified in place. Default: built
        from the checkpoint's ``source`` (a registry name or ``'package.module:factory'``,
        imported from the current directory first).

    Returns
    -------
    nn.Module
        The converted model with its weights, in evaluation mode.

    Raises
    ------
    ValueError
        Not a converted-model checkpoint; no ``model`` and no ``source``; the state dict
        does not fit.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types on a file it cannot read
        raise ValueError(
            f"{str(path)!r} cannot be read as a checkpoint: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{str(path)!r} is not a sepconv converted model (no format "
            f"{CHECKPOINT_FORMAT!r}); a plain state dict needs its own model"
        )
    if model is None:
        source = ckpt.get("source")
        if not source:
            raise ValueError(
                f"{str(path)!r} does not say how to build the original model: pass model="
            )
        model = _import_factory(source["model"])(**source["kwargs"])
        if not isinstance(model, nn.Module):
            raise TypeError(f"source model {source['model']!r} did not return an nn.Module")
    elif not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    classes = {cls.__name__: cls for by_dims in LAYERS.values() for cls in by_dims.values()}
    for spec in ckpt["replacements"]:
        cls = classes.get(spec["class"])
        if cls is None:
            raise ValueError(f"unknown layer class {spec['class']!r} in {str(path)!r}")
        kwargs = dict(spec["kwargs"])
        if isinstance(kwargs.get("rank"), list):
            kwargs["rank"] = tuple(kwargs["rank"])
        layer = cls(**kwargs, dtype=getattr(torch, spec.get("dtype", "float32")))
        _set_module(model, spec["name"], layer)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise ValueError(
            f"the state dict in {str(path)!r} does not fit the model: "
            f"{' '.join(str(exc).split())[:300]}"
        ) from None
    return model.eval()
