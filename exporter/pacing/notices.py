"""What the user is told about the pool being held: each hold once, with when it ends, and its end.

The pacer hands this its holds as it makes them (a Retry-After, a spent quota,
a quota spread thin, an outage's end) and, once in a while, the state of the
pool (`due`: an outage that has lasted `NOTICE_S`, a hold that is over). What
is to be told waits here as `PauseNotice` values until the run takes them
(`take`, through `Pacer.poll`): the pacer never calls up into the run. `news`
is set while some wait, so the run can show a notice as soon as it is made.

Holds of `NOTICE_S` or less are not told: they are the pace, not a pause. An
end is told with its date when that is not today; the times are written by
`waits.py`, which never raises whatever a server announced.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from .pauses import PauseReason
from .trouble import Trouble
from .waits import duration_text, seconds_text, until_text, utc_text

#: Holds longer than this are told to the user.
NOTICE_S = 5.0


@dataclass(frozen=True, slots=True)
class PauseNotice:
    """The whole pool held (for `reason`, until `until_epoch` if known), or that hold over (`ended`)."""

    reason: PauseReason
    #: For a person: what, why and until when; "" when the end of a pause needs no words.
    message: str
    until_epoch: float | None = None
    ended: bool = False
    #: `until_epoch` for a person: a time of day, with the date when not today.
    until_text: str = ""
    #: Not held, but slowed to a few requests (a quota spread thin).
    slowed: bool = False

    def status(self) -> str | None:
        """A few words for the progress bar while the hold lasts; None once it is over."""
        if self.ended:
            return None
        state = "slowed" if self.slowed else "paused"
        if not self.until_text:
            return f"{state} ({self.reason.value})"
        return f"{state} ({self.reason.value}) {self.until_text}"


class Notices:
    """The holds told so far, and the notices not taken yet; lives on the event loop."""

    __slots__ = ("_announced_until", "_outage_told", "_shown", "_shown_until", "_waiting", "news")

    def __init__(self) -> None:
        # The end of the last hold told: a hold ending about then is the same one, told already.
        self._announced_until = -math.inf
        # The reason of the hold last told, and when it ends, until its end is told too.
        self._shown: PauseReason | None = None
        self._shown_until = -math.inf
        self._outage_told = False
        self._waiting: list[PauseNotice] = []
        #: Set while notices wait to be taken.
        self.news = asyncio.Event()

    def take(self) -> list[PauseNotice]:
        """The notices made since the last call, oldest first."""
        taken, self._waiting = self._waiting, []
        self.news.clear()
        return taken

    def hold(self, now: float, until: float, reason: PauseReason, why: str, *, now_epoch: float) -> None:
        """Every worker is held until `until` (monotonic) for `why`: told when long and not told yet."""
        if until - now > NOTICE_S and until > self._announced_until + NOTICE_S:
            self._announced_until = until
            self._shown, self._shown_until = reason, until
            until_epoch = now_epoch + (until - now)
            when = until_text(until_epoch, now_epoch=now_epoch)
            resume = when.removeprefix("until ")
            self._tell(
                PauseNotice(reason, f"{why}; resuming at {resume}", _writable(until_epoch), until_text=when)
            )

    def spread(self, now: float, until: float, left: float, gap_s: float, *, now_epoch: float) -> None:
        """Say why nothing is sent for a while: a quota spread thin (one request every `gap_s`,
        `left` of them) over the rest of its window, which ends at `until`."""
        if until <= self._announced_until + NOTICE_S:
            return
        self._announced_until = until
        self._shown, self._shown_until = PauseReason.QUOTA, until
        until_epoch = now_epoch + (until - now)
        when = until_text(until_epoch, now_epoch=now_epoch)
        count = round(left)
        self._tell(
            PauseNotice(
                PauseReason.QUOTA,
                f"the API's announced quota leaves {count} request{'' if count == 1 else 's'} {when}: "
                f"one every {duration_text(gap_s)}, nothing in between",
                _writable(until_epoch),
                until_text=when,
                slowed=True,
            )
        )

    def outage_over(self, trouble: Trouble, lasted_s: float) -> None:
        """The API answered again after an outage of `lasted_s`: told if the outage was."""
        if self._outage_told:
            self._outage_told = False
            self._tell(
                PauseNotice(
                    PauseReason.OUTAGE,
                    f"{trouble.subject()} answers again after {lasted_s:.0f} s; resuming",
                    ended=True,
                )
            )

    def due(
        self,
        now: float,
        *,
        outage_since: float | None,
        paused_until: float,
        trouble: Trouble,
        max_outage_s: float,
    ) -> None:
        """What time alone makes worth telling at `now`: an outage (since `outage_since`; None: none)
        once it has lasted `NOTICE_S`, or the end of the hold last told (the pool is paused until
        `paused_until`)."""
        if outage_since is not None:
            if not self._outage_told and now - outage_since > NOTICE_S:
                self._outage_told = True
                self._tell(
                    PauseNotice(
                        PauseReason.OUTAGE,
                        f"{trouble.looks_down()}: the pool waits and probes with one request at a time, "
                        f"for at most {seconds_text(max_outage_s)} (--max-outage)",
                    )
                )
        elif self._shown is not None and now >= max(self._shown_until, paused_until):
            reason, self._shown = self._shown, None
            self._tell(PauseNotice(reason, "", ended=True))

    def _tell(self, notice: PauseNotice) -> None:
        self._waiting.append(notice)
        self.news.set()

    def __repr__(self) -> str:
        shown = "none" if self._shown is None else self._shown.value
        return f"<Notices shown={shown} outage_told={self._outage_told} waiting={len(self._waiting)}>"


def _writable(epoch: float) -> float | None:
    """`epoch` if a log line can write it as a date (RFC 3339), else None."""
    return epoch if utc_text(epoch) is not None else None
