"""``escale -i [FILE]``: interactive setup of one client, or import of FILE's sections.

Setup asks, in order: the local folder, the section name, the relay address
(one line such as ``sftp://user@host:2222/path``, or step by step), the
credentials (written to ``<section>.secret`` next to the configuration file,
mode 0600, referenced by ``secret file``; never to the configuration file
itself), encryption (a new key file ``<section>.key``, mode 0600, or an existing
one), the mode, the puller count and the refresh interval. Each answer is
checked on the spot and asked again when wrong; an address whose
``protocol://`` is mistyped (``ftp//host/x``, ``ftp:/host/x``) is refused
rather than read as a host named ``ftp``.

The relay is checked before anything goes into the configuration file: the
section is written to a temporary copy of the file, loaded, and its relay
opened and its root listed (the temporary copy is then removed). A relay that
refuses the login or does not answer is reported, and the user chooses: enter
the relay and credentials again (the default), keep these settings anyway (the
section is written, and the command ends with the error's exit code), or
cancel (nothing is written to the configuration file).

After encryption it asks whether to use the index layout (``index = yes``:
many small files packed into few relay requests), default no, with a
one-line explanation; the answer is written only when yes. An existing
repository keeps its layout: a client whose answer differs is told at its
first pass to set ``index`` or to convert with ``escalectl migrate --layout``.

The section is added with :func:`escale.config.write_client_section` (an
existing section is replaced only after a yes) and the file is loaded back to
prove it valid.

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
import re
import shutil
import tempfile
from collections.abc import Callable

from escale.config import default_search_paths, load_config, parse_address, write_client_section
from escale.config.address import CONFIG_PROTOCOLS, NETWORK_PROTOCOLS, RCLONE_FAMILY, Address, address_scheme
from escale.config.ini import read_ini, section_name_problem
from escale.config.keys import FILE_OR_VALUE_KEYS, PATH_KEYS, PROGRAM_KEYS, key_named, lookup
from escale.config.settings import MODES
from escale.config.values import ValueProblem
from escale.crypto import generate_key_file
from escale.crypto.keys import load_secret
from escale.errors import EX_OK, ConfigError, EscaleError, RelayNotFound, UsageError
from escale.relay import make_relay


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


_MISTYPED_SCHEME = re.compile(r"\s*([A-Za-z][A-Za-z0-9+.-]*)(//|:/(?!/)|:\\)")


def malformed_scheme(line: str) -> str | None:
    """Why relay address ``line`` looks like a mistyped ``protocol://``, or None.

    ``ftp//host/x``, ``ftp:/host/x`` and ``ftp:\\host`` would otherwise be read
    as a short form naming a host ``ftp``. An rclone remote may legitimately
    be followed by ``:/`` (``s3:/bucket``), so only ``//`` counts for those.
    """
    match = _MISTYPED_SCHEME.match(line)
    if match is None or address_scheme(line) is not None:
        return None
    word, sep = match[1].lower(), match[2]
    if word not in CONFIG_PROTOCOLS or (word in RCLONE_FAMILY and sep != "//"):
        return None
    rest = line.strip()[len(match[1]) + len(sep):].lstrip("/\\")
    if word == "file":
        rest = "/" + rest  # file:///absolute/path
    return f"malformed address: the protocol is written {word}:// (did you mean {word}://{rest}?)"


def _check_host(text: str) -> None:
    if any(c in text for c in "/@\\ ") or text.count(":") == 1:
        raise ValueProblem("a host name or address only, e.g. files.example.org, 192.0.2.7 or ::1")


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
        problem = malformed_scheme(line)
        if problem:
            asker.say(f"  {problem}")
            continue
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
    host = asker.ask("Server host name or address", check=_check_host)
    port = asker.ask("Port (empty: the protocol's default)", "", key_named("port").read, required=False)
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


def _ask_index(asker: Asker, values: dict[str, str]) -> None:
    """Offer the index layout (``index = yes``), default no; written only when chosen."""
    asker.say("  The index layout packs many small files into a few relay requests (fastest for thousands")
    asker.say("  of small files); every client of one relay must use the same layout.")
    if asker.yes_no("Use the index layout (index)?", False):
        values["index"] = "yes"


def _probe_relay(asker: Asker, target: str, name: str, values: dict[str, str], replace: bool) -> EscaleError | None:
    """Check the relay that section ``[name]`` with ``values`` would use, before
    anything is written to ``target``: the section goes into a temporary copy of
    ``target`` (same folder, so relative paths and global defaults read the
    same), which is loaded, and the relay is opened and its root listed. Returns
    the error met, or None when the relay answers."""
    folder = os.path.dirname(target)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=folder, prefix=".escale-setup.", suffix=".conf.tmp")
    os.close(fd)
    try:
        try:
            if os.path.isfile(target):
                shutil.copyfile(target, probe)
            write_client_section(probe, name, values, replace=replace)
            client = load_config(probe).client(name)
        except ConfigError as exc:
            # the message names the temporary copy: name the real file instead
            error = ConfigError(str(exc).replace(probe, target))
            asker.say(f"These settings do not load: {error}")
            return error
        except OSError as exc:
            error = ConfigError(f"cannot check the settings next to {target}: {exc.strerror or exc}")
            asker.say(str(error))
            return error
    finally:
        with contextlib.suppress(OSError):
            os.unlink(probe)
    where = client.relay.describe()
    asker.say(f"Checking the relay {where} ...")
    relay = make_relay(client.relay)
    try:
        relay.open()
        try:
            entries = relay.list("")
        except RelayNotFound:
            entries = []  # a new repository folder: the first pass creates it
    except EscaleError as exc:
        asker.say(f"The relay {where} cannot be used: {exc}")
        return exc
    finally:
        relay.close()
    asker.say(f"The relay answers ({len(entries)} entries at its root).")
    return None


def _ask_working_relay(asker: Asker, target: str, name: str, replace: bool, values: dict[str, str],
                       written: list[str]) -> EscaleError | None:
    """Ask the relay and its credentials into ``values`` until the relay answers,
    or until the user keeps a relay that does not (its error is returned then).
    Secret files written are appended to ``written``. Raises Cancelled when the
    user cancels."""
    folder = os.path.dirname(target)
    while True:
        protocol, address = _ask_relay(asker)
        relay_values = _relay_values(protocol, address)
        _ask_credentials(asker, protocol, address, name, folder, relay_values)
        if "secret file" in relay_values:
            written.append(relay_values["secret file"])
        attempt = {**values, **relay_values}
        error = _probe_relay(asker, target, name, attempt, replace)
        if error is None:
            values.update(relay_values)
            return None
        answer = asker.choice("Enter the relay again, keep these settings anyway, or cancel?",
                              ("again", "keep", "cancel"), "again")
        if answer == "keep":
            values.update(relay_values)
            return error
        if answer == "cancel":
            raise Cancelled(f"setup cancelled; {target} was not changed")


def setup(target: str, asker: Asker) -> int:
    """The interactive setup of one client into configuration file ``target``."""
    folder = os.path.dirname(target)
    asker.say(f"escale setup: this adds one client to {target}")
    local = os.path.abspath(os.path.expanduser(asker.ask("Local folder to synchronise")))
    name, replace = _ask_section(asker, target, local)
    values: dict[str, str] = {"local path": local}
    written: list[str] = []
    try:
        relay_error = _ask_working_relay(asker, target, name, replace, values, written)
    except Cancelled:
        for path in written:  # credentials of a setup that was not kept
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise
    _ask_encryption(asker, name, folder, values)
    _ask_index(asker, values)
    values["mode"] = asker.choice("Synchronisation mode", MODES, key_named("mode").default)
    pullers = asker.ask("How many clients receive these files (puller count; empty: every registered client)",
                        "", key_named("puller count").read, required=False)
    if pullers:
        values["puller count"] = pullers
    refresh = key_named("refresh")
    values["refresh"] = asker.ask("Seconds between two passes (refresh)", f"{refresh.default:g}", refresh.read)
    if not os.path.isdir(local):
        os.makedirs(local, exist_ok=True)
        asker.say(f"  created the local folder {local}")
    write_client_section(target, name, values, replace=replace)
    asker.say(f"Wrote section [{name}] to {target}.")
    try:
        load_config(target)
    except ConfigError as exc:
        asker.say(f"The configuration was written but does not load: {exc}")
        return exc.exit_code
    if relay_error is not None:
        asker.say(f"The configuration is kept in {target} although the relay cannot be used ({relay_error}); "
                  f"fix the relay, then run 'escale -c {target}'.")
        return relay_error.exit_code
    asker.say(f"Done. Run 'escale -c {target}' (or 'escalectl -c {target} start' in the background).")
    return EX_OK


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
            if key in PATH_KEYS or (key in PROGRAM_KEYS and "/" in value):
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
    return default_search_paths()[0]


def run_wizard(config_path: str | None, import_from: str | None = None, *, asker: Asker | None = None) -> int:
    """``escale -i``: set up one client in ``config_path`` (default: :func:`default_target`),
    or import the sections of ``import_from`` into it. Returns the exit code."""
    target = os.path.abspath(os.path.expanduser(config_path)) if config_path else default_target()
    asker = asker or Asker()
    if import_from:
        return import_sections(import_from, target, asker)
    return setup(target, asker)
