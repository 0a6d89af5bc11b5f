"""playlog benchmark: every workload, one after the other, each on fresh
servers (`playlog serve`, manual clock, a temporary data directory,
127.0.0.1 only; an etcd member beside it, Debian's etcd-server 3.4, installed
if missing when root), then the summary: the goals of issues 16 and 18 (must /
reach for), the measured ratio and whether each is met.

Every number stands beside another measured in the same run on the same
machine: etcd doing the same work (Txn / Range / Watch over its own gRPC
API), a bare grpc.aio fan-out of the same bytes, or the no-op RPC
(Health/Check) at the same concurrency. Latency is from before the call to
its answer, or to the subscriber's receipt.

Workloads (each also runs alone: `.venv/bin/python bench/<name>.py`):
  baseline  the no-op RPC, 1 and 16 clients            (baseline.py)
  publish   publishes beside etcd and the no-op          (publish.py)
  read      one-day and 7-day reads beside etcd          (read.py)
  watch     fan-out, paced and burst, beside bare        (watch.py)
  rates     fixed-rate watch beside etcd and bare        (rates.py)
  growth    a grown store against a fresh one            (growth.py)
  replicas  PostgreSQL, one replica vs two, beside etcd  (replicas.py)
  guide     XMLTV of 100 channels x 7 days, 200 clients,
            beside a static body of the same size       (guide.py)

Run: `.venv/bin/python bench/run.py` (`make bench`), `--quick` for a short
run, `--only publish,read` for some workloads. Results also go to
bench/results/latest.md (and latest.json). See bench/README.md.
"""

from __future__ import annotations

import baseline
import growth
import guide
import publish
import rates
import read
import replicas
import watch
from benchlib import Bench, log, parser, run_main, run_workloads

WORKLOADS = [
    baseline.WORKLOAD,
    publish.WORKLOAD,
    read.WORKLOAD,
    watch.WORKLOAD,
    rates.WORKLOAD,
    growth.WORKLOAD,
    replicas.WORKLOAD,
    guide.WORKLOAD,
]


def main() -> None:
    names = [w.name for w in WORKLOADS]
    args = parser(__doc__ or "", names).parse_args()
    chosen = [n for n in args.only.split(",") if n] or names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        log(f"--only: unknown workload(s) {', '.join(unknown)}; known: {', '.join(names)}")
        raise SystemExit(2)
    workloads = [w for w in WORKLOADS if w.name in chosen]

    async def drift(bench: Bench) -> None:
        # The no-op again at the end, when the run was long enough to drift.
        if len(workloads) > 1 and bench.result("health-1") is not None:
            log("== drift check")
            await bench.run(baseline.DRIFT)

    run_main(lambda: run_workloads(args, workloads, "bench/run.py", drift))


if __name__ == "__main__":
    main()
