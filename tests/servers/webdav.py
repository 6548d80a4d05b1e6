"""WsgiDAV under cheroot, in its own process, for the WebDAV tests.

Fixtures (session-scoped): ``target_webdav`` (digest authentication, the
WsgiDAV default), ``webdav_basic_server`` (basic authentication only) and
``webdav_tls_server`` (https with a certificate from a per-session test CA,
digest authentication). Each serves a temporary folder on 127.0.0.1 with a user
and a random password; the password reaches the child through its environment.

Run as ``python -m tests.servers.webdav --root DIR --port N --user U --auth
basic|digest [--cert C --key K]`` (password in ``ESCALE_TEST_SERVER_PASSWORD``).
"""

from __future__ import annotations

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
    "WebdavServer", "target_webdav", "webdav_basic_server", "webdav_server", "webdav_tls_server",
]


@dataclass
class WebdavServer:
    """A running WsgiDAV server and what a client needs to reach it."""

    process: ServerProcess
    root: str
    port: int
    user: str
    password: str
    auth: str
    tls: TlsFiles | None = None

    @property
    def protocol(self) -> str:
        return "https" if self.tls else "webdav"

    def spec(self, folder: str, **changes: object) -> RelaySpec:
        values: dict[str, object] = {
            "protocol": self.protocol, "host": "127.0.0.1", "port": self.port, "directory": folder,
            "username": self.user, "password": self.password, "timeout": 10.0,
            "ca_file": self.tls.ca_cert if self.tls else None,
        }
        values.update(changes)
        return RelaySpec(**values)  # type: ignore[arg-type]


def webdav_server_process(root: str, *, auth: str = "digest", tls: TlsFiles | None = None) -> WebdavServer:
    """Start WsgiDAV on ``root`` with ``auth`` ("basic" or "digest")."""
    os.makedirs(root, exist_ok=True)
    user, password = "escale", secrets.token_urlsafe(12)

    def make(port: int) -> ServerProcess:
        argv = [
            sys.executable, "-m", "tests.servers.webdav", "--root", root, "--port", str(port),
            "--user", user, "--auth", auth,
        ]
        if tls is not None:
            argv += ["--cert", tls.cert, "--key", tls.key, "--chain", tls.chain]
        return ServerProcess(f"wsgidav ({auth})", argv, port, env={PASSWORD_ENV: password}, cwd=REPO_ROOT)

    proc = start_on_free_port(make)
    return WebdavServer(proc, root, proc.port, user, password, auth, tls)


def webdav_target(name: str, server: WebdavServer) -> RelayTarget:
    def config_for(folder: str) -> dict[str, str]:
        lines = {
            "protocol": server.protocol, "address": "127.0.0.1", "port": str(server.port),
            "directory": folder, "username": server.user, "password": server.password,
        }
        if server.tls:
            lines["ca file"] = server.tls.ca_cert
        return lines

    def plant(folder: str, raw_name: str, data: bytes) -> bool:
        return plant_file(server.root, folder, raw_name, data)

    return RelayTarget(
        name, server.spec, config_for, restart=server.process.restart, plant=plant,
        notes={"root": server.root, "auth": server.auth},
    )


@pytest.fixture(scope="session")
def webdav_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebdavServer]:
    server = webdav_server_process(str(tmp_path_factory.mktemp("webdav-root")), auth="digest")
    yield server
    server.process.shutdown()


@pytest.fixture(scope="session")
def webdav_basic_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebdavServer]:
    server = webdav_server_process(str(tmp_path_factory.mktemp("webdav-basic-root")), auth="basic")
    yield server
    server.process.shutdown()


@pytest.fixture(scope="session")
def webdav_tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebdavServer]:
    tls = make_tls_files(str(tmp_path_factory.mktemp("webdav-tls")))
    server = webdav_server_process(str(tmp_path_factory.mktemp("webdav-tls-root")), tls=tls)
    yield server
    server.process.shutdown()


@pytest.fixture(scope="session")
def target_webdav(webdav_server: WebdavServer) -> RelayTarget:
    return webdav_target("webdav", webdav_server)


# --------------------------------------------------------------------------- child process


def _serve(argv: list[str]) -> None:
    import logging

    from cheroot import wsgi
    from wsgidav.wsgidav_app import WsgiDAVApp

    parser = child_arguments()
    parser.add_argument("--auth", choices=("basic", "digest"), required=True)
    parser.add_argument("--chain")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    config = {
        "host": "127.0.0.1",
        "port": args.port,
        "provider_mapping": {"/": args.root},
        "simple_dc": {"user_mapping": {"*": {args.user: {"password": os.environ[PASSWORD_ENV]}}}},
        "http_authenticator": {
            "accept_basic": args.auth == "basic",
            "accept_digest": args.auth == "digest",
            "default_to_digest": args.auth == "digest",
        },
        "lock_storage": True,
        "property_manager": True,
        "verbose": 1,
        "logging": {"enable_loggers": []},
        "dir_browser": {"enable": False},
    }
    app = WsgiDAVApp(config)
    server = wsgi.Server(("127.0.0.1", args.port), app, numthreads=16, timeout=60)
    if args.cert:
        from cheroot.ssl.builtin import BuiltinSSLAdapter

        server.ssl_adapter = BuiltinSSLAdapter(args.cert, args.key, args.chain)
    try:
        server.start()
    finally:
        server.stop()


if __name__ == "__main__":
    _serve(sys.argv[1:])
