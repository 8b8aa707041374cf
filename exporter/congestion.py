"""How fast the API lets us go: find its rate limit from its 429s, and hold it.

Pure arithmetic on times handed in by the caller (no clock, no I/O), so a test
can run it against a simulated server for ten virtual minutes in milliseconds.

The idea is TCP's (CUBIC) with BBR's measurement instead of blind halving:

* **Measure, don't halve.** When the API starts answering 429, the rate it
  *accepts* (non-429 answers per second over the last second, or the last 20
  answers when a second holds fewer) is the limit, whatever we were sending.
  The rate goes to `backoff` (0.9) times that, so one cut lands just under the
  limit instead of halving over and over towards a floor (the collapse issue 9
  measured: 2% of a 40/s limit). A later cut never more than halves the rate:
  little is accepted when little was sent.
* **Once per round.** Only a 429 for a request booked after the last cut can
  cut again: the requests already on their way at the old rate say nothing new.
  While most answers of the new round are still 429s (the first burst against
  an unknown limit) a cut follows at once; otherwise the round is judged after
  `round_responses` answers or 2.5 s.
* **Was it a limit?** When two cuts in a row leave the share of 429s as it was,
  slowing down did not help: the 429s come from something else (a shared quota
  spent by others, a flaky gateway). The rate goes back to where it was, and
  that share is remembered as noise: later 429s cut only when their share rises
  three standard deviations above it. A share over 30% is never noise.
* **Climb back, hold, then probe.** After a cut the rate climbs to 0.97 of the
  measured limit within 2 s, holds there for 3 s (or 60 requests, at a slow
  API), then probes above it on a cubic curve, slowly at first and faster the
  longer no 429 comes: a limit that was underestimated or has risen is found
  again within seconds, and one that holds costs a 429 or two per probe cycle.

`ceiling_per_s` (--rate) is never exceeded; `math.inf` means no ceiling.
"""

from __future__ import annotations

import collections
import enum
import math

# How far back the accepted rate is measured.
_MEASURE_S = 1.0
# ...or over at least this many answers, when a second holds fewer, up to this long.
_MEASURE_ANSWERS = 20
_MEASURE_MAX_S = 8.0
# The shortest span the accepted rate is measured over, just after start.
_MIN_SPAN_S = 0.05
# A round after a cut is judged after this long (or `round_responses` answers)...
_ROUND_S = 2.5
# ...if it has at least this many answers.
_MIN_ROUND = 5
# A round must have been answered for this long before most of it refused cuts at once: a
# burst of workers waking together from their Retry-Afters says little about the rate.
_CASCADE_AFTER_S = 0.25
# A share of 429s above this is a limit, whatever slowing down seemed to do: never noise.
_MAX_NOISE = 0.3
# After a cut: seconds back up to just under the measured limit, what "just under" is,
# and how long to hold there before probing above it (at least `_CYCLE_REQUESTS` requests).
_RISE_S = 2.0
_HOLD = 0.97
_PLATEAU_S = 3.0
_CYCLE_REQUESTS = 60
# Responses kept to measure rates and shares (at 400/s that is 10 s of them).
_KEEP = 4096


class Change(enum.Enum):
    """What a response did to the rate, for the log and the counters."""

    CUT = "cut"
    UNDONE = "undone"


