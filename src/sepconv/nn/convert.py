"""Replace the convolutions of any model by their optimal structured factorizations.

:func:`convert` walks a model, picks convolutions by a policy (names or a slice in forward
order; a per-layer error tolerance; a total MAC budget), factorizes each with
:func:`sepconv.nn.factorize`'s closed forms and reports what every layer costs and loses.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .._validate import check_bool, check_positive_float, check_tol
from ._table import markdown_table, text_table
from .factorize import (
    LayerReport,
    Rank,
    _as_conv,
    _check_kind,
    _Conv,
    _costs,
    _decompose,
    _Decomposition,
    _exact_tol,
    _factorize,
    _relative,
)
from .layers import _StructuredConv
from .profile import _eval, count, example_input

__all__ = ["ConvertReport", "convert"]

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


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

    @property
    def converted(self) -> list[LayerReport]:
        return [r for r in self.layers if r.converted]

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
            "layers": [r.to_dict() for r in self.layers],
        }

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
        if self.model_output_error is not None:
            lines.append(
                f"model output error on the calibration batch: {self.model_output_error:.3g}"
            )
        lines += [f"note: {n_}" for n_ in self.notes]
        return lines

    def __str__(self) -> str:
        return text_table(COLUMNS, self.rows(), self.summary(), left=(0, 1, 9))

    def to_markdown(self) -> str:
        return markdown_table(COLUMNS, self.rows(), self.summary())


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
) -> tuple[list[str], dict[str, tuple[int, ...]], dict[str, Tensor], Any]:
    """Run ``model`` once: the order convs are first called in, their spatial input sizes,
    their inputs (if ``keep``) and the model's output."""
    order: list[str] = []
    sizes: dict[str, tuple[int, ...]] = {}
    inputs: dict[str, Tensor] = {}
    handles = []

    def hook(name: str) -> Any:
        def fn(module: nn.Module, args: tuple[Any, ...]) -> None:
            if name in sizes or not args or not isinstance(args[0], Tensor):
                return
            order.append(name)
            sizes[name] = tuple(args[0].shape[2:])
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


def _hull(points: list[tuple[int, float, Rank | None]]) -> list[tuple[int, float, Rank | None]]:
    """Lower convex hull of (macs, error2) points, from the most MACs to the fewest.

    Consecutive hull points have increasing error per saved MAC: the greedy budget
    allocation only ever needs the next hull point of each layer.
    """
    pts = sorted(set(points), key=lambda p: (p[0], p[1]))
    # keep, for each MAC count, the smallest error
    best: dict[int, tuple[int, float, Rank | None]] = {}
    for p in pts:
        if p[0] not in best or p[1] < best[p[0]][1]:
            best[p[0]] = p
    pts = sorted(best.values(), key=lambda p: p[0])
    hull: list[tuple[int, float, Rank | None]] = []
    for p in pts:
        while len(hull) >= 2:
            (x1, y1, _), (x2, y2, _) = hull[-2], hull[-1]
            # remove hull[-1] if it lies on or above the segment hull[-2] -> p
            if (y2 - y1) * (p[0] - x1) >= (p[1] - y1) * (x2 - x1):
                hull.pop()
            else:
                break
        hull.append(p)
    # from the dense point (most MACs) downwards; drop points with more error for more MACs
    hull.reverse()
    out = [hull[0]]
    for p in hull[1:]:
        if p[1] >= out[-1][1]:
            out.append(p)
    return out


def _budget(layers: list[_Layer], model_macs: int, fraction: float) -> tuple[dict[str, Rank], bool]:
    """Greedy on the convex hulls: cut MACs where the error per saved MAC is smallest."""
    hulls = {}
    for lay in layers:
        assert lay.dec is not None
        pts: list[tuple[int, float, Rank | None]] = [(lay.macs, 0.0, None)]
        for r in lay.dec.candidates():
            macs = _costs(lay.conv, lay.dec.kind, r, lay.size)[0]
            if macs < lay.macs:
                pts.append((macs, lay.dec.error2(r), r))
        hulls[lay.name] = _hull(pts)
    pos = dict.fromkeys(hulls, 0)
    total = model_macs
    target = fraction * model_macs
    while total > target:
        best = None
        for name, h in hulls.items():
            i = pos[name]
            if i + 1 >= len(h):
                continue
            saved = h[i][0] - h[i + 1][0]
            slope = (h[i + 1][1] - h[i][1]) / saved
            if best is None or slope < best[0]:
                best = (slope, name, saved)
        if best is None:
            break
        _, name, saved = best
        pos[name] += 1
        total -= saved
    chosen: dict[str, Rank] = {}
    for n, i in pos.items():
        option = hulls[n][i][2]
        if option is not None:
            chosen[n] = option
    return chosen, total <= target


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


# ----------------------------------------------------------------------------------------------
# convert
# ----------------------------------------------------------------------------------------------


