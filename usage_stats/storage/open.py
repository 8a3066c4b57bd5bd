"""Opening a lake by URL: the one place that knows every `Lake` implementation.

It lives apart from `lake.py` so the local lake and the S3 lake each depend only on the
protocol, never on each other.
"""

from __future__ import annotations

from pathlib import Path

from usage_stats.storage.lake import Lake, LocalLake
from usage_stats.storage.s3_lake import S3Lake, parse_s3_url


def open_lake(url: str, s3_client: object | None = None) -> Lake:
    """Lake from a URL: a local folder (plain path or file://) or s3://bucket/prefix."""
    if url.startswith("s3://"):
        if s3_client is None:
            raise ValueError(f"lake URL {url!r} needs an S3 client")
        bucket, prefix = parse_s3_url(url)
        return S3Lake(s3_client, bucket, prefix)
    if url.startswith("file://"):
        url = url[len("file://") :]
    return LocalLake(Path(url))
