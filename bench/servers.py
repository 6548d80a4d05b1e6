"""The relay servers of a benchmark run, started with the test suite's own helpers.

Each :class:`Backend` pairs what escale needs (a
:class:`~tests.servers.target.RelayTarget`: configuration lines for a fresh
repository folder) with an rclone remote of the same protocol on the same
server (a section of a generated ``rclone.conf``), so that ``rclone copy`` and
escale move the same bytes to the same server process. Servers are those of
``tests/servers/``: pyftpdlib (FTP, explicit FTPS), WsgiDAV under cheroot
(WebDAV), OpenSSH ``sshd`` (SFTP), a local folder, escale's rclone backend over
an rclone ``local`` remote, and ``rclone serve ftp|webdav|sftp``. Everything
listens on 127.0.0.1. Passwords reach rclone only through its configuration
file (obscured, mode 0600), never a command line.
"""

from __future__ import annotations

import os
import secrets
import shlex
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from tests.servers.ftp import ftp_server_process, ftp_target
from tests.servers.local import file_target
from tests.servers.rclone import RcloneConf, RcloneSftpServer, rclone_binary
from tests.servers.rclone import rclone_target as rclone_remote_target
from tests.servers.rclone_serve import rclone_serve
from tests.servers.rclone_serve import rclone_target as rclone_serve_target
from tests.servers.s3 import BUCKET as S3_BUCKET
from tests.servers.s3 import REMOTE as S3_REMOTE
from tests.servers.s3 import S3Server, s3_binary
from tests.servers.sshd import HOST, start_sshd
from tests.servers.target import RelayTarget
from tests.servers.tls import make_tls_files
from tests.servers.webdav import webdav_server_process, webdav_target

#: Every backend the benchmark knows, in table order.
BACKENDS = ("file", "ftp", "ftps", "webdav", "sftp", "rclone", "serve-ftp", "serve-webdav", "serve-sftp", "s3")

#: The default selection: the six backends escale users pick. The ``rclone serve``
#: servers (a second implementation of each protocol) are there on request:
#: ``rclone serve sftp`` slows down as its folder fills (a few tenths of a second
#: per request after a few hundred objects, for rclone's own client as for escale's),
#: which would make a full-size run last hours.
DEFAULT_BACKENDS = ("file", "ftp", "ftps", "webdav", "sftp", "rclone")

#: What each backend is, for the table's notes.
DESCRIPTIONS = {
    "file": "local folder",
    "ftp": "pyftpdlib",
    "ftps": "pyftpdlib, explicit TLS",
    "webdav": "WsgiDAV + cheroot, basic auth",
    "sftp": "OpenSSH sshd",
    "rclone": "escale's rclone backend, rclone local remote",
    "serve-ftp": "rclone serve ftp",
    "serve-webdav": "rclone serve webdav",
    "serve-sftp": "rclone serve sftp",
    "s3": "escale's rclone backend, rclone s3 remote on rclone serve s3",
}


#: rclone's WebDAV backend sleeps at least ``pacer_min_sleep`` (10 ms) between
#: calls, which caps it near 100 requests/s whatever ``--transfers`` says; an
#: expert running it against their own server turns the pacer off.
WEBDAV_TUNING = {"pacer_min_sleep": "0"}

#: rclone's FTP options, measured against pyftpdlib with 1,000 and 2,000 files of
#: 4 KiB through crypt (bench of 2026-11-30): ``no_check_upload`` skips the
#: listing that checks each upload's size and time (up 9.3 s -> 6.0 s for 2,000;
#: escale does not re-list after a put either; the upload still goes to a
#: temporary name and is renamed). Nothing else helped: ``concurrency`` is
#: unlimited by default (a limit only queues); ``idle_timeout`` (1 min) never
#: fires within a copy; pyftpdlib speaks EPSV and MLSD, and ``disable_mlsd``
#: makes uploads 2.5 times slower (LIST parsing), ``disable_epsv`` changes
#: nothing; ``--transfers``/``--checkers`` 8 or 16 and ``--inplace`` were no
#: faster. Downloads take the same time (about 11 ms per file, one after
#: another) with ``--transfers`` 1 to 16, ``--multi-thread-streams 0``,
#: ``--check-first``, ``--buffer-size 0``, a short ``close_timeout`` or
#: ``idle_timeout``/``shut_timeout`` 0; only separate rclone processes run in
#: parallel. ``--transfers`` stays the bench's (escale's
#: ``transfers``), so both sides move the same number of files at once.
FTP_TUNING = {"no_check_upload": "true"}


