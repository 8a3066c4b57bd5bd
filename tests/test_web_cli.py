"""`usage-stats sushi add-customer` stores only a hash; `usage-stats serve` is wired up."""

from __future__ import annotations

from usage_stats.admin import db
from usage_stats.admin.sushi import get_customer, hash_api_key, verify_api_key
from usage_stats.cli import build_parser, main


def test_add_customer_prints_the_key_once_and_stores_a_hash(tmp_path, capsys, monkeypatch):
    url = f"sqlite:///{tmp_path / 'admin.db'}"
    db.upgrade(url)
    monkeypatch.setenv("USAGE_STATS_ADMIN_DB_URL", url)
    code = main(
        [
            "sushi",
            "add-customer",
            "--customer-id",
            "c1",
            "--name",
            "Library",
            "--site-id",
            "1",
            "--site-id",
            "3",
            "--requestor-id",
            "r1",
        ]
    )
    assert code == 0
    api_key = capsys.readouterr().out.strip()
    customer = get_customer(url, "c1")
    assert customer.site_ids == (1, 3) and customer.requestor_id == "r1"
    assert api_key not in customer.api_key_hash
    assert verify_api_key(api_key, customer.api_key_hash)
    assert not verify_api_key(api_key + "x", customer.api_key_hash)
    assert (
        main(["sushi", "add-customer", "--customer-id", "c1", "--name", "Again", "--site-id", "1"])
        == 2
    )


def test_hashes_are_salted_and_malformed_hashes_never_verify():
    assert hash_api_key("k") != hash_api_key("k")
    assert not verify_api_key("k", "plain-text")


def test_serve_defaults_to_localhost():
    args = build_parser().parse_args(["serve"])
    assert args.command == "serve" and args.host is None and args.port is None
