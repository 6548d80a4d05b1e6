"""``escalectl migrate``: move a relay repository to another relay.

Steps, and what a failure at each point leaves:

1. plan the new configuration (:mod:`escale.ops.reconfigure`): a bad address
   or a section that does not exist fails here, nothing touched;
2. open the destination: unreachable or refused, it fails here, nothing
   touched; it must hold no repository unless ``force`` (TargetNotEmpty);
3. open the source repository (the key is needed only to read and write the
   lease) and take its lease, operation ``migrate``, renewed from a second
   connection, so that no client commits while the copy runs;
4. copy every object sealed, name and bytes unchanged, in protocol order
   (payloads, placeholders, acknowledgements, registrations, the header last),
   each one read back from the destination and compared by size and SHA-256;
   a released lease record continues the lease numbering on the destination.
   A failure here leaves the source untouched and a destination without header;
5. rewrite the configuration file atomically, keeping the old one as
   ``FILE.bak-<timestamp>``.

The source repository is left as it was (its lease released): remove it by
hand once every machine uses the new relay.

With a layout (``escalectl migrate --layout index|placeholder``) the
repository is converted in place instead (:mod:`escale.ops.convert`), or,
with a destination too, copied first and the copy converted (the source stays
untouched); the configuration file then also gets ``index = yes`` or
``index = no``, in the same atomic rewrite. Running it again after an interruption finishes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from escale.config.settings import ClientSettings, Config
from escale.errors import OperationError, TargetNotEmpty, UsageError
from escale.ops.common import (
    Progress,
    existing_sealer,
    held_lease,
    list_objects,
    no_progress,
    open_relay,
    repository_objects,
)
from escale.ops.convert import ConvertReport, convert_layout
from escale.ops.copy import copy_object
from escale.ops.reconfigure import Relocation, apply_relocation, plan_layout_change, plan_relocation
from escale.protocol import layout
from escale.protocol.lease import write_released
from escale.protocol.objects import LeaseRecord
from escale.protocol.sealer import Sealer
from escale.relay import Relay, RelaySpec

log = logging.getLogger(__name__)


@dataclass
class MigrateReport:
    """What a migration did."""

    section: str
    source: str
    destination: str
    objects: int
    bytes: int
    config: str = ""
    config_backup: str = ""
    #: the conversion, when a layout was asked for
    conversion: ConvertReport | None = None


def copy_repository(
    settings: ClientSettings,
    destination: RelaySpec,
    *,
    force: bool = False,
    lease_wait: float | None = None,
    on_progress: Progress = no_progress,
) -> MigrateReport:
    """Copy the repository of ``settings.relay`` to ``destination``, verified.

    Raises RelayError when either relay fails (RelayConnectionError: cannot be
    reached), TargetNotEmpty when the destination holds a repository and
    ``force`` is not set, OperationError when the source holds none or a copy
    reads back different, LeaseBusy/LeaseLost for the source's lease. The
    source is never modified (apart from its lease objects).
    """
    target = open_relay(destination, attempts=1)
    try:
        present = repository_objects(target)
        if present and not force:
            raise TargetNotEmpty(
                f"destination relay {target.describe()} already holds an escale repository ({len(present)} "
                f"objects, e.g. {present[0]}); use --force to copy over it")
        source = open_relay(settings.relay)
        try:
            sealer = existing_sealer(source, settings)
            with held_lease(source, settings.relay, sealer, operation="migrate",
                            client_id=layout.new_client_id(), label=f"{settings.label} (escalectl migrate)",
                            timeout=settings.lock_timeout,
                            wait=settings.lock_timeout + 10 if lease_wait is None else lease_wait) as lease:
                entries = list_objects(source, skip_leases=True)
                total = len(entries)
                copied = 0
                on_progress(0, total)
                for done, entry in enumerate(entries, start=1):
                    lease.check()
                    if entry.name == layout.HEADER:
                        # continue the lease numbering before the header makes it a repository
                        _leave_released_lease(target, sealer, lease.record)
                    copied += copy_object(source, target, entry.name).size
                    on_progress(done, total)
                lease.check()
                _check_complete(source, target, [e.name for e in entries])
            return MigrateReport(settings.name, source.describe(), target.describe(), total, copied)
        finally:
            source.close()
    finally:
        target.close()


def _leave_released_lease(target: Relay, sealer: Sealer, record: LeaseRecord) -> None:
    """Write a released copy of our lease ``record`` on ``target``, so that the
    first lease taken there continues the source's generations."""
    write_released(target, sealer, record, reissue=True)


