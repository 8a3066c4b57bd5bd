"""Stats-store fixtures shared by the contract suite: DuckDB always, OpenSearch when it runs."""

from __future__ import annotations

import os
import uuid

import pytest
import requests

from usage_stats.storage.opensearch import OpenSearchStatsStore

OPENSEARCH_URL = os.environ.get("USAGE_STATS_OPENSEARCH_URL", "http://127.0.0.1:9200")
# The same defaults as scripts/services.sh, so a plain `pytest` finds the servers it started.
S3_ENDPOINT_URL = os.environ.setdefault("USAGE_STATS_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "usage-stats")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "usage-stats-secret")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def s3_client():
    import boto3

    return boto3.client("s3", endpoint_url=S3_ENDPOINT_URL, region_name="us-east-1")


def s3_available() -> str | None:
    try:
        s3_client().list_buckets()
    except Exception as exc:  # any failure means: not there
        return f"service S3 is not reachable at {S3_ENDPOINT_URL} ({exc.__class__.__name__}: {exc})"
    return None


def new_bucket() -> str:
    reason = s3_available()
    if reason:
        pytest.skip(reason + "; start it with scripts/services.sh start")
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_client().create_bucket(Bucket=name)
    return name


def opensearch_available() -> str | None:
    """None when OpenSearch answers, else why not (shown as the skip reason)."""
    try:
        # A cluster creating or deleting another test's indices can be red for a moment:
        # wait for it (bounded) rather than skipping.
        health = requests.get(
            f"{OPENSEARCH_URL}/_cluster/health",
            params={"wait_for_status": "yellow", "timeout": "30s"},
            timeout=40,
        ).json()
    except Exception as exc:  # any failure means: not there
        return f"service OpenSearch is not reachable at {OPENSEARCH_URL} ({exc.__class__.__name__})"
    if health.get("status") not in ("green", "yellow"):
        return f"service OpenSearch at {OPENSEARCH_URL} is {health.get('status')}"
    return None


def opensearch_store(**kwargs) -> OpenSearchStatsStore:
    reason = opensearch_available()
    if reason:
        pytest.skip(reason + "; start it with scripts/services.sh start")
    prefix = f"test{uuid.uuid4().hex[:10]}"
    return OpenSearchStatsStore(
        OPENSEARCH_URL, prefix=prefix, compat_prefix=f"{prefix}-compat", **kwargs
    )


POSTGRES_URL = os.environ.get(
    "USAGE_STATS_ADMIN_DB_TEST_POSTGRES_URL",
    "postgresql+psycopg://usage_stats:usage_stats@127.0.0.1:5433/usage_stats",
)


def fresh_postgres_database():
    """A new, empty database on the test PostgreSQL server; yields its URL, drops it after."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = make_url(POSTGRES_URL)
    admin = create_engine(base, isolation_level="AUTOCOMMIT")  # a missing driver is an error
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means: not there
        pytest.skip(
            f"service PostgreSQL is not reachable at {base.render_as_string(hide_password=True)} "
            f"({exc.__class__.__name__}); start it with scripts/services.sh start"
        )
    name = f"test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        from usage_stats.admin.db import _engines

        for url, engine in list(_engines.items()):
            if name in url:
                engine.dispose()
                del _engines[url]
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


MATOMO_URL = os.environ.get(
    "USAGE_STATS_MATOMO_TEST_URL", "mysql+pymysql://matomo:matomo@127.0.0.1:3307/matomo"
)


def fresh_matomo_database():
    """A new, empty database on the test MariaDB server; yields its URL, drops it after."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = make_url(MATOMO_URL)
    admin = create_engine(base)  # a missing driver is an error, not a skip
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means: not there
        pytest.skip(
            f"service MariaDB is not reachable at {base.render_as_string(hide_password=True)} "
            f"({exc.__class__.__name__}); start it with scripts/services.sh start"
        )
    name = f"matomo_test_{uuid.uuid4().hex[:10]}"
    with admin.begin() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()
