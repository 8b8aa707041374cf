"""What the user sees of the pacer while the run lasts: its notices, the pace, time passing.

The pacer decides holds and outages; it never talks to the user. It leaves
`PauseNotice`s to be polled, and this task shows them as soon as `Pacer.news`
says there are some: once on stderr (in JSON logs a `pause` event with its
reason and when it ends, and a `resume` event at its end) and on the progress
display. Once a second it also tells the display the pace and that time
passes, so the display keeps talking through a long pause.
"""

from __future__ import annotations

import asyncio
import logging
import math

from exporter.logs import event, rfc3339
from exporter.pacing import Pacer, PauseNotice
from exporter.progress import Progress

log = logging.getLogger(__name__)


async def tick(pacer: Pacer, progress: Progress) -> None:
    """Show the pacer's notices and, once a second, the pace; runs until cancelled."""
    loop = asyncio.get_running_loop()
    next_tick = loop.time() + 1.0
    while True:
        await pacer.news(max(0.0, next_tick - loop.time()))
        show_notices(pacer, progress)
        if loop.time() >= next_tick:
            next_tick = loop.time() + 1.0
            rate = pacer.rate_now()
            progress.limit(None if math.isinf(rate) else rate)
            progress.tick()


def show_notices(pacer: Pacer, progress: Progress) -> None:
    """Every notice the pacer holds now (the run calls it once more after the last answers)."""
    for notice in pacer.poll():
        show_notice(notice, progress)


def show_notice(notice: PauseNotice, progress: Progress) -> None:
    """A pause, an outage or its end: once on stderr, and on the progress display."""
    progress.status(notice.status())
    reason = notice.reason.value
    if not notice.ended:
        until = rfc3339(notice.until_epoch) if notice.until_epoch is not None else None
        log.warning("%s", notice.message, extra=event("pause", reason=reason, until=until))
    elif notice.message:
        log.warning("%s", notice.message, extra=event("resume", reason=reason))
    else:
        log.info("resuming after a pause (%s)", reason, extra=event("resume", text=False, reason=reason))
