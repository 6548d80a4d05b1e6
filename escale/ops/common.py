"""What the whole-repository operations share: relays, object order, the lease.

Every operation works on *relay objects*: opaque byte strings under relay names,
copied sealed, exactly as stored. This module lists them, sorts them in the
protocol's write order, tells whether a relay already holds a repository, and
holds a relay's lease for the duration of an operation (renewed from a second
connection).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

from escale.config.settings import ClientSettings
from escale.crypto.keys import KeySecret, load_secret
from escale.errors import OperationError, RelayNotFound
from escale.protocol import layout
from escale.protocol.header import attach_repository
from escale.protocol.lease import Lease, LeaseManager
from escale.protocol.lease_wait import acquire_with_wait
from escale.protocol.sealer import Sealer
from escale.relay import Relay, RelaySpec, make_relay
from escale.relay.base import Entry
from escale.relay.retry import RetryingRelay

log = logging.getLogger(__name__)

#: ``on_progress(done, total)``: called after each object (or file) an operation handles.
Progress = Callable[[int, int], None]

#: Write order of the top-level parts of a repository: data before the metadata
#: that points to it (payloads, pages and big objects before placeholders and
#: index documents), the header last (a half-written relay is not a repository).
_RANK = {layout.DATA: 0, layout.PAGES: 0, layout.BIG: 0, layout.META: 1, layout.INDEX: 1, layout.ACKS: 2,
         layout.CLIENTS: 3, layout.LEASES: 4}
#: Folders holding metadata that points to content (listed first by a backup
#: without the lease, so that a commit meanwhile adds at worst an orphan).
METADATA_FOLDERS = (layout.META, layout.INDEX)
#: Folders whose objects a lease holder alone removes (content and metadata).
LEASED_FOLDERS = (layout.DATA, layout.META, layout.INDEX, layout.PAGES, layout.BIG)
_FOREIGN_RANK = 5
_HEADER_RANK = 9


def top_folder(name: str) -> str:
    """The top-level folder of relay name ``name`` ("" for a top-level object)."""
    return name.partition("/")[0] if "/" in name else ""


def protocol_rank(name: str) -> int:
    """Where relay object ``name`` comes in the write order (lower first)."""
    if name == layout.HEADER:
        return _HEADER_RANK
    return _RANK.get(top_folder(name), _FOREIGN_RANK)


def in_protocol_order(names: list[str]) -> list[str]:
    """``names`` sorted for writing: content (payloads, pages, big objects),
    metadata (placeholders, index documents), acknowledgements, registrations
    (and index acknowledgement records), leases, anything else, and the header
    ``escale.repo`` last."""
    return sorted(names, key=lambda n: (protocol_rank(n), n))


def no_progress(done: int, total: int) -> None:
    """The default progress callback: nothing."""


def open_relay(spec: RelaySpec, *, attempts: int = 3) -> Relay:
    """An open relay for ``spec`` behind the retry wrapper.

    Raises RelayConnectionError when the server cannot be reached (after the
    retries), RelayPermissionDenied on bad credentials; nothing is left open then.
    """
    relay = RetryingRelay(make_relay(spec), attempts=attempts)
    try:
        relay.open()
    except BaseException:
        relay.close()
        raise
    return relay


def list_objects(relay: Relay, *, skip_leases: bool = False) -> list[Entry]:
    """Every object of the repository folder (not folders), in protocol order.

    Temporary names are never listed (the backend hides them). With
    ``skip_leases``, the ``lease/`` objects are left out.
    """
    entries = [e for e in relay.walk("") if not (skip_leases and top_folder(e.name) == layout.LEASES)]
    order = {name: i for i, name in enumerate(in_protocol_order([e.name for e in entries]))}
    return sorted(entries, key=lambda e: order[e.name])


def repository_objects(relay: Relay) -> list[str]:
    """Names of the escale objects on ``relay``: the header and whatever lies in
    the folders of either layout (a partial repository counts). Foreign files
    are not counted: a repository folder may sit among other files."""
    found = [layout.HEADER] if relay.exists(layout.HEADER) else []
    for folder in layout.ALL_FOLDERS:
        try:
            found.extend(e.name for e in relay.walk(folder))
        except RelayNotFound:
            continue
    return found


def require_repository(relay: Relay) -> None:
    """Raise OperationError unless ``relay`` holds a repository header."""
    if not relay.exists(layout.HEADER):
        raise OperationError(f"relay {relay.describe()} holds no escale repository (no {layout.HEADER})")


def secret_loader(settings: ClientSettings) -> Callable[[], KeySecret] | None:
    """The lazy secret of a client (None when it does not encrypt)."""
    if not settings.encryption:
        return None
    key_file, passphrase = settings.key_file, settings.passphrase
    return lambda: load_secret(key_file, passphrase)


def existing_sealer(relay: Relay, settings: ClientSettings) -> Sealer:
    """The sealer of the repository already on ``relay``; never creates a header.

    Either layout is accepted (operations on whole repositories work on both).
    Raises OperationError when there is no repository, ProtocolError when its
    encryption differs from the client's, WrongKeyError for a wrong key.
    """
    require_repository(relay)
    return attach_repository(relay, encryption=settings.encryption, secret=secret_loader(settings),
                             create=False, any_layout=True).sealer


@contextmanager
def held_lease(
    relay: Relay,
    spec: RelaySpec,
    sealer: Sealer,
    *,
    operation: str,
    client_id: str,
    label: str,
    timeout: float,
    wait: float,
) -> Iterator[Lease]:
    """Hold the lease of the repository on ``relay`` for ``operation``.

    The lease is renewed every third of ``timeout`` from a second connection
    opened on ``spec``; call :meth:`Lease.check` between steps to stop at once if
    it is lost. While another client holds it, tries again for up to ``wait``
    seconds (a lease left by a crashed client is taken over once it has been
    seen unchanged for ``timeout``); then raises LeaseBusy. The lease is
    released on exit, whatever happened.
    """
    manager = LeaseManager(relay, sealer, client_id=client_id, label=label, timeout=timeout)
    lease = acquire_with_wait(manager, operation, wait=wait, on_wait=lambda exc: log.info("%s; waiting", exc))
    heartbeat: Relay | None = None
    try:
        heartbeat = open_relay(spec)
        lease.start_heartbeat(heartbeat)
        log.info("holding the lease of %s (generation %d) for %s", relay.describe(), lease.generation,
                 operation)
        yield lease
    finally:
        lease.release()
        if heartbeat is not None:
            heartbeat.close()


def escalectl_lease(
    relay: Relay, settings: ClientSettings, sealer: Sealer, operation: str, lease_wait: float | None
) -> AbstractContextManager[Lease]:
    """:func:`held_lease` for ``escalectl OPERATION`` on the relay of client
    ``settings``: a new client id, the label ``"LABEL (escalectl OPERATION)"``,
    the client's lock timeout, and ``lease_wait`` seconds of waiting for a busy
    lease (None: the lock timeout plus 10 s). Raises as held_lease does."""
    return held_lease(
        relay, settings.relay, sealer, operation=operation, client_id=layout.new_client_id(),
        label=f"{settings.label} (escalectl {operation})", timeout=settings.lock_timeout,
        wait=settings.lock_timeout + 10 if lease_wait is None else lease_wait)  # fmt: skip


@dataclass(frozen=True)
class ObjectInfo:
    """One copied relay object: its name, size in bytes and SHA-256 (hex)."""

    name: str
    size: int
    sha256: str
