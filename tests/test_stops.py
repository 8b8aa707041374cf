"""stops: one record of why a run ends early, and one rule for which reason wins."""

from __future__ import annotations

import itertools

from exporter.errors import ExitCode
from exporter.stops import Stop

SIGINT = Stop(ExitCode.SIGINT, "interrupted by SIGINT; run the same command again to continue")
DISK = Stop(ExitCode.ARCHIVE, "cannot write the run's reports in out: No space left on device")
TOKEN = Stop(ExitCode.AUTH, "the API refused the token")
BUDGET = Stop(ExitCode.BUDGET, "--max-requests reached", drain=False)
OUTAGE = Stop(ExitCode.API_UNAVAILABLE, "the API was unavailable", drain=False)


def _fold(*stops: Stop) -> Stop:
    first, *rest = stops
    for stop in rest:
        first = first.merge(stop)
    return first


def test_an_archive_error_after_ctrl_c_wins_and_is_shown() -> None:
    """Ctrl-C, then a report that cannot be written: exit 4 with the disk's message, not the signal's."""
    stop = SIGINT.merge(DISK)
    assert (stop.reason, stop.message, stop.also) == (ExitCode.ARCHIVE, DISK.message, ())


def test_of_equal_ranks_the_first_wins() -> None:
    """Two ends that only need another run: the first given decides the exit code and the message."""
    assert BUDGET.merge(SIGINT).reason is ExitCode.BUDGET
    assert SIGINT.merge(BUDGET).reason is ExitCode.SIGINT
    assert OUTAGE.merge(BUDGET).message == OUTAGE.message


def test_a_message_that_needs_a_person_is_never_lost() -> None:
    """A refused token overtaken by a broken archive is kept in `also`, in the order they came."""
    stop = _fold(SIGINT, TOKEN, DISK)
    assert stop.reason is ExitCode.ARCHIVE
    assert stop.also == (TOKEN.message,)
    later = _fold(DISK, TOKEN)
    assert (later.reason, later.also) == (ExitCode.ARCHIVE, (TOKEN.message,))


def test_the_same_reason_again_adds_nothing() -> None:
    """Every worker refused the token: one message, the first."""
    again = Stop(ExitCode.AUTH, "the API refused the token (for another id)")
    assert TOKEN.merge(again) == TOKEN


def test_draining_once_asked_for_stays() -> None:
    """A budget lets the requests in flight finish; a signal after it stops them now."""
    assert BUDGET.merge(SIGINT).drain
    assert SIGINT.merge(BUDGET).drain
    assert not BUDGET.merge(OUTAGE).drain


def test_the_rule_does_not_depend_on_grouping() -> None:
    """Folding stops in any grouping gives the same record: the rule is one rule, not an accident of order."""
    for stops in itertools.permutations([SIGINT, DISK, TOKEN, BUDGET]):
        a, b, c, d = stops
        assert a.merge(b).merge(c).merge(d) == a.merge(b.merge(c).merge(d))
