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


def parse_seconds(text: str) -> float:
    """A positive duration in seconds; decimals allowed (``0.5``); no unit, no exponent."""
    word = text.strip()
    if word.startswith("-"):
        raise ValueProblem(f"must be a positive number of seconds, got {word!r}")
    if not _DECIMAL.fullmatch(word):
        raise ValueProblem(f"expected a number of seconds, got {word!r}")
    value = float(word)
    if value <= 0 or not math.isfinite(value):
        raise ValueProblem(f"must be a positive number of seconds, got {word!r}")
    return value


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


def format_size(size: int) -> str:
    """``size`` bytes written with the largest unit that keeps it exact (``1GB``, ``3KiB``, ``17B``).

    ``parse_size(format_size(n)) == n`` for every positive ``n``.
    """
    if size < 1:
        raise ValueError("size must be positive")
    best = "B"
    for unit in ("KB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB"):
        factor = SIZE_UNITS[unit.lower()]
        if size % factor == 0 and factor > SIZE_UNITS[best.lower()]:
            best = unit
    return f"{size // SIZE_UNITS[best.lower()]}{best}"


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


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def parse_log_level(text: str) -> str:
    """One of DEBUG, INFO, WARNING, ERROR (any case), returned upper-case."""
    word = text.strip().upper()
    if word not in LOG_LEVELS:
        raise ValueProblem(f"unknown log level {text.strip()!r}: use {', '.join(LOG_LEVELS)}")
    return word


#: Accepted ``ssl version`` spellings, by lower-case form.
SSL_VERSIONS = {v.lower(): v for v in ("SSLv2", "SSLv3", "SSLv23", "TLS", "TLSv1", "TLSv1.1",
                                        "TLSv1.2", "TLSv1.3")}


def parse_ssl_version(text: str) -> str:
    """An SSL/TLS version name, returned in its canonical spelling (``tlsv1.2`` -> ``TLSv1.2``)."""
    version = SSL_VERSIONS.get(text.strip().lower())
    if version is None:
        raise ValueProblem(f"unknown ssl version {text.strip()!r}: use {', '.join(SSL_VERSIONS.values())}")
    return version


def resolve_path(text: str, base_dir: str) -> str:
    """``text`` with ``~`` expanded, made absolute relative to ``base_dir``, normalised."""
    path = os.path.expanduser(text.strip())
    return os.path.normpath(os.path.join(base_dir, path))
