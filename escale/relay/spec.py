"""Where a relay is and how to reach it: the typed input of :func:`make_relay`.

The configuration layer builds a :class:`RelaySpec` from a client section; the
relay layer never reads configuration files itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Protocols served by a native backend, by module name under escale.relay.
NATIVE_PROTOCOLS = {
    "file": "file",
    "memory": "memory",
    "ftp": "ftp",
    "ftps": "ftp",
    "webdav": "webdav",
    "http": "webdav",
    "https": "webdav",
    "sftp": "sftp",
    "rclone": "rclone",
}

#: Cloud protocols reached through rclone: the protocol names the rclone remote type.
RCLONE_PROTOCOLS = (
    "dropbox",
    "googlecloud",
    "googledrive",
    "amazoncloud",
    "s3",
    "onedrive",
    "b2",
    "hubic",
    "swift",
)

ALL_PROTOCOLS = tuple(NATIVE_PROTOCOLS) + RCLONE_PROTOCOLS


@dataclass(frozen=True)
class RelaySpec:
    """Everything a backend needs to open a repository.

    ``directory`` is the repository folder on the relay (for ``file``, the local
    folder). ``password`` is never logged: :meth:`describe` omits it.
    """

    protocol: str
    host: str | None = None
    port: int | None = None
    directory: str = ""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    verify_ssl: bool = True
    ssl_version: str | None = None
    certificate: str | None = None
    keyfile: str | None = None
    ca_file: str | None = None
    known_hosts: str | None = None
    ssh_key: str | None = None
    #: what carries SFTP: ``auto``, ``openssh`` (the ``ssh`` program) or ``paramiko``
    ssh_client: str = "auto"
    rclone_binary: str = "rclone"
    rclone_remote: str | None = None
    rclone_config: str | None = None
    timeout: float = 30.0

    def describe(self) -> str:
        """``protocol://[user@]host[:port]/directory``, never with a password."""
        if self.protocol == "file":
            return f"file://{self.directory}"
        if self.protocol in ("rclone", *RCLONE_PROTOCOLS):
            return f"{self.protocol}:{self.rclone_remote or ''}:{self.directory}"
        user = f"{self.username}@" if self.username else ""
        port = f":{self.port}" if self.port else ""
        return f"{self.protocol}://{user}{self.host or ''}{port}/{self.directory.lstrip('/')}"
