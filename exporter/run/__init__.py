"""The parts of one export run, each with one job; `pipeline.py` wires them together.

    workers.py     the feeder and the worker pool: manifest ids -> fetcher -> outcomes
    committer.py   the writer loop: outcomes -> archive, in group commits; counts what it committed
    ticker.py      what the user sees while the run lasts: the pacer's notices, the pace, time passing
    reporting.py   --metrics-file while the run lasts, and the metrics once more at its end
    finish.py      the exit code, and the run's end on disk: failed.ndjson, the checkpoint's end, summary.json
    state.py       where the run is (fetching, winding down, draining, settled) and its one stop record

None of them decides when the run ends: each hands its reason to stop, as a
`stops.Stop`, to the run, which folds them by the one rule of `stops.py` into
its one state (`state.py`).
"""
