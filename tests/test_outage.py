"""The outage breaker in virtual time: broken ids are told from the API being down, at the tail too.

The breaker is pure: each test hands it the times and ids of a run's answers and failures and
checks whose it says each failure is, when the pool waits, and when it gives up.
"""

from __future__ import annotations

import math

import pytest
from fake_time import FakeTime

from exporter.config import LimitSettings, RetrySettings
from exporter.pacing import Pacer, Ticket, Trouble
from exporter.pacing.halts import Halt, HaltRule
from exporter.pacing.outage import Blame, OutageBreaker, State


def breaker(**changes: float) -> OutageBreaker:
    """A breaker whose probe delays are exact (no jitter): 1 s doubling to 10 s, spells of 2 s."""
    settings: dict[str, float] = {
        "span_s": 2.0,
        "start_delay_s": 1.0,
        "max_delay_s": 10.0,
    }
    settings.update(changes)
    return OutageBreaker(**settings, rand=lambda: 1.0)  # type: ignore[arg-type]


def served_until(b: OutageBreaker, end: float) -> float:
    """A run whose ids ok-0, ok-1, ... are all answered, ten a second, until `end`; the last answer's time.

    Each record is a little larger than the one before, so the canary is the oldest one kept.
    """
    count = round(end * 10) + 1
    for n in range(count):
        now = n / 10
        assert b.admit(now).go
        b.answered(now + 0.01)
        b.served(f"ok-{n}", size=1000 + n)
    return (count - 1) / 10 + 0.01


def test_three_broken_ids_left_at_the_tail_are_their_own_failures() -> None:
    """The rest of the run is done; three ids keep failing, each request sent after the last answer,
    so nothing else can tell. After a 2 s dry spell the breaker asks for a recording served earlier
    (the smallest of the last ones): it comes, so the spell's failures were the ids' own. Each later
    spell of theirs is judged the same way, a check each; the pool never waits for an outage."""
    b = breaker()
    last = served_until(b, 3.0)
    broken = ["bad-1", "bad-2", "bad-3"]
    now = last + 0.1
    for record_id in broken:
        assert b.failed(now, record_id=record_id, sent_at=now - 0.05) is Blame.UNKNOWN
        now += 0.1
    spell = b.spell
    assert b.verdict(spell) is Blame.UNKNOWN
    for record_id in broken:  # their retries, still inside the spell
        assert b.failed(now, record_id=record_id, sent_at=now - 0.05) is Blame.UNKNOWN
        now += 0.3
    assert b.ripe_in(now) == pytest.approx(last + 0.1 - 0.05 + 2.0 - now)
    check = b.admit(last + 2.2)
    assert (check.go, check.probe, check.canary) == (True, True, "ok-23")  # the smallest of the last 8
    assert b.state is State.CHECKING
    assert b.admit(last + 2.21).wait_s == math.inf  # nobody else goes while the check is out
    assert b.answered(last + 2.25) is None  # served: the API is up
    assert b.verdict(spell) is Blame.ID
    now = last + 3.0
    for _ in range(5):
        spells = []
        for record_id in broken:
            assert b.failed(now, record_id=record_id, sent_at=now - 0.05) is Blame.UNKNOWN
            spells.append(b.spell)
            admission = b.admit(now)
            assert admission.go
            if admission.probe:  # the spell is checked: served, so theirs
                b.answered(now + 0.01)
            now += 1.0
        assert all(b.verdict(spell) is Blame.ID for spell in spells[:-1])
    assert b.checks == 1 + 5
    assert b.outages == 0
    assert not b.is_open()


def test_a_failure_overtaken_by_an_answer_is_the_ids_own_at_once() -> None:
    """An id whose request failed while the API answered another request sent after it is broken on
    its own: its failure counts at once. Once nothing else answers, its failures wait for a verdict."""
    b = breaker()
    served_until(b, 1.0)
    b.answered(1.3)  # an answer to a request sent after bad-1's
    assert b.failed(1.5, record_id="bad-1", sent_at=1.2) is Blame.ID
    assert b.spell == 0  # no dry spell: the API was answering
    # The rest of the run is over; bad-1 fails alone, with no answer since it was sent.
    assert b.failed(4.0, record_id="bad-1", sent_at=3.9) is Blame.UNKNOWN
    assert b.outages == 0


def test_an_outage_at_the_tail_is_still_an_outage() -> None:
    """The API goes down with three ids left: they fail, nothing answers for the span, and the
    recording served earlier fails too. That is an outage: the spell's attempts are given back,
    the pool waits and probes with the canary (a broken id never decides), and gives up once
    --max-outage has passed since the spell began."""
    b = breaker()
    halts = HaltRule(max_requests=None, max_outage_s=60.0, retry_after_max_s=900.0)
    last = served_until(b, 3.0)
    began = last + 0.1
    for i, record_id in enumerate(["r-1", "r-2", "r-3"]):
        now = began + 0.05 * i
        assert b.failed(now + 0.02, record_id=record_id, sent_at=now) is Blame.UNKNOWN
    spell = b.spell
    check = b.admit(began + 2.01)
    assert check.probe
    assert check.canary is not None
    assert b.failed(began + 2.1, record_id=check.canary, sent_at=began + 2.01, probe=True) is Blame.API
    assert b.is_open()
    assert b.outages == 1
    assert b.verdict(spell) is Blame.API
    assert b.outage_started() == pytest.approx(began)
    assert b.failed(began + 2.2, record_id="r-1", sent_at=began + 1.5) is Blame.API  # in flight before
    assert b.admit(began + 2.5).wait_s == pytest.approx(0.6)
    probe = b.admit(began + 3.1)
    assert (probe.go, probe.probe, probe.canary) == (True, True, check.canary)
    assert b.failed(began + 3.2, record_id=check.canary, sent_at=began + 3.1, probe=True) is Blame.API
    assert b.admit(began + 4.0).wait_s == pytest.approx(1.2)  # the delay doubled
    assert halts.check(began + 59.0, sent=0, down_since=b.waiting_since(began + 59.0)) is None
    gave_up = halts.check(began + 60.5, sent=0, down_since=b.waiting_since(began + 60.5))
    assert gave_up is not None
    assert gave_up.halt is Halt.API_UNAVAILABLE


