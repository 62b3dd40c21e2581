"""Run scipy's own ``ndimage/tests/test_filters.py`` against sepconv; one JSON record per test.

The test file is the one shipped inside the installed scipy, run in place and unchanged by a
fresh pytest session (its own package, its ``from . import ...`` helpers and scipy's
``conftest.py`` with the ``xp`` fixture, scipy's hypothesis profile). While pytest imports
that one module, ``scipy.ndimage`` (the attribute that ``from scipy import ndimage`` reads)
is the shim, so every ``ndimage.correlate`` in the file, including those bound at import
time by ``parametrize`` and ``make_xp_test_case``, is sepconv's, and scipy's own modules never
see the shim. Warnings are errors, as in scipy's CI (pytest's deprecation warnings about the
test file's own style excepted).

Usage (from the repository root)::

    PYTHONPATH=tests .venv/bin/python -m scipy_conformance.runner [--json out.json]
        [--check-json check.json] [--prune] [--failures-md FAILURES.md] [-k EXPR]

prints the summary (tests, tests calling sepconv, passes, failures by category, unexpected
failures and passes); ``--prune`` removes from ``expected_failures.txt`` the entries that
now pass and raises its floor to the current pass count; ``--failures-md`` writes every
failing test by category with its failure. ``SCIPY_HYPOTHESIS_PROFILE=deterministic`` (the
default of scipy's conftest) keeps scipy's hypothesis tests reproducible.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

TEST_MODULE = "scipy.ndimage.tests.test_filters"
HERE = Path(__file__).resolve().parent

_INI = """\
[pytest]
filterwarnings =
    error
    always::scipy._lib._testutils.FPUModeChangeWarning
    ignore::pytest.PytestDeprecationWarning
"""


def scipy_test_file() -> Path:
    """The path of ``scipy/ndimage/tests/test_filters.py`` in the installed scipy."""
    spec = importlib.util.find_spec("scipy.ndimage.tests")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the installed scipy has no scipy.ndimage.tests package (scipy's wheels ship it; "
            "some distribution packages strip the tests)"
        )
    path = Path(spec.origin).parent / "test_filters.py"
    if not path.is_file():
        raise FileNotFoundError(f"the installed scipy has no {path}")
    return path


def short_id(nodeid: str) -> str:
    """``scipy/ndimage/tests/test_filters.py::A::b[x]`` -> ``A::b[x]``."""
    return nodeid.split("::", 1)[1] if "::" in nodeid else nodeid


@contextmanager
def _scipy_ndimage_is(module: Any) -> Iterator[None]:
    import scipy

    missing = object()
    saved = scipy.__dict__.get("ndimage", missing)
    scipy.ndimage = module
    try:
        yield
    finally:
        if saved is missing:
            del scipy.ndimage
        else:
            scipy.ndimage = saved


def _first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:limit]


class ConformancePlugin:
    """Serves the shim to the test module and records each test's outcome and sepconv calls."""

    def __init__(self, test_file: Path) -> None:
        import scipy.ndimage  # noqa: F401  (the real module is in place before the swap)

        from scipy_conformance import shim

        self.shim = shim
        self.test_file = test_file.resolve()
        self.tests: dict[str, dict[str, Any]] = {}
        self.collect_errors: list[str] = []
        self.shim_in_module = False

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(self, collector: pytest.Collector) -> Generator[Any, Any, Any]:
        if (
            isinstance(collector, pytest.Module)
            and Path(collector.path).resolve() == self.test_file
        ):
            with _scipy_ndimage_is(self.shim):
                report = yield
            module = sys.modules.get(TEST_MODULE)
            self.shim_in_module = getattr(module, "ndimage", None) is self.shim
            return report
        return (yield)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collect_errors.append(f"{report.nodeid}: {_first_line(str(report.longrepr))}")

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[Any, Any, Any]:
        self.shim.current_test = short_id(item.nodeid)
        try:
            return (yield)
        finally:
            self.shim.current_test = None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[Any, Any, Any]:
        report = yield
        test = self.tests.setdefault(short_id(item.nodeid), {"outcome": "passed"})
        if report.failed and "error" not in test:
            exc = call.excinfo
            if exc is not None:
                test["error"] = f"{exc.typename}: {_first_line(str(exc.value))}"
            else:  # e.g. an xfail(strict) that passed
                test["error"] = _first_line(str(report.longrepr))
            test["phase"] = call.when
        if report.failed:
            test["outcome"] = "failed"
        elif report.skipped and test["outcome"] != "failed":
            test["outcome"] = "xfailed" if hasattr(report, "wasxfail") else "skipped"
            if not hasattr(report, "wasxfail"):
                test["reason"] = _first_line(str(report.longrepr))
        elif call.when == "call" and hasattr(report, "wasxfail"):
            test["outcome"] = "xpassed"
        return report

    def results(self) -> dict[str, Any]:
        for test_id, test in self.tests.items():
            test["sepconv_calls"] = self.shim.calls.get(test_id, {})
            if test_id in self.shim.raised:
                test["sepconv_raised"] = list(self.shim.raised[test_id])
        return {
            "test_file": str(self.test_file),
            "shim_in_module": self.shim_in_module,
            "collect_errors": self.collect_errors,
            "tests": self.tests,
        }


