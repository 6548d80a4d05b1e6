"""pyftpdlib FTP and FTPS servers for the tests, each in its own process.

Fixtures (session-scoped): ``target_ftp`` (plain FTP) and ``target_ftps``
(explicit FTPS, certificate from a per-session test CA, client verifies it with
``ca_file``). Each serves a temporary folder on 127.0.0.1 with a user and a
random password; the password reaches the child through its environment.

Run as ``python -m tests.servers.ftp --root DIR --port N --user U [--cert C --key K]
[--no-mlst]`` (password in ``ESCALE_TEST_SERVER_PASSWORD``): that is what the
fixtures start. ``--no-mlst`` removes MLSD/MLST from the server, to exercise the
client's LIST/SIZE/MDTM fallback.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from escale.relay import RelaySpec
from tests.servers.process import PASSWORD_ENV, REPO_ROOT, ServerProcess, child_arguments, start_on_free_port
from tests.servers.target import RelayTarget, plant_file
from tests.servers.tls import TlsFiles, make_tls_files

__all__ = [
    "FtpServer", "ftp_server", "ftp_server_process", "ftp_target", "ftps_server", "target_ftp", "target_ftps",
]


@dataclass
class FtpServer:
    """A running test FTP(S) server and what a client needs to reach it."""

    process: ServerProcess
    root: str
    port: int
    user: str
    password: str
    tls: TlsFiles | None = None


def ftp_server_process(root: str, *, tls: TlsFiles | None = None, mlst: bool = True) -> FtpServer:
    """Start a pyftpdlib server on ``root`` (FTPS when ``tls`` is given)."""
    os.makedirs(root, exist_ok=True)
    user, password = "escale", secrets.token_urlsafe(12)

    def make(port: int) -> ServerProcess:
        argv = [sys.executable, "-m", "tests.servers.ftp", "--root", root, "--port", str(port), "--user", user]
        if tls is not None:
            argv += ["--cert", tls.chain, "--key", tls.key]
        if not mlst:
            argv.append("--no-mlst")
        return ServerProcess("pyftpdlib", argv, port, env={PASSWORD_ENV: password}, cwd=REPO_ROOT)

    proc = start_on_free_port(make)
    return FtpServer(proc, root, proc.port, user, password, tls)


def ftp_target(name: str, server: FtpServer) -> RelayTarget:
    """A RelayTarget on ``server`` (protocol ftps when it has TLS)."""
    protocol = "ftps" if server.tls else "ftp"
    ca_file = server.tls.ca_cert if server.tls else None

    def spec_for(folder: str) -> RelaySpec:
        return RelaySpec(
            protocol=protocol, host="127.0.0.1", port=server.port, directory=folder,
            username=server.user, password=server.password, ca_file=ca_file, timeout=10.0,
        )

    def config_for(folder: str) -> dict[str, str]:
        lines = {
            "protocol": protocol, "address": "127.0.0.1", "port": str(server.port),
            "directory": folder, "username": server.user, "password": server.password,
        }
        if ca_file:
            lines["verify ssl"] = "yes"
            lines["ca file"] = ca_file
        return lines

    def plant(folder: str, raw_name: str, data: bytes) -> bool:
        return plant_file(server.root, folder, raw_name, data)

    notes = {"root": server.root}
    if ca_file:
        notes["ca_file"] = ca_file
    return RelayTarget(name, spec_for, config_for, restart=server.process.restart, plant=plant, notes=notes)


@pytest.fixture(scope="session")
def ftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpServer]:
    server = ftp_server_process(str(tmp_path_factory.mktemp("ftp-root")))
    yield server
    server.process.shutdown()


@pytest.fixture(scope="session")
def ftps_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpServer]:
    tls = make_tls_files(str(tmp_path_factory.mktemp("ftps-tls")))
    server = ftp_server_process(str(tmp_path_factory.mktemp("ftps-root")), tls=tls)
    yield server
    server.process.shutdown()


@pytest.fixture(scope="session")
def target_ftp(ftp_server: FtpServer) -> RelayTarget:
    return ftp_target("ftp", ftp_server)


@pytest.fixture(scope="session")
def target_ftps(ftps_server: FtpServer) -> RelayTarget:
    return ftp_target("ftps", ftps_server)


# --------------------------------------------------------------------------- child process


def _serve(argv: list[str]) -> None:
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
    from pyftpdlib.servers import ThreadedFTPServer

    parser = child_arguments()
    parser.add_argument("--no-mlst", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    authorizer = DummyAuthorizer()
    authorizer.add_user(args.user, os.environ[PASSWORD_ENV], args.root, perm="elradfmwMT")
    handler: type[FTPHandler]
    if args.cert:
        handler = type("Handler", (TLS_FTPHandler,), {})
        handler.certfile = args.cert
        handler.keyfile = args.key
        handler.tls_control_required = True
        handler.tls_data_required = True
    else:
        handler = type("Handler", (FTPHandler,), {})
    handler.authorizer = authorizer
    handler.banner = "escale test pyftpdlib ready"
    handler.timeout = 120
    if args.no_mlst:
        handler.proto_cmds = {k: v for k, v in FTPHandler.proto_cmds.items() if k not in ("MLSD", "MLST")}
        if args.cert:
            handler.proto_cmds.update({k: TLS_FTPHandler.proto_cmds[k] for k in ("AUTH", "PBSZ", "PROT")})
    server = ThreadedFTPServer(("127.0.0.1", args.port), handler)
    server.serve_forever()


if __name__ == "__main__":
    _serve(sys.argv[1:])
