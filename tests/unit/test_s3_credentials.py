"""Wrong S3 credentials against an S3 that checks them: a clear error, no retry, nothing left in the bucket.

The sandbox's moto accepts any key. Here a moto server of our own runs with INITIAL_NO_AUTH_ACTION_COUNT (moto's
"IAM-like access control"): the first requests go through unauthenticated (they create the bucket and an IAM
user with an access key and a policy), every later request must be signed with a key moto knows. Each backup
task is then called as a Prefect task, so its real retry policy applies, with a wrong secret and with an unknown
access key id; the bucket's state is read back with the right key.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from blocks import BackupBucket
from tasks import backup_store, snapshot_catalogue
from tasks.backup_store import (
    S3CredentialsRefused,
    check_bucket,
    download,
    list_objects,
    put_manifest,
    upload_snapshot,
)
from tasks.policies import is_transient
from tasks.snapshot_catalogue import catalogue_snapshots

BUCKET = "rollbook-auth-backups"
PART = 5 * 1024 * 1024  # S3's smallest part: a 6 MiB file is a real two-part upload
SNAPSHOT = "auth/etcd-20261203T120000Z-r42.db"
# create_bucket, iam create_user, put_user_policy, create_access_key: then moto checks every signature.
FREE_ACTIONS = 4
# The tasks are called outside a flow (as the flows call them, with their retry policies): Prefect warns that
# their logs have no flow run to go to, which is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:Logger 'prefect.task_runs' attempted to send logs:UserWarning")
POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}


@dataclass(frozen=True)
class AuthS3:
    endpoint: str
    key_id: str
    secret: str


def _client(service: str, endpoint: str, key_id: str, secret: str) -> Any:
    return boto3.client(
        service, endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key_id,
        aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}),
    )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for_port(port: int, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"moto server exited {server.returncode}: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"moto server did not listen on {port} within 60 s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthS3]:
    """A moto server process (the env var is read at its start, so not in this process) that checks keys."""
    port, log = _free_port(), tmp_path_factory.mktemp("moto") / "moto.log"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(FREE_ACTIONS)}
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with log.open("wb") as out:
        server = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, server, log)
        endpoint = f"http://127.0.0.1:{port}"
        _client("s3", endpoint, "bootstrap", "bootstrap").create_bucket(Bucket=BUCKET)
        iam = _client("iam", endpoint, "bootstrap", "bootstrap")
        iam.create_user(UserName="rollbook-backup")
        iam.put_user_policy(UserName="rollbook-backup", PolicyName="s3", PolicyDocument=json.dumps(POLICY))
        key = iam.create_access_key(UserName="rollbook-backup")["AccessKey"]
        yield AuthS3(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        server.terminate()
        server.wait(timeout=30)


def _bucket(s3: AuthS3, key_id: str, secret: str) -> BackupBucket:
    return BackupBucket.s3_compatible(
        bucket_name=BUCKET, endpoint_url=s3.endpoint, access_key_id=key_id, secret_access_key=secret,
        region_name="us-east-1",
    )  # fmt: skip


def _state(s3: AuthS3) -> tuple[list[str], list[str]]:
    """(object keys, keys with an unfinished multipart upload), read with the right key."""
    right = _client("s3", s3.endpoint, s3.key_id, s3.secret)
    objects = right.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    uploads = right.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    return sorted(o["Key"] for o in objects), sorted(u["Key"] for u in uploads)


@pytest.fixture
def snapshot_file(tmp_path: Path) -> Path:
    path = tmp_path / "snapshot.db"
    path.write_bytes(os.urandom(PART + 1024 * 1024))
    return path


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """One entry per S3 client a task makes: each task attempt makes one, so a retry shows as a second."""
    made: list[str] = []
    real = backup_store._s3

    def counted(bucket: BackupBucket) -> Any:
        made.append(bucket.bucket.bucket_name)
        return real(bucket)

    monkeypatch.setattr(backup_store, "_s3", counted)
    monkeypatch.setattr(snapshot_catalogue, "_s3", counted)
    return made


Operation = Callable[[BackupBucket, Path, Path], object]
OPERATIONS: dict[str, Operation] = {
    "check bucket": lambda b, src, tmp: check_bucket(b),
    "upload snapshot": lambda b, src, tmp: upload_snapshot(b, src, SNAPSHOT, part_size=PART, concurrency=2),
    "put manifest": lambda b, src, tmp: put_manifest(b, "auth/etcd-20261203T120000Z-r42.manifest.json", b"{}"),
    "list objects": lambda b, src, tmp: list_objects(b),
    "catalogue (retention, restore)": lambda b, src, tmp: catalogue_snapshots(b, "auth"),
    "download": lambda b, src, tmp: download(b, "auth/some.db", tmp / "downloaded.db"),
}
# HEAD answers carry no error body, so S3 cannot say which half of the key is wrong.
HEAD_ONLY = {"check bucket", "download"}


@pytest.mark.parametrize("operation", list(OPERATIONS))
@pytest.mark.parametrize("case", ["wrong secret key", "unknown access key id"])
def test_refused_credentials_fail_once_with_a_clear_error_and_leave_nothing(
    s3: AuthS3, snapshot_file: Path, tmp_path: Path, attempts: list[str], case: str, operation: str
) -> None:
    before = _state(s3)
    wrong_secret = s3.secret[:-4] + "XXXX"
    key_id, secret = (s3.key_id, wrong_secret) if case == "wrong secret key" else ("AKIAUNKNOWNROLLBOOK0", s3.secret)
    with pytest.raises(S3CredentialsRefused) as refused:
        OPERATIONS[operation](_bucket(s3, key_id, secret), snapshot_file, tmp_path)

    message = str(refused.value)
    assert f"bucket {BUCKET!r} at {s3.endpoint}" in message and "S3 refused the credentials" in message
    if operation in HEAD_ONLY:
        assert "the access key id is unknown, the secret key does not match it" in message
    elif case == "wrong secret key":
        assert "the secret key does not match the access key id" in message
    else:
        assert "the access key id is unknown to S3" in message
    assert s3.secret not in message and wrong_secret not in message
    assert refused.value.transient is False and not is_transient(refused.value)
    assert attempts == [BUCKET], f"{operation} was tried {len(attempts)} times with refused credentials"
    assert _state(s3) == before  # no object, no unfinished multipart upload
    assert SNAPSHOT not in before[0] and before[1] == []
    assert not (tmp_path / "downloaded.db").exists()


def test_a_raw_403_from_botocore_is_not_worth_retrying() -> None:
    """A ClientError that escapes a task unwrapped still follows the policy: 403 final, 503 and SlowDown not."""

    def answer(status: int, code: str) -> ClientError:
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")

    assert not is_transient(answer(403, "SignatureDoesNotMatch"))
    assert not is_transient(answer(403, "InvalidAccessKeyId"))
    assert not is_transient(answer(404, "NoSuchBucket"))
    assert is_transient(answer(503, "SlowDown")) and is_transient(answer(500, "InternalError"))
    assert is_transient(answer(400, "RequestLimitExceeded")) and is_transient(answer(400, "RequestTimeout"))


def test_the_right_key_uploads_lists_and_downloads(s3: AuthS3, snapshot_file: Path, tmp_path: Path) -> None:
    bucket = _bucket(s3, s3.key_id, s3.secret)
    check_bucket(bucket)
    checksum = upload_snapshot(bucket, snapshot_file, SNAPSHOT, part_size=PART, concurrency=2)
    assert checksum.parts == 2 and checksum.size == snapshot_file.stat().st_size
    manifest = "auth/etcd-20261203T120000Z-r42.manifest.json"
    put_manifest(bucket, manifest, b"{}")
    assert _state(s3) == (sorted([SNAPSHOT, manifest]), [])
    assert sorted(o.name for o in list_objects(bucket)) == sorted([SNAPSHOT, manifest])
    [(record, _)] = catalogue_snapshots(bucket, "auth")
    assert record.name == SNAPSHOT and record.problem is not None  # b"{}" is no manifest: read, and refused
    restored = download(bucket, SNAPSHOT, tmp_path / "restored.db")
    assert restored.read_bytes() == snapshot_file.read_bytes()
