"""The one exception tree of escale.

Every error escale raises on purpose derives from :class:`EscaleError`. Foreign
exceptions (``OSError``, ``ftplib`` errors, paramiko, HTTP statuses, rclone exit
codes) are translated at the boundary where they occur, so that code above the
relay layer only ever sees these classes.

Each class carries:

* ``exit_code``: what the command-line tools exit with when this error ends them
  (values follow BSD ``sysexits.h``; the full table is in ``doc/cli.rst``);
* ``transient``: true when retrying the same operation later may succeed (a
  dropped connection, a server restarting, a busy lease); the retry wrapper only
  retries these.

Messages are one line, name the file, section, key or relay object concerned, and
never contain a password, key or passphrase.
"""

from __future__ import annotations

# sysexits.h values, used as the documented exit codes of escale and escalectl.
EX_OK = 0
EX_FAILURE = 1
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CANTCREAT = 73
EX_IOERR = 74
EX_TEMPFAIL = 75
EX_PROTOCOL = 76
EX_NOPERM = 77
EX_CONFIG = 78


class EscaleError(Exception):
    """Base of every error escale raises on purpose."""

    exit_code: int = EX_FAILURE
    transient: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(EscaleError):
    """The command line is wrong (unknown option, missing argument)."""

    exit_code = EX_USAGE


class ConfigError(EscaleError):
    """The configuration file is missing, unreadable or invalid.

    The message names the file, and where it applies the section and the key.
    """

    exit_code = EX_CONFIG

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        section: str | None = None,
        key: str | None = None,
    ) -> None:
        where = []
        if path is not None:
            where.append(str(path))
        if section is not None:
            where.append(f"[{section}]")
        if key is not None:
            where.append(f"'{key}'")
        full = f"{' '.join(where)}: {message}" if where else message
        super().__init__(full)
        self.path = path
        self.section = section
        self.key = key


# --------------------------------------------------------------------------- relay


class RelayError(EscaleError):
    """An operation on the relay failed.

    ``name`` is the relay object concerned, when there is one.
    """

    exit_code = EX_UNAVAILABLE

    def __init__(self, message: str, *, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


class RelayNotFound(RelayError):
    """The relay object (or folder) does not exist."""


class RelayExists(RelayError):
    """The target exists and the operation asked not to replace it."""


class RelayPermissionDenied(RelayError):
    """The relay refused the operation (authentication or permissions)."""

    exit_code = EX_NOPERM


class RelayQuotaExceeded(RelayError):
    """The relay is full (server quota or ``disk quota``); retry after reclaim."""

    transient = True


class RelayConnectionError(RelayError):
    """The relay could not be reached, or the connection dropped."""

    transient = True


class RelayTimeout(RelayConnectionError):
    """The relay did not answer in time."""


class RelayClosed(RelayError):
    """The backend was used after ``close()`` (a programming error)."""

    exit_code = EX_SOFTWARE


class UnsafeName(RelayError):
    """A relay object name is unsafe (``..``, absolute, backslash, control
    character, reserved temporary prefix), whether given to us or listed by the
    server. A hostile relay cannot make a client touch anything outside its folder.
    """

    exit_code = EX_PROTOCOL


class RelayProtocolError(RelayError):
    """The server answered something the backend does not understand."""

    exit_code = EX_PROTOCOL


class HostKeyError(RelayError):
    """The SFTP server's host key is unknown or changed."""

    exit_code = EX_NOPERM


class CertificateError(RelayError):
    """The relay's TLS certificate could not be verified (unknown issuer,
    expired, wrong host name). Not transient: retrying cannot help."""

    exit_code = EX_NOPERM


# --------------------------------------------------------------------------- crypto


class CryptoError(EscaleError):
    """Encryption or decryption failed."""

    exit_code = EX_DATAERR


class IntegrityError(CryptoError):
    """An object failed authentication: it was altered, truncated, reordered,
    swapped with another object or replayed. Nothing was written from it."""


class WrongKeyError(CryptoError):
    """The key or passphrase does not open this relay's repository."""


class KeyFileError(CryptoError):
    """A key file is missing, unreadable or malformed."""

    exit_code = EX_CONFIG


# --------------------------------------------------------------------------- protocol


class ProtocolError(EscaleError):
    """The relay repository is in a state the protocol does not accept
    (unknown format version, malformed object, rolled-back history)."""

    exit_code = EX_PROTOCOL

    def __init__(self, message: str, *, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


class RepositoryGone(ProtocolError):
    """The repository this client synced with is no longer on the relay (an
    unmounted disk, a wiped server) or the relay now holds a different one.
    Nothing is re-created on its own: the user checks the relay, then runs
    ``escalectl fix`` (rebuild from this client) or ``escalectl migrate``."""

    exit_code = EX_UNAVAILABLE


class ObjectTooLarge(ProtocolError):
    """A relay object is larger than the bound for its kind (metadata objects
    are read whole, so they are bounded: a planted huge object is refused, not
    read into memory). ``name`` is the relay object."""


class LeaseBusy(ProtocolError):
    """Another client holds the relay's lease; try again later."""

    exit_code = EX_TEMPFAIL
    transient = True


class LeaseLost(ProtocolError):
    """Our lease expired or was taken over; nothing more may be committed."""

    exit_code = EX_TEMPFAIL
    transient = True


# --------------------------------------------------------------------------- local side


class LocalError(EscaleError):
    """A local file or folder operation failed. ``path`` names it."""

    exit_code = EX_IOERR

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class DiskFull(LocalError):
    """The local disk is full; the user's file was left untouched."""

    transient = True


class ClientBusy(EscaleError):
    """Another escale process is already working on this client (a cron
    ``--once`` beside the daemon): try again later, nothing is wrong."""

    exit_code = EX_TEMPFAIL
    transient = True


class DaemonError(EscaleError):
    """The daemon could not be reached, started or stopped."""

    exit_code = EX_UNAVAILABLE


class NotRunning(DaemonError):
    """No escale daemon is running for this configuration."""

    exit_code = EX_UNAVAILABLE


class AlreadyRunning(DaemonError):
    """An escale daemon is already running for this configuration."""

    exit_code = EX_TEMPFAIL


class OperationError(EscaleError):
    """A whole-repository operation (backup, restore, migrate, fix) failed."""

    exit_code = EX_SOFTWARE


class ArchiveError(OperationError):
    """A backup archive is corrupt, truncated or not an escale backup."""

    exit_code = EX_DATAERR


class TargetNotEmpty(OperationError):
    """The relay a repository would be migrated or restored to already holds an
    escale repository (or part of one); nothing was written to it."""

    exit_code = EX_CANTCREAT