def convert(
    model: nn.Module,
    kind: str = "depthwise",
    *,
    layers: Sequence[str] | slice | None = None,
    rank: int | Sequence[int] | None = None,
    tol: float | None = None,
    mac_budget: float | None = None,
    calibration: Tensor | None = None,
    input_shape: Sequence[int] | None = None,
    inplace: bool = False,
) -> tuple[nn.Module, ConvertReport]:
    """Replace a model's convolutions by depthwise-separable, spatial or CP factorizations.

    Parameters
    ----------
    model : nn.Module
        Any model (torchvision, timm, MONAI or your own; 1-D, 2-D and 3-D convolutions).
    kind : {'depthwise', 'spatial', 'cp'}
        The structure (see :func:`sepconv.nn.factorize`).
    layers : list of str or slice, optional
        Which convolutions to consider: names (as in ``model.named_modules()``), or a slice
        over all convolutions in forward order (``slice(0, 5)``: the first five). Default: all.
    rank : int, optional
        The same rank for every chosen layer (clipped to each layer's maximum, noted).
    tol : float, optional
        Per-layer relative weight error: each layer gets the smallest rank meeting it.
    mac_budget : float, optional
        The converted model may use at most this fraction of the original model's MACs
        (convolutions and linear layers, for the calibration or example input). Ranks are
        lowered greedily where the squared relative weight error per saved MAC is smallest
        (along each layer's convex hull of (MACs, error) options). Needs ``calibration`` or
        ``input_shape``.
    calibration : Tensor, optional
        A batch of model inputs. Gives the forward order and exact MACs, refines every new
        layer's last stage by least squares on its real inputs, and reports output errors
        per layer and for the whole model. The inputs of every chosen conv are held in memory
        during the conversion: keep the batch modest (8-64 samples).
    input_shape : sequence of int, optional
        Input shape (with batch axis) of an example input (random), for order and MACs
        without calibration.
    inplace : bool
        Modify ``model`` itself; by default a deep copy is converted and ``model`` is left
        unchanged.

    At most one of ``rank``, ``tol`` and ``mac_budget``; with none, every layer gets the
    smallest rank that reproduces it exactly (to float rounding), which for trained weights
    usually costs more than the original (those layers are left alone and reported).
    1x1 and depthwise convs are left alone, as is any layer whose factorized form would cost
    more MACs than the original, and every layer the policy did not pick; all appear in the
    report with the reason. Stages of sepconv structured layers are not convolutions of the
    model for this purpose.

    Returns
    -------
    model : nn.Module
        The converted model (the argument itself with ``inplace=True``).
    report : ConvertReport
        Per layer: kind, rank, MACs and params before/after, weight error, output error on
        the calibration batch; totals; ``str(report)`` is a table.

    Raises
    ------
    TypeError
        ``model`` is not a module; ``layers`` is not names or a slice; ``calibration`` is not
        a tensor.
    ValueError
        Unknown ``kind``; more than one of ``rank``/``tol``/``mac_budget``; ``mac_budget``
        outside (0, 1] or without an input; ``layers`` naming something that is not a
        convolution of the model; ``calibration``/``input_shape`` that do not fit the model.
        Nothing is changed when an error is raised.

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
    """
    t0 = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    kind, tol, mac_budget = _check_policy(kind, rank, tol, mac_budget, calibration, input_shape)
    inplace = check_bool(inplace, "inplace")
    structured = _inside_structured(model)
    convs: dict[str, nn.Module] = {
        n: m for n, m in model.named_modules() if isinstance(m, _CONV_TYPES) and n not in structured
    }
    params_before = sum(p.numel() for p in model.parameters())
    trace = _trace(model, convs, calibration, input_shape)
    chosen = _analyse(convs, _select(layers, trace.order, structured), kind, trace)
    policy = _choose_ranks(chosen, rank, tol, mac_budget, trace)
    new_modules = _factorize_layers(chosen, kind, trace)
    # replace (nothing above changed the model)
    target_model = model if inplace else copy.deepcopy(model)
    for name, new in new_modules.items():
        _set_module(target_model, name, new)
    result = _report(target_model, chosen, kind, policy, trace, params_before)
    result.seconds = time.perf_counter() - t0
    return target_model, result


# ----------------------------------------------------------------------------------------------
# the steps of convert
# ----------------------------------------------------------------------------------------------


