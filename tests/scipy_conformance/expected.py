"""The documented list of scipy tests that may fail against sepconv, and the checks.

``expected_failures.txt`` holds a header (``scipy:`` the version the list was recorded with,
``floor:`` the least number of sepconv-calling tests that must pass) and sections::

    [category]
    status: deliberate | todo (issue 12)
    reason: one line (several ``reason:`` lines are joined)
    match: a regular expression the failure (``Type: message``) must match
    repro: a minimal reproduction (optional; several lines kept as lines)
    TestClass::test_name[params]
    ...

A listed test must fail, and fail for its section's reason (``match``); any other failure
of a test that calls sepconv is a regression. ``deliberate`` entries are differences sepconv
keeps on purpose; ``todo`` entries go away as issue 12 is implemented (``runner --prune``
removes the entries that pass and raises the floor).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PATH = Path(__file__).resolve().parent / "expected_failures.txt"
_KEY = re.compile(r"^(scipy|floor|status|reason|match|repro):\s*(.*)$")


@dataclass
class Section:
    category: str
    status: str = ""
    reason: str = ""
    match: str = ""
    repro: str = ""
    ids: list[str] = field(default_factory=list)

    @property
    def deliberate(self) -> bool:
        return self.status == "deliberate"


@dataclass
class Expected:
    scipy_version: str = ""
    floor: int = 0
    sections: list[Section] = field(default_factory=list)

    def section_of(self) -> dict[str, Section]:
        return {test_id: s for s in self.sections for test_id in s.ids}


def parse(text: str) -> Expected:
    """Read the list; an id listed twice or a section without status/reason is an error."""
    exp = Expected()
    section: Section | None = None
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = Section(line[1:-1].strip())
            exp.sections.append(section)
            continue
        key = _KEY.match(line)
        if key and (section is None) == (key.group(1) in ("scipy", "floor")):
            name, value = key.groups()
            if name == "scipy":
                exp.scipy_version = value
            elif name == "floor":
                exp.floor = int(value)
            elif section is not None and name == "reason":
                section.reason = f"{section.reason} {value}".strip()
            elif section is not None and name == "repro":
                section.repro = f"{section.repro}\n{value}".lstrip("\n")
            elif section is not None:
                setattr(section, name, value)
            continue
        if section is None:
            raise ValueError(f"{PATH.name}:{number}: test id before the first [section]: {line}")
        if line in seen:
            raise ValueError(f"{PATH.name}:{number}: {line} is listed twice")
        seen.add(line)
        section.ids.append(line)
    for s in exp.sections:
        if s.status not in ("deliberate", "todo (issue 12)") or not s.reason:
            raise ValueError(
                f"[{s.category}] needs 'status: deliberate|todo (issue 12)' and a reason"
            )
        if s.match:
            re.compile(s.match)
    return exp


def load(path: Path = PATH) -> Expected:
    return parse(path.read_text())


@dataclass
class Check:
    """The run held against the list: counts and every problem found."""

    scipy_version: str
    listed_for: str
    total: int = 0
    calling: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    not_calling: int = 0
    floor: int = 0
    seconds: float = 0.0
    failed_by_category: dict[str, int] = field(default_factory=dict)
    setup_problems: list[str] = field(default_factory=list)
    unexpected_failures: list[str] = field(default_factory=list)
    wrong_reason: list[str] = field(default_factory=list)
    unexpected_passes: list[str] = field(default_factory=list)
    not_calling_failures: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.passed / self.calling if self.calling else 0.0

    def problems(self, partial: bool = False) -> list[str]:
        out = [f"harness: {p}" for p in self.setup_problems]
        out += [f"unexpected failure: {p}" for p in self.unexpected_failures]
        out += [f"fails for another reason than listed: {p}" for p in self.wrong_reason]
        out += [
            f"listed but passes (remove it: runner --prune): {p}" for p in self.unexpected_passes
        ]
        out += [f"fails without calling sepconv: {p}" for p in self.not_calling_failures]
        if not partial:
            out += [f"listed but not in scipy's test file: {p}" for p in self.stale]
            if self.passed < self.floor:
                out.append(f"only {self.passed} sepconv-calling tests pass, floor {self.floor}")
        if out and self.scipy_version != self.listed_for:
            out.insert(
                0,
                f"note: list recorded with scipy {self.listed_for}, "
                f"installed scipy {self.scipy_version}",
            )
        return out

    def ok(self, partial: bool = False) -> bool:
        return not self.problems(partial)

    def summary(self) -> str:
        lines = [
            f"scipy {self.scipy_version} ndimage/tests/test_filters.py against sepconv: "
            f"{self.total} tests, {self.calling} call sepconv, {self.passed} of them pass "
            f"({100 * self.rate:.1f}%), {self.failed} fail, {self.skipped} skipped; "
            f"floor {self.floor}; {self.seconds:.1f} s",
        ]
        lines += [f"  {n:4d} {c}" for c, n in sorted(self.failed_by_category.items())]
        return "\n".join(lines)

    def to_json(self, partial: bool = False) -> dict[str, Any]:
        return dict(
            self.__dict__, rate=self.rate, summary=self.summary(), problems=self.problems(partial)
        )


def compare(results: dict[str, Any], exp: Expected) -> Check:
    """Hold the runner's results against the list."""
    tests: dict[str, dict[str, Any]] = results["tests"]
    chk = Check(results["scipy_version"], exp.scipy_version, floor=exp.floor)
    chk.seconds = float(results.get("seconds", 0.0))
    if not results.get("shim_in_module"):
        chk.setup_problems.append("scipy's test module did not get the shim as `ndimage`")
    chk.setup_problems += [f"collection error {e}" for e in results.get("collect_errors", [])]
    where = exp.section_of()
    for test_id, test in sorted(tests.items()):
        chk.total += 1
        outcome = test["outcome"]
        error = test.get("error", "")
        if not test.get("sepconv_calls"):
            chk.not_calling += 1
            if outcome == "failed":
                chk.not_calling_failures.append(f"{test_id}: {error}")
            continue
        chk.calling += 1
        section = where.get(test_id)
        if outcome in ("passed", "xpassed"):
            chk.passed += 1
            if section is not None:
                chk.unexpected_passes.append(f"{test_id} [{section.category}]")
        elif outcome == "failed":
            chk.failed += 1
            if section is None:
                chk.unexpected_failures.append(f"{test_id}: {error}")
                continue
            label = f"{section.category} ({section.status})"
            chk.failed_by_category[label] = chk.failed_by_category.get(label, 0) + 1
            if section.match and not re.search(section.match, error):
                chk.wrong_reason.append(f"{test_id} [{section.category}]: {error}")
        else:
            chk.skipped += 1
    if chk.calling == 0:
        chk.setup_problems.append("no test called a sepconv function")
    chk.stale = sorted(set(where) - set(tests))
    return chk


