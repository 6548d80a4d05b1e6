"""Relay addresses: ``protocol://[user@]host[:port][/path]`` and the short forms.

The forms, by protocol family:

* network protocols (ftp, ftps, webdav, http, https, sftp): ``host``,
  ``host:port``, ``user@host:port/path``, or any of these after ``protocol://``;
  ``[::1]`` for an IPv6 host. The path keeps its leading ``/``.
* ``file``: ``file:///absolute/path``, ``file://localhost/path`` or a plain path.
* rclone and the cloud protocols (s3, dropbox, ...): ``remote`` or
  ``remote:path`` (an rclone remote name, or ``:backend:`` for an on-the-fly
  remote), or ``protocol://remote/path``.

A password in the address is refused: it belongs in ``password`` or ``secret file``
(an address is shown in logs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from escale.config.values import ValueProblem
from escale.relay.spec import ALL_PROTOCOLS, RCLONE_PROTOCOLS

#: Protocols a configuration file may name (the in-memory test relay is not one).
CONFIG_PROTOCOLS: tuple[str, ...] = tuple(p for p in ALL_PROTOCOLS if p != "memory")

RCLONE_FAMILY: frozenset[str] = frozenset(("rclone", *RCLONE_PROTOCOLS))
NETWORK_PROTOCOLS: frozenset[str] = frozenset(("ftp", "ftps", "webdav", "http", "https", "sftp"))

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class Address:
    """The parts an address gave; None for a part it did not give."""

    protocol: str | None = None
    host: str | None = None
    port: int | None = None
    username: str | None = None
    directory: str | None = None
    remote: str | None = None


def parse_protocol(text: str) -> str:
    """The value of ``protocol``: one of :data:`CONFIG_PROTOCOLS`, any case, returned lower-case."""
    word = text.strip().lower()
    if word not in CONFIG_PROTOCOLS:
        raise ValueProblem(f"unknown protocol {text.strip()!r}; known: {', '.join(CONFIG_PROTOCOLS)}")
    return word


def address_scheme(text: str) -> str | None:
    """The lower-cased ``protocol`` of ``protocol://...``, or None for a short form.

    Raises ValueProblem for a scheme that is not a known protocol.
    """
    match = _SCHEME.match(text.strip())
    if not match:
        return None
    scheme = match[1].lower()
    if scheme not in CONFIG_PROTOCOLS:
        known = ", ".join(CONFIG_PROTOCOLS)
        raise ValueProblem(f"unknown protocol {scheme!r} in the address; known: {known}")
    return scheme


def parse_address(text: str, protocol: str | None = None) -> Address:
    """The parts of relay address ``text``.

    ``protocol`` is the protocol that applies when ``text`` has no ``protocol://``
    prefix (it chooses how the short form is read); when ``text`` has a prefix, the
    prefix decides and is returned as ``Address.protocol``. Raises ValueProblem for
    an address that cannot be read (the message never repeats a password).
    """
    text = text.strip()
    scheme = address_scheme(text)
    family = scheme or protocol
    if family is None:
        raise ValueProblem("the address has no protocol:// prefix and no 'protocol' is set")
    if family not in CONFIG_PROTOCOLS:
        raise ValueProblem(f"unknown protocol {family!r}; known: {', '.join(CONFIG_PROTOCOLS)}")
    body = text[len(scheme) + 3 :] if scheme else text
    if family == "file":
        return _file_address(body, scheme)
    if family in RCLONE_FAMILY:
        return _rclone_address(body, scheme)
    return _network_address(body, scheme)


def _file_address(body: str, scheme: str | None) -> Address:
    if scheme is None:
        if not body:
            raise ValueProblem("empty folder path")
        return Address(directory=body)
    host, slash, path = body.partition("/")
    if host not in ("", "localhost"):
        raise ValueProblem("a file:// address names a local folder: use file:///absolute/path")
    if not slash or not path.strip("/"):
        raise ValueProblem("a file:// address needs a folder path, as in file:///srv/relay")
    return Address(protocol=scheme, directory=unquote("/" + path))


def _rclone_address(body: str, scheme: str | None) -> Address:
    if scheme is not None:
        remote, _, path = body.partition("/")
    elif body.startswith(":"):
        # On-the-fly remote: ":backend:path" (rclone's connection-string syntax).
        head, colon, path = body[1:].partition(":")
        if not colon:
            raise ValueProblem("an on-the-fly rclone remote is written :backend:path")
        remote = ":" + head
    else:
        remote, _, path = body.partition(":")
    remote = remote.strip()
    if not remote or remote == ":":
        raise ValueProblem("the address names no rclone remote (expected remote or remote:path)")
    if "/" in remote:
        raise ValueProblem("an rclone remote name cannot contain '/' (expected remote:path)")
    return Address(protocol=scheme, remote=remote, directory=unquote(path) if path else None)


def _network_address(body: str, scheme: str | None) -> Address:
    if not body:
        raise ValueProblem("empty address")
    try:
        # urlsplit refuses an unclosed or invalid bracketed host ("[::1/x"); its
        # message is not repeated (it may quote parts of the address).
        parts = urlsplit("//" + body)
        host = parts.hostname
    except ValueError:
        raise ValueProblem("the host in the address cannot be read (an IPv6 host is written [::1])") from None
    if parts.query or parts.fragment:
        raise ValueProblem("an address cannot contain '?' or '#'")
    if parts.password is not None:
        raise ValueProblem(
            "the address holds a password (user:password@host): put it in 'password' or 'secret file'"
        )
    try:
        port = parts.port
    except ValueError:
        raise ValueProblem("the port in the address is not a number between 0 and 65535") from None
    if port == 0:
        raise ValueProblem("port 0 in the address")
    if not host:
        raise ValueProblem("the address names no host")
    hostport = parts.netloc.rpartition("@")[2]
    after = hostport.partition("]")[2] if hostport.startswith("[") else ""
    junk_after_brackets = bool(after) and not re.fullmatch(r":[0-9]*", after)
    if junk_after_brackets or not host.isprintable() or any(c in host for c in "[]\\ "):
        raise ValueProblem("the host in the address cannot be read (an IPv6 host is written [::1])")
    user = unquote(parts.username) if parts.username else None
    path = unquote(parts.path) if parts.path and parts.path != "/" else None
    return Address(protocol=scheme, host=host, port=port, username=user, directory=path)
