"""Opening a client's repository: one rule for the sync pass and ``escalectl fix``.

A client attaches to the repository on its relay (header, encryption,
identity, layout, checksum algorithm) and works on it through the layout's
repository class. Two callers need that, with one difference:

* the sync pass (:class:`~escale.sync.client.SyncClient`) creates a repository
  only where none exists *and* its state never synced with one, and refuses a
  repository that is not the one it knows (``RepositoryGone``);
* ``escalectl fix`` rebuilds a lost header on purpose (``rebuild``): it keeps the
  identity this client knows, so that the other clients recognise it.

Either way the client's state database is bound to the identity it attached
to, and the repository's checksum algorithm wins over the configured one (one
algorithm per repository, so that every client compares like with like).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from escale.config.settings import ClientSettings
from escale.crypto.keys import KdfParams, KeySecret
from escale.errors import ProtocolError
from escale.protocol.header import Attached, attach_repository
from escale.protocol.index.repository import IndexRepository
from escale.protocol.repository import Repository
from escale.relay import Relay
from escale.sync.state import StateDB


@dataclass(frozen=True)
class OpenedRepository:
    """An attached repository: its protocol object, the header as read, and
    the checksum algorithm in force (None: ``checksum = no`` here)."""

    repo: Repository
    attached: Attached
    checksum: str | None


def wanted_layout(settings: ClientSettings) -> str:
    """The layout a client's configuration asks for."""
    return "index" if settings.index else "placeholder"


def open_client_repository(
    settings: ClientSettings,
    db: StateDB,
    relay: Relay,
    *,
    spool_dir: str,
    secret: Callable[[], KeySecret] | None,
    kdf: KdfParams | None = None,
    create: bool = True,
    rebuild: bool = False,
    on_step: Callable[[str], None] | None = None,
    pusher_label: str | None = None,
) -> OpenedRepository:
    """Attach client ``settings`` (state ``db``) to the repository on ``relay``.

    Without ``rebuild``: a missing header is created only when ``create`` is
    true and the state never synced (RepositoryGone otherwise, nothing
    written); a header of another identity raises RepositoryGone. With
    ``rebuild``: a missing header is created with the identity the state
    knows. A header in another layout than the configuration's raises
    ProtocolError naming both. The spool folder is created (0700); the
    repository's layout folders are created by :meth:`Repository.prepare`
    (the index layout makes none ahead). A repository created here is told
    so (:meth:`Repository.created_now`).
    Raises as :func:`attach_repository` does otherwise. ``pusher_label``
    names this client in the versions it pushes (default: its label).
    """
    known = db.repository_identity()
    if rebuild:
        attached = attach_repository(relay, encryption=settings.encryption, secret=secret, kdf=kdf,
                                     identity=known, checksum=settings.checksum or "sha256",
                                     layout_name=wanted_layout(settings), any_layout=True)
    else:
        if known is None and db.has_history():
            known = ""  # synced before identities were recorded: any header, but one must be there
        attached = attach_repository(relay, encryption=settings.encryption, secret=secret, kdf=kdf, known=known,
                                     create=create and known is None, checksum=settings.checksum or "sha256",
                                     layout_name=wanted_layout(settings), any_layout=True)
    if attached.layout != wanted_layout(settings):
        raise ProtocolError(
            f"[{settings.name}] relay {relay.describe()} holds a repository in the {attached.layout} layout but "
            f"this client has index = {'yes' if settings.index else 'no'}; set index = "
            f"{'yes' if attached.layout == 'index' else 'no'} in [{settings.name}] to use it (it was probably "
            f"converted by `escalectl migrate --layout {attached.layout}`), or convert it back with "
            f"`escalectl migrate -r {settings.name} --layout {wanted_layout(settings)}`", name="escale.repo")
    if not known:
        db.bind_repository(attached.identity)
    checksum = settings.checksum
    if checksum is not None and attached.checksum is not None:
        checksum = attached.checksum
    os.makedirs(spool_dir, mode=0o700, exist_ok=True)
    layout_class: type[Repository] = IndexRepository if attached.layout == "index" else Repository
    repo = layout_class(relay, attached.sealer, client_id=db.client_id(), label=settings.label,
                        receives=settings.receives, mode=settings.mode, checksum=checksum,
                        puller_count=settings.puller_count, disk_quota=settings.disk_quota,
                        meta_cache=db.meta_cache(), spool_dir=spool_dir, on_step=on_step,
                        pusher_label=pusher_label)
    repo.identity = attached.identity
    if isinstance(repo, IndexRepository):
        repo.maxpagesize = max(64 * 1024, settings.maxpagesize)
        repo.big_threshold = min(repo.big_threshold, repo.maxpagesize // 4)
    repo.prepare()
    if attached.created and not rebuild:
        repo.created_now()
    return OpenedRepository(repo, attached, checksum)
