"""COUNTER SUSHI customers in the admin DB: who may fetch reports, for which sites.

API keys are shown once, when created, and stored only as a salted scrypt hash, so a leaked
admin DB does not leak working keys; verification compares in constant time so response
timing does not reveal how much of a guessed key was right.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from usage_stats.admin.db import ensure_current, session_scope
from usage_stats.admin.models import SushiCustomer

_N, _R, _P = 2**14, 8, 1


class SushiCustomerError(ValueError):
    """A customer cannot be created as asked (duplicate id, no sites…)."""


@dataclass(frozen=True)
class Customer:
    customer_id: str
    name: str
    requestor_id: str | None
    site_ids: tuple[int, ...]
    active: bool
    api_key_hash: str


def hash_api_key(api_key: str, salt: bytes | None = None) -> str:
    """`scrypt$<salt b64>$<hash b64>`: the salt travels with the hash, the key does not."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(api_key.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_api_key(api_key: str, stored: str) -> bool:
    try:
        scheme, salt_b64, digest_b64 = stored.split("$")
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(api_key.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return hmac.compare_digest(digest, expected)


def _to_customer(row: SushiCustomer) -> Customer:
    return Customer(
        row.customer_id,
        row.name,
        row.requestor_id,
        tuple(int(s) for s in row.site_ids or ()),
        bool(row.active),
        row.api_key_hash,
    )


def add_customer(
    url: str,
    customer_id: str,
    name: str,
    site_ids: list[int],
    requestor_id: str | None = None,
    api_key: str | None = None,
) -> tuple[Customer, str]:
    """Create a customer; returns it with its API key (generated unless given)."""
    if not customer_id.strip():
        raise SushiCustomerError("customer_id must not be empty")
    if len(name.strip()) < 2:
        raise SushiCustomerError("name must have at least 2 characters (COUNTER)")
    if not site_ids:
        raise SushiCustomerError("a customer needs at least one site id")
    api_key = api_key or secrets.token_urlsafe(24)
    ensure_current(url)
    with session_scope(url) as session:
        clash = session.scalar(
            select(SushiCustomer).where(SushiCustomer.customer_id == customer_id)
        )
        if clash is not None:
            raise SushiCustomerError(f"a customer with customer_id {customer_id!r} exists")
        row = SushiCustomer(
            customer_id=customer_id,
            name=name,
            requestor_id=requestor_id,
            api_key_hash=hash_api_key(api_key),
            site_ids=sorted(set(site_ids)),
            active=True,
        )
        session.add(row)
        session.flush()
        return _to_customer(row), api_key


def get_customer(url: str, customer_id: str) -> Customer | None:
    ensure_current(url)
    with session_scope(url) as session:
        row = session.scalar(select(SushiCustomer).where(SushiCustomer.customer_id == customer_id))
        return None if row is None else _to_customer(row)


def list_customers(url: str) -> list[Customer]:
    ensure_current(url)
    with session_scope(url) as session:
        rows = session.scalars(select(SushiCustomer).order_by(SushiCustomer.customer_id)).all()
        return [_to_customer(r) for r in rows]
