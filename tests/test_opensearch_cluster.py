"""The stats store on a real 2-node OpenSearch cluster (`scripts/services.sh start cluster`).

Replicas and shards as configured; a node stopped in the middle of a day's bulk indexing, the
run still completing with exactly the documents of a clean run (no document lost or doubled);
reads answering the same with either node down. The module starts the cluster (~1 minute) and
stops it after, so that the rest of the suite does not carry two more JVMs.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import subprocess
import time
import uuid
from pathlib import Path

import polars as pl
import pytest
import requests
from dagster import DagsterInstance, materialize

from assets import usage_assets
from conftest import DAYS, generate
from definitions import build_resources
from resources import OpenSearchStatsStoreResource
from support import day_tables
from usage_stats.pipeline.metrics import METRICS
from usage_stats.storage.opensearch import OpenSearchStatsStore
from usage_stats.storage.opensearch.client import node_urls

SERVICES = Path(__file__).resolve().parents[1] / "scripts" / "services.sh"
CLUSTER_URL = os.environ.get(
    "USAGE_STATS_TEST_OPENSEARCH_CLUSTER_URL", "http://127.0.0.1:9201,http://127.0.0.1:9202"
)
NODE1, NODE2 = node_urls(CLUSTER_URL)


def services(action: str, which: str) -> None:
    subprocess.run([str(SERVICES), action, which], check=True, timeout=400)


@pytest.fixture(scope="module")
def cluster():
    try:
        services("start", "cluster")
    except subprocess.CalledProcessError as exc:
        pytest.skip(
            f"service OpenSearch cluster did not start ({exc}): scripts/services.sh start cluster"
        )
    yield
    services("stop", "cluster")


def health(url: str, status: str = "green", nodes: int = 2) -> dict:
    """The cluster's health seen from `url` once it is `status` with `nodes` nodes (bounded)."""
    answer = requests.get(
        f"{url}/_cluster/health",
        params={"wait_for_status": status, "wait_for_nodes": str(nodes), "timeout": "90s"},
        timeout=100,
    ).json()
    assert not answer.get("timed_out"), answer
    return answer


def restart(node: int) -> None:
    services("start", f"cluster-node{node}")
    health(NODE1)


def new_prefix() -> str:
    return f"cl{uuid.uuid4().hex[:10]}"


def cluster_store(prefix: str, url: str = CLUSTER_URL, **kwargs) -> OpenSearchStatsStore:
    return OpenSearchStatsStore(url, prefix=prefix, compat_prefix=f"{prefix}-compat", **kwargs)


def documents(url: str, index: str) -> list[dict]:
    """Every document of `index` (id, source without the write's id) by scrolling, in id order."""
    requests.post(f"{url}/{index}/_refresh", timeout=60).raise_for_status()
    page = requests.post(
        f"{url}/{index}/_search",
        params={"scroll": "1m"},
        json={"size": 1000, "sort": ["_doc"]},
        timeout=60,
    ).json()
    docs = []
    while page["hits"]["hits"]:
        for hit in page["hits"]["hits"]:
            source = {k: v for k, v in hit["_source"].items() if k != "write_id"}
            docs.append({"_id": hit["_id"], **source})
        page = requests.post(
            f"{url}/_search/scroll",
            json={"scroll": "1m", "scroll_id": page["_scroll_id"]},
            timeout=60,
        ).json()
    return sorted(docs, key=lambda d: d["_id"])


def shard_copies(url: str, index: str) -> list[dict]:
    return requests.get(
        f"{url}/_cat/shards/{index}",
        params={"format": "json", "h": "index,shard,prirep,state,node"},
        timeout=30,
    ).json()


def test_indices_get_the_configured_shards_and_replicas(cluster, tmp_path):
    """Two shards, one replica: every shard has a started primary and a started replica, on
    different nodes; a store configured later with no replica takes them away at its write."""
    data = generate(tmp_path / "data")
    day, deltas, snapshot = day_tables(data, days=1)[0]
    prefix = new_prefix()
    store = cluster_store(prefix, replicas=1, shards=2)
    try:
        store.replace_day(day, deltas, snapshot)
        health(NODE1)
        copies = shard_copies(NODE1, f"{prefix}-deltas-*")
        assert {c["shard"] for c in copies} == {"0", "1"}
        for shard in ("0", "1"):
            mine = [c for c in copies if c["shard"] == shard]
            assert sorted(c["prirep"] for c in mine) == ["p", "r"]
            assert {c["state"] for c in mine} == {"STARTED"}
            assert len({c["node"] for c in mine}) == 2
        cluster_store(prefix, replicas=0, shards=2).replace_day(day, deltas, snapshot)
        settings = requests.get(f"{NODE1}/{prefix}-deltas-*/_settings", timeout=30).json()
        assert [s["settings"]["index"]["number_of_replicas"] for s in settings.values()] == ["0"]
        assert [s["settings"]["index"]["number_of_shards"] for s in settings.values()] == ["2"]
    finally:
        store.delete_all()


class StopNodeMidWrite(OpenSearchStatsStoreResource):
    """The pipeline's resource, whose store stops cluster node 2 after its first bulk batch
    (the store's own progress hook; the write goes on against what is left of the cluster)."""

    def get_store(self) -> OpenSearchStatsStore:
        store = super().get_store()
        store.on_batch = functools.partial(_stop_node2_once, store.prefix)
        return store


_progress: list[tuple[str, int]] = []
# The shard copies of the day's indices as they were when node 2 was stopped.
_copies_at_stop: list[dict] = []