def prune(check: Check, path: Path = PATH) -> None:
    """Remove the entries that pass or no longer exist (and sections left empty); raise the
    floor to the pass count."""
    drop = {p.split(" [", 1)[0] for p in check.unexpected_passes} | set(check.stale)
    blocks: list[list[str]] = [[]]  # the header, then one block per [section]
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            blocks.append([])
        if stripped in drop:
            continue
        if stripped.startswith("floor:") and check.passed > int(stripped.split(":")[1]):
            line = f"floor: {check.passed}"
        blocks[-1].append(line)
    out = blocks[0] + [
        line
        for block in blocks[1:]
        if any(s.strip() and not s.startswith("#") and not _KEY.match(s) for s in block[1:])
        for line in block
    ]
    path.write_text("\n".join(out) + "\n")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def failures_markdown(results: dict[str, Any], exp: Expected, check: Check, note: str) -> str:
    """Every failing sepconv-calling test by category: cause, repro, per-test failure."""
    tests: dict[str, dict[str, Any]] = results["tests"]
    failing = {k: v for k, v in tests.items() if v["outcome"] == "failed" and v["sepconv_calls"]}
    where = exp.section_of()
    lines = [
        "# scipy's filter tests against sepconv: the current failures",
        "",
        "Generated by `PYTHONPATH=tests .venv/bin/python -m scipy_conformance.runner "
        "--failures-md tests/scipy_conformance/FAILURES.md` (do not edit by hand: causes and "
        "repros live in `expected_failures.txt`). " + note,
        "",
        f"Test file: `scipy/ndimage/tests/test_filters.py` of the installed scipy "
        f"({results['scipy_version']}).",
        "",
        "```",
        check.summary(),
        "```",
        "",
        "| category | status | failing tests | scipy test functions |",
        "|---|---|---|---|",
    ]
    groups: list[tuple[str, str, str, str, list[str]]] = [
        (s.category, s.status, s.reason, s.repro, sorted(i for i in s.ids if i in failing))
        for s in exp.sections
    ]
    unlisted = sorted(k for k in failing if k not in where)
    if unlisted:
        groups.append(("not listed", "regression?", "Fails and is not on the list.", "", unlisted))
    for category, status, _, _, ids in groups:
        functions = sorted({i.split("[")[0] for i in ids})
        lines.append(f"| {category} | {status} | {len(ids)} | {len(functions)} |")
    for category, status, reason, repro, ids in groups:
        lines += ["", f"## {category} ({status}): {len(ids)} tests", "", reason, ""]
        if repro:
            lines += ["```python", repro, "```", ""]
        per_function: dict[str, list[str]] = {}
        for test_id in ids:
            per_function.setdefault(test_id.split("[")[0], []).append(test_id)
        lines += ["| scipy test function | failing | of |", "|---|---|---|"]
        for function, members in per_function.items():
            total = sum(1 for k in tests if k.split("[")[0] == function)
            lines.append(f"| `{function}` | {len(members)} | {total} |")
        lines += ["", "| test id | failure |", "|---|---|"]
        lines += [f"| `{_cell(i)}` | {_cell(failing[i].get('error', ''))} |" for i in ids]
    return "\n".join(lines) + "\n"
