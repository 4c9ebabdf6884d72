"""A fault campaign: N trials per fault and flow at random moments, counted.

Run: .venv/bin/python benchmarks/fault_campaign.py [--flows deployment-undo canary-rollout] [--trials 10]
     [--seed 16] [--faults apiserver-restart flow-kill]
It starts its own sandbox and a temporary Prefect server. Each trial sets up the flow's scenario in a fresh
namespace (tests/integration/fault_scenarios.py), runs the flow in its own process, injects the fault, runs the
same request again if the first run did not succeed (taking the way out a refusal names), and checks the
scenario's invariants (one version serving, the change made once, nothing pending, the lock free, a clear
reason for any failure). Prints one line per trial and the counts per flow and fault.
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

from fault_scenarios import SCENARIOS  # noqa: E402
from faults import FAULT_KINDS, Fault, FaultKind, TrialRecord, random_fault, run_trial  # noqa: E402

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
    actions = f" | operator: {'; '.join(record.actions)}" if record.actions else ""
    return f"{index:>3} {record.fault.describe():<28} {when} | runs: {runs}{actions} | {verdict}"


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
        tally["re-run found its change applied (unchanged)"] += (
            len(r.runs) > 1 and r.final.ok and (r.final.result or {}).get("outcome") == "unchanged"
        )
        tally["operator step taken (as a refusal said)"] += bool(r.actions)
        tally["any invariant violated"] += bool(r.violations)
    return dict(tally)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=10, help="trials per fault")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--flows", nargs="+", choices=sorted(SCENARIOS), default=["deployment-undo"])
    parser.add_argument("--faults", nargs="+", choices=FAULT_KINDS, default=["apiserver-restart", "flow-kill"])
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
    records: dict[tuple[str, FaultKind], list[TrialRecord]] = {(f, k): [] for f in args.flows for k in args.faults}
    try:
        sandbox.up(nodes=3)
        with prefect_test_harness(server_startup_timeout=120):
            env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
            env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
            for flow, kind in records:
                print(f"\n{flow} / {kind}:", flush=True)
                for index in range(args.trials):
                    fault = random_fault(kind, rng, window=(args.window[0], args.window[1]))
                    fault = Fault(fault.kind, fault.at, args.down_seconds)
                    scenario = SCENARIOS[flow](sandbox)
                    try:
                        record = run_trial(sandbox, scenario, fault=fault, env=env, log_dir=work / "logs")
                    finally:
                        scenario.cleanup()
                    records[(flow, kind)].append(record)
                    print(describe(index, record), flush=True)
        print(
            f"\nfault campaign: {args.trials} trials per flow and fault, seed {args.seed}, "
            f"window {args.window[0]}-{args.window[1]}s, outage {args.down_seconds}s, logs in {work}"
        )
        for (flow, kind), found in records.items():
            print(f"\n{flow} / {kind}:")
            for name, value in count(found).items():
                print(f"  {name:<56} {value}")
    finally:
        sandbox.down()


if __name__ == "__main__":
    main()
