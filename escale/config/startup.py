"""Checks made once before clients run: what the file says must be usable here.

The parser (:mod:`escale.config.parser`) reads text and looks only at the files a
key names (secret files, key files, certificates). These checks look at the
folders a client will use, without creating or changing anything, so that a
configuration escale cannot run with ends with one ConfigError (exit 78) naming
the file, the section and the key, before anything is written:

* a file that defines no client;
* a ``local path`` that exists and is not a folder, that cannot be read, or that
  is missing and cannot be created (an ancestor is a file, or is a folder where
  this user may not create one). A missing local folder that *can* be created
  is not an error: the client decides what to do with it;
* a state folder (``state directory``, or the default inside the local folder)
  that exists and is not a folder, that this user cannot read, write or enter,
  or that is missing and cannot be created;
* a ``state directory`` or ``log file`` inside a client's local folder, except
  below a name the scanner leaves out (``.escale``): they would be synced
  themselves, again at every pass, since every pass changes them.

Permissions are judged with the effective user's rights (``faccessat`` with
``AT_EACCESS``), so a process without root's file capabilities is judged as it
will be treated.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from escale.config.settings import ClientSettings, Config
from escale.errors import ConfigError


def require_clients(config: Config) -> None:
    """Raise ConfigError when ``config`` defines no client section."""
    if not config.clients:
        raise ConfigError(
            "no client section: add one such as [documents] with its 'local path' and relay "
            "(or run 'escale -i')", path=config.path)


def _access(path: str, mode: int) -> bool:
    try:
        return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)
    except OSError:
        return False


def _folder_problem(path: str, *, need_write: bool) -> str | None:
    """Why folder ``path`` cannot be used (None when it can); nothing is created.

    An existing ``path`` must be a folder this user may list and enter (and write
    to, with ``need_write``). A missing one must be creatable: its nearest existing
    ancestor must be a folder in which this user may create entries.
    """
    if os.path.lexists(path):
        if not os.path.isdir(path):
            kind = "a broken link" if os.path.islink(path) and not os.path.exists(path) else "not a folder"
            return f"{path} is {kind}"
        wanted = os.R_OK | os.X_OK | (os.W_OK if need_write else 0)
        if not _access(path, wanted):
            what = "read, write or enter" if need_write else "read or enter"
            return f"cannot {what} the folder {path} (permission denied)"
        return None
    ancestor = os.path.dirname(path)
    while ancestor != os.path.dirname(ancestor) and not os.path.lexists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        return f"{path} cannot be created: {ancestor} is not a folder"
    if not _access(ancestor, os.W_OK | os.X_OK):
        return f"{path} cannot be created: no permission to create folders in {ancestor}"
    return None


def _synced_inside(local_path: str, path: str, left_out: Callable[[str], bool]) -> bool:
    """Whether ``path`` lies in the local folder ``local_path`` (or is it) and
    no name on the way there is one that ``left_out`` says is not synced."""
    rel = os.path.relpath(os.path.realpath(path), os.path.realpath(local_path))
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return False
    return not any(left_out(name) for name in rel.split(os.sep) if name != os.curdir)


def check_client_folders(config_path: str, settings: ClientSettings, state_dir: str, *,
                         log_file: str | None = None, left_out: Callable[[str], bool] | None = None) -> None:
    """Raise ConfigError when client ``settings`` cannot use its folders.

    ``state_dir`` is the state folder the client will use (the caller knows the
    default; :func:`escale.sync.client.state_dir_for`). The error names the key:
    ``local path``, or ``state directory`` when that key is set. With
    ``left_out`` (the scanner's test of the names it does not sync,
    :func:`escale.sync.scanner.is_internal`), a ``state directory`` or
    ``log_file`` (the configuration's ``log file``) in the local folder, which
    would be synced itself, is refused too (key ``state directory`` or ``log file``).
    """
    if left_out is not None:
        for key, path in (("state directory", settings.state_dir), ("log file", log_file)):
            if path is not None and _synced_inside(settings.local_path, path, left_out):
                raise ConfigError(
                    f"{path} lies in the local path of [{settings.name}] ({settings.local_path}): it would be "
                    f"synced itself, at every pass; put it outside the local path",
                    path=config_path, section=settings.name if key == "state directory" else None, key=key)
    problem = _folder_problem(settings.local_path, need_write=False)
    if problem is not None:
        raise ConfigError(problem, path=config_path, section=settings.name, key="local path")
    problem = _folder_problem(state_dir, need_write=True)
    if problem is not None:
        if settings.state_dir:
            raise ConfigError(problem, path=config_path, section=settings.name, key="state directory")
        raise ConfigError(f"state folder: {problem} (set 'state directory' to keep it elsewhere)",
                          path=config_path, section=settings.name, key="local path")
