"""Value converters: one configuration string in, one typed value out.

Each converter is a pure function of the text (and, for paths, of the folder the
file lives in). A bad value raises :class:`ValueProblem`, whose message describes
the problem without quoting secrets; the parser adds the file, section, key and
line. Types never mix: a number key never reads ``1`` as "true", and a boolean key
never reads ``2`` as anything.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Iterator
from typing import Literal

from escale.config.settings import ENCRYPTION_ALGORITHMS, RECOMMENDED_ALGORITHM, Mode


class ValueProblem(ValueError):
    """A value cannot be converted; the message never contains a secret."""


TRUE_WORDS = frozenset({"yes", "true", "on", "1"})
FALSE_WORDS = frozenset({"no", "false", "off", "0"})


def parse_bool(text: str) -> bool:
    """``yes/no/true/false/on/off/1/0``, any case; anything else is a ValueProblem."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueProblem(f"expected a boolean (yes/no, true/false, on/off, 1/0), got {text.strip()!r}")


_INT = re.compile(r"\+?[0-9]+")
_DECIMAL = re.compile(r"\+?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def parse_int(text: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """A whole number written in ASCII digits, within ``[minimum, maximum]``."""
    word = text.strip()
    if not _INT.fullmatch(word):
        raise ValueProblem(f"expected a whole number, got {word!r}")
    value = int(word)
    if minimum is not None and value < minimum:
        raise ValueProblem(f"must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueProblem(f"must be at most {maximum}, got {value}")
    return value


def _shown(word: str, limit: int = 40) -> str:
    """``word`` quoted for a message, cut when very long."""
    return repr(word if len(word) <= limit else word[:limit] + "...")


def _format_seconds(value: float) -> str:
    """``604800`` -> ``604800 s (7 days)``; ``0.1`` -> ``0.1 s``."""
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if value >= size and value % size == 0:
            count = int(value // size)
            return f"{value:g} s ({count} {unit[:-1] if count == 1 else unit})"
    return f"{value:g} s"


def parse_seconds(text: str, *, minimum: float | None = None, maximum: float | None = None) -> float:
    """A positive, finite duration in seconds; decimals allowed (``0.5``); no unit, no exponent.

    With ``minimum``/``maximum``, the value must lie within them (inclusive);
    the message then states the range.
    """
    word = text.strip()
    if word.startswith("-"):
        raise ValueProblem(f"must be a positive number of seconds, got {_shown(word)}")
    if not _DECIMAL.fullmatch(word):
        raise ValueProblem(f"expected a number of seconds (digits, no unit, no exponent), got {_shown(word)}")
    value = float(word)
    if value <= 0:
        raise ValueProblem(f"must be a positive number of seconds, got {_shown(word)}")
    too_small = minimum is not None and value < minimum
    too_large = not math.isfinite(value) or (maximum is not None and value > maximum)
    if too_small or too_large:
        if minimum is not None and maximum is not None:
            span = f"between {_format_seconds(minimum)} and {_format_seconds(maximum)}"
        elif minimum is not None:
            span = f"at least {_format_seconds(minimum)}"
        elif maximum is not None:
            span = f"at most {_format_seconds(maximum)}"
        else:
            span = "a finite number of seconds"
        raise ValueProblem(f"must be {span}, got {_shown(word)}")
    return value


#: Inclusive ranges, in seconds, of the duration keys (``doc/configuration.rst``).
REFRESH_RANGE = (0.1, 7 * 86400.0)
LOCK_TIMEOUT_RANGE = (3.0, 86400.0)
TIMEOUT_RANGE = (0.1, 3600.0)


def parse_refresh(text: str) -> float:
    """``refresh``: seconds between two passes, within :data:`REFRESH_RANGE`."""
    return parse_seconds(text, minimum=REFRESH_RANGE[0], maximum=REFRESH_RANGE[1])


def parse_lock_timeout(text: str) -> float:
    """``lock timeout``: seconds before an unrenewed lease is stale, within
    :data:`LOCK_TIMEOUT_RANGE` (a holder renews every third of it, so a shorter
    one would let a live lease look stale over a slow link)."""
    return parse_seconds(text, minimum=LOCK_TIMEOUT_RANGE[0], maximum=LOCK_TIMEOUT_RANGE[1])


def parse_timeout(text: str) -> float:
    """``timeout``: the network timeout of relay operations, within :data:`TIMEOUT_RANGE`
    (well inside what sockets and the relay libraries accept)."""
    return parse_seconds(text, minimum=TIMEOUT_RANGE[0], maximum=TIMEOUT_RANGE[1])


#: Size units, lower-cased, to their factor in bytes. A bare number is megabytes.
SIZE_UNITS: dict[str, int] = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
DEFAULT_SIZE_UNIT = "MB"
_SIZE = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>[a-zA-Z]*)")


def parse_size(text: str) -> int:
    """A positive size in bytes from ``1.5GB``, ``512 KiB``, ``100`` (megabytes) ...

    Units are ``B``, ``KB``/``MB``/``GB``/``TB`` (powers of 1000) and
    ``KiB``/``MiB``/``GiB``/``TiB`` (powers of 1024), in any case; the result is
    rounded to the nearest byte and must be at least one byte.
    """
    word = text.strip()
    match = _SIZE.fullmatch(word)
    if not match:
        raise ValueProblem(f"expected a size such as 500MB, 1.5GB or 2GiB, got {word!r}")
    unit: str = match["unit"] or DEFAULT_SIZE_UNIT
    factor = SIZE_UNITS.get(unit.lower())
    if factor is None:
        raise ValueProblem(f"unknown size unit {unit!r} (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)")
    number: str = match["number"]
    whole, _, fraction = number.partition(".")
    # Exact arithmetic: 1.1GB is 1_100_000_000 bytes, not a float approximation.
    scale: int = 10 ** len(fraction)
    numerator = int(whole or "0") * scale + int(fraction or "0")
    size = (numerator * factor * 2 + scale) // (2 * scale)
    if size < 1:
        raise ValueProblem(f"must be at least one byte, got {word!r}")
    return size


def parse_fraction(text: str) -> float:
    """A fraction in ``[0, 1]``, written ``0.5`` or as a percentage ``50%``."""
    word = text.strip()
    percent = word.endswith("%")
    number = word[:-1].strip() if percent else word
    if not _DECIMAL.fullmatch(number):
        raise ValueProblem(f"expected a fraction between 0 and 1 or a percentage such as 50%, got {word!r}")
    value = float(number) / (100 if percent else 1)
    if not 0 <= value <= 1:
        raise ValueProblem(f"must be between 0 and 1 (0% and 100%), got {word!r}")
    return value


def split_list(text: str) -> list[str]:
    """The non-empty, stripped items of a comma-separated list."""
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_extensions(text: str) -> tuple[str, ...]:
    """``.txt, PDF`` -> ``("txt", "pdf")``: lower case, without the dot, no repeats."""
    result: list[str] = []
    for item in split_list(text):
        ext = item.lstrip(".").lower()
        if not ext or "/" in ext or "\\" in ext:
            raise ValueProblem(f"not a file extension: {item!r}")
        if ext not in result:
            result.append(ext)
    return tuple(result)


def _pattern_items(text: str) -> Iterator[tuple[str, bool]]:
    """The items of a pattern list as ``(body, is_regex)``.

    A regular expression starts with ``/`` and runs to the next ``/`` that is
    followed (after blanks) by a comma or the end of the text; without such a
    closing ``/`` it runs to the next comma. So a regular expression may hold
    commas and slashes as long as it is closed with ``/``.
    """
    rest = text.strip()
    while rest:
        if rest.startswith("/"):
            close = re.search(r"/\s*(?:,|$)", rest[1:])
            if close:
                yield rest[1 : close.start() + 1], True
                rest = rest[close.end() + 1 :].strip()
            else:
                body, _, rest = rest[1:].partition(",")
                yield body.strip(), True
                rest = rest.strip()
        else:
            item, _, rest = rest.partition(",")
            if item.strip():
                yield item.strip(), False
            rest = rest.strip()


def compile_pattern(body: str, is_regex: bool) -> re.Pattern[str]:
    """One filename pattern: a regular expression, or a plain string whose only
    wildcard is ``*`` (any run of characters); the pattern must match the whole name."""
    if not is_regex:
        return re.compile(".*".join(re.escape(part) for part in body.split("*")))
    if not body:
        raise ValueProblem("empty regular expression '//'")
    try:
        return re.compile(body)
    except re.error as exc:
        raise ValueProblem(f"invalid regular expression /{body}/: {exc}") from None


def parse_patterns(text: str) -> tuple[re.Pattern[str], ...]:
    """A comma-separated list of filename patterns (see :func:`compile_pattern`)."""
    return tuple(compile_pattern(body, is_regex) for body, is_regex in _pattern_items(text))


def parse_encryption(text: str) -> str | None:
    """None when off, the recommended algorithm for "yes", else a known algorithm name."""
    word = text.strip().lower()
    if word in FALSE_WORDS:
        return None
    if word in TRUE_WORDS:
        return RECOMMENDED_ALGORITHM
    if word in ENCRYPTION_ALGORITHMS:
        return word
    raise ValueProblem(
        f"unknown encryption {text.strip()!r}: use yes, no or one of {', '.join(ENCRYPTION_ALGORITHMS)}"
    )


#: Hash algorithms with a variable-length digest: unusable as a fixed checksum.
_VARIABLE_DIGESTS = frozenset({"shake_128", "shake_256"})


def checksum_algorithms() -> tuple[str, ...]:
    """The hash names ``checksum`` accepts on this machine (lower case, sorted)."""
    names = {name.lower() for name in hashlib.algorithms_available}
    return tuple(sorted(names - _VARIABLE_DIGESTS))


def parse_checksum(text: str) -> str | None:
    """``yes`` -> ``sha256``, ``no`` -> None, else a hashlib algorithm name (lower case)."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return "sha256"
    if word in FALSE_WORDS:
        return None
    if word in checksum_algorithms():
        return word
    raise ValueProblem(
        f"unknown hash algorithm {text.strip()!r}: use yes, no or one of {', '.join(checksum_algorithms())}"
    )


_MODES: dict[str, Mode] = {
    "upload": "upload",
    "download": "download",
    "shared": "shared",
    "share": "shared",
    "conservative": "conservative",
    "preservative": "conservative",
}


def parse_mode(text: str) -> Mode:
    """``upload``, ``download``, ``shared``/``share`` or ``conservative``/``preservative``."""
    mode = _MODES.get(text.strip().lower())
    if mode is None:
        raise ValueProblem(
            f"unknown mode {text.strip()!r}: use upload, download, shared or conservative"
        )
    return mode


def parse_index(text: str) -> tuple[bool, int | None]:
    """``(index, topdir)`` from a boolean, ``topdir`` (level 1) or ``topdir:N`` (N >= 1)."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True, None
    if word in FALSE_WORDS:
        return False, None
    head, colon, level = word.partition(":")
    if head.strip() == "topdir":
        if not colon:
            return True, 1
        try:
            return True, parse_int(level, minimum=1)
        except ValueProblem as exc:
            raise ValueProblem(f"in topdir:N, N {exc}") from None
    raise ValueProblem(f"expected yes, no, topdir or topdir:N, got {text.strip()!r}")


def parse_priority(text: str) -> Literal["upload"]:
    """``upload`` (any case): the only priority there is."""
    if text.strip().lower() != "upload":
        raise ValueProblem(f"priority accepts only 'upload', got {text.strip()!r}")
    return "upload"


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def parse_log_level(text: str) -> str:
    """One of DEBUG, INFO, WARNING, ERROR (any case), returned upper-case."""
    word = text.strip().upper()
    if word not in LOG_LEVELS:
        raise ValueProblem(f"unknown log level {text.strip()!r}: use {', '.join(LOG_LEVELS)}")
    return word


#: Accepted ``ssl version`` spellings, by lower-case form.
SSL_VERSIONS = {v.lower(): v for v in ("SSLv23", "TLS", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")}
#: ``ssl version`` names of broken protocols, refused when the file is read.
INSECURE_SSL_VERSIONS = {v.lower(): v for v in ("SSLv2", "SSLv3")}


SSH_CLIENTS = ("auto", "openssh", "paramiko")


def parse_ssh_client(text: str) -> str:
    """What carries an SFTP relay's session: ``auto``, ``openssh`` or ``paramiko`` (any case)."""
    word = text.strip().lower()
    if word not in SSH_CLIENTS:
        raise ValueProblem(f"unknown ssh client {text.strip()!r}: use {', '.join(SSH_CLIENTS)}")
    return word


def parse_ssl_version(text: str) -> str:
    """An SSL/TLS version name, returned in its canonical spelling (``tlsv1.2`` -> ``TLSv1.2``).

    ``SSLv2`` and ``SSLv3`` (broken protocols, which no current TLS library
    speaks) are refused here, when the configuration is read, rather than at
    the first connection.
    """
    word = text.strip().lower()
    insecure = INSECURE_SSL_VERSIONS.get(word)
    if insecure is not None:
        raise ValueProblem(f"{insecure} is insecure and not supported; use TLS, TLSv1.2 or TLSv1.3")
    version = SSL_VERSIONS.get(word)
    if version is None:
        raise ValueProblem(f"unknown ssl version {text.strip()!r}: use {', '.join(SSL_VERSIONS.values())}")
    return version


def resolve_path(text: str, base_dir: str) -> str:
    """``text`` with ``~`` expanded, made absolute relative to ``base_dir``, normalised."""
    path = os.path.expanduser(text.strip())
    return os.path.normpath(os.path.join(base_dir, path))


#: ``keep versions`` units, to seconds; a bare number is days.
DURATION_UNITS: dict[str, float] = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "day": 86400.0,
                                    "days": 86400.0}