def _check_complete(source: Relay, target: Relay, names: list[str]) -> None:
    """Every copied object is listed on the destination with the source's size."""
    sizes = {e.name: e.size for e in target.walk("")}
    for entry in source.walk(""):
        if entry.name in names and sizes.get(entry.name) != entry.size:
            raise OperationError(f"relay object {entry.name} is missing or differs on {target.describe()} "
                                 "after the copy")


def migrate(
    config: Config,
    section: str,
    destination: str,
    *,
    force: bool = False,
    lease_wait: float | None = None,
    on_progress: Progress = no_progress,
) -> MigrateReport:
    """Move the repository of ``section`` to ``destination`` and rewrite the file.

    ``destination`` is a relay address or another configuration file (see
    :func:`escale.ops.reconfigure.plan_relocation`). The configuration file is
    rewritten only after every object was copied and verified. Raises what
    :func:`plan_relocation`, :func:`copy_repository` and
    :func:`apply_relocation` raise.
    """
    settings = config.client(section)
    plan: Relocation = plan_relocation(config.path, section, destination)
    log.info("migrating [%s] from %s to %s", section, settings.relay.describe(), plan.spec.describe())
    report = copy_repository(settings, plan.spec, force=force, lease_wait=lease_wait, on_progress=on_progress)
    report.config_backup = apply_relocation(plan)
    report.config = plan.path
    log.info("[%s] now uses %s; previous configuration kept as %s", section, plan.spec.describe(),
             report.config_backup)
    return report


def migrate_layout(
    config: Config,
    section: str,
    layout_name: str,
    destination: str | None = None,
    *,
    force: bool = False,
    lease_wait: float | None = None,
    on_progress: Progress = no_progress,
    on_step: Callable[[str], None] | None = None,
) -> MigrateReport:
    """Convert the repository of ``section`` to ``layout_name`` and rewrite the file.

    Without ``destination`` the repository is converted in place, under its
    lease (see :mod:`escale.ops.convert`). With one, it is first copied there
    (as :func:`migrate`; the source stays untouched) and the copy converted.
    The configuration file gets ``index = yes`` or ``no`` (and the new relay)
    only after the conversion was verified and switched. Raises UsageError for
    an unknown layout, or when the repository already has it and there is
    nothing to move; what :func:`migrate` and :func:`convert_layout` raise
    otherwise.
    """
    if layout_name not in ("index", "placeholder"):
        raise UsageError(f"unknown layout {layout_name!r} (choose index or placeholder)")
    settings = config.client(section)
    moved: Relocation | None = None
    if destination is not None:
        moved = plan_relocation(config.path, section, destination)
    plan = plan_layout_change(config.path, section, layout_name, after=moved)
    if moved is not None:
        log.info("migrating [%s] from %s to %s", section, settings.relay.describe(), moved.spec.describe())
        report = copy_repository(settings, moved.spec, force=force, lease_wait=lease_wait, on_progress=on_progress)
        settings = replace(settings, relay=moved.spec)
    else:
        report = MigrateReport(section, settings.relay.describe(), settings.relay.describe(), 0, 0)
    report.conversion = convert_layout(settings, layout_name, lease_wait=lease_wait, on_progress=on_progress,
                                       on_step=on_step or _no_step)
    report.config_backup = apply_relocation(plan)
    report.config = plan.path
    log.info("[%s] now uses the %s layout on %s; previous configuration kept as %s", section, layout_name,
             settings.relay.describe(), report.config_backup)
    return report


def _no_step(name: str) -> None:
    """No fault hook."""