def _check_policy(
    kind: Any,
    rank: Any,
    tol: Any,
    mac_budget: Any,
    calibration: Any,
    input_shape: Any,
) -> tuple[str, float | None, float | None]:
    """``kind``, and at most one rank policy (``rank``, ``tol`` or ``mac_budget``), checked."""
    kind = _check_kind(kind)
    policies = (("rank", rank), ("tol", tol), ("mac_budget", mac_budget))
    given = [n for n, v in policies if v is not None]
    if len(given) > 1:
        raise ValueError(f"give at most one of rank, tol and mac_budget, got {' and '.join(given)}")
    tol = check_tol(tol)
    if rank is not None:
        ranks = (rank,) if not isinstance(rank, (tuple, list)) else tuple(rank)
        for r in ranks:
            if isinstance(r, bool) or not isinstance(r, int):
                raise TypeError(f"rank must be a positive integer, got {rank!r}")
            if r < 1:
                raise ValueError(f"rank must be an integer >= 1, got {rank!r}")
    if mac_budget is not None:
        mac_budget = check_positive_float(mac_budget, "mac_budget")
        if mac_budget > 1:
            raise ValueError(
                f"mac_budget must be a fraction of the original MACs in (0, 1], got {mac_budget!r}"
            )
        if calibration is None and input_shape is None:
            raise ValueError(
                "mac_budget needs calibration= or input_shape= (MACs depend on the input size)"
            )
    return kind, tol, mac_budget


@dataclass
class _Trace:
    """What one forward pass of the model on the example input showed (nothing without one)."""

    order: list[str]  # convs in forward order (then those that did not run), else registration
    order_kind: str = "registration"
    sizes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # spatial input size
    inputs: dict[str, Tensor] = field(default_factory=dict)  # a conv's input (calibration)
    reference: Any = None  # the model's output on the calibration batch
    calibration: Tensor | None = None
    model_macs: int | None = None  # per sample
    notes: list[str] = field(default_factory=list)

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
    except RuntimeError as exc:
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
    conv: _Conv
    size: tuple[int, ...] | None  # spatial input size, when the model was run
    macs: int  # of the dense conv: total with a size, else per output pixel
    params: int
    dec: _Decomposition | None = None  # None once left alone
    rank: Rank | None = None  # None: kept dense (by the MAC budget)
    rank_note: str = ""
    report: LayerReport | None = None

    def leave(self, kind: str, reason: str) -> None:
        self.dec = None
        unit = "per_output_pixel" if self.size is None else "total"
        m, p = self.macs, self.params  # before = after: rank None, not converted
        self.report = LayerReport(
            self.name, kind, None, False, m, m, p, p, macs_unit=unit, note=reason
        )


def _analyse(
    convs: dict[str, nn.Module], selected: list[str], kind: str, trace: _Trace
) -> list[_Layer]:
    """Every selected conv: its dense cost, and its decomposition unless it is left alone."""
    out = []
    for name in selected:
        c = _as_conv(convs[name], name)
        size = trace.sizes.get(name)
        lay = _Layer(name, c, size, *_costs(c, None, None, size))
        reason = _skip_reason(c, kind)
        if trace.ran and name not in trace.sizes:
            reason = "not run by the forward pass on the given input: left alone"
        if reason:
            lay.leave(kind, reason)
        else:
            lay.dec = _decompose(c, kind)
        out.append(lay)
    return out


def _choose_ranks(
    layers: list[_Layer],
    rank: Any,
    tol: float | None,
    mac_budget: float | None,
    trace: _Trace,
) -> str:
    """Each layer's rank by the policy; returns the policy's name."""
    active = [lay for lay in layers if lay.dec is not None]
    if mac_budget is not None:
        assert trace.model_macs is not None
        chosen, reached = _budget(active, trace.model_macs, mac_budget)
        if not reached:
            trace.notes.append(
                f"mac_budget {mac_budget:g} not reachable: every eligible layer is at its "
                "cheapest useful rank"
            )
        for lay in active:
            lay.rank = chosen.get(lay.name)
        return f"mac_budget={mac_budget:g}"
    for lay in active:
        assert lay.dec is not None
        if rank is not None:
            lay.rank, lay.rank_note = _clip_rank(lay.dec, rank)
        else:
            exact = _exact_tol(lay.conv.dtype)
            lay.rank = lay.dec.rank_for(exact if tol is None else max(tol, exact), None)
    if rank is not None:
        return f"rank={rank}"
    return "exact" if tol is None else f"tol={tol:g}"


def _factorize_layers(layers: list[_Layer], kind: str, trace: _Trace) -> dict[str, nn.Module]:
    """The new module of every layer its rank makes cheaper (the others are left alone)."""
    new_modules: dict[str, nn.Module] = {}
    for lay in layers:
        if lay.dec is None:
            continue
        r = lay.rank
        if r is None:
            lay.leave(kind, "kept dense by the MAC budget")
            continue
        ma, _ = _costs(lay.conv, kind, r, lay.size)
        if ma >= lay.macs:
            lay.leave(
                kind, f"factorized form (rank {r}) would cost more: {ma:,} >= {lay.macs:,} MACs"
            )
            continue
        x = trace.inputs.get(lay.name)
        y = None
        if x is not None:
            with torch.no_grad():
                y = lay.conv.module(x)
        layer, report = _factorize(lay.conv, lay.dec, r, x, y, name=lay.name, note=lay.rank_note)
        if lay.size is not None and x is None:
            report.macs_before, report.macs_after = lay.macs, ma
            report.macs_unit = "total"
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
