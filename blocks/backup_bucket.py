"""Where backups (etcd snapshots, database dumps, Helm release state) are written and read back."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from prefect_aws import AwsCredentials, S3Bucket
from prefect_aws.client_parameters import AwsClientParameters
from pydantic import Field, SecretStr, field_validator

from blocks._base import RollbookBlock


class BackupBucket(RollbookBlock):
    """An S3 (or S3-compatible) location for one kind of backup.

    Credentials, region and endpoint stay in prefect-aws's own `S3Bucket` / `AwsCredentials` blocks, so one
    saved bucket can back several `BackupBucket`s that differ only in `prefix`.
    """

    _block_type_name = "Rollbook Backup Bucket"
    _block_type_slug = "rollbook-backup-bucket"
    _description = "An S3Bucket block plus a key prefix for one kind of backup."

    bucket: S3Bucket = Field(
        description="prefect-aws S3Bucket (bucket name, credentials, optional folder). For MinIO or other "
        "S3-compatible stores set the endpoint URL in its credentials' client parameters."
    )
    prefix: str = Field(
        default="",
        description="Key prefix under the bucket folder for this kind of backup, e.g. 'etcd/prod'.",
    )

    @field_validator("prefix")
    @classmethod
    def _clean_prefix(cls, value: str) -> str:
        value = value.strip().strip("/")
        if ".." in PurePosixPath(value).parts:
            raise ValueError("prefix must not contain '..'")
        return value

    @classmethod
    def s3_compatible(
        cls,
        *,
        bucket_name: str,
        endpoint_url: str | None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        region_name: str | None = None,
        prefix: str = "",
    ) -> BackupBucket:
        """Build the nested prefect-aws blocks for a bucket on AWS (no endpoint) or an S3-compatible store."""
        credentials = AwsCredentials(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=SecretStr(secret_access_key) if secret_access_key is not None else None,
            region_name=region_name,
            aws_client_parameters=AwsClientParameters(endpoint_url=endpoint_url),
        )
        return cls(bucket=S3Bucket(bucket_name=bucket_name, credentials=credentials), prefix=prefix)

    @property
    def endpoint_url(self) -> str | None:
        """The S3 endpoint in use; None means AWS's default for the region."""
        return self.bucket.credentials.aws_client_parameters.endpoint_url

    def key(self, name: str) -> str:
        """Object key (relative to the bucket folder) for a backup called `name`."""
        name = name.strip("/")
        if not name or ".." in PurePosixPath(name).parts:
            raise ValueError(f"invalid backup name: {name!r}")
        return f"{self.prefix}/{name}" if self.prefix else name

    def upload(self, local_path: Path, name: str) -> str:
        """Upload a local file as backup `name`; returns the full object key."""
        key: str = self.bucket.upload_from_path(local_path, self.key(name))
        return key

    def download(self, name: str, local_path: Path) -> Path:
        """Download backup `name` to `local_path`."""
        path: Path = self.bucket.download_object_to_path(self.key(name), local_path)
        return path

    def list_names(self) -> list[str]:
        """Names of the backups under this prefix, oldest key first (S3 lists keys in lexical order)."""
        folder = self.prefix + "/" if self.prefix else ""
        objects = self.bucket.list_objects(folder)
        base = self.bucket._join_bucket_folder(folder)
        return [str(obj["Key"])[len(base) :] for obj in objects]