class AdaptiveRate:
    """The request rate the API accepts, learnt from which answers are 429s."""

    __slots__ = (
        "_accepted",
        "_backoff",
        "_base",
        "_ceiling",
        "_cut_at",
        "_cut_from",
        "_floor",
        "_noise",
        "_outcomes",
        "_probe_gain",
        "_round",
        "_round_first",
        "_round_limited",
        "_round_responses",
        "_share_before",
        "_start",
        "_strikes",
        "cuts",
    )

    def __init__(
        self,
        *,
        ceiling_per_s: float,
        floor_per_s: float = 0.2,
        backoff: float = 0.9,
        probe_gain: float = 0.0016,
        round_responses: int = 50,
        share_window: int = 100,
    ) -> None:
        if ceiling_per_s <= 0 or floor_per_s <= 0 or not 0 < backoff < 1 or probe_gain <= 0:
            raise ValueError("ceiling_per_s > 0, floor_per_s > 0, 0 < backoff < 1, probe_gain > 0")
        self._ceiling = ceiling_per_s
        self._floor = floor_per_s
        self._backoff = backoff
        self._probe_gain = probe_gain
        self._round_responses = round_responses
        # (time, accepted) of the latest responses, to measure the accepted rate.
        self._accepted: collections.deque[tuple[float, bool]] = collections.deque(maxlen=_KEEP)
        # Whether each of the latest answers was a 429.
        self._outcomes: collections.deque[bool] = collections.deque(maxlen=share_window)
        self._start = math.nan  # time of the first response
        # The rate set by the last cut, and when; None: never cut (or cut undone back to the ceiling).
        self._base: float | None = None
        self._cut_at = -math.inf
        # The rate before the first cut of the current series, to go back to if it was no limit.
        self._cut_from = math.inf
        self._share_before = 0.0
        # Cuts in a row whose round did not lower the share of 429s.
        self._strikes = 0
        # Answers (and how many were 429s) to requests started after the last cut.
        self._round = 0
        self._round_limited = 0
        self._round_first = -math.inf
        # The share of 429s that slowing down did not reduce.
        self._noise = 0.0
        self.cuts = 0

    def rate(self, now: float) -> float:
        """Requests per second allowed at `now`."""
        base = self._base
        if base is None:
            return self._ceiling
        # Back up from backoff * limit to just under the limit within `_RISE_S`, hold there
        # for a plateau, then probe above it on a cubic curve: flat at first, steeper the
        # longer no 429 comes (TCP CUBIC's shape, with the plateau made explicit). A slow
        # API's plateau and probe are stretched to span `_CYCLE_REQUESTS` requests, not
        # seconds: at 3/s every probe above the limit costs a 429 or two, which must come
        # rarely enough to stay a small share.
        since = max(0.0, now - self._cut_at)
        hold = base * _HOLD
        if since < _RISE_S:
            per_s = base * self._backoff + (hold - base * self._backoff) * since / _RISE_S
        else:
            stretch = max(1.0, _CYCLE_REQUESTS / (base * _PLATEAU_S))
            probe = max(0.0, since - _RISE_S - _PLATEAU_S * stretch) / stretch
            per_s = hold * (1.0 + self._probe_gain * probe**3)
        if per_s >= self._ceiling:
            return self._ceiling
        return per_s

    def on_response(self, now: float, booked_at: float, *, limited: bool) -> Change | None:
        """Every answer reports here (`limited`: it was a 429) with when its request was
        given its start time; returns what changed."""
        if math.isnan(self._start):
            self._start = now
        self._accepted.append((now, not limited))
        self._outcomes.append(limited)
        if booked_at <= self._cut_at:
            # Booked at the old rate: already accounted for by the last cut.
            return None
        if self._round == 0:
            self._round_first = now
        self._round += 1
        self._round_limited += limited
        if self._base is not None and self._round <= self._round_responses:
            if (
                limited
                and self._round >= 2
                and self._round_limited * 2 > self._round
                and now - self._round_first >= _CASCADE_AFTER_S
            ):
                # Most of the new round is still refused: nowhere near the limit yet.
                return self._cut(now, fresh=False)
            if self._round == self._round_responses or (
                now - self._cut_at >= _ROUND_S and self._round >= _MIN_ROUND
            ):
                # Judged before the probe has moved the rate much, however slow the API is.
                after = self._round_limited / self._round
                self._round = self._round_responses + 1
                return self._judge_round(now, after)
            return None
        if limited and self._share() > self._noise_bar():
            return self._cut(now, fresh=True)
        return None

    def _judge_round(self, now: float, after: float) -> Change | None:
        """A round after a cut is in, `after` of it 429s: did slowing down end them?"""
        if after <= max(0.02, self._noise * 1.2 + 0.01):
            self._strikes = 0
            # The noise floor fades slowly, and never below the share of the latest answers:
            # one clean round among random 429s is chance, not the noise gone.
            self._noise = max(0.8 * self._noise, self._share()) if self._noise else 0.0
            return None
        self._strikes += 1
        if self._strikes < 2 or after < 0.6 * self._share_before or after > _MAX_NOISE:
            # Fewer 429s but not none: the cut was not deep enough (a burst from the API's
            # bucket inflated the measure). Once more, from what this round measured.
            return self._cut(now, fresh=False)
        # Twice slower, as many 429s: not a limit. Back to the rate before, and learn the noise.
        self._strikes = 0
        self._noise = max(self._noise, after)
        self._base = None if self._cut_from >= self._ceiling else self._cut_from
        # Straight to probing from where the rate was.
        self._cut_at = (
            -math.inf
            if self._base is None
            else now - _RISE_S - _PLATEAU_S * max(1.0, _CYCLE_REQUESTS / (self._base * _PLATEAU_S))
        )
        return Change.UNDONE

    def _share(self) -> float:
        return sum(self._outcomes) / len(self._outcomes)

    def _noise_bar(self) -> float:
        """The share of 429s that counts as a limit: clearly above the known noise."""
        if self._noise == 0:
            return 0.0
        # Three standard deviations of the share over the window: a limit, not chance.
        spread = 3.0 * math.sqrt(self._noise * (1.0 - self._noise) / max(1, len(self._outcomes)))
        return self._noise + max(0.02, spread)

    def _cut(self, now: float, *, fresh: bool) -> Change:
        current = self.rate(now)
        if fresh:
            self._cut_from = current
            self._strikes = 0
        measured = self.accepted_rate(now)
        self._share_before = self._share()
        # What the API accepted, but never below half the rate it refused in one step: when the
        # workers sat out Retry-Afters, little was sent and so little accepted.
        floor = self._floor if self._base is None else max(self._floor, current / 2)
        if self._base is None and measured >= 0.9 * current:
            # The first 429, while the API seemed to accept (nearly) all we sent: too little was measured
            # to tell (the first burst); halve, as TCP does when it knows nothing better.
            measured = current / 2
        self._base = max(floor, min(measured, current))
        self._cut_at = now
        self._round = 0
        self._round_limited = 0
        self.cuts += 1
        return Change.CUT

    def accepted_rate(self, now: float) -> float:
        """Non-429 answers per second lately: over the last second, or the last `_MEASURE_ANSWERS`
        answers when a second holds fewer (a slow API), or since the first answer."""
        since_start = now - self._start
        accepted = 0
        span = min(_MEASURE_S, since_start)
        for counted, (at, ok) in enumerate(reversed(self._accepted)):
            if now - at > span and (counted >= _MEASURE_ANSWERS or now - at > _MEASURE_MAX_S):
                break
            accepted += ok
            span = max(span, now - at)
        return accepted / max(span, _MIN_SPAN_S)

    def __repr__(self) -> str:
        base = "none" if self._base is None else f"{self._base:.3g}/s"
        return (
            f"<AdaptiveRate ceiling={self._ceiling:.3g}/s base={base} cuts={self.cuts} "
            f"noise={self._noise:.3f} round={self._round_limited}/{self._round}>"
        )