def test_an_outage_mid_run_ends_at_the_first_answer() -> None:
    """Fresh ids fail one after another with nothing answered: after the span, the check fails, the
    pool waits; a probe answered ends the outage, which lasted from its first unanswered request."""
    b = breaker()
    served_until(b, 2.0)
    for i in range(30):  # 15/s, every one a new id, none answered
        now = 2.2 + i / 15
        assert b.failed(now + 0.01, record_id=f"new-{i}", sent_at=now) is Blame.UNKNOWN
    check = b.admit(4.21)
    assert check.probe
    b.failed(4.3, record_id=str(check.canary), sent_at=4.21, probe=True)
    probe = b.admit(5.3)
    assert probe.probe
    assert b.answered(5.35) == pytest.approx(5.35 - 2.2)
    assert not b.is_open()
    assert b.admit(5.4).go


def test_answers_in_between_keep_every_failure_the_ids_own() -> None:
    """A flaky API answering most requests: failures between answers never make a spell last the span,
    so no check is sent and no outage declared; their verdicts are the ids'."""
    b = breaker()
    served_until(b, 1.0)
    for i in range(100):
        now = 1.1 + i * 0.1
        b.failed(now, record_id=f"flaky-{i}", sent_at=now - 0.02)
        spell = b.spell
        if i % 3 == 2:
            b.answered(now + 0.05)
            assert b.verdict(spell) is Blame.ID
        assert b.admit(now + 0.06).go
    assert (b.checks, b.outages) == (0, 0)


def test_without_a_canary_an_outage_needs_failures_of_several_ids() -> None:
    """Before anything was served there is nothing to ask for again: a spell of two ids failing is
    theirs, one of three ids (or of three failures to connect, whatever the id) is an outage."""
    two = breaker()
    for t in (0.0, 0.5, 1.0, 1.5, 2.1):
        two.failed(t, record_id=f"a-{int(t) % 2}", sent_at=t)
    assert two.state is State.CLOSED
    assert two.verdict(two.spell) is Blame.ID
    judged = two.spell
    assert two.failed(2.5, record_id="a-0", sent_at=2.4) is Blame.UNKNOWN  # a new spell
    assert two.spell == judged + 1

    three = breaker()
    for t, record_id in ((0.0, "a"), (0.5, "b"), (1.0, "c")):
        assert three.failed(t, record_id=record_id, sent_at=t) is Blame.UNKNOWN
    assert three.admit(2.0).wait_s == pytest.approx(1.0)
    assert three.is_open()
    assert three.verdict(three.spell) is Blame.API
    probe = three.admit(3.0)
    assert probe.probe
    assert probe.canary is None

    refused = breaker()
    for t in (0.0, 0.5, 1.0):
        refused.failed(t, record_id="only", sent_at=t, connected=False)
    refused.admit(2.0)
    assert refused.is_open()


def test_a_spell_is_judged_later_at_a_slow_pace() -> None:
    """At a slow pace two failures in a row are a few seconds: the pacer lengthens the span."""
    b = breaker()
    served_until(b, 1.0)
    b.failed(1.5, record_id="x", sent_at=1.5, span_s=8.0)
    assert b.admit(4.0, span_s=8.0).go
    assert b.ripe_in(4.0, span_s=8.0) == pytest.approx(5.5)
    assert b.state is State.CLOSED
    assert b.admit(9.6, span_s=8.0).probe


# --- the pacer around it -------------------------------------------------------------------------


async def test_an_id_with_its_attempts_used_provisionally_waits_for_the_verdict_and_sends_the_check() -> None:
    """The worker of an id whose attempts are all provisional asks the pacer with `pending`: it waits
    out the span (virtually), is handed the check itself (nobody else is there to send it), and once
    the check is answered gets None: the verdict is in, and it is the id's."""
    time = FakeTime()
    pacer = Pacer(
        LimitSettings(rate_per_s=0), RetrySettings(), clock=time.clock, now_epoch=time.epoch, sleep=time.sleep
    )
    ok = await pacer.start()
    assert isinstance(ok, Ticket)
    pacer.finish(ok, status=200, record_id="ok-1")
    pacer.served("ok-1", 900)
    time.now = 1.0
    bad = await pacer.start()
    assert isinstance(bad, Ticket)
    effect = pacer.finish(bad, status=None, record_id="bad-1", trouble=Trouble("the response was cut off"))
    assert effect.spell
    assert not effect.outage
    check = await pacer.start(pending=effect.spell)
    assert isinstance(check, Ticket)
    assert (check.probe, check.canary) == (True, "ok-1")
    assert time.now == pytest.approx(3.0)  # the span, from bad-1's request
    pacer.finish(check, status=200, record_id="ok-1")
    assert await pacer.start(pending=effect.spell) is None
    assert pacer.verdict(effect.spell).value == "id"
