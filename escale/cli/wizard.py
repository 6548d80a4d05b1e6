"""``escale -i [FILE]``: interactive setup of one client, or import of FILE's sections.

Setup asks, in order: the local folder, the section name, the relay address
(one line such as ``sftp://user@host:2222/path``, or step by step), the
credentials (written to ``<section>.secret`` next to the configuration file,
mode 0600, referenced by ``secret file``; never to the configuration file
itself), encryption (a new key file ``<section>.key``, mode 0600, or an existing
one), the mode, the puller count, the refresh interval and the index layout.
Each answer is checked on the spot and asked again when wrong. The section is
added with :func:`escale.config.write_client_section` (an existing section is
replaced only after a yes), the file is loaded back to prove it valid, and the
relay is opened and its root listed. A relay that does not answer is reported
(exit code of the error) and the written configuration is kept.

Import (``escale -i FILE``) copies every section of FILE into the
configuration (``-c``, default ``~/.config/escale/escale.conf``): global client
defaults of FILE are folded into each section, relative paths are made
absolute (they were relative to FILE's folder), and global-only settings
(``log file``...) are left out. A section that exists already is replaced only
after a yes.

End of input (Ctrl-D) at any question cancels: nothing is written.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import tempfile
from collections.abc import Callable

from escale.config import DEFAULT_SEARCH_PATHS, load_config, parse_address, write_client_section
from escale.config.address import CONFIG_PROTOCOLS, NETWORK_PROTOCOLS, RCLONE_FAMILY, Address, address_scheme
from escale.config.ini import read_ini, section_name_problem
from escale.config.keys import lookup
from escale.config.settings import MODES
from escale.config.values import ValueProblem, parse_int, parse_seconds
from escale.crypto import generate_key_file
from escale.crypto.keys import load_secret
from escale.errors import EX_OK, ConfigError, EscaleError, UsageError
from escale.relay import make_relay

#: Keys whose value is a path, relative to the configuration file's folder.
PATH_KEYS = frozenset(("local path", "state directory", "certificate", "keyfile", "ca file", "rclone config",
                       "known hosts", "ssh key"))
#: Keys whose value is a file path when it names an existing file, else the secret itself.
FILE_OR_VALUE_KEYS = frozenset(("password", "passphrase"))


class Cancelled(UsageError):
    """The user ended the input (Ctrl-D)."""


class Asker:
    """Asks questions on the terminal; re-asks until an answer passes its check."""

    def __init__(self, read: Callable[[str], str] = input, read_secret: Callable[[str], str] = getpass.getpass,
                 say: Callable[[str], None] = print) -> None:
        self.read = read
        self.read_secret = read_secret
        self.say = say

    def _read(self, prompt: str, secret: bool = False) -> str:
        try:
            return (self.read_secret if secret else self.read)(prompt)
        except EOFError:
            self.say("")
            raise Cancelled("setup cancelled; nothing more was written") from None

    def ask(self, question: str, default: str | None = None, check: Callable[[str], object] | None = None,
            *, required: bool = True) -> str:
        """The answer (stripped); ``default`` on an empty line."""
        shown = f" [{default}]" if default else ""
        while True:
            answer = self._read(f"{question}{shown}: ").strip()
            if not answer and default is not None:
                answer = default
            if not answer and required and default is None:
                self.say("  an answer is needed")
                continue
            if check is not None and answer:
                try:
                    check(answer)
                except (ValueProblem, ValueError, EscaleError) as exc:
                    self.say(f"  {exc}")
                    continue
            return answer

    def yes_no(self, question: str, default: bool) -> bool:
        hint = "Y/n" if default else "y/N"
        while True:
            answer = self._read(f"{question} [{hint}]: ").strip().lower()
            if not answer:
                return default
            if answer in ("y", "yes"):
                return True
            if answer in ("n", "no"):
                return False
            self.say("  please answer y or n")

    def choice(self, question: str, options: tuple[str, ...], default: str) -> str:
        def check(answer: str) -> None:
            if answer.lower() not in options:
                raise ValueProblem(f"choose one of: {', '.join(options)}")

        return self.ask(f"{question} ({'/'.join(options)})", default, check).lower()

    def secret(self, question: str) -> str:
        return self._read(f"{question}: ", secret=True)


# --------------------------------------------------------------------------- small helpers


def write_private_file(path: str, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600, atomically (replaces an existing file)."""
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=folder, prefix=".escale-secret.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


