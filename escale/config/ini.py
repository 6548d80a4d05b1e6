"""The line reader: configuration text -> global entries and sections, nothing converted.

The syntax is deliberately small, so that every line means one thing:

* blank lines, and lines whose first non-blank character is ``#`` or ``;``, are ignored
  (there are no comments at the end of a value line: ``#`` may be part of a password);
* ``[name]`` opens a section (one client); blanks around the name are dropped;
* ``key = value`` (or ``key: value``; the first ``=`` or ``:`` separates, key names
  contain neither) sets a key; blanks around key and value are dropped;
* no interpolation, no quoting, no continuation lines (an indented line is a line
  like any other).

Every fault raises :class:`~escale.errors.ConfigError` naming the file, the section
and the key, with the line number in the message: a malformed line, an unknown key
(with the closest known key), a global-only key inside a section, a duplicate key in
one section (two aliases of one key count as a duplicate), a duplicate or invalid
section name. Values are never quoted in these messages.

Hand-written, no library: configparser reads indented lines as continuations and ``%``
as interpolation, and knows no key table to name the line of an unknown or aliased key.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

from escale.config.keys import closest_key, lookup, normalize
from escale.errors import ConfigError


@dataclass(frozen=True)
class Entry:
    """One ``key = value`` line.

    ``key`` is the canonical key name, ``written`` the name as the file spells it
    (normalised: lower case, single blanks), ``section`` None for a global line.
    """

    key: str
    written: str
    value: str
    line: int
    section: str | None


@dataclass
class Section:
    """One ``[name]`` block: its entries by canonical key, in file order."""

    name: str
    line: int
    entries: dict[str, Entry] = field(default_factory=dict)


@dataclass
class IniFile:
    """A whole file: the lines before the first section, then the sections in order."""

    path: str
    globals: dict[str, Entry] = field(default_factory=dict)
    sections: list[Section] = field(default_factory=list)


def section_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a section name, or None when it can.

    A section name becomes the client's name in logs and in its state folder's
    name: it must be non-empty, not ``.`` or ``..``, and hold no ``/``, ``\\`` or
    control character.
    """
    if not name:
        return "empty section name"
    if name in (".", ".."):
        return f"section name {name!r} is not allowed"
    if "/" in name or "\\" in name:
        return "a section name cannot contain '/' or '\\'"
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        return "a section name cannot contain control characters"
    return None


def read_ini(text: str, path: str) -> IniFile:
    """Split ``text`` (the content of file ``path``) into global entries and sections.

    Keys are checked against the key table here; values are not converted. Raises
    ConfigError on the first fault; nothing is returned in that case.
    """
    result = IniFile(path)
    current: Section | None = None
    seen_sections: dict[str, Section] = {}
    if text.startswith("\ufeff"):
        text = text[1:]
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        section_name = current.name if current else None
        if line.startswith("["):
            if not line.endswith("]"):
                raise ConfigError(
                    f"malformed section header on line {number} (expected [name])",
                    path=path,
                    section=section_name,
                )
            name = line[1:-1].strip()
            problem = section_name_problem(name)
            if problem:
                raise ConfigError(f"{problem} (line {number})", path=path, section=name or None)
            previous = seen_sections.get(name.casefold())
            if previous is not None:
                raise ConfigError(
                    f"duplicate section on line {number} (first on line {previous.line};"
                    " section names must differ, ignoring case)",
                    path=path,
                    section=name,
                )
            current = Section(name, number)
            seen_sections[name.casefold()] = current
            result.sections.append(current)
            continue
        cut = min((i for i in (line.find("="), line.find(":")) if i >= 0), default=-1)
        if cut < 0:
            raise ConfigError(
                f"malformed line {number}: expected 'key = value', '[section]' or a # comment",
                path=path,
                section=section_name,
            )
        written = normalize(line[:cut])
        value = line[cut + 1 :].strip()
        if not written:
            raise ConfigError(f"malformed line {number}: no key before the '{line[cut]}'",
                              path=path, section=section_name)
        key = lookup(written)
        if key is None:
            raise ConfigError(
                f"unknown key on line {number}; did you mean '{closest_key(written)}'?",
                path=path,
                section=section_name,
                key=written,
            )
        if key.global_only and current is not None:
            raise ConfigError(
                f"global-only key on line {number}: move it before the first section",
                path=path,
                section=section_name,
                key=written,
            )
        entries = current.entries if current is not None else result.globals
        before = entries.get(key.name)
        if before is not None:
            also = "" if before.written == written else f" as '{before.written}'"
            raise ConfigError(
                f"duplicate key on line {number} (already set{also} on line {before.line})",
                path=path,
                section=section_name,
                key=written,
            )
        entries[key.name] = Entry(key.name, written, value, number, section_name)
    return result
