"""One pace for the whole pool: `Pacer` is this package's only public face.

(Interim: the map is drawn once the package is split.)
"""

from .outage import Blame
from .pacer import Effect, Halt, HaltDetail, Pacer, PauseNotice, PauseReason, Ticket, Trouble

__all__ = [
    "Blame",
    "Effect",
    "Halt",
    "HaltDetail",
    "Pacer",
    "PauseNotice",
    "PauseReason",
    "Ticket",
    "Trouble",
]
