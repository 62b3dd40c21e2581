"""scipy's own filter tests pass against sepconv, except a documented list (issue 12).

``scipy/ndimage/tests/test_filters.py`` from the installed scipy runs unchanged in a fresh
interpreter, its ``ndimage`` served by ``tests/scipy_conformance/shim.py`` (sepconv's 13
filters under scipy's names, scipy's functions for the rest). Every test that calls a sepconv
function must pass unless ``tests/scipy_conformance/expected_failures.txt`` lists it, with its
category and reason, and then it must fail for that reason; the pass count may not drop below
the floor recorded there. Per-test causes: ``tests/scipy_conformance/FAILURES.md``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scipy_conformance import expected

HERE = Path(__file__).resolve().parent
EXPECTED = HERE / "scipy_conformance" / "expected_failures.txt"


def _run_harness(tmp: Path, *args: str, fault: str = "") -> tuple[dict[str, Any], str]:
    """Run the harness in a fresh interpreter; return its check (counts, problems) and output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH")) if p)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # nothing written into the installed scipy
    env["SCIPY_HYPOTHESIS_PROFILE"] = "deterministic"
    for name in ("SCIPY_ARRAY_API", "PYTEST_ADDOPTS", "PYTEST_PLUGINS"):
        env.pop(name, None)  # numpy only, and none of the outer run's pytest options
    env.pop("SCIPY_CONFORMANCE_FAULT", None)
    if fault:
        env["SCIPY_CONFORMANCE_FAULT"] = fault
    check = tmp / "check.json"
    proc = subprocess.run(
        [sys.executable, "-m", "scipy_conformance.runner", "--check-json", str(check), *args],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert check.is_file(), f"the harness did not finish (exit {proc.returncode}):\n{output}"
    return json.loads(check.read_text()), output


@pytest.fixture(scope="module")
def conformance(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    check, _ = _run_harness(tmp_path_factory.mktemp("scipy-conformance"))
    return check


def _listing(items: list[str], limit: int = 40) -> str:
    more = f"\n... and {len(items) - limit} more" if len(items) > limit else ""
    return "\n".join(items[:limit]) + more


@pytest.mark.engine
def test_scipy_filter_tests_run_against_sepconv_through_the_shim(
    conformance: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    with capsys.disabled():
        print(f"\n{conformance['summary']}")
    assert not conformance["setup_problems"], conformance["setup_problems"]
    # scipy's file has ~2500 tests, ~1800 of them reach a sepconv function
    assert conformance["total"] > 2000
    assert conformance["calling"] > 1500
    # a test that never calls sepconv runs scipy alone: it failing means the harness is broken
    assert not conformance["not_calling_failures"], _listing(conformance["not_calling_failures"])


@pytest.mark.engine
def test_no_scipy_test_that_calls_sepconv_fails_unless_listed(conformance: dict[str, Any]) -> None:
    failures = conformance["unexpected_failures"]
    assert not failures, (
        f"{len(failures)} scipy tests that call sepconv fail and are not in {EXPECTED.name} "
        f"(a regression, or a new deliberate difference to list with its reason):\n"
        + _listing(failures)
    )


@pytest.mark.engine
def test_listed_scipy_tests_still_fail_for_their_documented_reason(
    conformance: dict[str, Any],
) -> None:
    passes = conformance["unexpected_passes"]
    assert not passes, (
        f"{len(passes)} listed tests pass now: remove them from {EXPECTED.name} "
        "(`PYTHONPATH=tests .venv/bin/python -m scipy_conformance.runner --prune`):\n"
        + _listing(passes)
    )
    wrong = conformance["wrong_reason"]
    assert not wrong, (
        f"{len(wrong)} listed tests fail, but not as their section's `match` says:\n"
        + _listing(wrong)
    )
    assert not conformance["stale"], _listing(conformance["stale"])


@pytest.mark.engine
def test_scipy_tests_passing_against_sepconv_do_not_drop_below_the_floor(
    conformance: dict[str, Any],
) -> None:
    assert conformance["passed"] >= conformance["floor"], conformance["summary"]


@pytest.mark.engine
def test_harness_reports_a_wrong_sepconv_result_as_an_unexpected_failure(
    tmp_path: Path,
) -> None:
    # gaussian_filter's float results made 1.5x too large by the shim: scipy's test_gauss01
    # (sigma 0 is the identity) and test_gauss03 (the sum is kept) must fail and be reported;
    # test_gauss02 checks only dtype and shape and still passes
    # (all three pass without the fault: the full run above holds them to that)
    selection = "test_gauss01 or test_gauss02 or test_gauss03"
    faulty, output = _run_harness(tmp_path, "-k", selection, fault="gaussian_filter")
    failed = sorted(p.split(": ", 1)[0] for p in faulty["unexpected_failures"])
    assert failed == [
        "TestNdimageFilters::test_gauss01[numpy]",
        "TestNdimageFilters::test_gauss03[numpy]",
    ], output
    assert (faulty["calling"], faulty["passed"]) == (3, 1), output


def test_expected_failure_list_gives_every_entry_a_category_status_and_reason() -> None:
    listed = expected.load(EXPECTED)
    assert listed.floor > 0
    assert listed.scipy_version
    categories = {s.category: s for s in listed.sections}
    # the differences README documents as deliberate stay listed as such
    assert categories["integer-output"].deliberate
    for section in listed.sections:
        assert section.ids, f"[{section.category}] is empty: remove the section"
        assert section.match, f"[{section.category}] needs a match"
        assert section.status in ("deliberate", "todo (issue 12)")
    with pytest.raises(ValueError, match="listed twice"):
        expected.parse("[a]\nstatus: deliberate\nreason: r\nT::t[x]\nT::t[x]\n")
    with pytest.raises(ValueError, match="needs 'status"):
        expected.parse("[a]\nreason: r\nT::t[x]\n")


def test_conformance_check_flags_unlisted_failures_listed_passes_and_other_reasons() -> None:
    listed = expected.parse(
        "scipy: 1.0\nfloor: 2\n[complex]\nstatus: todo (issue 12)\nreason: r\n"
        "match: ^TypeError: .*complex\nT::listed_fails\nT::listed_passes\nT::listed_other\n"
        "T::gone\n"
    )
    calls = {"correlate": 1}
    results = {
        "scipy_version": "1.0",
        "shim_in_module": True,
        "tests": {
            "T::ok": {"outcome": "passed", "sepconv_calls": calls},
            "T::ok2": {"outcome": "passed", "sepconv_calls": calls},
            "T::scipy_only": {"outcome": "failed", "error": "E", "sepconv_calls": {}},
            "T::unlisted": {"outcome": "failed", "error": "AssertionError", "sepconv_calls": calls},
            "T::listed_fails": {
                "outcome": "failed",
                "error": "TypeError: input must be real; got complex dtype complex64",
                "sepconv_calls": calls,
            },
            "T::listed_passes": {"outcome": "passed", "sepconv_calls": calls},
            "T::listed_other": {
                "outcome": "failed",
                "error": "AssertionError: Not equal",
                "sepconv_calls": calls,
            },
        },
    }
    check = expected.compare(results, listed)
    assert (check.total, check.calling, check.passed, check.failed) == (7, 6, 3, 3)
    assert check.unexpected_failures == ["T::unlisted: AssertionError"]
    assert check.unexpected_passes == ["T::listed_passes [complex]"]
    assert check.wrong_reason == ["T::listed_other [complex]: AssertionError: Not equal"]
    assert check.not_calling_failures == ["T::scipy_only: E"]
    assert check.stale == ["T::gone"]
    assert check.failed_by_category == {"complex (todo (issue 12))": 2}
    assert len(check.problems()) == 5
    assert check.ok(partial=False) is False
