"""The exporter's benchmark: how close it gets to what the machine allows, with every guarantee on.

One command, one run, side by side at the same concurrency over the same ids:

    floor      a minimal aiohttp loop (`bench.py floor`, its own process) that GETs each id with
               the Authorization header and throws the body away: what Python plus aiohttp can do
    client     the same loop over the exporter's own HTTP client (`exporter.transport.client`, `bench.py
               client`): what the exporter's transport alone costs, so exporter/client is the
               price of everything else (parsing, the archive, fsyncs, the checkpoint)
    exporter   `.venv/bin/exporter export MANIFEST --base-url URL --out FRESH --rate 0
               --concurrency C --quiet`, exactly as a user runs it (fsync'd group commits, checkpoint)
    curl       `curl --parallel --parallel-max C -K CONFIG`, one file per id (no fsync)
    aria2c     `aria2c -i LIST -j C`, one file per id (no fsync; skipped with a note if not installed)

against nginx (Debian's `nginx-light`), started and stopped here with its own config in a temp
dir, serving pre-generated recording bodies (`scripts/fake_api.py`'s records: most 1-20 KB, a
few of several MB) as static files at `/v1/core/recordings/<id>`. The contenders run
interleaved (floor, exporter, curl, ..., floor, exporter, ...) `--repeat` times and medians are
quoted; the machine is noisy, so the exporter/floor ratio is taken within each repetition.
Each contender is its own process, reaped with `os.wait4` by a small launcher, so its wall
time, CPU (user+sys) and peak RSS (`ru_maxrss`) are its own (see measure.LAUNCHER for why a launcher).

Scenarios, each printing its figures and the issue's target:

    rate      the exporter with --rate R --burst B for ~30 s; nginx's access log ($msec) gives
              the server-side start of every request: achieved rate, most starts in any window
    latency   100 ms per request at --concurrency 64, vs 64 / 0.1 s = 640/s: served by
              `scripts/fake_api.py --latency-ms 100`, then by nginx's echo_sleep (C, exact)
    memory    a 1,000,000-id manifest, fresh, then resumed with 900,000 archived: peak RSS and
              the time from start to the resume's first request (access log); nginx serves
              1,000 template bodies with the requested id written in by sub_filter
    pacing    the exporter, run as a user runs it, against `scripts/fake_api.py` limits (issue 9):
              (a) a token bucket of 3/s, exporter defaults; (b) 40/s burst 5, --rate 10000
              --concurrency 32; (c) 400/s burst 40, --rate 10000 --concurrency 64; (d) 7% random
              429s with only Retry-After plus 3% 503s and resets, --rate 0, 500 ids; (e) a quota
              of 100 per 10 s, --rate 10000; (f) a 30 s outage, 503 and then refused connections,
              in the middle of a --rate 20 run; (g) issue 16's flaky API (60% of each id's first
              and second requests fault: 5xx, 429 with Retry-After: 1, resets, half bodies, HTML,
              another id), exporter defaults, 400 ids; (h) 40/s burst 5 plus 7% random 429s,
              --rate 10000 --concurrency 32. From the fake API's (time, status) timeline:
              accepted/s in the steady state, of L, 429 share, time until the 5 s accepted rate
              stays >= 90% of L; quota used per window; every id exactly once after an outage;
              paused seconds from summary.json. About 10 minutes (--pacing-scale); no nginx
    dryrun    `export --dry-run --json` over the memory scenario's 1,000,000-id manifest with
              900,000 of them in an archive (written by the exporter's own Archive, its lock
              held meanwhile): wall time, CPU, peak RSS, vs the 10 s target; no nginx
    compress  plain vs gzip vs zstd against `scripts/fake_api.py --record-bytes N` (bodies of
              exactly 300 B, 2 KB, 20 KB and 3 MB): records/s at --compress-rate 50
              (concurrency 8) for records up to 20 KB, 20 KB at --rate 100 and 3 MB at the
              default --rate 10 (--compress-at), and at --rate 0 (--concurrency), vs plain
              (target: >= 90%); the bytes stored, ratios and records per frame at each size;
              CPU seconds of the exporter, the fake API and the rest of the machine (issue 16);
              no nginx

    .venv/bin/python scripts/bench.py                      # 20,000 ids, concurrency 64, 3 repeats
    .venv/bin/python scripts/bench.py --smoke              # 2,000 ids, once (CI; asserts no timings)
    .venv/bin/python scripts/bench.py --scenario rate      # --rate 500 --burst 50, ~30 s
    .venv/bin/python scripts/bench.py --scenario latency   # 100 ms latency, vs 640/s
    .venv/bin/python scripts/bench.py --scenario memory    # 1,000,000 ids, then a 900k resume
    .venv/bin/python scripts/bench.py --scenario pacing    # limits, noise, quotas, outages, ~10 min
    .venv/bin/python scripts/bench.py --scenario dryrun    # --dry-run over 1M ids, 900k archived
    .venv/bin/python scripts/bench.py --scenario compress  # plain/gzip/zstd by record size, ~4 min
    .venv/bin/python scripts/bench.py --scenario all --json bench-out/results.json
    .venv/bin/python scripts/bench.py report bench-out/results.json   # its README tables
    .venv/bin/python scripts/bench.py compare OLD.json NEW.json      # figure by figure, NEW/OLD

One module per part, over a shared harness (scripts/benchmarks/):

    common      paths, constants, BenchError, the contenders' environment, verdicts
    bodies      the body cache (the fake API's records, written once per parameter set)
    nginx       nginx with its own config in a temp dir
    measure     process measurement: a launcher reaps each contender (wall, CPU, peak RSS)
    contenders  the contenders' commands, one measured run, medians (Summary)
    loops       the floor and client loops (`bench.py floor|client`)
    harness     Setup (what a scenario is given) and the fake API in its own process
    timeline    the pacing figures from the fake API's (time, status) timeline (pure)
    scenarios/  one module per scenario, and SCENARIOS, the registry
    results     the JSON results file and its README tables, `bench.py report` and `compare`
    cli         the command line; `scripts/bench.py` is its entry

Scratch files (body cache, archives, logs) go under `--workdir` (default `bench-out/`,
gitignored). Exit codes: 0 done, 1 a contender failed or gave a wrong result, 2 usage error or
a missing tool (nginx: `apt-get install -y nginx-light`), 130 interrupted.
"""
