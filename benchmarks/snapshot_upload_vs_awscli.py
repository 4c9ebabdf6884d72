"""Upload throughput of etcd-snapshot's multipart upload against `aws s3 cp` of the same file to the same S3.

Run: .venv/bin/python benchmarks/snapshot_upload_vs_awscli.py [--mib 256] [--reps 3]
It starts moto's S3 server (the sandbox's S3) in its own process, writes one random file, and alternates
`aws s3 cp` (awscli from PyPI, installed once into .tools/awscli, pinned below; its defaults: 8 MiB parts,
10 in flight) with rollbook's `upload_snapshot` (64 MiB parts, 8 in flight, SHA-256 of every part computed
and sent, composite checksum compared after completion). The first round of each side is a warm-up. Prints
medians, MiB/s and the ratio (goal: rollbook at least as fast, ratio >= 1). moto keeps objects in memory in
one Python process: on a 2-core machine it is the bottleneck for both sides, so absolute numbers say little.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import httpx

AWSCLI_VERSION = "1.46.2"  # newest awscli on PyPI when this was written; its own venv, not the project's
TOOLS = Path(__file__).resolve().parents[1] / ".tools" / "awscli"
KEY, SECRET = "bench-key", "bench-secret"


def awscli() -> Path:
    aws = TOOLS / "bin" / "aws"
    if not aws.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TOOLS)], check=True)
        subprocess.run([str(TOOLS / "bin" / "pip"), "install", "--quiet", f"awscli=={AWSCLI_VERSION}"], check=True)
    return aws


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("moto did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    from blocks import BackupBucket
    from tasks.backup_store import upload_snapshot

    aws, port = awscli(), free_port()
    url = f"http://127.0.0.1:{port}"
    moto = start_moto(port)
    try:
        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=KEY,
                          aws_secret_access_key=SECRET)  # fmt: skip
        s3.create_bucket(Bucket="bench")
        bucket = BackupBucket.s3_compatible(bucket_name="bench", endpoint_url=url, access_key_id=KEY,
                                            secret_access_key=SECRET, region_name="us-east-1")  # fmt: skip
        env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
               "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
        times: dict[str, list[float]] = {"aws s3 cp": [], "rollbook": []}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "snapshot.db"
            with path.open("wb") as out:
                for _ in range(args.mib):
                    out.write(os.urandom(1024 * 1024))
            for rep in range(args.reps + 1):
                start = time.monotonic()
                subprocess.run([str(aws), "--endpoint-url", url, "s3", "cp", "--only-show-errors", str(path),
                                f"s3://bench/aws-{rep}.db"], check=True, env=env)  # fmt: skip
                aws_s = time.monotonic() - start
                start = time.monotonic()
                upload_snapshot.fn(bucket, path, f"rollbook-{rep}.db")
                ours = time.monotonic() - start
                print(f"round {rep}{' (warm-up)' if rep == 0 else ''}: aws s3 cp {aws_s:.2f}s, rollbook {ours:.2f}s")
                if rep:
                    times["aws s3 cp"].append(aws_s)
                    times["rollbook"].append(ours)
        med = {side: statistics.median(values) for side, values in times.items()}
        for side, seconds in med.items():
            print(f"{side:>10}: median {seconds:.2f}s = {args.mib / seconds:.0f} MiB/s")
        print(f"ratio aws/rollbook = {med['aws s3 cp'] / med['rollbook']:.2f} (>= 1: rollbook at least as fast)")
    finally:
        moto.terminate()
        moto.wait(timeout=30)


if __name__ == "__main__":
    main()