def _existing_sections(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the configuration file: {exc}", path=path) from None
    return [s.name for s in read_ini(text, path).sections]


def _same_name(name: str, names: list[str]) -> str | None:
    return next((n for n in names if n.casefold() == name.casefold()), None)


def _check_port(text: str) -> None:
    parse_int(text, minimum=1, maximum=65535)


def _check_pullers(text: str) -> None:
    parse_int(text, minimum=1)


def _check_key_file(text: str) -> None:
    path = os.path.abspath(os.path.expanduser(text))
    if not os.path.isfile(path):
        raise ValueProblem(f"no such file: {path}")
    load_secret(path, None)


def _check_existing_file(text: str) -> None:
    path = os.path.abspath(os.path.expanduser(text))
    if not os.path.isfile(path):
        raise ValueProblem(f"no such file: {path}")


# --------------------------------------------------------------------------- setup steps


def _ask_section(asker: Asker, target: str, local: str) -> tuple[str, bool]:
    existing = _existing_sections(target)
    default = os.path.basename(local.rstrip("/")) or "escale"
    while True:
        name = asker.ask("Name of this client (the configuration section)", default,
                         lambda text: _raise_if(section_name_problem(text)))
        old = _same_name(name, existing)
        if old is None:
            return name, False
        if asker.yes_no(f"Section [{old}] exists in {target}; replace it?", False):
            return old, True


def _raise_if(problem: str | None) -> None:
    if problem:
        raise ValueProblem(problem)


def _ask_protocol(asker: Asker, default: str = "sftp") -> str:
    return asker.choice("Protocol", CONFIG_PROTOCOLS, default)


def _ask_relay(asker: Asker) -> tuple[str, Address]:
    """The protocol and address parts, from one address line or step by step."""
    asker.say("The relay: a folder on a server that every client of this repository can reach.")
    while True:
        line = asker.ask("Relay address, e.g. sftp://user@host:2222/path, ftp://host/path, file:///srv/relay "
                         "(empty: step by step)", "", required=False)
        if not line:
            break
        try:
            scheme = address_scheme(line)
            protocol = scheme or _ask_protocol(asker)
            return protocol, parse_address(line, protocol)
        except ValueProblem as exc:
            asker.say(f"  {exc}")
    protocol = _ask_protocol(asker)
    if protocol == "file":
        folder = asker.ask("Relay folder (a local or mounted folder)")
        return protocol, Address(protocol=protocol, directory=folder)
    if protocol in RCLONE_FAMILY:
        remote = asker.ask("rclone remote name (as in 'rclone config')")
        folder = asker.ask("Folder on the remote", "", required=False)
        return protocol, Address(protocol=protocol, remote=remote, directory=folder or None)
    host = asker.ask("Server host name or address")
    port = asker.ask("Port (empty: the protocol's default)", "", _check_port, required=False)
    user = asker.ask("User name (empty: none)", "", required=False)
    folder = asker.ask("Folder on the server (empty: the login folder)", "", required=False)
    return protocol, Address(protocol=protocol, host=host, port=int(port) if port else None,
                             username=user or None, directory=folder or None)


def _relay_values(protocol: str, address: Address) -> dict[str, str]:
    values = {"protocol": protocol}
    if protocol == "file":
        values["host directory"] = os.path.abspath(os.path.expanduser(address.directory or ""))
    elif protocol in RCLONE_FAMILY:
        values["host address"] = f"{address.remote}:{address.directory or ''}"
    else:
        values["host address"] = address.host or ""
        if address.port:
            values["port"] = str(address.port)
        if address.directory:
            values["host directory"] = address.directory
    return values


def _ask_credentials(asker: Asker, protocol: str, address: Address, name: str, folder: str,
                     values: dict[str, str]) -> None:
    if protocol not in NETWORK_PROTOCOLS:
        return
    user = address.username or asker.ask("User name on the relay (empty: none)", "", required=False)
    if protocol == "sftp":
        key = asker.ask("SSH private key file (empty: log in with a password)", "", _check_existing_file,
                        required=False)
        if key:
            values["ssh key"] = os.path.abspath(os.path.expanduser(key))
            if user:
                values["username"] = user
            return
    while True:
        password = asker.secret("Password (not shown; empty: none)")
        if password and ":" in password and not user:
            asker.say("  a password holding ':' needs a user name")
            user = asker.ask("User name on the relay")
            continue
        break
    if not password:
        if user:
            values["username"] = user
        return
    secret_path = os.path.join(folder, f"{name}.secret")
    write_private_file(secret_path, f"{user}:{password}\n" if user else f"{password}\n")
    values["secret file"] = secret_path
    asker.say(f"  credentials written to {secret_path} (mode 0600)")


def _ask_encryption(asker: Asker, name: str, folder: str, values: dict[str, str]) -> None:
    if not asker.yes_no("Encrypt the files on the relay (recommended)?", True):
        return
    given = asker.ask("Existing key file (empty: generate a new key)", "", _check_key_file, required=False)
    if given:
        key_path = os.path.abspath(os.path.expanduser(given))
        asker.say(f"  using the key in {key_path}")
    else:
        key_path = os.path.join(folder, f"{name}.key")
        if os.path.exists(key_path) and asker.yes_no(f"Key file {key_path} exists; use it?", True):
            _check_key_file(key_path)
        else:
            suffix = 2
            while os.path.lexists(key_path):
                key_path = os.path.join(folder, f"{name}-{suffix}.key")
                suffix += 1
            generate_key_file(key_path)
            asker.say(f"  generated a new key in {key_path} (mode 0600).")
            asker.say("  Every other client of this relay needs a copy of this key file: copy it to them")
            asker.say("  over a safe channel (never through the relay). Without it the files cannot be read.")
    values["encryption"] = "yes"
    values["key"] = key_path


def _check_relay(asker: Asker, target: str, name: str) -> int:
    try:
        config = load_config(target)
    except ConfigError as exc:
        asker.say(f"The configuration was written but does not load: {exc}")
        return exc.exit_code
    client = next(c for c in config.clients if c.name == name)
    where = client.relay.describe()
    asker.say(f"Checking the relay {where} ...")
    relay = make_relay(client.relay)
    try:
        relay.open()
        entries = relay.list("")
    except EscaleError as exc:
        asker.say(f"The relay {where} does not answer: {exc}")
        asker.say(f"The configuration is kept in {target}; fix the relay, then run 'escale -c {target}'.")
        return exc.exit_code
    finally:
        relay.close()
    asker.say(f"The relay answers ({len(entries)} entries at its root).")
    asker.say(f"Done. Run 'escale -c {target}' (or 'escalectl -c {target} start' in the background).")
    return EX_OK


def setup(target: str, asker: Asker) -> int:
    """The interactive setup of one client into configuration file ``target``."""
    folder = os.path.dirname(target)
    asker.say(f"escale setup: this adds one client to {target}")
    local = os.path.abspath(os.path.expanduser(asker.ask("Local folder to synchronise")))
    name, replace = _ask_section(asker, target, local)
    protocol, address = _ask_relay(asker)
    values: dict[str, str] = {"local path": local}
    values.update(_relay_values(protocol, address))
    _ask_credentials(asker, protocol, address, name, folder, values)
    _ask_encryption(asker, name, folder, values)
    values["mode"] = asker.choice("Synchronisation mode", MODES, "shared")
    pullers = asker.ask("How many clients receive these files (puller count; empty: every registered client)",
                        "", _check_pullers, required=False)
    if pullers:
        values["puller count"] = pullers
    values["refresh"] = asker.ask("Seconds between two passes (refresh)", "10", parse_seconds)
    if asker.yes_no("Bundle small files into archives on the relay (index)?", False):
        values["index"] = "yes"
    if not os.path.isdir(local):
        os.makedirs(local, exist_ok=True)
        asker.say(f"  created the local folder {local}")
    write_client_section(target, name, values, replace=replace)
    asker.say(f"Wrote section [{name}] to {target}.")
    return _check_relay(asker, target, name)


# --------------------------------------------------------------------------- import


def _absolute(value: str, base: str) -> str:
    text = value.strip()
    if text.startswith("~") or os.path.isabs(text):
        return text
    return os.path.normpath(os.path.join(base, text))


def import_sections(source: str, target: str, asker: Asker) -> int:
    """Copy every section of ``source`` into ``target`` (asking before replacing one)."""
    source_config = load_config(source)  # proves it valid, resolves paths
    with open(source_config.path, encoding="utf-8") as handle:
        ini = read_ini(handle.read(), source_config.path)
    base = os.path.dirname(source_config.path)
    if os.path.realpath(source_config.path) == os.path.realpath(target):
        raise UsageError(f"{target} is the configuration file itself; nothing to import")
    skipped_globals = sorted(e.written for e in ini.globals.values() if (k := lookup(e.key)) and k.global_only)
    existing = _existing_sections(target)
    imported = []
    for section in ini.sections:
        entries = {e.key: e for e in ini.globals.values() if not ((k := lookup(e.key)) and k.global_only)}
        entries.update(section.entries)
        values: dict[str, str] = {}
        for key, entry in entries.items():
            value = entry.value
            if key in PATH_KEYS or (key == "rclone binary" and "/" in value):
                value = _absolute(value, base)
            elif key in FILE_OR_VALUE_KEYS:
                candidate = _absolute(value, base)
                if candidate != value.strip() and os.path.isfile(candidate):
                    value = candidate
            values[entry.written] = value
        client = source_config.client(section.name)
        if client.relay.protocol == "file":
            for key in ("host address", "host directory", "protocol"):
                if key in entries:
                    values.pop(entries[key].written, None)
            values["protocol"] = "file"
            values["host directory"] = client.relay.directory
        old = _same_name(section.name, existing)
        replace = False
        if old is not None:
            if not asker.yes_no(f"Section [{old}] exists in {target}; replace it with [{section.name}] "
                                f"of {source_config.path}?", False):
                asker.say(f"  kept [{old}]")
                continue
            replace = True
        write_client_section(target, old or section.name, values, replace=replace)
        imported.append(section.name)
        existing.append(section.name)
    if skipped_globals:
        asker.say(f"Not imported (global settings of {source_config.path}): {', '.join(skipped_globals)}")
    load_config(target)
    names = ", ".join(f"[{n}]" for n in imported) or "no section"
    asker.say(f"Imported {names} into {target}.")
    return EX_OK


def default_target() -> str:
    """Where ``escale -i`` writes without ``-c``: the first file of the search order."""
    return DEFAULT_SEARCH_PATHS()[0]


def run_wizard(config_path: str | None, import_from: str | None = None, *, asker: Asker | None = None) -> int:
    """``escale -i``: set up one client in ``config_path`` (default: :func:`default_target`),
    or import the sections of ``import_from`` into it. Returns the exit code."""
    target = os.path.abspath(os.path.expanduser(config_path)) if config_path else default_target()
    asker = asker or Asker()
    if import_from:
        return import_sections(import_from, target, asker)
    return setup(target, asker)
