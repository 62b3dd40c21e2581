"""Reproducible studies behind ``sepconv experiment``: every quantitative claim of the article.

Each experiment is a module with ``run(out: Path, quick: bool, progress) -> Report``; it
writes ``out/<name>/report.md``, PNG figures and ``results.json``. Seeds are fixed; ``quick``
runs in under a minute, the full run in under ten on two cores. matplotlib (and, for the nn
experiments, torch) are imported only here, never by ``import sepconv``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

__all__ = ["EXPERIMENTS", "SEEDED", "run_experiment"]

#: name -> (module, one-line description)
EXPERIMENTS: dict[str, tuple[str, str]] = {
    "speedup": ("speedup", "separable vs direct: k^2/2k in 2-D, K^2/3 in 3-D, theory vs measured"),
    "ds-cost": ("dscost", "standard vs depthwise-separable conv: MACs, params, torch latency"),
    "capacity": ("capacity", "what DS layers cannot represent: the crossing-lines task"),
    "layers": ("layers", "early vs late layers made depthwise-separable in a trained CNN"),
    "lowrank": ("lowrank", "rank / error / cost of common kernels and the plan auto picks"),
}


#: Experiments that repeat over seeds (``run(..., seeds=)``: a count or a list of seeds).
SEEDED = ("layers",)


def run_experiment(
    name: str, out: Path, *, quick: bool = False, progress: Any = None, seeds: Any = None
) -> Any:
    """Run one experiment (or ``'all'``) and return its report (for ``all``: the index).

    ``seeds`` (a count, or a list of seeds) goes to the experiments that repeat over seeds
    (:data:`SEEDED`); by default each uses its own (``layers``: 5, quick 2).
    """
    if name == "all":
        from ._common import write_index

        reports = [
            run_experiment(
                n, out, quick=quick, progress=progress, seeds=seeds if n in SEEDED else None
            )
            for n in EXPERIMENTS
        ]
        return write_index(out, reports, quick=quick)
    if name not in EXPERIMENTS:
        raise ValueError(f"experiment must be one of {sorted([*EXPERIMENTS, 'all'])}, got {name!r}")
    if seeds is not None and name not in SEEDED:
        raise ValueError(
            f"seeds applies to the experiments {list(SEEDED)}, not {name!r} (its seeds are fixed)"
        )
    module = importlib.import_module(f".{EXPERIMENTS[name][0]}", __name__)
    if seeds is not None:
        module.seed_list(seeds, quick)  # checked before any work
    kwargs = {} if seeds is None else {"seeds": seeds}
    report = module.run(out, quick=quick, progress=progress, **kwargs)
    report.write()
    return report
