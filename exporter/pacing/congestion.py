"""How fast the API lets us go: find its rate limit from its 429s, and hold it, among noise.

Pure arithmetic on times handed in by the caller (no clock, no I/O), so a test
can run it against a simulated server for ten virtual minutes in milliseconds.

Two kinds of 429 look alike one at a time: a rate limit's, whose share grows
with the pace (the API accepts about L a second, whatever is sent), and noise
(a flaky gateway, a quota shared with others), whose share does not. At a few
answers a second the share of 429s over a second or a round swings widely, so
every decision below is a test on counts, sized for small samples:

* **The first cut needs evidence beyond noise.** Up to `_NOISE_TOLERATED`
  (10%) of answers may be 429s whatever the pace. A Bernoulli CUSUM (the
  log-likelihood ratio of "half the answers are refused" against "10% are")
  over the answers since the last change cuts only when a limit is far more
  likely: a 70% share (a 3/s limit under --rate 10) is found within about 13
  answers, while 10% noise raises a false alarm once in more than a million
  answers, at any pace. Noise up to 10% therefore never moves the pace.
* **Measure, don't halve.** A cut goes to what the API accepted (non-429
  answers a second, over the last second or the last 20 answers), divided by
  (1 - the noise learnt) since the noise refuses that share at any pace; the
  pace starts at `backoff` (0.9) of it. A cut never more than halves the rate.
* **Each cut is judged.** The round after it (30 answers and a second, longer
  while unclear, at most 180) is compared with the answers before it (a
  two-proportion z test). As few 429s as the noise learnt explains: the cut
  reached under the limit (clean). Clearly fewer, or more, 429s than before, or
  over a quarter: still above the limit, and the round measured it: cut again
  (as deep as the measure says when over a quarter are refused; otherwise one
  `backoff` step, since a round of 30 says little more). As many as before,
  over at least 90 answers: slowing down did not help, so the 429s are noise:
  their share is learnt, and the cut is undone when the rate before it had
  itself been shown clean (else the rate stays, now knowing the noise).
* **Climb back, hold, then probe.** After a cut the rate climbs to 0.97 of
  the measured limit within 2 s, holds there for 3 s (or 60 requests, at a
  slow API), then probes above it on a cubic curve. A probe ends when its
  429s exceed the noise learnt (a second CUSUM, against noise + 7 points; with
  no noise learnt, one 429 ends it); it then goes back to the rate the API
  accepted (over a second, or 30 answers at a slow API), at once when that is
  higher than the limit held, else not below that limit: noise that ends a
  probe costs the probe, not the pace. Only a measure over few answers (under
  30/s) moves the limit a tenth of the way down: at 3-10/s the highest of such
  measures sat 15-25% above L. While no noise has been seen, a 429 at the
  held pace cuts at once: the limit was measured high (a burst from the API's
  bucket), and the round after the cut says if it was noise after all.

The noise learnt is the share of 429s in the rounds judged clean or noise
(the latest 300 answers of them), at most `_MAX_NOISE`.

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
# A probe's end measures the limit over at least this many answers, and the limit learnt moves
# this share of the way down to a lower measure (all the way up to a higher one).
_PROBE_MEASURE_ANSWERS = 30
_SETTLE = 0.1
# After a cut: seconds back up to just under the measured limit, what "just under" is,
# and how long to hold there before probing above it (at least `_CYCLE_REQUESTS` requests).
_RISE_S = 2.0
_HOLD = 0.97
_PLATEAU_S = 3.0
_CYCLE_REQUESTS = 60
# Responses kept to measure rates (at 400/s that is 10 s of them).
_KEEP = 4096

# The first cut: up to this share of 429s may be noise at any pace, a limit well under the pace
# refuses at least this share, and the evidence (a log-likelihood ratio) that tells them apart.
_NOISE_TOLERATED = 0.10
_LIMIT_SHARE = 0.5
_ALARM = 12.0
# A probe ends when its 429s exceed the noise by this share, with this evidence.
_PROBE_EXCESS = 0.07
_PROBE_ALARM = 3.0
# The round after a cut: judged after this many answers and seconds, then every as many more
# answers while unclear; noise needs at least `_NOISE_ANSWERS` of them, and at
# `_JUDGE_MAX_ANSWERS` the round is judged as it is. It is clean when its 429s are at least
# this likely under the noise learnt.
_JUDGE_ANSWERS = 30
_JUDGE_S = 1.0
_NOISE_ANSWERS = 90
_JUDGE_MAX_ANSWERS = 180
_CLEAN_SIGNIFICANCE = 0.05
# A change in the share of 429s this many standard errors wide is clear; under one it is none.
_CLEAR_Z = 2.0
_NO_CHANGE_Z = 1.0
# Answers of judged rounds kept to learn the noise, and the most noise there can be: a larger
# share of 429s is a limit, whatever slowing down seemed to do.
_NOISE_WINDOW = 300
_MAX_NOISE = 0.25


class Change(enum.Enum):
    """What a response did to the rate, for the log and the counters."""

    CUT = "cut"
    UNDONE = "undone"


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): how likely k or more 429s in n answers are as noise."""
    if k <= 0:
        return 1.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    below = 0.0
    term = (1.0 - p) ** n
    for i in range(min(k, n + 1)):
        below += term
        term *= (n - i) / (i + 1) * p / (1.0 - p)
    return max(0.0, 1.0 - below)


