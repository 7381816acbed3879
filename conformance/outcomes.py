"""The outcome model: what a conformance case reports, and which outcomes gate a run.

A plain pass/fail is too coarse for a device under test.  The pytest plugin
turns each case's reports into one of these outcomes with the pure functions
below; the results file, the summary, the baseline and the comparison all
speak in these words.

========== ======================================================= ===============
outcome    meaning                                                 gates the run
========== ======================================================= ===============
passed     the device did exactly what the cited clauses require   no
failed     a MUST / MUST NOT clause was violated, or the device    yes
           did not answer while a case checked it
deviation  the check failed, and every clause the case cites is    only with
           SHOULD / SHOULD NOT / MAY (RFC 2119: not absolute)      --strict-should
reject     a negative case: the device refused a malformed         no
           request and stayed healthy
wedged     the device stopped serving well-formed requests         yes
skipped    the case needs a feature the device does not offer      no
error      the case could not run (setup or teardown trouble)      yes
========== ======================================================= ===============

A baseline (conformance.baseline) then turns a listed outcome into
``xfailed`` (the known deviation is still there: does not gate) or a listed
case that passes into ``xpassed`` (the baseline is stale: gates).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

PASSED = "passed"
FAILED = "failed"
DEVIATION = "deviation"
REJECT = "reject"
WEDGED = "wedged"
SKIPPED = "skipped"
ERROR = "error"
XFAILED = "xfailed"
XPASSED = "xpassed"

#: Device outcomes: what the case observed, before any baseline is applied.
DEVICE_OUTCOMES: tuple[str, ...] = (PASSED, FAILED, DEVIATION, REJECT, WEDGED, SKIPPED, ERROR)
#: Verdicts: a device outcome after the baseline (adds xfailed / xpassed).
VERDICTS: tuple[str, ...] = DEVICE_OUTCOMES + (XFAILED, XPASSED)
#: Outcomes a baseline may list (a case that did not pass and was checked).
BASELINE_OUTCOMES: tuple[str, ...] = (FAILED, DEVIATION, ERROR, WEDGED)

#: RFC 2119 levels whose violation is a deviation rather than a failure.
NON_ABSOLUTE_LEVELS = frozenset({"SHOULD", "SHOULD NOT", "MAY"})

#: One letter per verdict for the terminal's progress line (pytest's own letters
#: where pytest has the concept).
LETTERS = {PASSED: ".", FAILED: "F", DEVIATION: "D", REJECT: "r", WEDGED: "W",
           SKIPPED: "s", ERROR: "E", XFAILED: "x", XPASSED: "X"}
WORDS = {PASSED: "PASSED", FAILED: "FAILED", DEVIATION: "DEVIATION", REJECT: "REJECT",
         WEDGED: "WEDGED", SKIPPED: "SKIPPED", ERROR: "ERROR", XFAILED: "XFAIL",
         XPASSED: "XPASS"}

# Which outcome wins when a case's phases disagree (a passing call followed by a
# failing teardown is an error; a skip in setup hides nothing).
_RANK = {PASSED: 0, REJECT: 1, SKIPPED: 2, DEVIATION: 3, XFAILED: 4, FAILED: 5, WEDGED: 6,
         XPASSED: 7, ERROR: 8}


def failure_outcome(levels: Iterable[str], assertion: bool) -> str:
    """The outcome of a case whose check failed.

    ``levels`` are the RFC 2119 levels of every clause the case cites.  Only a
    failed *assertion* can be a deviation: a case that timed out or hit a
    platform error while checking a SHOULD clause saw a device that did not
    answer, which no SHOULD excuses.
    """
    levels = list(levels)
    if assertion and levels and all(level in NON_ABSOLUTE_LEVELS for level in levels):
        return DEVIATION
    return FAILED


def gates(verdict: str, strict_should: bool = False) -> bool:
    """True when this verdict makes the run fail (exit status 1)."""
    if verdict == DEVIATION:
        return strict_should
    return verdict in (FAILED, WEDGED, ERROR, XPASSED)


def worst(outcomes: Iterable[str]) -> str:
    """The outcome that decides a case from its phases' outcomes (setup, call, teardown)."""
    result = PASSED
    for outcome in outcomes:
        if _RANK[outcome] > _RANK[result]:
            result = outcome
    return result


def severity(levels: Iterable[str]) -> str:
    """Allure severity for a case from the levels of its clauses: the strictest wins."""
    levels = set(levels)
    if levels & {"MUST", "MUST NOT"}:
        return "critical"
    if levels & {"SHOULD", "SHOULD NOT"}:
        return "normal"
    return "minor"


@dataclass(frozen=True)
class OutcomeMark:
    """An outcome a case declares for itself (negative cases: reject or wedged).

    A case gets a :class:`CaseOutcome` through the ``case_outcome`` fixture and
    calls ``reject(...)`` or ``wedged(...)``; the plugin applies it when the
    case's call phase ends.
    """

    outcome: str
    detail: str


class CaseOutcome:
    """Handed to a case by the ``case_outcome`` fixture; see :class:`OutcomeMark`."""

    def __init__(self) -> None:
        self.mark: OutcomeMark | None = None

    def reject(self, detail: str) -> None:
        """The device refused the malformed input and stayed healthy."""
        self.mark = OutcomeMark(REJECT, detail)

    def wedged(self, detail: str) -> None:
        """The device stopped serving well-formed requests after the malformed input."""
        self.mark = OutcomeMark(WEDGED, detail)


def apply_mark(outcome: str, mark: OutcomeMark | None) -> str:
    """A case's call outcome after its own declaration.

    ``reject`` only upgrades a pass (a case that failed an assertion did not see
    a clean refusal); ``wedged`` wins over anything but an error.
    """
    if mark is None:
        return outcome
    if mark.outcome == REJECT:
        return REJECT if outcome == PASSED else outcome
    if mark.outcome == WEDGED:
        return outcome if outcome == ERROR else WEDGED
    raise ValueError(f"unknown declared outcome {mark.outcome!r}")
