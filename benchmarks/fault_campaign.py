"""A fault campaign for deployment-undo: N trials per fault at random moments, counted.

Run: .venv/bin/python benchmarks/fault_campaign.py [--trials 10] [--seed 16] [--faults apiserver-restart flow-kill]
It starts its own sandbox and a temporary Prefect server. Each trial puts a fresh Deployment on a bad revision,
runs deployment-undo in its own process, injects the fault (kube-apiserver stopped for --down-seconds then
started; or the flow's process SIGKILLed), runs the same request again if the first run did not succeed, and
checks the invariants of tests/integration/faults.py (rolled back exactly once, onto the good version, rolled
out; a clear reason for any failure). Prints one line per trial and the counts per fault.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from faults import FAULT_KINDS, Fault, TrialRecord, cleanup, random_fault, undo_trial  # noqa: E402

from sandbox.cluster import Sandbox  # noqa: E402
from sandbox.config import SandboxConfig, free_base_port  # noqa: E402


def describe(index: int, record: TrialRecord) -> str:
    runs = ", ".join(
        "ok:" + str((r.result or {}).get("outcome"))
        if r.ok
        else ("killed" if r.killed else f"failed: {r.reason[:160]}")
        for r in record.runs
    )
    verdict = "converged" if record.converged else f"VIOLATED: {'; '.join(record.violations) or 'did not finish'}"
    when = f"injected at {record.injected_at}s" if record.injected_at is not None else "run ended before the fault"
    return f"{index:>3} {record.fault.describe():<28} {when} | runs: {runs} | {verdict}"


def count(records: list[TrialRecord]) -> dict[str, int]:
    tally: collections.Counter[str] = collections.Counter()
    for r in records:
        tally["trials"] += 1
        tally["converged"] += r.converged
        tally["injected during the run"] += r.injected_at is not None
        tally["first run succeeded"] += r.runs[0].ok
        tally["outage ridden out inside the rollout wait"] += any(
            ((run.result or {}).get("rollout") or {}).get("api_errors", 0) > 0 for run in r.runs
        )
        tally["re-run needed"] += len(r.runs) > 1
        tally["re-run found rollback applied (unchanged)"] += (
            len(r.runs) > 1 and r.final.ok and (r.final.result or {}).get("outcome") == "unchanged"
        )
        tally["re-run rolled back (first run failed before its write)"] += (
            len(r.runs) > 1 and r.final.ok and (r.final.result or {}).get("outcome") == "changed"
        )
        tally["on the bad version at the end"] += any("bad version" in v for v in r.violations)
        tally["rolled back more than once"] += any("more than once" in v for v in r.violations)
        tally["any invariant violated"] += bool(r.violations)
    return dict(tally)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=10, help="trials per fault")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--faults", nargs="+", choices=FAULT_KINDS, default=list(FAULT_KINDS))
    parser.add_argument("--down-seconds", type=float, default=8.0, help="how long kube-apiserver stays stopped")
    parser.add_argument(
        "--window",
        nargs=2,
        type=float,
        default=[1.0, 14.0],
        metavar=("FROM", "TO"),
        help="inject at a random moment this many seconds after the flow process starts (its write comes after "
        "~5-10 s of start-up; later moments land in the rollout wait)",
    )
    parser.add_argument("--base-port", type=int, default=24560, help="first port block to try")
    args = parser.parse_args()

    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    work = Path(tempfile.mkdtemp(prefix="rollbook-fault-campaign-"))
    sandbox = Sandbox(SandboxConfig(work / "sandbox", base_port=free_base_port(args.base_port)))
    rng = random.Random(args.seed)
    records: dict[str, list[TrialRecord]] = {kind: [] for kind in args.faults}
    try:
        sandbox.up(nodes=3)
        with prefect_test_harness(server_startup_timeout=120):
            env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
            env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
            for kind in args.faults:
                for index in range(args.trials):
                    fault = random_fault(kind, rng, window=(args.window[0], args.window[1]))
                    fault = Fault(fault.kind, fault.at, args.down_seconds)
                    record, scenario = undo_trial(sandbox, fault, env=env, log_dir=work / "logs")
                    cleanup(sandbox, scenario)
                    records[kind].append(record)
                    print(describe(index, record), flush=True)
        print(
            f"\ndeployment-undo fault campaign: {args.trials} trials per fault, seed {args.seed}, "
            f"window {args.window[0]}-{args.window[1]}s, outage {args.down_seconds}s, logs in {work}"
        )
        for kind, found in records.items():
            print(f"\n{kind}:")
            for name, value in count(found).items():
                print(f"  {name:<56} {value}")
    finally:
        sandbox.down()


if __name__ == "__main__":
    main()