def settle_limit(held: float, measured: float, *, few: bool) -> float:
    """The limit learnt after a probe ends, from the one `held` and what the probe `measured`
    (`few`: over fewer answers than a second at 30/s holds).

    Up to a higher measure at once: the limit may have risen. A lower one is mostly noise that
    ended the probe early, and costs the probe, not the pace. Over a second of 30 answers or more
    the limit is kept (the highest measure held a 40/s limit within a few percent of L, which noise
    after the limit needs: at most 0.93 x L is accepted, and moving down cost 2-3 points of it);
    over few answers it moves `_SETTLE` of the way down. At 3 to 10/s measures spread over 15-40%
    of L and the highest of dozens landed 15-25% above L, held for good: 15-25% of the answers
    were 429s and the limit's share of them was learnt as noise.
    """
    if measured >= held:
        return measured
    if not few:
        return held
    return held + _SETTLE * (measured - held)


def share_drop(before: tuple[int, int], after: tuple[int, int]) -> float:
    """By how many standard errors the share of 429s fell from `before` to `after`, each
    (answers, 429s): the two-proportion z statistic (negative: it rose)."""
    (n0, k0), (n1, k1) = before, after
    if n0 == 0 or n1 == 0:
        return 0.0
    pooled = (k0 + k1) / (n0 + n1)
    if pooled in (0.0, 1.0):
        return 0.0
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n0 + 1 / n1))
    return (k0 / n0 - k1 / n1) / spread


