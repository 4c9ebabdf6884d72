"""Snapshots and manifests in a BackupBucket, through boto3.

Uploads are always multipart with parallel parts, each sent with its SHA-256 (ChecksumAlgorithm=SHA256), which
S3 checks against the bytes it receives and refuses on a mismatch; after completing, the composite checksum S3
reports must equal the one computed here from the file. Any failure aborts the multipart upload (and deletes an
object already completed), so a failed run leaves nothing half-made in the bucket.
"""

from __future__ import annotations

import base64
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError
from prefect import task

from blocks import BackupBucket
from rollbook.etcd_backup import Encryption, ObjectChecksum, composite_sha256, same_s3_checksum
from tasks.policies import PREFECT_API, PREFLIGHT, S3_READ, S3_TRANSFER

DEFAULT_PART_SIZE = 16 * 1024 * 1024
NO_ENCRYPTION = Encryption()
_PERMANENT = {"NoSuchBucket", "404"}
# S3's refusals of the credentials themselves (a HEAD answer carries no body, so only its status: "403").
_REFUSED = {
    "InvalidAccessKeyId": "the access key id is unknown to S3",
    "SignatureDoesNotMatch": "the secret key does not match the access key id",
    "AccessDenied": "the key is not allowed to do this (check its IAM policy and the bucket policy)",
    "403": "the access key id is unknown, the secret key does not match it, or the key may not do this",
}


class BackupStoreError(RuntimeError):
    """An S3 call failed; the message names the bucket, the key and what to check."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class S3CredentialsRefused(BackupStoreError):
    """S3 refused the credentials (403). Never transient: the same keys get the same answer, so a retry would
    only delay the error; the message names the bucket and endpoint, never a key's secret."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)


@dataclass(frozen=True)
class StoredObject:
    name: str  # relative to the BackupBucket's prefix
    size: int


def _s3(bucket: BackupBucket) -> Any:
    return bucket.bucket.credentials.get_s3_client()


def object_key(bucket: BackupBucket, name: str) -> str:
    """The full key: the S3Bucket block's folder, the BackupBucket's prefix, the name."""
    key: str = bucket.bucket._join_bucket_folder(bucket.key(name))
    return key


def _error(exc: Exception, what: str, bucket: BackupBucket) -> BackupStoreError:
    name = bucket.bucket.bucket_name
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _REFUSED:
            where = bucket.endpoint_url or "AWS's endpoint for the region"
            return S3CredentialsRefused(
                f"{what} in bucket {name!r} at {where} failed: S3 refused the credentials: {_REFUSED[code]} "
                "(check the AwsCredentials block's access key id, secret key and region)"
            )
        hint = {
            "NoSuchBucket": f"bucket {name!r} does not exist (create it, or fix the S3Bucket block's bucket_name)",
            "404": f"bucket {name!r} or the object does not exist",
        }.get(code, str(exc))
        return BackupStoreError(f"{what} in bucket {name!r} failed: {hint}", transient=code not in _PERMANENT)
    if isinstance(exc, EndpointConnectionError):
        return BackupStoreError(f"{what}: S3 endpoint unreachable ({exc}); check the endpoint URL", transient=True)
    return BackupStoreError(f"{what} in bucket {name!r} failed: {exc}", transient=True)


@task(**PREFLIGHT)
def check_bucket(bucket: BackupBucket) -> None:
    """Fail before anything is taken when the bucket is missing or the credentials are refused; an endpoint
    unreachable for ~15 s is ridden out (PREFLIGHT), a missing bucket or refused credentials fail at once."""
    try:
        _s3(bucket).head_bucket(Bucket=bucket.bucket.bucket_name)
    except (ClientError, BotoCoreError) as exc:
        raise _error(exc, "checking the bucket", bucket) from None


def _upload_part(s3: Any, fd: int, *, bucket: str, key: str, upload_id: str, number: int, size: int,
                 part_size: int) -> dict[str, Any]:  # fmt: skip
    """Read one part, hash it, send it with its SHA-256 (S3 refuses the part if the bytes it got differ)."""
    body = os.pread(fd, min(part_size, size - (number - 1) * part_size), (number - 1) * part_size)
    checksum = base64.b64encode(hashlib.sha256(body).digest()).decode()
    answer = s3.upload_part(
        Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body,
        ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum,
    )  # fmt: skip
    return {"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": checksum}


