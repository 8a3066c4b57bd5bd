"""Network blocks of visitor addresses (IPv4 /24 and /16, IPv6 /48 and /32 by default).

A distributed crawler spreads a harvest over many addresses of a few blocks, so the block
is what the `robot_distributed` rule (`usage_stats.pipeline.distributed`) groups on. Only
`raw_events` (`usage_stats.pipeline.canonical`) sees an address: it turns each visit's
address into the salted hash of its blocks here, and neither the address nor the clear block
ever leaves that module.

The arithmetic is Python's `ipaddress` (`ip_network(f"{ip}/{prefix}", strict=False)`) done
on whole columns: an address becomes its family and 128 bits as two unsigned 64-bit halves
(an IPv4 address, or an IPv4-mapped IPv6 address `::ffff:a.b.c.d`, as its 32 bits), and the
block is those bits masked to the prefix. Matomo stores addresses as 4 or 16 bytes; text
(an old export) and integers (IPv4 as a number) are read too. An address that is none of
these (empty, 5 bytes, `300.1.2.3`, `01.2.3.4`) has no block: it is never fatal, its visit is
just not part of any block.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import polars as pl

_MAPPED_PREFIX = 0xFFFF  # the 32 bits before the IPv4 address in ::ffff:a.b.c.d
_OCTET = r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]\d|\d)"
_IPV4_TEXT = rf"^{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}$"


@dataclass(frozen=True)
class BlockPrefixes:
    """The prefix lengths of the fine and the wide block (configuration)."""

    ipv4_fine: int = 24
    ipv4_wide: int = 16
    ipv6_fine: int = 48
    ipv6_wide: int = 32

    def __post_init__(self) -> None:
        for name, limit in (
            ("ipv4_fine", 32),
            ("ipv4_wide", 32),
            ("ipv6_fine", 128),
            ("ipv6_wide", 128),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= limit:
                raise ValueError(f"block prefix {name} must be 0..{limit}, got {value!r}")


DEFAULT_PREFIXES = BlockPrefixes()


def address_parts(ip: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """The address as a struct `family` (4 or 6; null: no valid address), `hi`, `lo` (UInt64:
    the upper and lower 64 bits; an IPv4 address is `lo`, `hi` = 0)."""
    if dtype == pl.Binary:
        return _binary_parts(ip)
    if dtype == pl.String or dtype == pl.Categorical:
        return _text_parts(ip.cast(pl.String))
    if dtype.is_integer():
        valid = (ip >= 0) & (ip < 2**32)
        return _parts(
            pl.when(valid).then(pl.lit(4, pl.UInt8)),
            pl.lit(0, pl.UInt64),
            pl.when(valid).then(ip.cast(pl.UInt64, strict=False)),
        )
    return _parts(pl.lit(None, pl.UInt8), pl.lit(None, pl.UInt64), pl.lit(None, pl.UInt64))


def _parts(family: pl.Expr, hi: pl.Expr, lo: pl.Expr) -> pl.Expr:
    known = family.is_not_null()
    return pl.struct(
        family.cast(pl.UInt8).alias("family"),
        pl.when(known).then(hi).cast(pl.UInt64).alias("hi"),
        pl.when(known).then(lo).cast(pl.UInt64).alias("lo"),
    )


def _binary_parts(ip: pl.Expr) -> pl.Expr:
    """4 bytes: IPv4; 16 bytes: IPv6, unless IPv4-mapped; anything else: no address."""
    size = ip.bin.size()
    v4 = ip.bin.head(4).bin.reinterpret(dtype=pl.UInt32, endianness="big").cast(pl.UInt64)
    hi = ip.bin.head(8).bin.reinterpret(dtype=pl.UInt64, endianness="big")
    lo = ip.bin.slice(8, 8).bin.reinterpret(dtype=pl.UInt64, endianness="big")
    mapped = (size == 16) & (hi == 0) & ((lo // 2**32) == _MAPPED_PREFIX)
    family = (
        pl.when(size == 4).then(4).when(mapped).then(4).when(size == 16).then(6).otherwise(None)
    )
    return _parts(
        family,
        pl.when(size == 16).then(pl.when(mapped).then(0).otherwise(hi)).otherwise(0),
        pl.when(size == 4).then(v4).when(mapped).then(lo & 0xFFFFFFFF).otherwise(lo),
    )


def _text_parts(ip: pl.Expr) -> pl.Expr:
    """Dotted IPv4 text on the column; IPv6 text (rare: Matomo stores bytes) through
    `ipaddress` once per distinct spelling."""
    octets = ip.str.extract_groups(_IPV4_TEXT)
    v4 = (
        octets.struct.field("1").cast(pl.UInt64) * 2**24
        + octets.struct.field("2").cast(pl.UInt64) * 2**16
        + octets.struct.field("3").cast(pl.UInt64) * 2**8
        + octets.struct.field("4").cast(pl.UInt64)
    )
    v6 = ip.map_batches(_ipv6_text, return_dtype=pl.Binary)
    v6_parts = _binary_parts(v6)
    is_v4 = v4.is_not_null()
    return _parts(
        pl.when(is_v4).then(4).otherwise(v6_parts.struct.field("family")),
        pl.when(is_v4).then(0).otherwise(v6_parts.struct.field("hi")),
        pl.when(is_v4).then(v4).otherwise(v6_parts.struct.field("lo")),
    )


def _ipv6_text(values: pl.Series) -> pl.Series:
    """The 16 bytes of each IPv6 spelling (null for anything else), parsed once per value."""
    wanted = values.filter(values.str.contains(":", literal=True).fill_null(False)).unique()
    packed = []
    for text in wanted.to_list():
        try:
            packed.append(ipaddress.IPv6Address(text).packed)
        except ValueError:
            packed.append(None)
    table = pl.DataFrame(
        {"text": wanted, "packed": pl.Series(packed, dtype=pl.Binary)},
        schema={"text": pl.String, "packed": pl.Binary},
    )
    return (
        values.to_frame("text")
        .join(table, on="text", how="left", maintain_order="left")
        .get_column("packed")
    )


def packed_address(ip: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """The address as Matomo stores it (4 or 16 bytes), whatever it arrived as: binary as it
    is; text and integers (old exports) through `ipaddress`, once per distinct value. What
    is no address becomes null. `address_parts` reads the result (`pl.Binary`)."""
    if dtype == pl.Binary:
        return ip
    if dtype == pl.Null:
        return pl.lit(None, dtype=pl.Binary)
    return ip.map_batches(_packed, return_dtype=pl.Binary)


def _packed(values: pl.Series) -> pl.Series:
    distinct = values.drop_nulls().unique()
    packed = []
    for value in distinct.to_list():
        try:
            if isinstance(value, int):
                packed.append(ipaddress.IPv4Address(value).packed)
            else:
                packed.append(ipaddress.ip_address(value).packed)
        except (ValueError, TypeError):
            packed.append(None)
    table = pl.DataFrame(
        {"value": distinct, "packed": pl.Series(packed, dtype=pl.Binary)},
    )
    return (
        values.to_frame("value")
        .join(table, on="value", how="left", maintain_order="left")
        .get_column("packed")
    )


def _masks(prefix: int, bits: int) -> tuple[int, int]:
    """(hi mask, lo mask) keeping the first `prefix` of an address of `bits` bits."""
    full = (1 << bits) - 1
    mask = (full >> (bits - prefix) << (bits - prefix)) if prefix else 0
    return mask >> 64, mask & ((1 << 64) - 1)


def block_expr(parts: pl.Expr, ipv4_prefix: int, ipv6_prefix: int) -> pl.Expr:
    """The block of each address (`address_parts`) as a struct `family`, `prefix`, `hi`,
    `lo` (the address masked to the prefix of its family); null where there is no address.
    Unsalted: only ever hashed (`canonical.ip_hash_expr`), never stored."""
    family = parts.struct.field("family")
    v4_hi, v4_lo = _masks(ipv4_prefix, 32)
    v6_hi, v6_lo = _masks(ipv6_prefix, 128)
    is_v4 = family == 4
    hi = parts.struct.field("hi") & pl.when(is_v4).then(pl.lit(v4_hi, pl.UInt64)).otherwise(
        pl.lit(v6_hi, pl.UInt64)
    )
    lo = parts.struct.field("lo") & pl.when(is_v4).then(pl.lit(v4_lo, pl.UInt64)).otherwise(
        pl.lit(v6_lo, pl.UInt64)
    )
    prefix = pl.when(is_v4).then(ipv4_prefix).otherwise(ipv6_prefix).cast(pl.UInt8)
    block = pl.struct(
        family.alias("family"), prefix.alias("prefix"), hi.alias("hi"), lo.alias("lo")
    )
    return pl.when(family.is_not_null()).then(block)


def python_block(value: object, ipv4_prefix: int, ipv6_prefix: int) -> str | None:
    """The block as `ipaddress` spells it (`1.2.3.0/24`), or None: the reference the tests
    compare `block_expr` with."""
    try:
        if isinstance(value, bytes):
            address = ipaddress.ip_address(value)
        elif isinstance(value, int):
            address = ipaddress.IPv4Address(value)
        else:
            address = ipaddress.ip_address(value)
    except (ValueError, TypeError):
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = ipv4_prefix if address.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def block_text(block: dict | None) -> str | None:
    """A `block_expr` value spelled as `ipaddress` does (tests and debugging only)."""
    if block is None:
        return None
    value = (block["hi"] << 64) | block["lo"]
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    address = ipaddress.IPv4Address(value) if block["family"] == 4 else ipaddress.IPv6Address(value)
    return f"{address}/{block['prefix']}"