@dataclass
class Backend:
    """One server as seen by escale (``target``) and by rclone (``remote``).

    ``remote_path(folder)`` is the path on rclone remote ``remote`` of the
    repository folder that ``target.config_for(folder)`` names for escale.
    ``ssh_root`` is set for OpenSSH: the server-side folder under which
    ``unison`` over ssh can sync.
    """

    name: str
    target: RelayTarget
    remote: str
    remote_path: Callable[[str], str]
    rclone_flags: tuple[str, ...] = ()
    ssh: dict[str, str] = field(default_factory=dict)
    #: options of the tuned rclone remote (``rclone.conf`` keys added to the
    #: remote's section; see :data:`FTP_TUNING`, :data:`WEBDAV_TUNING`); empty
    #: when rclone's defaults are already what an expert would run
    rclone_tuning: dict[str, str] = field(default_factory=dict)

    @property
    def tuned_remote(self) -> str:
        """The rclone remote with :attr:`rclone_tuning` applied (``remote`` when there is none)."""
        return f"{self.remote}-tuned" if self.rclone_tuning else self.remote


def unison_command(source: str, run: str, backend: Backend | None) -> tuple[list[str], str, dict[str, str]]:
    """``unison`` syncing ``source`` with a fresh replica: the folder
    ``run/replica``, or, for an OpenSSH ``backend``, a folder of the server's
    account over ssh (host key checked, batch mode). Returns the command,
    the replica's path and the environment (archives kept in ``run``)."""
    env = dict(os.environ, UNISON=os.path.join(run, "archive-local"))
    argv = ["unison", source]
    if backend is None or not backend.ssh:
        target = os.path.join(run, "replica")
        argv.append(target)
    else:
        ssh = backend.ssh
        target = os.path.join(ssh["root"], os.path.basename(run))
        os.makedirs(target)
        argv.append(f"ssh://{ssh['user']}@127.0.0.1/{target}")
        sshargs = (f"-p {ssh['port']} -i {ssh['key']} -o UserKnownHostsFile={ssh['known_hosts']} "
                   "-o StrictHostKeyChecking=yes -o BatchMode=yes -o IdentitiesOnly=yes")
        remote_archive = os.path.join(run, "archive-server")
        argv += ["-sshargs", sshargs, "-servercmd", f"env UNISON={shlex.quote(remote_archive)} unison"]
    return [*argv, "-batch", "-times", "-silent"], target, env


def obscure(password: str, binary: str) -> str:
    """The password in rclone's obscured form (read from standard input, never argv)."""
    result = subprocess.run(
        [binary, "obscure", "-"], input=password, capture_output=True, text=True, check=True, timeout=30
    )
    return result.stdout.strip()


