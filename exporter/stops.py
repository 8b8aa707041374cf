"""Why a run ends early: one record, and one rule for which reason wins.

More than one reason can end the same run: Ctrl-C, then a disk that fills
while the results already fetched are written; --max-requests running out,
then a refused token from a request still in flight. The run keeps one `Stop`
and folds every new reason into it with `Stop.merge`:

- The exit code is the reason of the highest rank; of equal ranks, the first
  given. A broken archive (4) outranks everything, because the records are
  safe but the archive needs a person, which must not hide behind an
  interruption's 130. Then an internal error (70); then what must be fixed
  before the next run (a refused token, 3; a configuration that cannot work,
  2); then the ends that need nothing but another run (signals, budgets, the
  API unavailable), which all rank alike.
- A message of a reason that needs a person (rank above zero) is never lost:
  when another reason wins, it is kept in `also`, and the run's last words
  show it. The same reason given again (every worker refused the token) adds
  nothing: its first message stands.
- `drain` (stop now: abandon the requests in flight, commit what was fetched)
  stays once any reason asked for it; otherwise the requests in flight finish
  and no new one starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ExitCode

_RANK = {ExitCode.ARCHIVE: 3, ExitCode.INTERNAL: 2, ExitCode.AUTH: 1, ExitCode.USAGE: 1}


def rank(reason: ExitCode) -> int:
    """How strongly `reason` claims the exit code (see the module's docstring)."""
    return _RANK.get(reason, 0)


@dataclass(frozen=True, slots=True)
class Stop:
    """Why the run stops, what to tell the user, and whether to abandon the requests in flight."""

    reason: ExitCode
    message: str | None = None
    #: True: stop now, abandoning requests in flight; False: let them finish, start no more.
    drain: bool = True
    #: Messages of earlier or later reasons that did not win but must still be shown.
    also: tuple[str, ...] = ()

    def merge(self, later: Stop) -> Stop:
        """This stop with a `later` reason folded in, by the rule of the module's docstring."""
        later_wins = rank(later.reason) > rank(self.reason)
        winner = later if later_wins else self
        loser = self if later_wins else later
        notes = [*self.also, *later.also]
        if rank(loser.reason) > 0 and loser.reason is not winner.reason and loser.message:
            notes.insert(len(self.also) if later_wins else len(notes), loser.message)
        also = tuple(dict.fromkeys(note for note in notes if note != winner.message))
        return Stop(winner.reason, winner.message, self.drain or later.drain, also)
