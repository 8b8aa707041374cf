"""A failure that, met by every request, would mean the API is down: what it is, and how to say so.

The fetcher describes each such failure (`Trouble`); the pacer keeps the last
one, and the outage notices and the halt name what failed from it: the API,
or the proxy or TLS in front of it, so an alert does not send anyone after an
API that was up.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.errors import Cause

from .waits import seconds_text

#: The part of a failure's text kept for notices, messages and summary.json.
_ERROR_CHARS = 300


@dataclass(frozen=True, slots=True)
class Trouble:
    """A failure that, met by every request, would mean the API is down: what to tell about it."""

    error: str
    cause: Cause = Cause.API
    #: False when no connection to the API was made: the id never left.
    connected: bool = True

    def subject(self) -> str:
        """What failed, as the subject of a sentence."""
        if self.cause is Cause.PROXY:
            return "the proxy"
        if self.cause is Cause.TLS:
            return "TLS to the API"
        return "the API"

    def looks_down(self) -> str:
        """The start of the notice of an outage."""
        error = self.error[:_ERROR_CHARS]
        if self.cause is Cause.API:
            return f"the API looks down (no answer, or 5xx, for every request; last: {error})"
        return f"{self.subject()} fails every request ({error})"

    def unavailable(self, max_outage_s: float) -> str:
        """The line that ends a run whose outage outlasted --max-outage, and what to do about it."""
        error = self.error[:_ERROR_CHARS]
        longer = f"for longer than --max-outage ({seconds_text(max_outage_s)})"
        kept = "what was fetched is kept"
        if self.cause is Cause.PROXY:
            return (
                f"the proxy failed every request {longer}: {error}; the API itself may be up: check the "
                f"proxy (--proxy, HTTPS_PROXY) and run the same command again; {kept}"
            )
        if self.cause is Cause.TLS:
            return (
                f"TLS to the API failed for every request {longer}: {error}; check the API's certificate, "
                f"--ca-cert and any proxy, then run the same command again; {kept}"
            )
        return (
            f"the API was unavailable {longer}; last error: {error}; {kept}: run the same command again "
            "when it is back"
        )


#: What is known before any failure was described.
NO_ANSWER = Trouble("no answer")