_DURATION = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>[a-zA-Z]*)")


def parse_keep_versions(text: str) -> float:
    """``keep versions``: how long replaced and deleted files are kept, in
    seconds. ``no`` (or ``0``) keeps none; else a number of days (``30``), or
    a number with a unit ``s``, ``min``, ``h`` or ``d``/``days`` (``12 h``)."""
    word = text.strip()
    if word.lower() in FALSE_WORDS:
        return 0.0
    match = _DURATION.fullmatch(word)
    if not match:
        raise ValueProblem(f"expected a duration such as 30 (days), 12 h or no, got {_shown(word)}")
    unit: str = match["unit"].lower() or "d"
    factor = DURATION_UNITS.get(unit)
    if factor is None:
        raise ValueProblem(f"unknown duration unit {unit!r} (use s, min, h or d)")
    value = float(match["number"]) * factor
    if not math.isfinite(value):
        raise ValueProblem(f"must be a finite duration, got {_shown(word)}")
    return value


def parse_after_delivery(text: str) -> Literal["leave", "move", "delete"]:
    """``after delivery``: ``leave``, ``move`` or ``delete`` (any case)."""
    word = text.strip().lower()
    if word == "leave":
        return "leave"
    if word == "move":
        return "move"
    if word == "delete":
        return "delete"
    raise ValueProblem(f"expected leave, move or delete, got {_shown(text.strip())}")


def parse_delivered_when(text: str) -> Literal["acknowledged", "sent"]:
    """``delivered when``: ``acknowledged`` (by the receivers) or ``sent`` (any case)."""
    word = text.strip().lower()
    if word in ("acknowledged", "acked"):
        return "acknowledged"
    if word == "sent":
        return "sent"
    raise ValueProblem(f"expected acknowledged or sent, got {_shown(text.strip())}")


def parse_hook_timeout(text: str) -> float:
    """``hook timeout``: seconds, between 1 second and 1 day."""
    return parse_seconds(text, minimum=1.0, maximum=86400.0)
