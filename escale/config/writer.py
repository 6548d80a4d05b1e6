"""Adding a client section to a configuration file, atomically.

Used by ``escale -i`` and ``escalectl migrate``. The file is rewritten whole into a
temporary file in the same folder, flushed to disk, then renamed over the old one:
a reader sees the old file or the new one, never a mix; a crash leaves the old
file (and at worst a stray ``.escale.conf.*.tmp`` file) in place.

Hand-written, no library: configparser loses every comment when it writes a file
back, and configobj/tomlkit keep comments but read and write other syntaxes (quoting).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import unicodedata
from collections.abc import Mapping

from escale.config.ini import read_ini, section_name_problem
from escale.config.keys import closest_key, lookup
from escale.errors import ConfigError

NEW_FILE_MODE = 0o600


def write_client_section(
    path: str, section_name: str, values: Mapping[str, str], *, replace: bool = False
) -> None:
    """Add section ``[section_name]`` holding ``values`` (key -> value) to file ``path``.

    The file is created (mode 0600, parent folders 0700) when missing; otherwise
    the section is appended after a blank line and the file keeps its mode. If a
    section of that name (ignoring case) exists, ConfigError is raised and nothing
    is written, unless ``replace`` is true: then the old section's header and key
    lines are replaced in place (comments after its last key line are kept).

    Keys must be client keys of the key table; values must be single lines. The
    resulting file must still read as a valid configuration file (syntax and keys;
    values are not converted here: load the file to check them). Raises
    ConfigError for any of these, or when the file cannot be read or written; on
    error the file is unchanged. Not safe against two concurrent writers (the last
    rename wins). Values never appear in error messages.
    """
    target = os.path.realpath(os.path.expanduser(path))
    problem = section_name_problem(section_name)
    if problem:
        raise ConfigError(problem, path=target, section=section_name or None)
    block = [f"[{section_name}]"]
    for name, value in values.items():
        key = lookup(name)
        if key is None:
            raise ConfigError(f"unknown key; did you mean '{closest_key(name)}'?", path=target,
                              section=section_name, key=name)
        if key.global_only:
            raise ConfigError("global-only key cannot go in a section", path=target,
                              section=section_name, key=name)
        if any(unicodedata.category(ch).startswith("C") for ch in value):
            raise ConfigError("value holds a line break or control character", path=target,
                              section=section_name, key=name)
        block.append(f"{' '.join(name.split())} = {value.strip()}")

    old_text: str | None
    try:
        with open(target, encoding="utf-8") as handle:
            old_text = handle.read()
    except FileNotFoundError:
        old_text = None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the configuration file: {exc}", path=target) from None

    new_text = _with_section(old_text or "", section_name, block, replace, target)
    read_ini(new_text, target)  # the result must stay a valid file
    _atomic_write(target, new_text, existed=old_text is not None)


def _with_section(text: str, name: str, block: list[str], replace: bool, path: str) -> str:
    lines = text.splitlines()
    start = next(
        (
            i
            for i, line in enumerate(lines)
            if line.strip().startswith("[")
            and line.strip().endswith("]")
            and line.strip()[1:-1].strip().casefold() == name.casefold()
        ),
        None,
    )
    if start is None:
        while lines and not lines[-1].strip():
            lines.pop()
        if lines:
            lines.append("")
        return "\n".join([*lines, *block]) + "\n"
    if not replace:
        raise ConfigError("section already exists; not replaced", path=path, section=name)
    end = start + 1
    last_key = start
    while end < len(lines) and not lines[end].strip().startswith("["):
        stripped = lines[end].strip()
        if stripped and stripped[0] not in "#;":
            last_key = end
        end += 1
    return "\n".join([*lines[:start], *block, *lines[last_key + 1 :]]) + "\n"


def _atomic_write(target: str, text: str, *, existed: bool) -> None:
    folder = os.path.dirname(target)
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        mode = stat.S_IMODE(os.stat(target).st_mode) if existed else NEW_FILE_MODE
        fd, temp = tempfile.mkstemp(dir=folder, prefix=".escale.conf.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(f"cannot write the configuration file: {exc.strerror or exc}", path=target) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise ConfigError(f"cannot write the configuration file: {exc.strerror or exc}", path=target) from None
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
