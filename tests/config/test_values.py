"""Value syntax: booleans, numbers, sizes, patterns, extensions, index, checksum."""

from __future__ import annotations

import re
import string
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from escale.config.settings import FileFilter
from escale.config.values import (
    FALSE_WORDS,
    LOCK_TIMEOUT_RANGE,
    REFRESH_RANGE,
    SIZE_UNITS,
    TIMEOUT_RANGE,
    TRUE_WORDS,
    ValueProblem,
    compile_pattern,
    parse_bool,
    parse_checksum,
    parse_encryption,
    parse_extensions,
    parse_fraction,
    parse_index,
    parse_patterns,
    parse_seconds,
    parse_size,
)
from tests.config.helpers import client, expect_error, section_text

# ------------------------------------------------------------------ booleans


@pytest.mark.parametrize("word", ["yes", "YES", "true", "True", "on", "1", " On "])
def test_true_words(tmp_path: Path, word: str) -> None:
    assert parse_bool(word) is True
    assert client(tmp_path, {"verify ssl": "no", "checksum cache": word}).checksum_cache is True


@pytest.mark.parametrize("word", ["no", "No", "false", "FALSE", "off", "0"])
def test_false_words(tmp_path: Path, word: str) -> None:
    assert parse_bool(word) is False
    assert client(tmp_path, {"mtime": word}).use_mtime is False


@pytest.mark.parametrize("word", ["2", "y", "n", "enabled", "-1", "oui", "1.0"])
def test_other_words_are_not_booleans(tmp_path: Path, word: str) -> None:
    with pytest.raises(ValueProblem):
        parse_bool(word)
    expect_error(tmp_path, section_text({"checksum cache": word}), section="client", key="checksum cache",
                 contains="boolean")
    # 'verify ssl' also takes a CA file: a word that is neither says so
    expect_error(tmp_path, section_text({"verify ssl": word}), section="client", key="verify ssl",
                 contains="expected yes, no or the path of a CA certificate file")


@given(st.text(max_size=12))
def test_bool_accepts_exactly_the_eight_words(text: str) -> None:
    word = text.strip().lower()
    if word in TRUE_WORDS | FALSE_WORDS:
        assert parse_bool(text) is (word in TRUE_WORDS)
    else:
        with pytest.raises(ValueProblem):
            parse_bool(text)


# ------------------------------------------------------------------ numbers are numbers


def test_refresh_one_is_one_second(tmp_path: Path) -> None:
    c = client(tmp_path, {"refresh": "1"})
    assert c.refresh == 1.0 and c.refresh is not True


@pytest.mark.parametrize("key", ["refresh", "lock timeout", "timeout"])
@pytest.mark.parametrize("word", ["yes", "true", "on", "no", "0", "-1", "10s", "1e3", "inf", "nan"])
def test_number_keys_refuse_words_and_nonpositive(tmp_path: Path, key: str, word: str) -> None:
    expect_error(tmp_path, section_text({key: word}), section="client", key=key)


@given(st.integers(min_value=1, max_value=10**6), st.integers(min_value=0, max_value=999))
def test_seconds_are_read_as_numbers_never_booleans(whole: int, millis: int) -> None:
    assert parse_seconds(str(whole)) == float(whole)
    assert parse_seconds(f"{whole}.{millis:03d}") == pytest.approx(whole + millis / 1000)
    assert type(parse_seconds("1")) is float


@given(st.sampled_from(sorted((TRUE_WORDS | FALSE_WORDS) - {"0", "1"})))
def test_seconds_never_accept_a_boolean_word(word: str) -> None:
    with pytest.raises(ValueProblem):
        parse_seconds(word)


@pytest.mark.parametrize(("key", "bad"), [("port", "0"), ("port", "65536"), ("port", "21.5"),
                                         ("puller count", "0"), ("puller count", "yes"),
                                         ("transfers", "0"), ("transfers", "-1"), ("transfers", "65"),
                                         ("transfers", "four")])
def test_integer_ranges(tmp_path: Path, key: str, bad: str) -> None:
    expect_error(tmp_path, section_text({key: bad, "protocol": "sftp", "address": "h"}, drop=("dir",)),
                 section="client", key=key)


def test_transfers_default_range_and_error(tmp_path: Path) -> None:
    """``transfers``: 4 unless set, 1 to 64; below 1 is refused in one line naming the key."""
    assert client(tmp_path, {}).transfers == 4
    assert client(tmp_path, {"transfers": "1"}).transfers == 1
    assert client(tmp_path, {"transfers": "64"}).transfers == 64
    expect_error(tmp_path, section_text({"transfers": "0"}), section="client", key="transfers",
                 contains="must be at least 1, got 0")


def test_port_bounds(tmp_path: Path) -> None:
    for port in ("1", "65535"):
        got = client(tmp_path, {"protocol": "ftp", "address": "h", "port": port}, drop=("dir",))
        assert got.relay.port == int(port)