class AdaptiveRate:
    """The request rate the API accepts, learnt from which answers are 429s."""

    __slots__ = (
        "_accepted",
        "_alarmed",
        "_backoff",
        "_base",
        "_before",
        "_ceiling",
        "_clean",
        "_cut_at",
        "_evidence",
        "_floor",
        "_judge_at",
        "_learnt",
        "_noise",
        "_previous",
        "_previous_clean",
        "_probe_gain",
        "_probe_watch",
        "_round",
        "_run",
        "_start",
        "cuts",
    )

    def __init__(
        self,
        *,
        ceiling_per_s: float,
        floor_per_s: float = 0.2,
        backoff: float = 0.9,
        probe_gain: float = 0.0016,
    ) -> None:
        if ceiling_per_s <= 0 or floor_per_s <= 0 or not 0 < backoff < 1 or probe_gain <= 0:
            raise ValueError("ceiling_per_s > 0, floor_per_s > 0, 0 < backoff < 1, probe_gain > 0")
        self._ceiling = ceiling_per_s
        self._floor = floor_per_s
        self._backoff = backoff
        self._probe_gain = probe_gain
        # (time, accepted) of the latest responses, to measure the accepted rate.
        self._accepted: collections.deque[tuple[float, bool]] = collections.deque(maxlen=_KEEP)
        # Whether each answer of the latest judged rounds was a 429, and their share.
        self._learnt: collections.deque[bool] = collections.deque(maxlen=_NOISE_WINDOW)
        self._noise = 0.0
        self._start = math.nan  # time of the first response
        # The rate set by the last cut, and when; None: never cut (or cut undone back to the ceiling).
        self._base: float | None = None
        self._cut_at = -math.inf
        # The base before the last cut, to undo it; whether each was shown clean (the ceiling
        # before any cut counts as clean: nothing was refused beyond noise there).
        self._previous: float | None = None
        self._clean = True
        self._previous_clean = True
        # The CUSUMs: evidence of a limit far under the pace, and of a probe above the limit.
        self._evidence = 0.0
        self._probe_watch = 0.0
        # [answers, 429s] since the last change, before the last cut, and in the round after it
        # (None once judged).
        self._run = [0, 0]
        self._before = (0, 0)
        self._round: list[int] | None = None
        self._judge_at = _JUDGE_ANSWERS
        # Whether the last cut came from the first-cut alarm (its round must show fewer 429s).
        self._alarmed = False
        self.cuts = 0

    def _stretch(self, base: float) -> float:
        """A slow API's plateau and probe span `_CYCLE_REQUESTS` requests, not seconds: at 3/s every
        probe above the limit costs a 429 or two, which must come rarely enough to stay a small share."""
        return max(1.0, _CYCLE_REQUESTS / (base * _PLATEAU_S))

    def rate(self, now: float) -> float:
        """Requests per second allowed at `now`."""
        base = self._base
        if base is None:
            return self._ceiling
        # Back up from backoff * limit to just under the limit within `_RISE_S`, hold there
        # for a plateau, then probe above it on a cubic curve: flat at first, steeper the
        # longer no 429 comes (TCP CUBIC's shape, with the plateau made explicit).
        since = max(0.0, now - self._cut_at)
        hold = base * _HOLD
        if since < _RISE_S:
            per_s = base * self._backoff + (hold - base * self._backoff) * since / _RISE_S
        else:
            stretch = self._stretch(base)
            probe = max(0.0, since - _RISE_S - _PLATEAU_S * stretch) / stretch
            per_s = hold * (1.0 + self._probe_gain * probe**3)
        if per_s >= self._ceiling:
            return self._ceiling
        return per_s

    def _probing(self, at: float) -> bool:
        """Whether a request booked at `at` was sent by a probe above the limit learnt."""
        if self._base is None:
            return False
        return at - self._cut_at >= _RISE_S + _PLATEAU_S * self._stretch(self._base)

    def noise(self) -> float:
        """The share of 429s that slowing down did not reduce (0 until a cut was judged)."""
        return self._noise

    def on_response(self, now: float, booked_at: float, *, limited: bool) -> Change | None:
        """Every answer reports here (`limited`: it was a 429; 5xx, resets and timeouts too, as
        not limited) with when its request was given its start time; returns what changed."""
        if math.isnan(self._start):
            self._start = now
        self._accepted.append((now, not limited))
        if booked_at <= self._cut_at:
            # Booked at the old rate: already accounted for by the last cut.
            return None
        self._run[0] += 1
        self._run[1] += limited
        noise = self._noise
        tolerated = max(_NOISE_TOLERATED, noise)
        limit_share = max(_LIMIT_SHARE, 2 * tolerated)
        if limited:
            self._evidence += math.log(limit_share / tolerated)
        else:
            self._evidence = max(0.0, self._evidence + math.log((1 - limit_share) / (1 - tolerated)))
        alarm = self._evidence >= _ALARM
        if self._round is not None:
            self._round[0] += 1
            self._round[1] += limited
            if alarm or (self._round[0] >= self._judge_at and now - self._cut_at >= _JUDGE_S):
                return self._judge(now, self._round[0], self._round[1], alarm=alarm)
            return None
        if alarm:
            return self._cut(now, self.accepted_rate(now), alarmed=True)
        if limited and noise == 0 and self._base is not None and booked_at - self._cut_at >= _RISE_S:
            # No noise seen yet, and a 429 at the pace held under the limit learnt: that limit was
            # measured high (a burst from the API's bucket). The round after the cut tells if not.
            return self._cut(now, self.accepted_rate(now))
        if self._base is not None and self._probing(booked_at):
            above = noise + max(_PROBE_EXCESS, noise)
            if limited:
                self._probe_watch = math.inf if noise == 0 else self._probe_watch + math.log(above / noise)
            else:
                self._probe_watch = max(0.0, self._probe_watch + math.log((1 - above) / (1 - noise)))
            if self._probe_watch >= _PROBE_ALARM:
                # More 429s than noise above the limit learnt: it is near. Back to what the API
                # accepted, but hardly below that limit: a probe that noise ended costs the probe.
                accepted, few = self._probe_measure(now)
                settled = settle_limit(self._base, accepted / (1.0 - noise), few=few)
                return self._cut(now, settled * (1.0 - noise), lowest=settled)
        return None

    def _judge(self, now: float, n: int, k: int, *, alarm: bool) -> Change | None:
        """The round after a cut is in, `k` of its `n` answers 429s: keep the cut, cut again, wait
        for more answers, or learn the 429s as noise (and undo the cut)."""
        clean = not alarm and binomial_tail(k, n, self._noise) >= _CLEAN_SIGNIFICANCE
        drop = share_drop(self._before, (n, k))
        if clean and (not self._alarmed or drop > _CLEAR_Z):
            # As few 429s as the noise explains (and, after an alarm, clearly fewer than
            # before it): under the limit.
            self._learn(n, k)
            self._round = None
            self._clean = True
            return None
        if not clean and (abs(drop) > _CLEAR_Z or k > _MAX_NOISE * n):
            # Still above the limit, which this round measured. As deep as that measure says only
            # when a quarter of the round was refused; otherwise one step.
            lowest = None if k > _MAX_NOISE * n or self._base is None else self._backoff * self._base
            return self._cut(now, self.accepted_rate(now, since=self._cut_at), lowest=lowest)
        if n < _NOISE_ANSWERS or (abs(drop) > _NO_CHANGE_Z and n < _JUDGE_MAX_ANSWERS):
            self._judge_at = n + _JUDGE_ANSWERS  # not clear yet: a longer round
            return None
        # As many 429s at the slower pace as before: noise.
        self._learn(n, k)
        self._round = None
        self._clean = True
        if not self._previous_clean:
            # The rate before the cut was never shown to be under the limit: stay.
            return None
        self._base = self._previous
        # Straight to probing from where the rate was.
        self._cut_at = (
            -math.inf if self._base is None else now - _RISE_S - _PLATEAU_S * self._stretch(self._base)
        )
        self._restart()
        return Change.UNDONE

    def _learn(self, n: int, k: int) -> None:
        self._learnt.extend([True] * k + [False] * (n - k))
        self._noise = min(_MAX_NOISE, sum(self._learnt) / len(self._learnt))

    def _restart(self) -> None:
        """A new rate: the evidence so far was about the old one."""
        self._evidence = 0.0
        self._probe_watch = 0.0
        self._run = [0, 0]

    def _cut(
        self, now: float, accepted: float, *, lowest: float | None = None, alarmed: bool = False
    ) -> Change:
        """Lower the rate to what the API accepted, noise aside, but not below `lowest` when given,
        nor to less than half of it."""
        current = self.rate(now)
        measured = accepted / (1.0 - self._noise)
        if lowest is None:
            floor = self._floor if self._base is None else max(self._floor, current / 2)
            if self._base is None and measured >= 0.9 * current:
                # The first cut, while the API seemed to accept (nearly) all we sent: too little was
                # measured to tell (the first burst); halve, as TCP does when it knows nothing better.
                measured = current / 2
            base = max(floor, min(measured, current))
        else:
            base = max(self._floor, min(current, max(measured, lowest)))
        self._previous, self._previous_clean = self._base, self._clean
        self._base, self._clean = base, False
        self._alarmed = alarmed
        self._cut_at = now
        self._before = (
            (self._run[0], self._run[1]) if self._round is None else (self._round[0], self._round[1])
        )
        self._restart()
        self._round = [0, 0]
        self._judge_at = _JUDGE_ANSWERS
        self.cuts += 1
        return Change.CUT

    def _probe_measure(self, now: float) -> tuple[float, bool]:
        """Non-429 answers per second at the end of a probe: over the last second, or the last
        `_PROBE_MEASURE_ANSWERS` answers when a second holds fewer, not counting the answer that
        opens a span stretched to it: n answers span n - 1 gaps, so counting both ends reads
        1/(n - 1) high (5% at 20 answers), and the limit learnt kept that bias. Also whether the
        span was stretched: the measure rests on few answers."""
        accepted = 0
        opening = 0
        span = min(_MEASURE_S, now - self._start)
        for counted, (at, ok) in enumerate(reversed(self._accepted)):
            if now - at > span and (counted >= _PROBE_MEASURE_ANSWERS or now - at > _MEASURE_MAX_S):
                break
            accepted += ok
            if now - at >= span:
                span, opening = now - at, ok
        return (accepted - opening) / max(span, _MIN_SPAN_S), span > _MEASURE_S

    def accepted_rate(self, now: float, *, since: float | None = None) -> float:
        """Non-429 answers per second lately: since `since` if given, else over the last second,
        or the last `_MEASURE_ANSWERS` answers when a second holds fewer (a slow API), or since
        the first answer."""
        accepted = 0
        if since is not None:
            for at, ok in reversed(self._accepted):
                if at <= since:
                    break
                accepted += ok
            return accepted / max(now - since, _MIN_SPAN_S)
        span = min(_MEASURE_S, now - self._start)
        for counted, (at, ok) in enumerate(reversed(self._accepted)):
            if now - at > span and (counted >= _MEASURE_ANSWERS or now - at > _MEASURE_MAX_S):
                break
            accepted += ok
            span = max(span, now - at)
        return accepted / max(span, _MIN_SPAN_S)

    def __repr__(self) -> str:
        base = "none" if self._base is None else f"{self._base:.3g}/s"
        judging = "" if self._round is None else f" round={self._round[1]}/{self._round[0]}"
        return (
            f"<AdaptiveRate ceiling={self._ceiling:.3g}/s base={base} cuts={self.cuts} "
            f"noise={self._noise:.3f} evidence={self._evidence:.1f}{judging}>"
        )