def run(pytest_args: list[str] | None = None) -> dict[str, Any]:
    """Run scipy's filter tests against sepconv in this process; return the results."""
    import scipy

    import sepconv

    test_file = scipy_test_file()
    site = test_file.parents[3]  # the directory that holds the scipy package
    plugin = ConformancePlugin(test_file)
    with tempfile.TemporaryDirectory() as tmp:
        ini = Path(tmp) / "pytest.ini"
        ini.write_text(_INI)
        args = [
            str(test_file),
            "-c",
            str(ini),
            f"--rootdir={site}",
            f"--confcutdir={site}",  # scipy/conftest.py: the xp fixture, markers, hypothesis
            "-p",
            "no:cacheprovider",
            "-q",
            "--tb=no",
            "-rN",
            "--no-header",
            *(pytest_args or []),
        ]
        start = time.perf_counter()
        exit_code = pytest.main(args, plugins=[plugin])
        seconds = time.perf_counter() - start
    results = plugin.results()
    results.update(
        exit_code=int(exit_code),
        seconds=round(seconds, 1),
        scipy_version=scipy.__version__,
        sepconv_version=getattr(sepconv, "__version__", "unknown"),
        sepconv_file=str(Path(sepconv.__file__).parent),
    )
    return results


def main(argv: list[str] | None = None) -> int:
    from scipy_conformance import expected

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the per-test results here")
    parser.add_argument("--check-json", type=Path, help="write the check (counts, problems)")
    parser.add_argument("--prune", action="store_true", help="drop expected entries that pass")
    parser.add_argument("--failures-md", type=Path, help="write the failures, by category")
    parser.add_argument("--note", default="", help="a line for the --failures-md header")
    parser.add_argument("-k", help="pytest -k expression (a partial run: no floor, no stale check)")
    args = parser.parse_args(argv)
    if (args.prune or args.failures_md) and args.k:
        parser.error("--prune and --failures-md need the full run (no -k)")
    results = run(["-k", args.k] if args.k else [])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, sort_keys=True))
    listed = expected.load()
    check = expected.compare(results, listed)
    if args.failures_md:
        args.failures_md.write_text(expected.failures_markdown(results, listed, check, args.note))
    if args.check_json:
        args.check_json.write_text(
            json.dumps(check.to_json(partial=bool(args.k)), indent=1, sort_keys=True)
        )
    print(check.summary())
    problems = check.problems(partial=bool(args.k))
    for problem in problems:
        print(problem)
    if args.prune:
        expected.prune(check)
        print(
            f"pruned {len(check.unexpected_passes) + len(check.stale)} entries; "
            f"floor now {max(check.passed, check.floor)}"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
