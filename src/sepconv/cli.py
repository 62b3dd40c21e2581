"""The ``sepconv`` command line.

Commands
--------
``sepconv analyze SPEC [--tol T] [--data-shape N,N] [--json]``
    Shape, separable rank, singular values (2-D) or mode spectra (N-D), and for every rank up
    to the exact one: error, error bound, MACs and predicted speed-up over direct correlation.
``sepconv cost conv --cin 64 --cout 128 --kernel 3 [--dims 2] [--json]``
    Standard vs depthwise-separable convolution: MACs per output pixel, parameters, ratio.
``sepconv cost kernel --shape 7,7 [--rank R] [--data-shape N,N] [--json]``
    MACs per output element of every way to run a kernel of that shape.
``sepconv profile MODEL [--width A] [--resolution R] [--full-conv] [--threads N] [--json]``
    Per layer of a model (``mobilenet_v1``, ``resnet18``, ``small_cnn`` or
    ``package.module:factory``): params, MACs, bias additions, bytes moved, roofline time from
    this machine's GEMM rate and bandwidth, measured time; totals and end-to-end latency.
    ``--device cuda`` times on the GPU (CUDA events, CUDA graphs) against its measured rates.
``sepconv convert MODEL -o OUT [--state-dict W] [--kind K] [--rank R | --tol T | ...] [--json]``
    Replace the model's convolutions by structured ones (``sepconv.nn.convert``) and save it:
    a state dict with the structure (``sepconv.nn.load_converted``) or ``--torchscript``;
    prints the per-layer report (``--json``: ``ConvertReport.to_dict()`` plus ``output``).
    Policies: ``--rank``, ``--tol``, ``--mac-budget``, ``--latency-budget`` (measured).
``sepconv filter INPUT OUTPUT --kernel SPEC [--sigma-mm MM] [--mode M] [--chunks C] ...``
    Filter an image or volume file (PNG/JPEG/TIFF/NIfTI/.npy/Zarr) with any kernel; Zarr input
    or ``--chunks`` runs out of core on dask. Prints one summary line (shape, dtype, plan,
    time, throughput); never writes over INPUT or, without ``--overwrite``, over OUTPUT.
``sepconv demo``
    A tour: analyses a few kernels and prints the cost tables.

JSON schemas (stable; new keys may be added, existing keys keep their meaning)
------------------------------------------------------------------------------
``analyze --json``::

    {"schema": 1, "kernel": str, "shape": [int], "rank": int,  # exact separable rank
     "precision": str,  # "float16" | "float32" | "float64": what "exact" is judged at
     "exact_tolerance": float,  # relative error counted as exact at that precision
     "multilinear_rank": [int], "singular_values": [float] | null,  # null for N-D kernels
     "mode_spectra": [[float]], "tol": float | null, "tol_rank": int | null,
     "errors": [{"rank": int, "error": float, "error_bound": float, "macs": int,
                 "speedup": float, "exact": bool, "degenerate": bool, "method": str}],
     "data_shape": [int],
     "macs": {"direct": int, "separable": int, "lowrank": int, "fft": float},
     "speedup": {"separable": float, "lowrank": float, "fft": float},
     "notes": [str]}  # how the exact factorization was found

``precision`` is that of the kernel as given (a float32 ``.npy`` file: float32; named kernels,
``.csv`` and integer kernels: float64) unless ``--precision`` says otherwise; ``rank`` is the
smallest number of terms reproducing the kernel to that rounding. ``errors`` has one row per
rank fitted, ranks increasing and errors non-increasing, the last row being the exact rank
(``errors[-1].rank == rank``, ``errors[-1].macs == macs.lowrank``); for N-D kernels ranks
between the last CP fit and an exact recursive-SVD rank are not fitted (more terms cost more
than the dense kernel), so rows may skip them. With ``--tol``, ``tol_rank`` is the rank of the
first row whose error is within ``tol`` (or exact) and is the rank ``sepconv.separate(K,
tol=tol)`` returns and ``filter --method lowrank --tol`` runs; when that fit has a smaller
error than the row of its rank, it takes the row's place (the rows after it may then have
larger errors). ``macs.separable`` is the cost of one
separable term (``sum(shape)``), ``macs.lowrank`` that of the exact rank
(``rank * sum(shape)``); ``speedup`` is direct MACs over each.

``cost conv --json``::

    {"schema": 1, "in_channels": int, "out_channels": int, "kernel_size": [int], "dims": int,
     "depth_multiplier": int,
     "standard" | "depthwise" | "pointwise" | "depthwise_separable":
         {"macs_per_pixel": int, "params": int, "macs": int | null},
     "ratio": {"macs": float, "params": float, "formula": float},
     "params": {"standard": int, "depthwise_separable": int},
     "stride": int,  # the total MACs' output: input_size / stride, 'same' padding
     "input_size": [int] | null, "output_size": [int] | null}

``profile --json``: ``sepconv.nn.Profile.to_dict()`` plus ``outliers``::

    {"schema": 1, "model": str, "input_shape": [int],
     "settings": {"threads": int, "fold_bn": str | bool, "memory_format": str,
                  "inference_mode": bool, "compile": bool | str, "warmup": int,
                  "repeats": int, "compile_s": float,  # compile_s only when compiled
                  "device": str, "device_name": str, "clock": str},  # these 3: GPU only,
                                                                     # threads: CPU only
     "machine": {"gemm_macs_per_s": float, "bandwidth_bytes_per_s": float, "threads": int,
                 "bandwidth_curve": [[int, float]],
                 "device": str,  # "cpu" or the GPU's name (then threads is 0)
                 "gemm_rates": {str: float}} | null,  # GPU: MAC/s per precision (float32 =
                                                      # TF32 off, tf32, bfloat16, ...); CPU: {}
     "layers": [{"name": str, "type": str, "input_shape": [int], "output_shape": [int],
                 "params": int, "macs": int, "bias_adds": int, "bytes": int, "calls": int,
                 "roofline_s": float | null, "bound": str, "measured_s": float | null,
                 "ratio": float | null, "note": str}],
     "totals": {"params": int, "macs": int, "bias_adds": int, "bytes": int,
                "roofline_s": float | null, "measured_layers_s": float | null,
                "latency_s": float | null},
     "warnings": [str],  # e.g. the per-layer sum and end-to-end time differ by > 3x: why
     "outliers": [str]}  # layers measured beyond 2x of their roofline either way

Errors in user input print one line (``sepconv: error: ...``) and exit with status 2.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import numpy as np
import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from . import __version__, cost, kernels
from .factor import Factorization, exact_tolerance, fits_by_rank, kernel_precision, separate

if TYPE_CHECKING:  # sepconv.io is imported only by ``sepconv filter``
    from .io import FilterReport


def _flags_without_type(params: list[Any]) -> list[Any]:
    """Blank the value type that help shows beside a flag (``--json <bool>``).

    Recent typer prints each option's type in ``--help`` (``--width <float>``), flags included,
    as if ``--json`` took a value. A flag takes none, so its help metavar is set to ``""``
    (typer and click then print nothing there); parsing and error messages are unchanged.
    """
    for param in params:
        if getattr(param, "is_flag", False) and not getattr(param, "count", False):
            if param.metavar is None:
                param.metavar = ""
    return params


class _Group(TyperGroup):
    """The command groups: help shows flags as plain flags (see ``_flags_without_type``)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_without_type(super().get_params(ctx))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _flags_without_type(command.get_params(ctx))
        return command


