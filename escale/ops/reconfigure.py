"""Pointing a configuration section at another relay or layout (for ``escalectl migrate``).

Only the section's relay keys change (protocol, address, folder, port, user,
credentials and TLS/SSH options); every other line of the file, comments
included, stays as it was. The new text is parsed in memory before anything
is done, and the relay it describes is the one the repository is copied to:
what is copied and what the file says afterwards cannot differ.

The file is rewritten atomically (temporary file in the same folder, flushed,
renamed over the old one), after a copy of the old file is kept as
``FILE.bak-<UTC timestamp>`` with the same permissions.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass

from escale.config import load_config, parse_address, parse_config
from escale.config.ini import Entry, IniFile, Section, read_ini
from escale.config.values import ValueProblem, parse_bool
from escale.errors import ConfigError, UsageError
from escale.relay import RelaySpec

#: The keys that say where a relay is and how to log in to it.
RELAY_KEYS = (
    "protocol", "host address", "host directory", "port", "username", "password", "verify ssl",
    "ssl version", "certificate", "keyfile", "ca file", "known hosts", "ssh key", "rclone binary",
    "rclone config", "timeout",
)
#: Relay keys whose value may be a path relative to its configuration file.
_PATH_KEYS = ("host directory", "password", "certificate", "keyfile", "ca file", "known hosts", "ssh key",
              "rclone binary", "rclone config")
#: Relay keys whose value is a boolean or a file (a path relative to its configuration file).
_BOOL_OR_PATH_KEYS = ("verify ssl",)
#: Keys an address replaces.
_ADDRESS_KEYS = ("protocol", "host address", "host directory", "port")


@dataclass(frozen=True)
class Relocation:
    """The planned change of one section: old and new file text, and the new relay."""

    path: str
    section: str
    old_text: str
    new_text: str
    spec: RelaySpec


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the configuration file: {exc}", path=path) from None


def _section(ini: IniFile, name: str) -> Section:
    for section in ini.sections:
        if section.name == name:
            return section
    known = ", ".join(s.name for s in ini.sections) or "none"
    raise ConfigError(f"no section [{name}] (sections: {known})", path=ini.path)


def _rewrite(text: str, section: Section, drop: set[str], add: list[tuple[str, str]]) -> str:
    """``text`` with the section's lines for keys ``drop`` removed and ``add``
    written after its last key line."""
    gone = {e.line for key, e in section.entries.items() if key in drop}
    after = max((e.line for e in section.entries.values()), default=section.line)
    out: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if number not in gone:
            out.append(line)
        if number == after:
            out.extend(f"{key} = {value}" for key, value in add)
    return "\n".join(out) + "\n"


def _same_place(a: RelaySpec, b: RelaySpec) -> bool:
    return (a.protocol, a.host, a.port, a.directory.rstrip("/"), a.rclone_remote) == (
        b.protocol, b.host, b.port, b.directory.rstrip("/"), b.rclone_remote)


def plan_relocation(path: str, section: str, destination: str) -> Relocation:
    """Plan pointing ``section`` of configuration file ``path`` at ``destination``.

    ``destination`` is a relay address (``protocol://[user@]host[:port]/path``,
    or a short form read with the section's protocol) or the path of another
    configuration file holding a section of the same name, whose relay keys are
    taken. Raises ConfigError (naming the file, section and key) when the
    result would not be a valid configuration or cannot describe that relay,
    UsageError when the destination is the section's current relay. Reads only.
    """
    path = os.path.realpath(path)
    old_text = _read(path)
    ini = read_ini(old_text, path)
    current = _section(ini, section)
    old_spec = parse_config(old_text, path).client(section).relay
    wanted: RelaySpec | None
    if os.path.isfile(destination):
        new_text, wanted = _from_config_file(old_text, current, destination)
    else:
        new_text, wanted = _from_address(old_text, current, destination, old_spec.protocol, path)
    try:
        spec = parse_config(new_text, path).client(section).relay
    except ConfigError as exc:
        raise ConfigError(f"the destination does not fit this section: {exc}", path=path, section=section) from None
    if wanted is not None and spec != wanted:
        raise ConfigError(
            f"the relay settings of [{section}] in {destination} cannot be carried over as written "
            "(relative paths, or keys set before the first section here); write them out in full",
            path=path, section=section)
    if _same_place(spec, old_spec):
        raise UsageError(f"[{section}] already uses relay {spec.describe()}; nothing to migrate")
    return Relocation(path, section, old_text, new_text, spec)


def _from_address(text: str, section: Section, destination: str, protocol: str,
                  path: str) -> tuple[str, RelaySpec | None]:
    try:
        address = parse_address(destination, protocol)
    except ValueProblem as exc:
        raise ConfigError(f"destination relay address {destination!r}: {exc}", path=path,
                          section=section.name) from None
    drop = set(_ADDRESS_KEYS)
    if address.username is not None:
        drop.add("username")
    add = [("protocol", address.protocol or protocol), ("host address", destination.strip())]
    return _rewrite(text, section, drop, add), None


def _is_bool(value: str) -> bool:
    try:
        parse_bool(value)
    except ValueProblem:
        return False
    return True


def _from_config_file(text: str, section: Section, other: str) -> tuple[str, RelaySpec]:
    other = os.path.abspath(other)
    wanted = load_config(other).client(section.name).relay
    theirs = read_ini(_read(other), other)
    entries: dict[str, Entry] = {k: e for k, e in theirs.globals.items() if k in RELAY_KEYS}
    entries.update({k: e for k, e in _section(theirs, section.name).entries.items() if k in RELAY_KEYS})
    base = os.path.dirname(other)
    add = []
    for key, entry in entries.items():
        value = entry.value
        if (key in _PATH_KEYS or (key in _BOOL_OR_PATH_KEYS and not _is_bool(value))) and value \
                and not value.startswith(("/", "~")):
            candidate = os.path.join(base, value)
            if os.path.exists(candidate):
                value = candidate
        add.append((entry.written, value))
    return _rewrite(text, section, set(RELAY_KEYS), add), wanted


#: The keys that choose the layout (``compact`` is the alias of ``index``).
LAYOUT_KEYS = ("index", "compact")


def plan_layout_change(path: str, section: str, layout_name: str, *, after: Relocation | None = None) -> Relocation:
    """Plan setting ``index = yes`` (``layout_name`` "index") or ``index = no``
    in ``section`` of configuration file ``path``, on top of the relocation
    ``after`` when given (a move and a conversion in one rewrite). Every other
    line stays. Raises ConfigError when the result is not a valid
    configuration. Reads only."""
    path = os.path.realpath(path)
    old_text = after.old_text if after is not None else _read(path)
    text = after.new_text if after is not None else old_text
    current = _section(read_ini(text, path), section)
    new_text = _rewrite(text, current, set(LAYOUT_KEYS), [("index", "yes" if layout_name == "index" else "no")])
    try:
        spec = parse_config(new_text, path).client(section).relay
    except ConfigError as exc:
        raise ConfigError(f"cannot set the layout of this section: {exc}", path=path, section=section) from None
    return Relocation(path, section, old_text, new_text, spec)


def backup_name(path: str) -> str:
    """``path.bak-<UTC timestamp>``, with a counter if that name is taken."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"{path}.bak-{stamp}"
    counter = 1
    while os.path.exists(name):
        name = f"{path}.bak-{stamp}-{counter}"
        counter += 1
    return name


def apply_relocation(plan: Relocation) -> str:
    """Write ``plan.new_text`` over the file atomically; return the backup's path.

    Raises ConfigError when the file changed since the plan was made, or when
    the backup or the new file cannot be written; the file is unchanged then.
    """
    path = plan.path
    if _read(path) != plan.old_text:
        raise ConfigError("the file changed during the migration; not rewritten", path=path)
    backup = backup_name(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        shutil.copy2(path, backup)
        mode = stat.S_IMODE(os.stat(path).st_mode)
        fd, temp = tempfile.mkstemp(dir=folder, prefix=".escale.conf.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(f"cannot back up or rewrite the configuration file: {exc.strerror or exc}",
                          path=path) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(plan.new_text)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise ConfigError(f"cannot rewrite the configuration file: {exc.strerror or exc}", path=path) from None
    return backup