# ------------------------------------------------------------------ sizes


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1B", 1), ("1KB", 1000), ("1MB", 10**6), ("1GB", 10**9), ("1TB", 10**12),
        ("1KiB", 1024), ("1MiB", 2**20), ("1GiB", 2**30), ("1TiB", 2**40),
        ("100", 100 * 10**6), ("0.5", 500_000), ("1.5GB", 1_500_000_000), ("1.1GB", 1_100_000_000),
        ("2 gib", 2 * 2**30), (" 3kb ", 3000), ("1.", 10**6), (".25KB", 250),
    ],
)
def test_sizes(tmp_path: Path, text: str, size: int) -> None:
    assert parse_size(text) == size
    assert client(tmp_path, {"disk quota": text}).disk_quota == size


@pytest.mark.parametrize("bad", ["", "GB", "1XB", "-1GB", "0", "0.0000001", "1,5GB", "1 G", "1e3"])
def test_bad_sizes(bad: str) -> None:
    with pytest.raises(ValueProblem):
        parse_size(bad)


def test_maxpagesize_bad_value_is_a_config_error(tmp_path: Path) -> None:
    expect_error(tmp_path, section_text({"maxarchivesize": "lots"}), section="client", key="maxarchivesize",
                 contains="size")


@given(st.integers(min_value=1, max_value=10**16))
def test_size_round_trip(size: int) -> None:
    assert parse_size(format_size(size)) == size


@given(st.integers(min_value=1, max_value=10**6), st.sampled_from(sorted(SIZE_UNITS)),
       st.booleans(), st.booleans())
def test_size_with_each_unit(number: int, unit: str, upper: bool, space: bool) -> None:
    written = f"{number}{' ' if space else ''}{unit.upper() if upper else unit}"
    assert parse_size(written) == number * SIZE_UNITS[unit]


@given(st.integers(min_value=0, max_value=10**4), st.text(alphabet=string.digits, min_size=1, max_size=6),
       st.sampled_from(["KB", "MB", "GB", "KiB", "GiB"]))
def test_decimal_sizes_are_exact(whole: int, fraction: str, unit: str) -> None:
    exact = (Fraction(f"{whole}.{fraction}") * SIZE_UNITS[unit.lower()])
    expected = int(exact + Fraction(1, 2))  # half up
    if expected < 1:
        with pytest.raises(ValueProblem):
            parse_size(f"{whole}.{fraction}{unit}")
    else:
        assert parse_size(f"{whole}.{fraction}{unit}") == expected


# ------------------------------------------------------------------ patterns


def _names(patterns: tuple[re.Pattern[str], ...]) -> list[str]:
    return [p.pattern for p in patterns]


def test_plain_pattern_star_is_the_only_wildcard() -> None:
    (pattern,) = parse_patterns("a?b.[x]*")
    assert pattern.fullmatch("a?b.[x]")
    assert pattern.fullmatch("a?b.[x]anything")
    assert not pattern.fullmatch("aXb.x")
    assert not pattern.fullmatch("za?b.[x]")  # the whole name, not a part


def test_regex_patterns_between_slashes() -> None:
    assert _names(parse_patterns("/a+b/")) == ["a+b"]
    assert _names(parse_patterns("/a+b")) == ["a+b"]  # closing slash optional
    assert _names(parse_patterns("*.txt, /data[0-9]{1,3}/ , notes")) == [r".*\.txt", "data[0-9]{1,3}", "notes"]
    assert _names(parse_patterns("/photos/20[0-9]{2}/, /x/")) == ["photos/20[0-9]{2}", "x"]
    assert parse_patterns("") == () and parse_patterns(" , ,") == ()


def test_patterns_drive_the_filter(tmp_path: Path) -> None:
    c = client(tmp_path, {"include": "*.txt, /report-[0-9]+\\.pdf/", "exclude": "secret*",
                          "exclude directories": "tmp", "file type": "TXT,.pdf"})
    f: FileFilter = c.filters
    assert f.accepts_file("notes.txt") and f.accepts_file("a/report-12.pdf")
    assert not f.accepts_file("report-x.pdf") and not f.accepts_file("secret.txt")
    assert not f.accepts_file("tmp/notes.txt")


@pytest.mark.parametrize("bad", ["/a(b/", "//", "/[z-a]/"])
def test_bad_regex_is_a_config_error(tmp_path: Path, bad: str) -> None:
    expect_error(tmp_path, section_text({"include": bad}), section="client", key="include",
                 contains="regular expression")


@given(st.text(alphabet=st.characters(blacklist_characters="*,/", blacklist_categories=["Cs"]),
               min_size=1, max_size=20).filter(lambda s: s.strip() == s and s))
def test_a_plain_pattern_without_star_matches_only_itself(name: str) -> None:
    pattern = compile_pattern(name, False)
    assert pattern.fullmatch(name)
    assert not pattern.fullmatch(name + "x")
    assert not pattern.fullmatch("x" + name)