app = typer.Typer(
    name="sepconv",
    cls=_Group,
    help="Separable convolution: test, factorize and cost any kernel.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
cost_app = typer.Typer(cls=_Group, help="Cost model: MACs and parameters.", no_args_is_help=True)
app.add_typer(cost_app, name="cost")

# Rich assumes 80 columns when output is not a terminal; tables read better a little wider.
_WIDTH = None if sys.stdout.isatty() else 110
console = Console(highlight=False, soft_wrap=True, width=_WIDTH)
err_console = Console(stderr=True, highlight=False, width=_WIDTH)

F = TypeVar("F", bound=Callable[..., Any])


#: Library parameters that the command line calls by another name (parameter -> option).
_OPTION_OF = {
    "in_channels": "--cin",
    "out_channels": "--cout",
    "kernel_size": "--kernel",
    "width_mult": "--width",
    "spec": "--kernel",  # filter's kernel spec
}


def _as_typed(msg: str, fn: Callable[..., Any], given: dict[str, Any]) -> str:
    """A library message about a parameter, told with the option the user typed.

    The library names its parameters (``in_channels must be an integer >= 1``); on the
    command line the value came from an option (``--cin``). When the message starts with
    an option of the command ``fn`` (its Python name; ``--data-shape`` is ``data_shape``)
    or with the library's name for one (:data:`_OPTION_OF`), and the user gave that option
    a value other than its default, that first word becomes the option. Nothing else in the
    message changes, and an option left at its default is not named as if it were typed.
    """
    import inspect
    import typing

    found = re.match(r"[a-z][a-z0-9_]*\b", msg)
    if found is None:
        return msg
    word = found.group()
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # an annotation that cannot be evaluated: leave the message as it is
        return msg
    for name, param in inspect.signature(fn).parameters.items():
        option = "--" + name.replace("_", "-")
        if word != name and _OPTION_OF.get(word) != option:
            continue
        meta = getattr(hints.get(name), "__metadata__", ())
        if any(isinstance(m, typer.models.ArgumentInfo) for m in meta):
            continue  # INPUT, OUTPUT, MODEL ...: not an option
        value = given.get(name, param.default)
        if param.default is inspect.Parameter.empty or value != param.default:
            return option + msg[found.end() :]
    return msg


def _user_errors(fn: F) -> F:
    """Turn ValueError/TypeError from the library into one line on stderr and exit code 2;
    a message about a parameter names the option the user typed (see ``_as_typed``)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, TypeError) as exc:
            msg = _as_typed(" ".join(str(exc).split()), fn, kwargs)
            err_console.print(f"sepconv: error: {msg}", markup=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _ints(text: str | None, name: str) -> tuple[int, ...] | None:
    """Positive integers separated by ``,`` or ``x`` (``1,3,224,224``, ``7x7``); an empty or
    non-integer part is refused, not dropped (``1,3,x`` is not ``(1, 3)``)."""
    if text is None:
        return None
    parts = [p.strip() for p in re.split(r"[,x]", text)]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(
            f"{name} must be integers separated by commas (or x), with no empty part, got {text!r}"
        ) from None
    if min(values) < 1:
        raise ValueError(
            f"{name} must be positive integers separated by commas (or x), got {text!r}"
        )
    return values


#: Optional packages and the extra that installs each.
_EXTRAS = {
    "torch": "nn",
    "onnx": "nn",
    "onnxruntime": "nn",
    "onnxscript": "nn",
    "matplotlib": "experiments",
    "skimage": "experiments",
    "sklearn": "experiments",
    "nibabel": "experiments",
}


@contextlib.contextmanager
def _needs(command: str, *modules: str) -> Iterator[None]:
    """Import ``modules`` first, and turn a missing optional package met then or later into one
    line naming the extra to install (as ``filter`` does for its file formats)."""
    import importlib

    def missing(name: str) -> ValueError:
        return ValueError(
            f"sepconv {command} needs the {name} package: pip install 'sepconv[{_EXTRAS[name]}]'"
        )

    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            raise missing(module) from None
    try:
        yield
    except ImportError as exc:
        name = (exc.name or "").split(".")[0]
        if name not in _EXTRAS:
            raise
        raise missing(name) from None


def _fmt(x: float) -> str:
    if x == 0:
        return "0"
    if math.isinf(x):
        return "inf"
    return f"{x:.3g}" if (abs(x) < 1e-3 or abs(x) >= 1e5) else f"{x:.4g}"


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"sepconv {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Show version."),
    ] = False,
) -> None:
    """Separable convolution: test, factorize and cost any kernel."""


# ----------------------------------------------------------------------------------------------
# analyze
# ----------------------------------------------------------------------------------------------


def analyze_kernel(
    spec: str | np.ndarray,
    *,
    tol: float | None = None,
    data_shape: Sequence[int] | None = None,
    precision: Any = None,
) -> tuple[dict[str, Any], list[Factorization]]:
    """The data behind ``sepconv analyze``: a JSON-ready dict and the factorization per rank.

    Ranks are judged at ``precision`` (default: that of the kernel as given -- the dtype of
    an array or of a ``.npy`` file; float64 for named kernels and ``.csv``). The fits are
    :func:`sepconv.factor.fits_by_rank`: ranks increasing, errors non-increasing, the last
    one exact.
    """
    prec = kernel_precision(spec, precision)
    K = kernels.from_spec(spec)
    fits = fits_by_rank(K, precision=prec)
    exact = fits[-1] if fits else separate(K, precision=prec)
    tol_rank = None
    if tol is not None:
        fits = _with_tol_fit(fits, separate(K, tol=tol, precision=prec))
        within = max(tol, exact_tolerance(K.shape, prec))  # below rounding: "exact"
        tol_rank = next((f.rank for f in fits if f.error <= within), exact.rank)
    if data_shape is None:
        data_shape = (1024,) * K.ndim if K.ndim <= 2 else (256,) * K.ndim
    elif len(data_shape) != K.ndim:
        raise ValueError(
            f"data_shape must have one entry per kernel axis ({K.ndim}), got {tuple(data_shape)}"
        )
    direct = exact.direct_macs
    macs = {
        "direct": direct,
        "separable": sum(K.shape),
        "lowrank": exact.rank * sum(K.shape),
        "fft": cost.kernel_macs(K.shape, "fft", data_shape=data_shape),
    }
    result = {
        "schema": 1,
        "kernel": spec if isinstance(spec, str) else "<array>",
        "shape": list(K.shape),
        "rank": exact.rank,
        "precision": prec.name,
        "exact_tolerance": exact_tolerance(K.shape, prec),
        "multilinear_rank": list(exact.multilinear_rank),
        "singular_values": None
        if exact.singular_values is None
        else [float(s) for s in exact.singular_values],
        "mode_spectra": [[float(s) for s in spec_k] for spec_k in exact.mode_spectra],
        "tol": tol,
        "tol_rank": tol_rank,
        "errors": [
            {
                "rank": f.rank,
                "error": f.error,
                "error_bound": f.error_bound,
                "macs": f.macs,
                "speedup": f.speedup,
                "exact": f.exact,
                "degenerate": f.degenerate,
                "method": f.method,
            }
            for f in fits
        ],
        "data_shape": list(data_shape),
        "macs": macs,
        "speedup": {k: direct / v if v else None for k, v in macs.items() if k != "direct"},
        "notes": list(exact.notes),
    }
    return result, fits


def _with_tol_fit(fits: list[Factorization], found: Factorization) -> list[Factorization]:
    """The table's fits with ``separate(K, tol=tol)``'s fit in the row of its rank.

    ``separate`` never needs more terms than the first row within ``tol`` (it also runs the
    table's chain), but its own search, which stops as soon as a fit is within ``tol``, can
    meet it with fewer: the 3-D Laplacian's best rank-2 fit does not exist (the chain's
    bounded fit has error 0.016), yet a rank-2 fit within 0.01 does. That fit is what
    ``filter --method lowrank --tol`` runs, so the table shows it in place of the chain's.
    """
    if not fits or found.rank == 0:
        return fits
    row = next((f for f in fits if f.rank == found.rank), None)
    if row is not None and row.error <= found.error:
        return fits
    return sorted([f for f in fits if f.rank != found.rank] + [found], key=lambda f: f.rank)


def _spectrum_text(values: Sequence[float], limit: int = 8) -> str:
    shown = ", ".join(_fmt(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} values)" if len(values) > limit else "")


@app.command()
@_user_errors
def analyze(
    spec: Annotated[
        str,
        typer.Argument(
            metavar="SPEC", help="Kernel spec ('gaussian:sigma=2', 'disk:radius=5') or .npy/.csv"
        ),
    ],
    tol: Annotated[
        float | None, typer.Option(help="Relative error allowed: report the smallest rank.")
    ] = None,
    data_shape: Annotated[
        str | None,
        typer.Option(help="Data size for the FFT cost, e.g. 1024,1024 (default 1024^2, 256^3)."),
    ] = None,
    precision: Annotated[
        str,
        typer.Option(
            help="Precision ranks are judged at: auto (the kernel's dtype; float64 for named "
            "kernels and .csv), float16, float32 or float64."
        ),
    ] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (stable schema).")] = False,
) -> None:
    """Separable rank, spectra, error and cost of each rank for a kernel."""
    if precision.lower() not in ("auto", "float16", "float32", "float64"):
        raise ValueError(
            f"--precision must be auto, float16, float32 or float64, got {precision!r}"
        )
    precision = precision.lower()
    # a kernel near the float64 maximum: singular values beyond it are inf (null in JSON)
    with np.errstate(over="ignore", invalid="ignore"):
        result, fits = analyze_kernel(
            spec,
            tol=tol,
            data_shape=_ints(data_shape, "--data-shape"),
            precision=None if precision == "auto" else precision,
        )
    if as_json:
        sys.stdout.write(json.dumps(_finite_or_null(result), indent=2, allow_nan=False) + "\n")
        return
    exact = fits[-1] if fits else None
    shape = "x".join(str(n) for n in result["shape"])
    prec = result["precision"]
    console.print(
        f"[bold]{result['kernel']}[/]  shape {shape}  ({math.prod(result['shape'])} taps)  "
        f"precision {prec} (exact = relative error <= {_fmt(result['exact_tolerance'])})"
    )
    if result["rank"] == 0:
        console.print("all-zero kernel: rank 0, nothing to compute")
        return
    if result["rank"] == 1:
        console.print(
            f"separable rank 1: the kernel is one outer product of 1-D kernels (to {prec} rounding)"
        )
    else:
        console.print(
            f"separable rank {result['rank']}: not separable, "
            f"a sum of {result['rank']} separable terms (to {prec} rounding)"
        )
    if result["singular_values"] is not None and len(result["shape"]) == 2:
        console.print(f"singular values: {_spectrum_text(result['singular_values'])}")
    elif len(result["shape"]) > 2:
        console.print(f"multilinear rank {tuple(result['multilinear_rank'])}")
        for k, spec_k in enumerate(result["mode_spectra"]):
            console.print(f"  mode-{k} spectrum: {_spectrum_text(spec_k)}")
    table = Table(title=f"Error and cost per rank (MACs per output element; exact at {prec})")
    for col in ("rank", "rel. error", "max abs error / unit input", "MACs", "speed-up", "note"):
        table.add_column(col, justify="right" if col != "note" else "left")
    for row in result["errors"]:
        note: list[str] = []
        if row["exact"]:
            note.append("exact")
        if row["degenerate"]:
            note.append("degenerate fit (no best approximation)")
        if result["tol_rank"] == row["rank"]:
            note.append(f"smallest rank with error <= {result['tol']:g}")
        table.add_row(
            str(row["rank"]),
            _fmt(row["error"]),
            _fmt(row["error_bound"]),
            str(row["macs"]),
            f"{row['speedup']:.2f}x",
            ", ".join(note),
        )
    console.print(table)
    ranks = [row["rank"] for row in result["errors"]]
    if len(ranks) >= 2 and ranks[-1] - ranks[-2] > 1:
        console.print(
            f"ranks {ranks[-2] + 1}-{ranks[-1] - 1} not fitted: CP fits of that many terms "
            "cost more than the dense kernel (or the search time ran out)"
        )
    m = result["macs"]
    ds = "x".join(str(n) for n in result["data_shape"])
    methods = Table(title=f"Predicted cost of exact methods (FFT for data {ds})")
    for col in ("method", "MACs / output", "speed-up vs direct"):
        methods.add_column(col, justify="left" if col == "method" else "right")
    methods.add_row("direct", str(m["direct"]), "1.00x")
    name = "separable" if result["rank"] == 1 else f"low-rank (rank {result['rank']})"
    methods.add_row(name, str(m["lowrank"]), f"{m['direct'] / m['lowrank']:.2f}x")
    methods.add_row("fft (model)", f"{m['fft']:.1f}", f"{m['direct'] / m['fft']:.2f}x")
    console.print(methods)
    if exact is not None:
        for remark in exact.notes:
            if not remark.startswith("multilinear rank"):
                console.print(f"note: {remark}")


# ----------------------------------------------------------------------------------------------
# cost
# ----------------------------------------------------------------------------------------------


def _finite_or_null(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None: JSON has neither (a
    singular value of a kernel near the float64 maximum can exceed its range)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


def conv_cost_dict(**kwargs: Any) -> dict[str, Any]:
    """``cost.compare_conv`` as the JSON document of ``sepconv cost conv --json``."""
    c = cost.compare_conv(**kwargs)
    out: dict[str, Any] = {"schema": 1}
    for key, value in c.items():
        out[key] = value.to_dict() if isinstance(value, cost.LayerCost) else value
    out["params"] = {
        "standard": c["standard"].params,
        "depthwise_separable": c["depthwise_separable"].params,
    }
    return out


@cost_app.command("conv")
@_user_errors
def cost_conv(
    cin: Annotated[int, typer.Option("--cin", help="Input channels.")],
    cout: Annotated[int, typer.Option("--cout", help="Output channels.")],
    kernel: Annotated[str, typer.Option("--kernel", help="Kernel size: 3 or 3,5.")] = "3",
    dims: Annotated[int, typer.Option(help="Spatial dimensions (1, 2 or 3).")] = 2,
    depth_multiplier: Annotated[int, typer.Option(help="Depthwise channel multiplier.")] = 1,
    bias: Annotated[bool, typer.Option("--bias", help="Count bias parameters.")] = False,
    input_size: Annotated[
        str | None, typer.Option(help="Input spatial size (e.g. 224) for total MACs.")
    ] = None,
    stride: Annotated[int, typer.Option(help="Stride (for total MACs).")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (stable schema).")] = False,
) -> None:
    """Standard vs depthwise-separable convolution: MACs, parameters and their ratio."""
    if dims not in (1, 2, 3):
        raise ValueError(f"--dims must be 1, 2 or 3, got {dims}")
    ks = _ints(kernel, "--kernel")
    assert ks is not None
    size = _ints(input_size, "--input-size")
    for option, text, values in (("--kernel", kernel, ks), ("--input-size", input_size, size)):
        if values is not None and len(values) not in (1, dims):
            raise ValueError(
                f"{option} must be one size or {dims} sizes separated by commas (one per axis "
                f"of --dims {dims}), got {text!r}"
            )
    d = conv_cost_dict(
        in_channels=cin,
        out_channels=cout,
        kernel_size=ks if len(ks) > 1 else ks[0],
        dims=dims,
        depth_multiplier=depth_multiplier,
        bias=bias,
        stride=stride,
        input_size=None if size is None else (size if len(size) > 1 else size[0]),
    )
    d["stride"] = stride
    d["input_size"] = d["output_size"] = None
    if size is not None:  # what the total MACs are of
        full = size if len(size) > 1 else size * dims
        out_size = cost.conv_output_size(
            full, d["kernel_size"], dims=dims, stride=stride, padding="same"
        )
        d["input_size"], d["output_size"] = list(full), list(out_size)
    if as_json:
        sys.stdout.write(json.dumps(d, indent=2) + "\n")
        return
    k = "x".join(str(v) for v in d["kernel_size"])
    title = f"{k} conv, {cin} -> {cout} channels ({dims}-D)"
    if size is not None:
        title += (
            f", input {'x'.join(map(str, full))}, stride {stride} -> output "
            f"{'x'.join(map(str, out_size))} ('same' padding)"
        )
    elif stride != 1:
        title += f", stride {stride}"
    table = Table(title=title)
    totals = d["standard"]["macs"] is not None
    for col in ("layer", "MACs / output pixel", "params") + (("total MACs",) if totals else ()):
        table.add_column(col, justify="left" if col == "layer" else "right")
    m = d["depth_multiplier"]
    rows = [
        ("standard", "standard"),
        (f"depthwise {k}" + (f" (x{m})" if m > 1 else ""), "depthwise"),
        ("pointwise 1x1", "pointwise"),
        ("depthwise-separable", "depthwise_separable"),
    ]
    for label, key in rows:
        row = d[key]
        cells = [label, f"{row['macs_per_pixel']:,}", f"{row['params']:,}"]
        if totals:
            cells.append(f"{row['macs']:,}")
        table.add_row(*cells)
    console.print(table)
    r = d["ratio"]
    console.print(
        f"ratio standard / depthwise-separable: MACs {r['macs']:.2f}x, params {r['params']:.2f}x"
        + (
            f"  (closed form C_out*K/(K+C_out) = {r['formula']:.2f})"
            if m == 1
            else f"  (closed form C_out*K/(m*(K+C_out)) = {r['formula']:.2f})"
        )
    )


@cost_app.command("kernel")
@_user_errors
def cost_kernel(
    shape: Annotated[str, typer.Option(help="Kernel shape, e.g. 7,7 or 10,10,10.")],
    rank: Annotated[int, typer.Option(help="Rank for the low-rank method.")] = 1,
    data_shape: Annotated[
        str | None, typer.Option(help="Data shape for the FFT model, e.g. 1024,1024.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """MACs per output element of every method for a kernel shape."""
    ks = _ints(shape, "--shape")
    assert ks is not None
    dshape = _ints(data_shape, "--data-shape")
    costs = cost.kernel_costs(ks, rank=rank, data_shape=dshape)
    if as_json:
        doc = {"schema": 1, "shape": list(ks), "rank": rank, "data_shape": dshape, "macs": costs}
        sys.stdout.write(json.dumps(doc) + "\n")
        return
    table = Table(title=f"kernel {'x'.join(map(str, ks))}: MACs per output element")
    for col in ("method", "MACs", "speed-up vs direct"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for name, macs in costs.items():
        label = f"lowrank (rank {rank})" if name == "lowrank" else name
        count = f"{macs:,}" if isinstance(macs, int) else _fmt(macs)  # exact counts in full
        table.add_row(label, count, f"{costs['direct'] / macs:.2f}x")
    console.print(table)
    if "fft" not in costs:
        console.print(
            "fft: its cost per output depends on the data's size; add --data-shape "
            f"(e.g. {','.join(['1024'] * len(ks))}) for its row"
        )


# ----------------------------------------------------------------------------------------------
# calibrate
# ----------------------------------------------------------------------------------------------


@app.command()
@_user_errors
def calibrate(
    quick: Annotated[
        bool, typer.Option("--quick", help="One image size, fewer kernels (~2 s).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    device: Annotated[
        str,
        typer.Option(help="cpu (numpy arrays) or cuda (CUDA tensors and CuPy arrays)."),
    ] = "cpu",
) -> None:
    """Measure this machine's time model for method='auto' and cache it (~15 s)."""
    from .calibrate import calibrate as run_calibration
    from .plan import DEFAULT_TIME_MODEL

    result = run_calibration(quick=quick, device=device)
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    table = Table(title="Time model: ms = Mpixel x (a x MACs + b x passes) + c x passes")
    for col in ("method", "a: per MAC", "b: per pass", "c: per call", "defaults (a, b, c)"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for name, (a, b, c) in result["time_model"].items():
        d = ", ".join(f"{v:g}" for v in DEFAULT_TIME_MODEL[name])
        table.add_row(name, f"{a:.4f}", f"{b:.3f}", f"{c:.3f}", d)
    console.print(table)
    console.print(
        f"saved to {result['path']}; method='auto' uses it from now on"
        + ("" if device == "cpu" else f" for {device} arrays")
    )


# ----------------------------------------------------------------------------------------------
# experiments
# ----------------------------------------------------------------------------------------------


@app.command()
@_user_errors
def experiment(
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME",
            help="speedup | ds-cost | capacity | layers | lowrank | all",
        ),
    ],
    quick: Annotated[bool, typer.Option("--quick", help="Small sizes: under a minute.")] = False,
    out: Annotated[Path, typer.Option(help="Folder for the reports.")] = Path(
        "sepconv-experiments"
    ),
    seeds: Annotated[
        str | None,
        typer.Option(
            help="Seeds the layers experiment repeats over (also within all): a count N >= 2 "
            "(seeds 0..N-1) or a list of at least 2 distinct seeds >= 0 such as 0,3,7; default 5 "
            "(--quick: 2). The other experiments' seeds are fixed: they refuse --seeds."
        ),
    ] = None,
) -> None:
    """Reproduce the article's claims: writes OUT/NAME/report.md, PNG plots and results.json."""
    import importlib

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .experiments import EXPERIMENTS, SEEDED, run_experiment
    from .experiments._common import format_seconds

    if name not in (*EXPERIMENTS, "all"):
        raise ValueError(f"experiment must be one of {sorted([*EXPERIMENTS, 'all'])}, got {name!r}")
    seed_arg = _seeds(seeds)
    with _needs("experiment", "matplotlib"):
        if seed_arg is not None and name == "all":  # else refused after the others have run
            for seeded in SEEDED:
                module = importlib.import_module(
                    f".experiments.{EXPERIMENTS[seeded][0]}", __package__
                )
                module.seed_list(seed_arg, quick)
        # no bar (nor the blank line a finished one leaves) where stderr is not a terminal
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
            disable=not err_console.is_terminal,
        ) as progress:
            report = run_experiment(name, out, quick=quick, progress=progress, seeds=seed_arg)
    path = report.results.get("path") or (out / report.name / "report.md")
    console.print(f"{report.title}: wrote {path} ({format_seconds(report.seconds)})")


