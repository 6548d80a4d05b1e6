"""Names of the relay objects of the placeholder layout.

::

    escale.repo                               repository header (format, encryption)
    clients/<client-id>                       client registration
    lease/<generation:012d>                   the lease, one object per generation
    meta/<key>.<version:010d>                 placeholder of one version of one path
    data/<key>.<version:010d>.<random>        payload of that version
    acks/<key>.<version:010d>.<client-id>     acknowledgement by one receiver

``key`` is the envelope's :meth:`object_key` of the path: 32 hex characters,
keyed by the repository secret when encrypted, so that names reveal nothing of
the paths. Client ids are 32 hex characters. Parsing a listed name that does not
fit is not an error here: callers skip foreign objects with a warning.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

HEADER = "escale.repo"
CLIENTS = "clients"
LEASES = "lease"
META = "meta"
DATA = "data"
ACKS = "acks"
FOLDERS = (CLIENTS, LEASES, META, DATA, ACKS)

_HEX32 = r"[0-9a-f]{32}"
_META = re.compile(rf"({_HEX32})\.(\d{{10}})")
_DATA = re.compile(rf"({_HEX32})\.(\d{{10}})\.([0-9a-f]{{16}})")
_ACK = re.compile(rf"({_HEX32})\.(\d{{10}})\.({_HEX32})")
# 12 digits, more once 10**12 is passed (a forged lease/999999999999 must not
# leave writers unable to name the next generation); 18 keeps it in 64 bits
_LEASE = re.compile(r"\d{12,18}")
_CLIENT = re.compile(_HEX32)


def new_client_id() -> str:
    """A fresh random client identity (the label is not an identity)."""
    return secrets.token_hex(16)


def meta_name(key: str, version: int) -> str:
    return f"{META}/{key}.{version:010d}"


def data_name(key: str, version: int) -> str:
    """A fresh, never reused payload name for this version."""
    return f"{DATA}/{key}.{version:010d}.{secrets.token_hex(8)}"


def ack_name(key: str, version: int, client: str) -> str:
    return f"{ACKS}/{key}.{version:010d}.{client}"


def lease_name(generation: int) -> str:
    return f"{LEASES}/{generation:012d}"


def client_name(client: str) -> str:
    return f"{CLIENTS}/{client}"


@dataclass(frozen=True)
class VersionRef:
    """A parsed ``<key>.<version>[.<suffix>]`` relay name."""

    name: str
    key: str
    version: int
    suffix: str = ""


def parse_meta(name: str) -> VersionRef | None:
    base = name.rpartition("/")[2]
    match = _META.fullmatch(base)
    return VersionRef(name, match[1], int(match[2])) if match else None


def parse_data(name: str) -> VersionRef | None:
    base = name.rpartition("/")[2]
    match = _DATA.fullmatch(base)
    return VersionRef(name, match[1], int(match[2]), match[3]) if match else None


def parse_ack(name: str) -> VersionRef | None:
    base = name.rpartition("/")[2]
    match = _ACK.fullmatch(base)
    return VersionRef(name, match[1], int(match[2]), match[3]) if match else None


def parse_lease(name: str) -> int | None:
    base = name.rpartition("/")[2]
    return int(base) if _LEASE.fullmatch(base) else None


def parse_client(name: str) -> str | None:
    base = name.rpartition("/")[2]
    return base if _CLIENT.fullmatch(base) else None
