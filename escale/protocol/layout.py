"""Names of the relay objects of the placeholder layout (and the index layout's folders).

::

    escale.repo                               repository header (format, encryption)
    clients/<client-id>                       client registration
    lease/<generation:012d>                   the lease, one object per generation
    lease/<generation:012d>-<token>           a claim of that generation (relays
                                              whose exclusive put does not decide)
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
#: Folders of the index layout's own objects (its names and formats live in
#: :mod:`escale.protocol.index.objects`; it shares ``clients/`` and
#: ``lease/``, and makes none of its folders ahead).
INDEX = "index"
PAGES = "pages"
BIG = "big"
#: Every folder either layout may use: what whole-repository operations
#: (backup, restore, migrate, fix) look at, whatever the header's layout.
ALL_FOLDERS = (CLIENTS, LEASES, META, DATA, ACKS, INDEX, PAGES, BIG)

_HEX32 = r"[0-9a-f]{32}"
# versions: ASCII digits, at least 10 (zero-padded), more from 10**10 on; 19
# digits hold every 63-bit number, so a longer run is foreign (never int()ed)
_VERSION = r"([0-9]{10,19})"
_META = re.compile(rf"({_HEX32})\.{_VERSION}")
_DATA = re.compile(rf"({_HEX32})\.{_VERSION}\.([0-9a-f]{{16}})")
_ACK = re.compile(rf"({_HEX32})\.{_VERSION}\.({_HEX32})")
#: the highest path version: versions go to SQLite (64-bit signed integers).
MAX_VERSION = 2**63 - 1
# ASCII digits only (``\d`` would also take other scripts' digits); any count,
# so that the successor of a forged lease/999999999999999999 is still listed and
# parsed. parse_lease() also requires the canonical spelling and the range.
_LEASE = re.compile(r"[0-9]+")
#: the highest lease generation: SQLite (the observations) stores 64-bit signed
#: integers. A name above it is foreign. Only a planted name can get there.
MAX_LEASE_GENERATION = 2**63 - 1
_CLIENT = re.compile(_HEX32)
_CLAIM = re.compile(rf"([0-9]+)-({_HEX32})")


def new_client_id() -> str:
    """A fresh random client identity (the label is not an identity)."""
    return secrets.token_hex(16)


def _version(digits: str) -> int | None:
    """The version spelled ``digits`` (as matched by ``_VERSION``): None when it
    is out of range or not the one canonical spelling ``f"{v:010d}"`` (an
    ``00000000001`` would alias version 1's object under another name)."""
    version = int(digits)
    if not 1 <= version <= MAX_VERSION or digits != f"{version:010d}":
        return None
    return version


def meta_name(key: str, version: int) -> str:
    """Zero-padded to 10 digits; more digits (no padding) from ``10**10`` on."""
    return f"{META}/{key}.{version:010d}"


def data_name(key: str, version: int) -> str:
    """A fresh, never reused payload name for this version."""
    return f"{DATA}/{key}.{version:010d}.{secrets.token_hex(8)}"


def ack_name(key: str, version: int, client: str) -> str:
    return f"{ACKS}/{key}.{version:010d}.{client}"


def lease_name(generation: int) -> str:
    """The object of lease ``generation``: zero-padded to 12 digits, more
    digits (no padding) from ``10**12`` on."""
    return f"{LEASES}/{generation:012d}"


def lease_claim_name(generation: int, token: str) -> str:
    """The claim of lease ``generation`` by the contender whose record token
    is ``token`` (32 lower-case hex characters): a name no other writer takes."""
    return f"{lease_name(generation)}-{token}"


def client_name(client: str) -> str:
    return f"{CLIENTS}/{client}"


@dataclass(frozen=True)
class VersionRef:
    """A parsed ``<key>.<version>[.<suffix>]`` relay name."""

    name: str
    key: str
    version: int
    suffix: str = ""


def _parse(pattern: re.Pattern[str], name: str) -> VersionRef | None:
    match = pattern.fullmatch(name.rpartition("/")[2])
    if match is None:
        return None
    version = _version(match[2])
    if version is None:
        return None
    return VersionRef(name, match[1], version, match[3] if pattern.groups > 2 else "")


def parse_meta(name: str) -> VersionRef | None:
    """``meta/<key>.<version>``; None for a foreign name (callers skip it)."""
    return _parse(_META, name)


def parse_data(name: str) -> VersionRef | None:
    """``data/<key>.<version>.<random>``; None for a foreign name."""
    return _parse(_DATA, name)


def parse_ack(name: str) -> VersionRef | None:
    """``acks/<key>.<version>.<client>``; None for a foreign name."""
    return _parse(_ACK, name)


def parse_lease(name: str) -> int | None:
    """The generation of a listed lease name; None when the name is foreign.

    A generation name is what :func:`lease_name` writes for a generation from 1
    to :data:`MAX_LEASE_GENERATION`: decimal digits of any count, in the one
    canonical spelling (``000000000007``, ``1000000000000``; neither ``7`` nor
    ``0001000000000000``, which would alias another name).
    """
    base = name.rpartition("/")[2]
    if not _LEASE.fullmatch(base):
        return None
    return _generation(base)


def _generation(digits: str) -> int | None:
    """``digits`` as a lease generation when it is one's canonical spelling."""
    if len(digits) > 19:  # 19 digits hold every 63-bit number
        return None
    generation = int(digits)
    if not 1 <= generation <= MAX_LEASE_GENERATION or digits != f"{generation:012d}":
        return None
    return generation


def parse_lease_claim(name: str) -> tuple[int, str] | None:
    """The generation and token of a listed claim name
    (:func:`lease_claim_name`); None when the name is not one."""
    match = _CLAIM.fullmatch(name.rpartition("/")[2])
    if match is None:
        return None
    generation = _generation(match[1])
    return None if generation is None else (generation, match[2])


def parse_client(name: str) -> str | None:
    base = name.rpartition("/")[2]
    return base if _CLIENT.fullmatch(base) else None