def _seeds(text: str | None) -> int | list[int] | None:
    """``--seeds``: a count ``N`` or a comma-separated list of seeds."""
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--seeds must be a count N or a list of integers such as 0,3,7, got {text!r}"
        ) from None
    return values[0] if "," not in text else values


# ----------------------------------------------------------------------------------------------
# profile (sepconv.nn; torch is imported only here)
# ----------------------------------------------------------------------------------------------


def _import_from_cwd(mod_name: str) -> Any:
    """Import a module as ``python -m`` would: the current directory first on the path.

    An installed console script has its own folder, not the current directory, as
    ``sys.path[0]``; ``sepconv profile mymodels:build`` should still find ``./mymodels.py``.
    The path is restored afterwards.
    """
    import importlib
    import os

    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    importlib.invalidate_caches()  # a module written since start-up must be found
    try:
        return importlib.import_module(mod_name)
    finally:
        if added:
            sys.path.remove(cwd)


def _build_model(
    name: str, width: float, resolution: int, full_conv: bool, num_classes: int | None
) -> Any:
    """A model by registry name or ``package.module:factory`` with the CLI's options."""
    import inspect

    from torch import nn

    from .nn import models

    if ":" in name:
        mod_name, _, attr = name.partition(":")
        try:
            factory = getattr(_import_from_cwd(mod_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"model {name!r} cannot be imported: {exc}") from None
    elif name in models.MODELS:
        factory = models.MODELS[name]
    else:
        raise ValueError(
            f"model must be one of {sorted(models.MODELS)} or 'package.module:factory', "
            f"got {name!r}"
        )
    if isinstance(factory, nn.Module):
        return factory
    if not callable(factory):
        raise TypeError(f"model {name!r} is neither an nn.Module nor a callable")
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs: dict[str, Any] = {}
    for key, value, default in (
        ("width_mult", width, 1.0),
        ("resolution", resolution, 224),
        ("full_conv", full_conv, False),
        ("num_classes", num_classes, None),
    ):
        # factories passing **kwargs on (resnet18, small_cnn) take all but full_conv
        if key in params or (var_kw and key != "full_conv"):
            if value is not None:
                kwargs[key] = value
        elif value != default:
            option = "--" + key.replace("_mult", "").replace("_", "-")
            raise ValueError(f"{option} does not apply to model {name!r}")
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model {name!r} did not return an nn.Module")
    return model


@app.command("profile")
@_user_errors
def profile_command(
    model_name: Annotated[
        str,
        typer.Argument(
            metavar="MODEL",
            help="mobilenet_v1 | resnet18 | small_cnn, or package.module:factory",
        ),
    ],
    width: Annotated[float, typer.Option(help="Width multiplier (alpha).")] = 1.0,
    resolution: Annotated[int, typer.Option(help="Input resolution (rho).")] = 224,
    batch: Annotated[int, typer.Option(help="Batch size.")] = 1,
    full_conv: Annotated[
        bool, typer.Option("--full-conv", help="MobileNet's full-convolution twin.")
    ] = False,
    num_classes: Annotated[int | None, typer.Option(help="Classifier outputs.")] = None,
    input_shape: Annotated[
        str | None, typer.Option(help="Full input shape, e.g. 1,3,224,224 (overrides).")
    ] = None,
    measure: Annotated[
        bool, typer.Option(help="Time layers and the model (--no-measure: counts only).")
    ] = True,
    device: Annotated[
        str | None,
        typer.Option(help="Where to time: cpu, cuda, cuda:N (default: cpu)."),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="torch threads while timing (CPU only).")
    ] = None,
    fold_bn: Annotated[bool, typer.Option(help="Fold batch norm into convs for timing.")] = True,
    memory_format: Annotated[
        str, typer.Option(help="auto | channels_last | contiguous (for timing).")
    ] = "auto",
    compile: Annotated[
        str,
        typer.Option(help="Whole-model compile for the latency: none | inductor | torchscript."),
    ] = "none",
    repeats: Annotated[int, typer.Option(help="Timed runs (median reported).")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (stable schema).")] = False,
) -> None:
    """Per-layer params, MACs, bytes, roofline and measured time of a model.

    --device cuda: timed on the GPU (CUDA events, CUDA graphs) against its measured rates.
    """
    _check_model_options(width, num_classes, batch, threads)
    if compile not in ("none", "inductor", "torchscript"):
        raise ValueError(f"--compile must be none, inductor or torchscript, got {compile!r}")
    with _needs("profile", "torch"):
        _profile(model_name, width, resolution, batch, full_conv, num_classes, input_shape,
                 measure, device, threads, fold_bn, memory_format, compile, repeats,
                 as_json)  # fmt: skip


def _check_model_options(
    width: float, num_classes: int | None, batch: int, threads: int | None
) -> None:
    """The options profile and convert share, checked before torch is imported."""
    if not (math.isfinite(width) and width > 0):
        raise ValueError(f"--width must be a finite number > 0, got {width:g}")
    if num_classes is not None and num_classes < 1:
        raise ValueError(f"--num-classes must be an integer >= 1, got {num_classes}")
    if batch < 1:  # else the library names the input_shape built from it
        raise ValueError(f"--batch must be an integer >= 1, got {batch}")
    if threads is not None and threads < 1:  # torch.set_num_threads(0) raises RuntimeError
        raise ValueError(f"--threads must be an integer >= 1, got {threads}")


def _profile(
    model_name: str,
    width: float,
    resolution: int,
    batch: int,
    full_conv: bool,
    num_classes: int | None,
    input_shape: str | None,
    measure: bool,
    device: str | None,
    threads: int | None,
    fold_bn: bool,
    memory_format: str,
    compile: str,
    repeats: int,
    as_json: bool,
) -> None:
    from .nn.profile import profile as run_profile

    model = _build_model(model_name, width, resolution, full_conv, num_classes)
    shape = _ints(input_shape, "--input-shape")
    if shape is None:
        default = getattr(model, "default_input_shape", None)
        if default is None:
            raise ValueError(f"model {model_name!r} has no default_input_shape: give --input-shape")
        shape = (batch, default[1], *(resolution,) * (len(default) - 2))
    label = model_name + (" (full conv)" if full_conv else "")
    if width != 1.0:
        label += f" x{width:g}"
    result = run_profile(
        model,
        shape,
        measure=measure,
        device=device,
        threads=threads,
        fold_bn=fold_bn,
        memory_format=memory_format,
        compile=False if compile == "none" else compile,
        repeats=repeats,
        name=label,
    )
    outliers = result.outliers(2.0, min_time=5e-6)
    if as_json:
        doc = result.to_dict()
        doc["outliers"] = [r.name for r in outliers]
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    # a plain aligned table: eleven columns do not fit a wrapped rich table
    console.print(str(result), markup=False, soft_wrap=True)
    if measure:
        names = ", ".join(r.name for r in outliers) or "none"
        console.print(f"outside 2x of the roofline ('!'): {names}", markup=False)


# ----------------------------------------------------------------------------------------------
# convert (sepconv.nn; torch is imported only here)
# ----------------------------------------------------------------------------------------------


def _factory_kwargs(
    name: str, width: float, resolution: int, full_conv: bool, num_classes: int | None
) -> dict[str, Any]:
    """The keyword arguments ``_build_model`` passes to the factory (recorded in the output so
    that ``sepconv.nn.load_converted`` rebuilds the same architecture)."""
    import inspect

    from .nn import models

    factory = (
        getattr(_import_from_cwd(name.partition(":")[0]), name.partition(":")[2])
        if ":" in name
        else models.MODELS[name]
    )
    if not callable(factory):
        return {}
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs: dict[str, Any] = {}
    for key, value in (
        ("width_mult", width),
        ("resolution", resolution),
        ("full_conv", full_conv),
        ("num_classes", num_classes),
    ):
        if (key in params or (var_kw and key != "full_conv")) and value is not None:
            kwargs[key] = value
    return kwargs


def _factory_is_callable(name: str) -> bool:
    """Whether MODEL names a factory (not an nn.Module object)."""
    from torch import nn

    if ":" not in name:
        return True
    mod_name, _, attr = name.partition(":")
    factory = getattr(_import_from_cwd(mod_name), attr)
    return callable(factory) and not isinstance(factory, nn.Module)


def _rank_option(text: str | None) -> Any:
    if text is None:
        return None
    if text.strip() == "vbmf":
        return "vbmf"
    values = _ints(text, "--rank")
    assert values is not None
    if len(values) > 2:
        raise ValueError(f"--rank must be R, R_IN,R_OUT or vbmf, got {text!r}")
    return values[0] if len(values) == 1 else values


def _layers_option(text: str | None) -> Any:
    """``a,b,c`` (names) or ``start:stop`` (a slice over the convs in forward order)."""
    if text is None:
        return None
    if ":" in text and all(p.strip().lstrip("-").isdigit() or not p.strip()
                           for p in text.split(":")):  # fmt: skip
        parts = [int(p) if p.strip() else None for p in text.split(":")]
        if len(parts) != 2:
            raise ValueError(f"--layers must be names a,b,c or a slice start:stop, got {text!r}")
        return slice(parts[0], parts[1])
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError(f"--layers must be names a,b,c or a slice start:stop, got {text!r}")
    return names


def _load_tensor(path: Path, what: str) -> Any:
    import torch

    if not path.is_file():
        raise ValueError(f"{what} {str(path)!r} does not exist")
    import warnings

    if path.suffix == ".npy":
        return torch.from_numpy(np.load(path, allow_pickle=False))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "looks like a TorchScript archive"
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a file it cannot read
        error = exc
    if what == "--state-dict":  # the weights of a TorchScript model
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript, torch >= 2.9
                return dict(torch.jit.load(path, map_location="cpu").state_dict())
        except Exception:  # not TorchScript either: report the first error
            pass
    raise ValueError(f"{what} {str(path)!r} cannot be read: {error}")


def _same_file(a: Path, b: Path) -> bool:
    import os

    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _refuse_torchscript(model_name: str) -> None:
    """A TorchScript file as MODEL: its forward is compiled against its own conv modules, so
    its convolutions cannot be swapped; say so in one line."""
    path = Path(model_name)
    if ":" in model_name or not path.is_file():
        return
    raise ValueError(
        f"model {model_name!r} is a file: a TorchScript model cannot be converted (its compiled "
        "forward calls its own conv modules, which cannot be replaced); give the Python "
        "factory 'package.module:function' and the weights with --state-dict (a state dict "
        "or this TorchScript file)"
    )


def _write_torchscript(model: Any, output: Path) -> None:
    import warnings

    import torch

    from .io import replace_atomically

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            scripted = torch.jit.script(model.eval())
    except Exception as exc:  # TorchScript raises many types
        raise ValueError(
            f"the converted model cannot be scripted (--torchscript): "
            f"{' '.join(str(exc).split())[:300]}"
        ) from None

    def save(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript, torch >= 2.9
            torch.jit.save(scripted, tmp)

    replace_atomically(output, save)


def _kind_option(text: str) -> str | tuple[str, ...]:
    """``--kind``: one kind, ``auto``, or several separated by commas (checked by convert)."""
    parts = tuple(p.strip() for p in text.split(","))
    return parts[0] if len(parts) == 1 else parts


@app.command("convert")
@_user_errors
def convert_command(
    model_name: Annotated[
        str,
        typer.Argument(
            metavar="MODEL",
            help="mobilenet_v1 | resnet18 | small_cnn, or package.module:factory",
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the converted model.")
    ],
    state_dict: Annotated[
        Path | None,
        typer.Option(
            help="Weights to load first: a state dict file (torch.save), a checkpoint with a "
            "'state_dict' entry, or a TorchScript file (its weights).",
        ),
    ] = None,
    kind: Annotated[
        str,
        typer.Option(
            help="depthwise | spatial | cp | tucker2, several as a,b (chosen per layer by the "
            "budget or tol), or auto (depthwise,spatial,tucker2)."
        ),
    ] = "depthwise",
    rank: Annotated[
        str | None, typer.Option(help="Rank for every layer: R, R_IN,R_OUT (tucker2) or vbmf.")
    ] = None,
    tol: Annotated[float | None, typer.Option(help="Per-layer relative weight error.")] = None,
    mac_budget: Annotated[
        float | None, typer.Option(help="Fraction of the original MACs, e.g. 0.5.")
    ] = None,
    latency_budget: Annotated[
        float | None, typer.Option(help="Fraction of the original measured latency.")
    ] = None,
    rank_multiple: Annotated[
        int | None, typer.Option(help="Round ranks up to a multiple of this.")
    ] = None,
    layers: Annotated[
        str | None,
        typer.Option(help="Convs to consider: names a,b,c or start:stop in forward order."),
    ] = None,
    width: Annotated[float, typer.Option(help="Width multiplier (alpha).")] = 1.0,
    resolution: Annotated[int, typer.Option(help="Input resolution (rho).")] = 224,
    batch: Annotated[int, typer.Option(help="Batch size of the example input.")] = 1,
    num_classes: Annotated[int | None, typer.Option(help="Classifier outputs.")] = None,
    input_shape: Annotated[
        str | None, typer.Option(help="Full input shape, e.g. 1,3,224,224 (overrides).")
    ] = None,
    calibration: Annotated[
        Path | None, typer.Option(help="A batch of inputs (.npy or a torch tensor file).")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads while timing.")] = None,
    device: Annotated[str | None, typer.Option(help="Where to time: cpu, cuda, cuda:N.")] = None,
    measure: Annotated[
        bool, typer.Option("--measure", help="Time layers and models (any policy).")
    ] = False,
    torchscript: Annotated[
        bool, typer.Option("--torchscript", help="Write TorchScript instead of a state dict.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUTPUT if it exists.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (stable schema).")] = False,
) -> None:
    """Replace a model's convolutions by structured ones and save it (state dict or TorchScript)."""
    _refuse_torchscript(model_name)
    out = output.expanduser()
    if out.is_dir():
        raise ValueError(f"--output {str(output)!r} is a folder: give a file name")
    if not out.parent.is_dir():
        raise ValueError(f"--output {str(output)!r}: folder {str(out.parent)!r} does not exist")
    for given, what in ((state_dict, "--state-dict"), (calibration, "--calibration")):
        if given is not None and (_same_file(out, given) or out.resolve() == given.resolve()):
            raise ValueError(f"--output {str(output)!r} is the {what} file: never overwritten")
    if out.exists() and not overwrite:
        raise ValueError(f"--output {str(output)!r} exists; pass --overwrite to replace it")
    policies = [
        option
        for option, value in (
            ("--rank", rank),
            ("--tol", tol),
            ("--mac-budget", mac_budget),
            ("--latency-budget", latency_budget),
        )
        if value is not None
    ]
    if len(policies) > 1:
        raise ValueError(
            "give at most one of --rank, --tol, --mac-budget and --latency-budget, got "
            + " and ".join(policies)
        )
    _check_model_options(width, num_classes, batch, threads)
    with _needs("convert", "torch"):
        _convert(model_name, out, state_dict, kind, rank, tol, mac_budget, latency_budget,
                 rank_multiple, layers, width, resolution, batch, num_classes, input_shape,
                 calibration, threads, device, measure, torchscript, overwrite,
                 as_json)  # fmt: skip


def _convert(
    model_name: str,
    out: Path,
    state_dict: Path | None,
    kind: str,
    rank: str | None,
    tol: float | None,
    mac_budget: float | None,
    latency_budget: float | None,
    rank_multiple: int | None,
    layers: str | None,
    width: float,
    resolution: int,
    batch: int,
    num_classes: int | None,
    input_shape: str | None,
    calibration: Path | None,
    threads: int | None,
    device: str | None,
    measure: bool,
    torchscript: bool,
    overwrite: bool,
    as_json: bool,
) -> None:
    from torch import nn

    from .nn.convert import convert as run_convert
    from .nn.convert import save_converted

    model = _build_model(model_name, width, resolution, False, num_classes)
    if state_dict is not None:
        weights = _load_tensor(state_dict, "--state-dict")
        if isinstance(weights, dict) and isinstance(weights.get("state_dict"), dict):
            weights = weights["state_dict"]
        if not isinstance(weights, dict):
            raise ValueError(f"--state-dict {str(state_dict)!r} does not hold a state dict")
        try:
            model.load_state_dict(weights)
        except RuntimeError as exc:
            raise ValueError(
                f"--state-dict {str(state_dict)!r} does not fit model {model_name!r}: "
                f"{' '.join(str(exc).split())[:300]}"
            ) from None
    model.eval()
    calib = None if calibration is None else _load_tensor(calibration, "--calibration")
    if calib is not None and not hasattr(calib, "shape"):
        raise ValueError(f"--calibration {str(calibration)!r} does not hold a tensor")
    if calib is not None:
        calib = calib.float()
    shape = _ints(input_shape, "--input-shape")
    if shape is None and calib is None:
        default = getattr(model, "default_input_shape", None)
        if default is None:
            raise ValueError(f"model {model_name!r} has no default_input_shape: give --input-shape")
        shape = (batch, default[1], *(resolution,) * (len(default) - 2))
    selection = _layers_option(layers)
    convs = sum(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) for m in model.modules())
    if isinstance(selection, slice) and not range(convs)[selection]:
        raise ValueError(
            f"--layers {layers!r} selects no convolution: model {model_name!r} has {convs} "
            "(start:stop counts them from 0 in forward order)"
        )
    converted, report = run_convert(
        model,
        _kind_option(kind),
        layers=selection,
        rank=_rank_option(rank),
        tol=tol,
        mac_budget=mac_budget,
        latency_budget=latency_budget,
        rank_multiple=rank_multiple,
        calibration=calib,
        input_shape=shape,
        measure=measure,
        device=device,
        threads=threads,
    )
    if selection is not None and not report.layers:
        raise ValueError(
            f"--layers {layers!r} selects no convolution that can be converted: model "
            f"{model_name!r} has {convs}; nothing was written"
        )
    if torchscript:
        _write_torchscript(converted, out)
    else:
        # a module object (not a factory) cannot be rebuilt from its name: load_converted then
        # needs the model itself
        source = model_name if _factory_is_callable(model_name) else None
        kwargs = _factory_kwargs(model_name, width, resolution, False, num_classes)
        save_converted(
            converted, report, out, source=source, source_kwargs=kwargs, overwrite=overwrite
        )
    fmt = "torchscript" if torchscript else "state_dict"
    if as_json:
        doc = report.to_dict()
        doc["output"] = {"path": str(out), "format": fmt}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    console.print(str(report), markup=False, soft_wrap=True)
    how = (
        "TorchScript (torch.jit.load)"
        if torchscript
        else "state dict + structure (sepconv.nn.load_converted)"
    )
    console.print(f"saved {out} as {how}", markup=False)


# ----------------------------------------------------------------------------------------------
# filter (sepconv.io; dask is imported only for --chunks, --scheduler or Zarr input)
# ----------------------------------------------------------------------------------------------


class _DelayedProgress:
    """A progress bar on stderr that appears only after ``delay`` seconds, on a terminal.

    Called as ``progress(done, total, stage)``. A stage of several steps (dask chunks) shows
    ``done/total``; a single step (reading, compiling the engine, filtering in memory with
    the plan's time estimate in ``stage``, writing) a moving bar instead of a stuck "0/1".
    Elapsed time is always shown. When stderr is not a terminal (a pipe, a log file, CI)
    nothing is drawn, so output stays one summary line.
    """

    def __init__(self, delay: float = 1.0, enabled: bool | None = None) -> None:
        import threading

        self.enabled = err_console.is_terminal if enabled is None else enabled
        self.state: tuple[int, int, str] = (0, 1, "reading")
        self.bar: Any = None
        self.task: Any = None
        self.lock = threading.Lock()
        self.timer = threading.Timer(delay, self._show)
        self.timer.daemon = True
        if self.enabled:
            self.timer.start()

    @staticmethod
    def _count(done: int, total: int) -> str:
        return f"{done}/{total}" if total > 1 else ""

    def __call__(self, done: int, total: int, stage: str) -> None:
        with self.lock:
            self.state = (done, total, stage)
            if self.bar is not None:
                self.bar.update(
                    self.task,
                    completed=done,
                    total=max(total, 1),
                    description=stage,
                    count=self._count(done, total),
                )

    def _show(self) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            ProgressBar,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        class StepBar(BarColumn):
            """A pulsing bar for single-step stages (nothing to count)."""

            def render(self, task: Any) -> ProgressBar:
                if task.fields.get("count"):
                    return super().render(task)
                return ProgressBar(
                    total=None,
                    width=None if self.bar_width is None else max(1, self.bar_width),
                    pulse=True,
                    animation_time=task.get_time(),
                    style=self.style,
                    pulse_style=self.pulse_style,
                )

        with self.lock:
            done, total, stage = self.state
            self.bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                StepBar(),
                TextColumn("{task.fields[count]}"),
                TimeElapsedColumn(),
                console=err_console,
                transient=True,
            )
            self.task = self.bar.add_task(
                stage, total=max(total, 1), completed=done, count=self._count(done, total)
            )
            self.bar.start()

    def close(self) -> None:
        self.timer.cancel()
        with self.lock:
            if self.bar is not None:
                self.bar.stop()
                self.bar = None


def _dtype_option(text: str | None) -> np.dtype | None:
    if text is None:
        return None
    try:
        return np.dtype(text)
    except TypeError:
        raise ValueError(
            f"--dtype must be a numpy dtype name (uint8, uint16, int16, float32, float64, ...), "
            f"got {text!r}"
        ) from None


@app.command("filter")
@_user_errors
def filter_command(
    input: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT", help="Image or volume: .png .jpg .tif .nii(.gz) .npy .zarr"
        ),
    ],
    output: Annotated[
        Path, typer.Argument(metavar="OUTPUT", help="Where to write; its suffix picks the format.")
    ],
    kernel: Annotated[
        str | None,
        typer.Option(
            "--kernel",
            "-k",
            help="Kernel spec ('gaussian:sigma=2', 'sobel:axis=0') or .npy/.csv; named kernels "
            "get one axis per filtered axis unless the spec says otherwise.",
        ),
    ] = None,
    sigma_mm: Annotated[
        float | None,
        typer.Option(help="Gaussian sigma in mm, per axis divided by the NIfTI voxel size."),
    ] = None,
    mode: Annotated[
        str, typer.Option(help="Border: reflect | constant | nearest | mirror | wrap (+ grid-*).")
    ] = "reflect",
    cval: Annotated[float, typer.Option(help="Value beyond the border for mode constant.")] = 0.0,
    axes: Annotated[
        str | None, typer.Option(help="Axes to filter, e.g. 0,1 (default: all spatial axes).")
    ] = None,
    channel_axis: Annotated[
        str,
        typer.Option(help="Colour axis, not filtered across: auto (from the file) | none | N."),
    ] = "auto",
    method: Annotated[
        str, typer.Option(help="auto | direct | separable | lowrank | fft.")
    ] = "auto",
    tol: Annotated[
        float | None, typer.Option(help="Relative kernel error a low-rank plan may have.")
    ] = None,
    dtype: Annotated[
        str | None, typer.Option(help="Output dtype (default: the input's); ints are rounded.")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Threads (default: all cores).")] = None,
    chunks: Annotated[
        str | None,
        typer.Option(help="Run on dask with these chunks: auto | 64 | 64,256,256 (out of core)."),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Dask scheduler: threads | processes | sync | tcp://host:port."),
    ] = None,
    memory_limit: Annotated[
        str, typer.Option(help="Memory per dask slab, e.g. 256MiB (Zarr / --chunks runs).")
    ] = "256MiB",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUTPUT if it exists.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary line.")] = False,
) -> None:
    """Filter an image or volume file with any kernel; the output appears only when complete.

    Never writes over INPUT, nor over an existing OUTPUT without --overwrite; writes to a
    temporary file beside OUTPUT and renames it into place, so an error, Ctrl-C, SIGTERM or
    SIGHUP leaves nothing behind (exit status 130, 143, 129).
    """
    report = _run_filter(
        input, output, kernel, sigma_mm=sigma_mm, mode=mode, cval=cval,
        channel_axis=_channel_option(channel_axis), axes=_axes_option(axes), method=method,
        tol=tol, dtype=_dtype_option(dtype), workers=workers, chunks=chunks,
        scheduler=scheduler, memory_limit=memory_limit, overwrite=overwrite,
    )  # fmt: skip
    if not quiet:
        if report.removed:
            names = ", ".join(report.removed)
            err_console.print(
                f"sepconv: removed what an interrupted run left: {names}", markup=False
            )
        console.print(report.summary(), markup=False, soft_wrap=True)


def _run_filter(input: Path, output: Path, kernel: str | None, **options: Any) -> FilterReport:
    """``io.filter_file`` with a progress bar; how it can fail becomes one line and a status.

    SIGTERM and SIGHUP are handled like Ctrl-C (the output's temporary is removed, exit
    ``128 + signal``); absurd values and lack of memory are the user's (status 2); other
    ``OSError`` (disk full, permissions changed mid-way) status 1.
    """
    from . import io

    bar = _DelayedProgress()

    def fail(message: str, status: int) -> typer.Exit:
        bar.close()
        msg = " ".join(message.split())
        err_console.print(f"sepconv: error: {msg}", markup=False, soft_wrap=True)
        return typer.Exit(status)

    try:
        with io.signals_as_exceptions():  # SIGTERM, SIGHUP: cleaned up like Ctrl-C
            return io.filter_file(input, output, kernel, progress=bar, **options)
    except io.Terminated as stop:  # the output's temporary is already removed
        bar.close()
        err_console.print(f"sepconv: terminated by {stop.name}; nothing was written", markup=False)
        raise typer.Exit(128 + stop.signum) from None
    except OverflowError as exc:  # absurd parameters: still the user's input
        raise fail(f"a value is too large ({exc}); check the kernel's parameters", 2) from None
    except MemoryError as exc:
        detail = f": {exc}" if str(exc) else ""
        raise fail(f"not enough memory{detail}", 2) from None
    except OSError as exc:  # disk full, permission changed mid-way: not a usage error
        raise fail(str(exc), 1) from None
    finally:
        bar.close()


def _channel_option(text: str) -> int | str | None:
    if text in ("auto", "none"):
        return text
    try:
        return int(text)
    except ValueError:
        raise ValueError(
            f"--channel-axis must be auto, none or an axis number, got {text!r}"
        ) from None


def _axes_option(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise ValueError(
            f"--axes must be one or more integers separated by commas, got {text!r}"
        ) from None
    return values


# ----------------------------------------------------------------------------------------------
# demo
# ----------------------------------------------------------------------------------------------


@app.command()
@_user_errors
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo's files.")] = Path("sepconv-demo"),
    quick: Annotated[
        bool, typer.Option("--quick", help="An 8x smaller MRI volume: faster (for tests).")
    ] = False,
) -> None:
    """A tour: kernel ranks, filtering a photo and a volume vs scipy, DS cost, MobileNet v1."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from .experiments import demo as demo_module
    from .experiments._common import format_seconds

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        progress.add_task("running the demo (the first run compiles the engine)", total=None)
        report = demo_module.run(out, quick=quick)
        report.write()
    res = report.results

    table = Table(title="How separable are common kernels? (rank: exact to float rounding)")
    table.add_column("kernel", no_wrap=True)
    for col in ("shape", "rank", "MACs direct -> passes", "speed-up", "rank-1 error"):
        table.add_column(col, justify="right")
    for row in res["analysed"]:
        table.add_row(*[str(c) if not isinstance(c, float) else _fmt(c) for c in row])
    console.print(table)
    for key, title in (("image", "Filtering a photograph"), ("volume", "Filtering a 3-D volume")):
        t = Table(title=f"{title}: sepconv vs scipy.ndimage (float32, median of 3)")
        for col in ("kernel", "plan", "sepconv ms", "scipy ms", "speed-up", "max rel. diff"):
            # the plan column wraps first ('lowrank rank 4 (exact rank 3)'), the labels never
            t.add_column(
                col, justify="left" if col in ("kernel", "plan") else "right", no_wrap=col != "plan"
            )
        for r in res[key]:
            t.add_row(
                r["label"],
                demo_module.plan_text(r),
                f"{r['sepconv_ms']:.1f}",
                f"{r['scipy_ms']:.1f}",
                f"{r['speedup']:.1f}x",
                f"{r['rel_diff']:.1e}",
            )
        console.print(t)
    for note in res.get("rank_notes", []):
        console.print(note)
    layers = Table(title="Standard vs depthwise-separable 3x3 conv (MACs per output pixel)")
    for col in demo_module.CONV_COLUMNS:
        layers.add_column(col, justify="right")
    for row in res["conv_costs"]:
        layers.add_row(*row)
    console.print(layers)
    console.print(
        "The article's numbers: 7x7 kernel "
        f"{cost.kernel_macs((7, 7))} vs {cost.kernel_macs((7, 7), 'separable')} MACs; "
        f"10x10x10 {cost.kernel_macs((10,) * 3)} vs {cost.kernel_macs((10,) * 3, 'separable')} "
        f"({cost.kernel_macs((10,) * 3) / cost.kernel_macs((10,) * 3, 'separable'):.1f}x); "
        f"3x3 64 -> 128: {cost.conv_macs(64, 128, 3):,} MACs per output pixel."
    )
    for line in res.get("mobilenet", []):
        console.print(line)
    console.print(
        f"wrote {report.folder / 'report.md'} and {report.folder / 'filters.png'} "
        f"({format_seconds(report.seconds)})"
    )


def main() -> None:
    """Entry point of the ``sepconv`` script.

    Usage errors (missing or malformed options) print one line and exit with status 2, like
    errors in the values themselves; a bare ``sepconv`` prints the help.
    """
    from typer.exceptions import TyperException

    try:
        rv = app(standalone_mode=False)
    except TyperException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            ctx = getattr(exc, "ctx", None)
            console.print(ctx.get_help() if ctx is not None else "usage: sepconv COMMAND")
            sys.exit(2)
        fmt = getattr(exc, "format_message", None)
        msg = " ".join(str(fmt() if fmt else exc).split())
        err_console.print(f"sepconv: error: {msg}", markup=False, soft_wrap=True)
        sys.exit(int(getattr(exc, "exit_code", 2)))
    except KeyboardInterrupt:
        err_console.print("sepconv: interrupted")
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
