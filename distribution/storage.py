"""Where checkpoint files live: one interface (`Storage`), two backends.

Publishing and verification use only the interface. Downloads differ by backend, and ask which one
holds a file in one way, `isinstance(storage, LocalStorage)` (distribution.downloads.channels):
local files are sent by the portal or its front server (`LocalStorage.path`), S3 objects never pass
through Django: the client is redirected to a short-lived link (`S3Storage.presigned_get`).
"""

import functools
import shutil
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver


class StorageError(Exception):
    """The storage could not be reached or refused an operation; worth retrying later."""


def checked_key(key: str) -> str:
    parts = PurePosixPath(key).parts
    if not parts or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"{key!r} is not a storage key")
    return key


class Storage(Protocol):
    """What publishing and verification need of a place that holds checkpoint files, by key."""

    name: str  # recorded on each revision, which keeps its files where they were published

    def put_file(self, key: str, source: Path) -> None: ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def open(self, key: str) -> BinaryIO: ...

    def list_prefix(self, prefix: str) -> dict[str, int]:
        """relative path -> size of every file stored under `prefix`."""
        ...

    def delete_prefix(self, prefix: str) -> None: ...


class LocalStorage:
    name = "local"

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / checked_key(key)

    def put_file(self, key: str, source: Path) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        shutil.copyfile(source, partial)
        partial.replace(target)

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(data)
        partial.replace(target)

    def open(self, key: str) -> BinaryIO:
        return self.path(key).open("rb")

    def list_prefix(self, prefix: str) -> dict[str, int]:
        """relative path -> size of every regular file under prefix."""
        root = self.path(prefix)
        return {
            path.relative_to(root).as_posix(): path.stat().st_size
            for path in root.rglob("*")
            if path.is_file() and not path.is_symlink()
        }

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self.path(prefix), ignore_errors=True)


class S3Storage:
    name = "s3"

    def __init__(
        self, *, endpoint_url, bucket, access_key_id, secret_access_key, region, addressing_style, multipart_threshold
    ):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url or None,
            aws_access_key_id=access_key_id or None,
            aws_secret_access_key=secret_access_key or None,
            region_name=region,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": addressing_style},
                retries={"max_attempts": 5, "mode": "standard"},
            ),
        )
        self.transfer = TransferConfig(multipart_threshold=multipart_threshold, multipart_chunksize=multipart_threshold)

    def _call(self, operation, *args, **kwargs):
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return operation(*args, **kwargs)
        except (Boto3Error, BotoCoreError, ClientError) as error:
            raise StorageError(f"S3 bucket {self.bucket}: {error}") from error

    def put_file(self, key: str, source: Path) -> None:
        self._call(self.client.upload_file, str(source), self.bucket, checked_key(key), Config=self.transfer)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call(self.client.put_object, Bucket=self.bucket, Key=checked_key(key), Body=data)

    def open(self, key: str) -> BinaryIO:
        return self._call(self.client.get_object, Bucket=self.bucket, Key=checked_key(key))["Body"]

    def _objects(self, prefix: str):
        paginator = self.client.get_paginator("list_objects_v2")
        for page in self._call(lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=checked_key(prefix) + "/"))):
            yield from page.get("Contents", [])

    def list_prefix(self, prefix: str) -> dict[str, int]:
        start = len(checked_key(prefix)) + 1
        return {item["Key"][start:]: item["Size"] for item in self._objects(prefix)}

    def delete_prefix(self, prefix: str) -> None:
        keys = [{"Key": item["Key"]} for item in self._objects(prefix)]
        for start in range(0, len(keys), 1000):  # the most one DeleteObjects call takes
            batch = keys[start : start + 1000]
            self._call(self.client.delete_objects, Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def presigned_get(self, key: str, *, filename: str, expires_in: int) -> str:
        safe_name = filename.replace('"', "")
        return self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": checked_key(key),
                "ResponseContentDisposition": f'attachment; filename="{safe_name}"',
            },
            ExpiresIn=expires_in,
        )


def s3_configured() -> bool:
    return bool(settings.S3_BUCKET)


@functools.cache
def get_storage(name: str | None = None) -> "LocalStorage | S3Storage":
    name = name or settings.STORAGE_BACKEND
    if name == "local":
        return LocalStorage(settings.LOCAL_STORAGE_ROOT)
    if name == "s3":
        if not s3_configured():
            raise StorageError("S3 storage is not configured: set S3_BUCKET, S3_ENDPOINT_URL and the S3 keys")
        return S3Storage(
            endpoint_url=settings.S3_ENDPOINT_URL,
            bucket=settings.S3_BUCKET,
            access_key_id=settings.S3_ACCESS_KEY_ID,
            secret_access_key=settings.S3_SECRET_ACCESS_KEY,
            region=settings.S3_REGION,
            addressing_style=settings.S3_ADDRESSING_STYLE,
            multipart_threshold=settings.S3_MULTIPART_THRESHOLD,
        )
    raise ValueError(f"unknown storage backend {name!r}: use 'local' or 's3'")


@receiver(setting_changed)
def _forget_storages(setting, **kwargs):
    if setting.startswith(("S3_", "LOCAL_STORAGE", "STORAGE_")):
        get_storage.cache_clear()