def _upload_parts(s3: Any, path: Path, *, bucket: str, key: str, upload_id: str, part_size: int,
                  concurrency: int) -> list[dict[str, Any]]:  # fmt: skip
    size = path.stat().st_size
    count = max(1, -(-size // part_size))
    fd = os.open(path, os.O_RDONLY)
    try:
        with ThreadPoolExecutor(max(1, concurrency)) as pool:
            return list(
                pool.map(
                    lambda n: _upload_part(
                        s3, fd, bucket=bucket, key=key, upload_id=upload_id, number=n, size=size, part_size=part_size
                    ),  # fmt: skip
                    range(1, count + 1),
                )
            )
    finally:
        os.close(fd)


@task(**S3_TRANSFER)
def upload_snapshot(
    bucket: BackupBucket,
    path: Path,
    name: str,
    *,
    part_size: int = DEFAULT_PART_SIZE,
    concurrency: int = 8,
    encryption: Encryption = NO_ENCRYPTION,
) -> ObjectChecksum:
    """Multipart upload with `concurrency` parts in flight, each hashed by the thread that sends it, while one
    more thread hashes the whole file for the manifest; returns the checksums S3 confirmed."""
    s3, bucket_name, key = _s3(bucket), bucket.bucket.bucket_name, object_key(bucket, name)
    upload_id = None
    hasher = ThreadPoolExecutor(1)
    whole = hasher.submit(sha256_file, path)
    try:
        created = s3.create_multipart_upload(
            Bucket=bucket_name, Key=key, ChecksumAlgorithm="SHA256", **encryption.s3_args()
        )
        upload_id = str(created["UploadId"])
        parts = _upload_parts(s3, path, bucket=bucket_name, key=key, upload_id=upload_id, part_size=part_size,
                              concurrency=concurrency)  # fmt: skip
        expected = composite_sha256([base64.b64decode(p["ChecksumSHA256"]) for p in parts])
        s3.complete_multipart_upload(Bucket=bucket_name, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
        upload_id = None
        reported = s3.head_object(Bucket=bucket_name, Key=key, ChecksumMode="ENABLED").get("ChecksumSHA256")
        if not same_s3_checksum(expected, reported):
            s3.delete_object(Bucket=bucket_name, Key=key)
            raise BackupStoreError(
                f"S3 stored {key} with checksum {reported!r}, expected {expected}; the object was deleted",
                transient=True,
            )
    except (ClientError, BotoCoreError) as exc:
        raise _error(exc, f"uploading {key}", bucket) from None
    finally:
        hasher.shutdown(wait=True)
        if upload_id is not None:
            _abort(s3, bucket_name, key, upload_id)
    return ObjectChecksum(size=path.stat().st_size, sha256=whole.result(), s3_checksum_sha256=expected,
                          part_size=part_size, parts=len(parts))  # fmt: skip


def _abort(s3: Any, bucket: str, key: str, upload_id: str) -> None:
    """Abort so S3 keeps (and bills) no orphaned parts; an abort that fails is not the error to report."""
    try:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except (ClientError, BotoCoreError):
        pass


@task(**S3_READ)
def put_manifest(bucket: BackupBucket, name: str, body: bytes, *, encryption: Encryption = NO_ENCRYPTION) -> str:
    key = object_key(bucket, name)
    checksum = base64.b64encode(hashlib.sha256(body).digest()).decode()
    try:
        _s3(bucket).put_object(
            Bucket=bucket.bucket.bucket_name, Key=key, Body=body, ContentType="application/json",
            ChecksumSHA256=checksum, **encryption.s3_args(),
        )  # fmt: skip
    except (ClientError, BotoCoreError) as exc:
        raise _error(exc, f"writing {key}", bucket) from None
    return key


@task(**S3_READ)
def list_objects(bucket: BackupBucket) -> list[StoredObject]:
    """Every object under the BackupBucket's prefix (paged), names relative to it."""
    base = object_key(bucket, "x")[:-1]
    found = []
    try:
        pages = _s3(bucket).get_paginator("list_objects_v2").paginate(Bucket=bucket.bucket.bucket_name, Prefix=base)
        for page in pages:
            found += [StoredObject(o["Key"][len(base) :], int(o["Size"])) for o in page.get("Contents", [])]
    except (ClientError, BotoCoreError) as exc:
        raise _error(exc, f"listing {base or 'the objects'}", bucket) from None
    return found


@task(**S3_TRANSFER)
def download(bucket: BackupBucket, name: str, destination: Path, *, concurrency: int = 8) -> Path:
    """Parallel ranged download (boto3's transfer manager) to `destination`."""
    config = TransferConfig(max_concurrency=concurrency, multipart_chunksize=DEFAULT_PART_SIZE)
    try:
        _s3(bucket).download_file(bucket.bucket.bucket_name, object_key(bucket, name), str(destination),
                                  Config=config)  # fmt: skip
    except (ClientError, BotoCoreError) as exc:
        raise _error(exc, f"downloading {name}", bucket) from None
    return destination


@task(**S3_READ)
def delete_objects(bucket: BackupBucket, names: list[str]) -> list[str]:
    """Delete these objects (1,000 per request, S3's limit); returns the names deleted."""
    s3, deleted = _s3(bucket), []
    for start in range(0, len(names), 1000):
        batch = names[start : start + 1000]
        objects = [{"Key": object_key(bucket, n)} for n in batch]
        try:
            answer = s3.delete_objects(Bucket=bucket.bucket.bucket_name, Delete={"Objects": objects, "Quiet": True})
        except (ClientError, BotoCoreError) as exc:
            raise _error(exc, "deleting snapshots", bucket) from None
        failed = {e["Key"] for e in answer.get("Errors", [])}
        deleted += [n for n, o in zip(batch, objects, strict=True) if o["Key"] not in failed]
    return deleted


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


@task(**PREFECT_API)
def load_bucket(name: str) -> BackupBucket:
    """A saved 'Rollbook Backup Bucket' block."""
    block = BackupBucket.load(name)
    if not isinstance(block, BackupBucket):
        raise TypeError(f"block {name!r} is not a Rollbook Backup Bucket")
    return block
