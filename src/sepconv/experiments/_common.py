"""Shared pieces of the experiments: reports, figures (the timer is ``sepconv._timing``)."""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Report",
    "Timer",
    "accuracy",
    "fmt",
    "format_seconds",
    "mean_ci",
    "plain_log_ticks",
    "setup_matplotlib",
    "shell_command",
    "train",
    "write_index",
]


def setup_matplotlib() -> Any:
    """pyplot with the Agg backend (no display needed), imported only when a figure is made."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def train(model: Any, x: Any, y: Any, epochs: int, seed: int, lr: float = 3e-3) -> None:
    """Adam on the cross-entropy, minibatches of 64 in a seeded order; ends in eval mode."""
    import torch

    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for b in range(0, len(x), 64):
            idx = perm[b : b + 64]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def accuracy(model: Any, x: Any, y: Any) -> float:
    """Fraction of ``x`` classified as ``y`` (evaluation mode, no gradients)."""
    import torch

    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def mean_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    """Mean, sample standard deviation and Student-t confidence interval of the mean.

    Parameters
    ----------
    values : sequence or array of float
        At least two finite values (independent runs, e.g. one per seed).
    confidence : float
        The interval's coverage, in (0, 1).

    Returns
    -------
    dict
        ``n``, ``mean``, ``std`` (``ddof=1``), ``half_width``
        (``t_{(1 + confidence) / 2, n - 1} * std / sqrt(n)``), ``low``, ``high`` and
        ``confidence``.

    Raises
    ------
    ValueError
        Fewer than two values, a value that is not finite, or ``confidence`` outside (0, 1).

    >>> ci = mean_ci([1.0, 2.0, 3.0])
    >>> round(ci["mean"], 6), round(ci["std"], 6), round(ci["half_width"], 4)
    (2.0, 1.0, 2.4841)
    """
    from scipy import stats

    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size < 2 or not np.all(np.isfinite(v)):
        raise ValueError(f"values must hold at least two finite numbers, got {v.tolist()!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    n = int(v.size)
    mean = float(v.mean())
    std = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return {
        "n": n,
        "mean": mean,
        "std": std,
        "half_width": half,
        "low": mean - half,
        "high": mean + half,
        "confidence": confidence,
    }


class Timer:
    """Wall time of a block, for the report footer."""

    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0


def format_seconds(seconds: float) -> str:
    """A duration as a person reads it: ``'< 0.1 s'``, ``'0.3 s'``, ``'12 s'``, ``'2 min 5 s'``.

    >>> [format_seconds(s) for s in (0.04, 0.34, 9.96, 12.4, 125.2)]
    ['< 0.1 s', '0.3 s', '10 s', '12 s', '2 min 5 s']
    """
    if seconds < 0.05:
        return "< 0.1 s"
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    if seconds < 119.5:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def plain_log_ticks(axis: Any, low: float, high: float) -> list[float]:
    """Put ticks at 1-2-5 values covering ``[low, high]`` on a log-scaled ``axis`` (e.g.
    ``ax.xaxis``), labelled as plain numbers (``0.5``, ``2``, ``20``), no minor labels.

    Returns the tick values.
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    low, high = max(low, 1e-12), max(high, low)
    ticks = [
        m * 10.0**e
        for e in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
        for m in (1, 2, 5)
    ]
    below = [t for t in ticks if t <= low]
    above = [t for t in ticks if t >= high]
    lo, hi = (below[-1] if below else ticks[0]), (above[0] if above else ticks[-1])
    ticks = [t for t in ticks if lo <= t <= hi]
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())
    return ticks


def fmt(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if x == 0:
        return "0"
    if abs(x) >= 1e5 or abs(x) < 1e-3:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"


@dataclass
class Report:
    """A markdown report with tables and figures, plus the raw results as JSON."""

    name: str
    title: str
    out: Path
    quick: bool
    parts: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: the command that makes this report (default: ``sepconv experiment NAME [--quick]
    #: --out OUT``), shown in its first lines
    command: str | None = None

    @property
    def folder(self) -> Path:
        path = self.out / self.name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def text(self, *paragraphs: str) -> None:
        self.parts.extend(paragraphs)

    def table(
        self, header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None
    ) -> None:
        align = align or ("l" + "r" * (len(header) - 1))
        sep = ["---:" if a == "r" else "---" for a in align]
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(sep) + "|"]
        for row in rows:
            cells = [fmt(c) if isinstance(c, float) else str(c) for c in row]
            lines.append("| " + " | ".join(cells) + " |")
        self.parts.append("\n".join(lines))

    def figure(self, fig: Any, filename: str, caption: str) -> None:
        path = self.folder / filename
        fig.savefig(path, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        self.figures.append(filename)
        self.parts.append(f"![{caption}]({filename})\n\n*{caption}*")

    def write(self) -> Path:
        mode = "quick run (--quick): small sizes, fewer repeats" if self.quick else "full run"
        command = self.command or shell_command(
            "sepconv", "experiment", self.name, *(["--quick"] if self.quick else []),
            "--out", str(self.out),
        )  # fmt: skip
        head = [
            f"# {self.title}",
            f"Made by `{command}` — {mode}; machine `{platform.node()}` "
            f"({platform.machine()}), {time.strftime('%Y-%m-%d')}; "
            f"took {format_seconds(self.seconds)}.",
        ]
        body = "\n\n".join(head + self.parts) + "\n"
        (self.folder / "report.md").write_text(body)
        payload = {
            "name": self.name,
            "quick": self.quick,
            "seconds": self.seconds,
            "machine": platform.node(),
            **self.results,
        }
        (self.folder / "results.json").write_text(json.dumps(payload, indent=2, default=_json))
        return self.folder / "report.md"


def shell_command(*words: str) -> str:
    """A command line as a person would type it (quoted only where the shell needs it)."""
    import shlex

    return " ".join(shlex.quote(w) for w in words)


def _json(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_index(out: Path, reports: Sequence[Report], *, quick: bool) -> Report:
    """``out/index.md``: one line per experiment, linking its report."""
    index = Report("index", "sepconv experiments: the article's claims, measured", out, quick)
    index.seconds = sum(r.seconds for r in reports)
    lines = [
        f"# {index.title}",
        "",
        "Made by `"
        + shell_command(
            "sepconv", "experiment", "all", *(["--quick"] if quick else []), "--out", str(out)
        )
        + "`. "
        + ("Quick run (`--quick`)." if quick else "Full run.")
        + f" Machine `{platform.node()}`, {time.strftime('%Y-%m-%d')}, "
        f"{format_seconds(index.seconds)} in all.",
        "",
        "| experiment | what it checks | time |",
        "|---|---|---:|",
    ]
    lines += [
        f"| [{r.name}]({r.name}/report.md) | {r.title} | {format_seconds(r.seconds)} |"
        for r in reports
    ]
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.md").write_text("\n".join(lines) + "\n")
    index.results["path"] = str(out / "index.md")
    return index