def _stop_node2_once(prefix: str, written: int) -> None:
    if not any(event == "stopped" for event, _ in _progress):
        _copies_at_stop.extend(shard_copies(NODE1, f"{prefix}-deltas-*,{prefix}-snapshots-*"))
        services("stop", "cluster-node2")
        _progress.append(("stopped", written))
    else:
        _progress.append(("written", written))


def run_day(data, resource: OpenSearchStatsStoreResource):
    resources = build_resources(data.settings) | {"stats_store": resource}
    return materialize(
        usage_assets,
        resources=resources,
        instance=DagsterInstance.ephemeral(),
        partition_key=DAYS[0],
    )


def test_a_node_stopped_mid_write_the_run_completes_with_the_same_documents(cluster, tmp_path):
    data = generate(tmp_path / "data")
    clean_prefix, faulty_prefix = new_prefix(), new_prefix()
    common = {
        "url": CLUSTER_URL,
        "batch_size": 200,
        "replicas": 1,
        "admin_db_url": data.settings.admin_db_url,
    }
    clean = OpenSearchStatsStoreResource(
        prefix=clean_prefix, compat_prefix=f"{clean_prefix}-compat", **common
    )
    faulty = StopNodeMidWrite(
        prefix=faulty_prefix, compat_prefix=f"{faulty_prefix}-compat", **common
    )
    _progress.clear()
    _copies_at_stop.clear()
    try:
        assert run_day(data, clean).success
        health(NODE1)
        assert run_day(data, faulty).success
        # Node 2 was stopped after the first batch, and the day went on being written after.
        assert _progress[0] == ("stopped", 200)
        # By then every shard of the day's indices had both copies started: the store waits
        # for them before the first document (a bulk request creating the index writes while
        # its replicas still initialise, and stopping a node then can take a shard's only
        # started copy with it: the run failed that way in CI).
        assert _copies_at_stop
        assert {c["state"] for c in _copies_at_stop} == {"STARTED"}, _copies_at_stop
        assert sorted(c["prirep"] for c in _copies_at_stop).count("r") == len(_copies_at_stop) / 2
        assert [e for e, _ in _progress[1:]].count("written") >= 1
        assert requests.get(f"{NODE1}/_cluster/health", timeout=30).json()["number_of_nodes"] == 1
        for table in ("deltas", "snapshots", "compat-*"):
            ours = documents(NODE1, f"{faulty_prefix}-{table}")
            theirs = documents(NODE1, f"{clean_prefix}-{table}")
            assert ours, table
            assert ours == theirs, table
            assert len({d["_id"] for d in ours}) == len(ours)  # no document twice
    finally:
        restart(2)
        cluster_store(clean_prefix).delete_all()
        cluster_store(faulty_prefix).delete_all()


def answers(store: OpenSearchStatsStore, first: dt.date, last: dt.date) -> tuple:
    """What the web services ask the store: its days, sums per item and site, a top list."""
    sums = store.sums("item", first, last, by=("site_id", "key")).sort("site_id", "key")
    top = store.top("item", first, last, METRICS[0], 10)
    return store.days(), sums.to_dicts(), top.to_dicts()


def test_reads_go_on_with_either_node_down(cluster, tmp_path):
    data = generate(tmp_path / "data")
    tables = day_tables(data, days=3)
    first, last = tables[0][0], tables[-1][0]
    prefix = new_prefix()
    store = cluster_store(prefix, replicas=1)
    try:
        for day, deltas, snapshot in tables:
            store.replace_day(day, deltas, snapshot)
        store.connection.refresh(f"{prefix}-*")
        health(NODE1)
        expected = answers(store, first, last)
        assert expected[0] == [first, first + dt.timedelta(days=1), last]
        assert pl.DataFrame(expected[1]).height > 0 and expected[2]

        services("stop", "cluster-node2")
        for url in (CLUSTER_URL, NODE1):
            assert answers(cluster_store(prefix, url), first, last) == expected, url
        restart(2)

        # Node 1 is the cluster manager: node 2 alone has none, and still serves reads.
        services("stop", "cluster-node1")
        started = time.monotonic()
        for url in (CLUSTER_URL, NODE2):
            assert answers(cluster_store(prefix, url), first, last) == expected, url
        assert time.monotonic() - started < 60
    finally:
        restart(1)
        store.delete_all()


def test_the_cluster_settings_reach_the_store_and_bad_values_are_refused():
    from definitions import build_stats_store
    from usage_stats.settings import Settings

    env = {
        "USAGE_STATS_STATS_STORE": "opensearch",
        "USAGE_STATS_OPENSEARCH_URL": "http://a:9200, http://b:9200",
        "USAGE_STATS_OPENSEARCH_REPLICAS": "1",
        "USAGE_STATS_OPENSEARCH_SHARDS": "3",
        "USAGE_STATS_OPENSEARCH_COMPAT_PREFIX": "lr",
    }
    store = build_stats_store(Settings.from_env(env)).get_store()
    assert (store.replicas, store.shards, store.compat_prefix) == (1, 3, "lr")
    assert node_urls(store.url) == ["http://a:9200", "http://b:9200"]
    for name, value in (
        ("USAGE_STATS_OPENSEARCH_SHARDS", "0"),
        ("USAGE_STATS_OPENSEARCH_REPLICAS", "-1"),
    ):
        with pytest.raises(ValueError, match=name):
            Settings.from_env({**env, name: value})
    with pytest.raises(ValueError, match="no OpenSearch URL"):
        node_urls(" , ")