# ------------------------------------------------------------------ other value types


def test_extensions() -> None:
    assert parse_extensions(".Txt, pdf,, .TAR.GZ, txt") == ("txt", "pdf", "tar.gz")
    with pytest.raises(ValueProblem):
        parse_extensions("a/b")


def test_fraction() -> None:
    assert parse_fraction("0.25") == 0.25 and parse_fraction("50%") == 0.5 and parse_fraction("100 %") == 1
    for bad in ("1.5", "150%", "-0.1", "half", "%"):
        with pytest.raises(ValueProblem):
            parse_fraction(bad)


def test_index_values(tmp_path: Path) -> None:
    assert parse_index("no") == (False, None)
    assert parse_index("1") == (True, None)
    assert parse_index("topdir") == (True, 1)
    assert parse_index("TopDir:3") == (True, 3)
    c = client(tmp_path, {"compact": "topdir:2"})
    assert (c.index, c.index_topdir) == (True, 2)
    for bad in ("topdir:0", "topdir:x", "top", "2"):
        expect_error(tmp_path, section_text({"index": bad}), section="client", key="index")


def test_checksum_values(tmp_path: Path) -> None:
    assert parse_checksum("yes") == "sha256" and parse_checksum("0") is None
    assert parse_checksum("SHA512") == "sha512" and parse_checksum("blake2b") == "blake2b"
    assert client(tmp_path, {"checksum": "no"}).checksum is None
    expect_error(tmp_path, section_text({"hash algorithm": "crc32"}), section="client", key="hash algorithm",
                 contains="crc32")


def test_encryption_values(tmp_path: Path) -> None:
    assert parse_encryption("off") is None
    assert parse_encryption("on") == "aes-256-gcm"
    assert parse_encryption("Blowfish.Cryptography") == "blowfish.cryptography"
    assert client(tmp_path, {"encryption": "no"}).encryption is None
    expect_error(tmp_path, section_text({"encryption": "rot13", "key": "k"}), section="client",
                 key="encryption", contains="rot13")


def test_mode_values(tmp_path: Path) -> None:
    for word, mode in [("upload", "upload"), ("Download", "download"), ("share", "shared"),
                       ("shared", "shared"), ("conservative", "conservative"), ("preservative", "conservative")]:
        assert client(tmp_path, {"synchronization mode": word}).mode == mode
    assert client(tmp_path, {"read only": "no", "write only": "no"}).mode == "shared"
    assert client(tmp_path, {"push only": "yes", "mode": "upload"}).mode == "upload"
    expect_error(tmp_path, section_text({"mode": "mirror"}), section="client", key="mode")


@pytest.mark.parametrize(
    ("key", "get"),
    [
        ("refresh", lambda c: c.refresh),
        ("timeout", lambda c: c.relay.timeout),
        ("puller count", lambda c: c.puller_count),
        ("port", lambda c: c.relay.port),
    ],
)
def test_one_in_a_number_key_is_the_number_one(tmp_path: Path, key: str, get: Any) -> None:
    got = get(client(tmp_path, {"protocol": "ftp", "address": "h", key: "1"}, drop=("dir",)))
    assert got == 1 and type(got) is not bool


def test_lock_timeout_one_is_one_second_and_too_short(tmp_path: Path) -> None:
    """``lock timeout = 1`` is read as one second (not "true"), which is below the range."""
    expect_error(tmp_path, section_text({"lock timeout": "1"}), section="client", key="lock timeout",
                 contains="got '1'")


@pytest.mark.parametrize(("key", "get", "low", "high"), [
    ("refresh", lambda c: c.refresh, REFRESH_RANGE[0], REFRESH_RANGE[1]),
    ("lock timeout", lambda c: c.lock_timeout, LOCK_TIMEOUT_RANGE[0], LOCK_TIMEOUT_RANGE[1]),
    ("timeout", lambda c: c.relay.timeout, TIMEOUT_RANGE[0], TIMEOUT_RANGE[1]),
])
def test_durations_are_finite_and_within_their_documented_range(tmp_path: Path, key: str, get: Any,
                                                                low: float, high: float) -> None:
    assert get(client(tmp_path, {key: f"{low:g}"})) == low
    assert get(client(tmp_path, {key: f"{high:g}"})) == high
    for bad in (f"{low / 2:g}", f"{high + 1:g}", "1" + "0" * 20, "9" * 400, "0.0000001"):
        error = expect_error(tmp_path, section_text({key: bad}), section="client", key=key,
                             contains=f"between {low:g} s")
        assert len(str(error)) < 300  # a 400-digit value is not repeated whole


def test_documented_ranges_match_the_code() -> None:
    text = (Path(__file__).parents[2] / "doc" / "configuration.rst").read_text(encoding="utf-8")
    assert "between 0.1 and 604800 (7 days)" in text
    assert "between 3 and 86400 (1 day)" in text
    assert "between 0.1 and 3600 (1 hour)" in text


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
