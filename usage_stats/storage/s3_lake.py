"""The lake on S3 (AWS or any S3-compatible server such as MinIO).

Listing uses delimiters so that finding a day's leaves never walks the whole archive; objects
are read whole and decoded by Polars. The boto3 client comes from the caller (the Dagster
resource builds it from `dagster_aws`'s S3Resource), so credentials live in one place.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from usage_stats.storage.lake import FileInfo, LakeReadError


@dataclass(frozen=True)
class S3Lake:
    client: Any
    bucket: str
    prefix: str = ""

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        return f"{self.prefix.strip('/')}/{key}".lstrip("/") if self.prefix.strip("/") else key

    def _relative(self, key: str) -> str:
        base = self.prefix.strip("/")
        return key[len(base) + 1 :] if base else key

    def _pages(self, prefix: str, delimiter: str | None):
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            args["Delimiter"] = delimiter
        yield from self.client.get_paginator("list_objects_v2").paginate(**args)

    def list_dirs(self, prefix: str) -> list[str]:
        base = self._key(prefix).rstrip("/") + "/"
        names = []
        for page in self._pages(base, "/"):
            for common in page.get("CommonPrefixes", []):
                names.append(common["Prefix"][len(base) :].rstrip("/"))
        return sorted(names)

    def list_files(self, prefix: str, suffix: str = ".parquet") -> list[str]:
        base = self._key(prefix).rstrip("/") + "/"
        keys = []
        for page in self._pages(base, "/"):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith(suffix):
                    keys.append(self._relative(obj["Key"]))
        return sorted(keys)

    def stat_files(self, prefix: str, suffix: str = ".parquet") -> list[FileInfo]:
        base = self._key(prefix).rstrip("/") + "/"
        infos = []
        for page in self._pages(base, None):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith(suffix):
                    modified: dt.datetime = obj["LastModified"]
                    infos.append(
                        FileInfo(
                            self._relative(obj["Key"]),
                            modified.timestamp(),
                            int(obj["Size"]),
                            str(obj.get("ETag", "")).strip('"'),
                        )
                    )
        return sorted(infos, key=lambda f: f.key)

    def read_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except Exception as exc:
            raise LakeReadError(f"{self.describe(key)}: cannot read object ({exc})") from exc

    def write_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def upload_file(self, key: str, path: Path) -> None:
        """Multipart upload from disk: large exports never sit in memory whole."""
        self.client.upload_file(str(path), self.bucket, self._key(key))

    def delete_prefix(self, prefix: str) -> None:
        base = self._key(prefix)
        batch: list[dict[str, str]] = []
        for page in self._pages(base, None):
            for obj in page.get("Contents", []):
                if obj["Key"] == base or obj["Key"].startswith(base.rstrip("/") + "/"):
                    batch.append({"Key": obj["Key"]})
                if len(batch) == 1000:
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})
                    batch = []
        if batch:
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` → (`bucket`, `some/prefix`)."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    rest = url[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"s3 URL without a bucket: {url!r}")
    return bucket, prefix.strip("/")