class BenchServers:
    """Starts the requested backends under ``workdir``; :meth:`close` stops them.

    ``conf_path`` is the generated rclone.conf (every remote, written by
    :meth:`write_rclone_conf` once all servers are up).
    """

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.binary = rclone_binary()
        self.conf_path = os.path.join(workdir, "rclone.conf")
        self.backends: dict[str, Backend] = {}
        self._sections: dict[str, dict[str, str]] = {"local": {"type": "local"}}
        self._stack = ExitStack()

    def close(self) -> None:
        self._stack.close()

    def _dir(self, *parts: str) -> str:
        path = os.path.join(self.workdir, *parts)
        os.makedirs(path, exist_ok=True)
        return path

    def start(self, name: str) -> Backend:
        """Start backend ``name`` (one of :data:`BACKENDS`)."""
        starter = getattr(self, "_start_" + name.replace("-", "_"), None)
        if starter is None:
            raise ValueError(f"unknown backend {name!r} (known: {', '.join(BACKENDS)})")
        backend: Backend = starter()
        if backend.rclone_tuning:
            self._sections[backend.tuned_remote] = {**self._sections[backend.remote], **backend.rclone_tuning}
        self.backends[name] = backend
        return backend

    def _start_file(self) -> Backend:
        base = self._dir("relay-file")
        return Backend("file", file_target(base), "local", lambda folder: os.path.join(base, folder))

    def _start_rclone(self) -> Backend:
        base = self._dir("relay-rclone")
        conf = RcloneConf(path=self.conf_path, binary=self.binary)
        target = rclone_remote_target("rclone", conf, "local", base)
        return Backend("rclone", target, "local", lambda folder: os.path.join(base, folder))

    def _start_s3(self) -> Backend:
        server = S3Server(workdir=self._dir("relay-s3"), binary=s3_binary())
        server.start()
        self._stack.callback(server.stop)
        self._sections[S3_REMOTE] = server.client_section()
        target = server.target(RcloneConf(path=self.conf_path, binary=server.binary))
        return Backend("s3", target, S3_REMOTE, lambda folder: f"{S3_BUCKET}/{folder}")

    def _start_ftp(self, tls: bool = False) -> Backend:
        name = "ftps" if tls else "ftp"
        files = make_tls_files(self._dir(name + "-tls")) if tls else None
        server = ftp_server_process(self._dir(name + "-root"), tls=files)
        self._stack.callback(server.process.stop)
        section = {"type": "ftp", "host": HOST, "port": str(server.port), "user": server.user,
                   "pass": obscure(server.password, self.binary)}
        flags: tuple[str, ...] = ()
        if files is not None:
            section["explicit_tls"] = "true"
            # pyftpdlib truncates uploads over TLS 1.3 data connections from Go clients
            # (pyftpdlib issue #602): rclone speaks TLS 1.2 to it
            section["disable_tls13"] = "true"
            flags = ("--ca-cert", files.ca_cert)
        self._sections[name] = section
        return Backend(name, ftp_target(name, server), name, lambda folder: folder, flags,
                       rclone_tuning=FTP_TUNING)

    def _start_ftps(self) -> Backend:
        return self._start_ftp(tls=True)

    def _start_webdav(self) -> Backend:
        # basic authentication: what rclone's webdav remote speaks (escale speaks both)
        server = webdav_server_process(self._dir("webdav-root"), auth="basic")
        self._stack.callback(server.process.stop)
        self._sections["webdav"] = {
            "type": "webdav", "url": f"http://{HOST}:{server.port}/", "vendor": "other",
            "user": server.user, "pass": obscure(server.password, self.binary),
        }  # fmt: skip
        return Backend("webdav", webdav_target("webdav", server), "webdav", lambda folder: folder,
                       rclone_tuning=WEBDAV_TUNING)

    def _start_sftp(self) -> Backend:
        server = start_sshd(self._dir("sshd"))
        self._stack.callback(server.stop)
        self._sections["sshd"] = {
            "type": "sftp", "host": HOST, "port": str(server.port), "user": server.user,
            "key_file": server.user_key, "known_hosts_file": server.known_hosts, "shell_type": "none",
            "md5sum_command": "none", "sha1sum_command": "none",
        }  # fmt: skip
        ssh = {"port": str(server.port), "user": server.user, "key": server.user_key,
               "known_hosts": server.known_hosts, "root": server.root}
        return Backend("sftp", server.target("sftp"), "sshd", lambda folder: os.path.join(server.root, folder),
                       ssh=ssh)

    def _start_serve(self, kind: str) -> Backend:
        name = f"serve-{kind}"
        base = self._dir(name)
        server = rclone_serve(kind, os.path.join(base, "root"), os.path.join(base, "work"))
        self._stack.callback(server.process.stop)
        section = {"user": server.user, "pass": obscure(server.password, self.binary)}
        if kind == "ftp":
            section.update(type="ftp", host=HOST, port=str(server.port))
        else:
            section.update(type="webdav", url=f"http://{HOST}:{server.port}/", vendor="rclone")
        self._sections[name] = section
        tuning = FTP_TUNING if kind == "ftp" else WEBDAV_TUNING
        return Backend(name, rclone_serve_target(name, server), name, lambda folder: folder,
                       rclone_tuning=tuning)

    def _start_serve_ftp(self) -> Backend:
        return self._start_serve("ftp")

    def _start_serve_webdav(self) -> Backend:
        return self._start_serve("webdav")

    def _start_serve_sftp(self) -> Backend:
        workdir = self._dir("serve-sftp")
        server = RcloneSftpServer(workdir=workdir, root=os.path.join(workdir, "root"), binary=self.binary)
        server.prepare()
        server.start()
        self._stack.callback(server.stop)
        self._sections["serve-sftp"] = {
            "type": "sftp", "host": HOST, "port": str(server.port), "user": server.user,
            "key_file": server.user_key, "known_hosts_file": server.known_hosts, "shell_type": "none",
            "md5sum_command": "none", "sha1sum_command": "none",
        }  # fmt: skip
        return Backend("serve-sftp", server.target(), "serve-sftp", lambda folder: folder)

    def crypt_remote(self, backend: Backend, *, tuned: bool = True) -> str:
        """The name of an rclone ``crypt`` remote (names and content encrypted,
        as escale's) over the root of ``backend``'s tuned remote (``tuned``
        false: its remote with rclone's defaults), added to rclone.conf on
        first use; paths below it are repository folder names."""
        base = backend.tuned_remote if tuned else backend.remote
        name = f"{base}-crypt"
        if name not in self._sections:
            root = backend.remote_path("")
            self._sections[name] = {
                "type": "crypt", "remote": f"{base}:{root}", "filename_encryption": "standard",
                "directory_name_encryption": "true", "password": obscure(secrets.token_hex(16), self.binary),
            }  # fmt: skip
            self.write_rclone_conf()
        return name

    def write_rclone_conf(self) -> str:
        """Write rclone.conf (mode 0600) with a remote per started server; return its path."""
        lines: list[str] = []
        for section, keys in self._sections.items():
            lines.append(f"[{section}]")
            lines += [f"{key} = {value}" for key, value in keys.items()]
            lines.append("")
        fd = os.open(self.conf_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(lines))
        return self.conf_path


def stop_servers_on_sigterm() -> None:
    """Make SIGTERM (``timeout``, ``kill``) end this process through its
    ``finally`` blocks, so that the servers it started are stopped too."""

    def leave(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, leave)


@contextmanager
def started(workdir: str, names: list[str]) -> Iterator[BenchServers]:
    """The servers of ``names``, running until the block ends (stopped by pid)."""
    servers = BenchServers(workdir)
    try:
        for name in names:
            servers.start(name)
        servers.write_rclone_conf()
        yield servers
    finally:
        servers.close()
