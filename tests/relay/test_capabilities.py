"""The per-server table of doc/protocol.rst states what the backends declare.

The backends' own declarations (``Relay.capabilities``, probed on open) are the
one source; the conformance suite proves each declared flag, and this test
reads the documented table and compares it with what every conformance backend
declares on its test server, so the table cannot drift from the code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from escale.relay.base import Capabilities
from tests.relay.backends import CONFORMANCE_BACKENDS
from tests.servers.target import RelayTarget

PROTOCOL_DOC = Path(__file__).resolve().parents[2] / "doc" / "protocol.rst"
TABLE_TITLE = "Servers and their guarantees"

#: Table columns, by the flag each one shows.
COLUMNS = {
    "atomic put": "atomic_put",
    "exclusive create": "exclusive_create",
    "exclusive rename": "exclusive_rename",
    "replacing rename": "rename_overwrite",
    "usage": "usage",
}

#: The table's row for each conformance backend's test server (the memory relay
#: is no server: it has no row).
ROW_OF = {
    "file": "local folder",
    "ftp": "pyftpdlib (FTP, FTPS)",
    "ftps": "pyftpdlib (FTP, FTPS)",
    "ftp_rclone": "``rclone serve ftp``",
    "webdav": "WsgiDAV",
    "webdav_rclone": "``rclone serve webdav``",
    "sftp": "OpenSSH sftp-server",
    "sftp_paramiko": "OpenSSH sftp-server",
    "sftp_rclone": "``rclone serve sftp``",
    "rclone_local": "rclone (rcd) remotes",
    "rclone_sftp": "rclone (rcd) remotes",
    "rclone_s3": "rclone (rcd) on S3",
}


def documented_table() -> dict[str, dict[str, bool]]:
    """``{server: {flag: yes/no}}`` from the reStructuredText simple table
    that follows the section title :data:`TABLE_TITLE`."""
    lines = PROTOCOL_DOC.read_text(encoding="utf-8").splitlines()
    start = lines.index(TABLE_TITLE)
    rules = [i for i in range(start, len(lines)) if lines[i].startswith("====") and " " in lines[i]][:3]
    assert len(rules) == 3, f"no simple table after {TABLE_TITLE!r} in {PROTOCOL_DOC}"
    border = lines[rules[0]]
    spans = []  # (start, end) of each column, from the border's runs of "="
    pos = 0
    while pos < len(border):
        if border[pos] == "=":
            end = border.find(" ", pos)
            end = len(border) if end < 0 else end
            spans.append((pos, end))
            pos = end
        else:
            pos += 1

    def cells(line: str) -> list[str]:
        # the last column runs to the end of the line
        return [line[a:b if i < len(spans) - 1 else None].strip() for i, (a, b) in enumerate(spans)]

    header = cells(lines[rules[0] + 1])
    table: dict[str, dict[str, bool]] = {}
    for line in lines[rules[1] + 1:rules[2]]:
        row = cells(line)
        values: dict[str, bool] = {}
        for title, cell in zip(header[1:], row[1:], strict=True):
            word = cell.split()[0]
            assert word in ("yes", "no"), f"{PROTOCOL_DOC}: {row[0]}: {title}: {cell!r} is neither yes nor no"
            values[COLUMNS[title]] = word == "yes"
        table[row[0]] = values
    return table


def declared(capabilities: Capabilities) -> dict[str, bool]:
    """The flags of ``capabilities`` under the table's column names."""
    return {
        "atomic_put": capabilities.atomic_put,
        "exclusive_create": capabilities.exclusive_create,
        "exclusive_rename": capabilities.rename_exclusive,
        "rename_overwrite": capabilities.rename_overwrite,
        "usage": capabilities.usage,
    }


def test_every_server_of_the_table_is_tested() -> None:
    assert set(documented_table()) == set(ROW_OF.values())
    assert set(ROW_OF) == set(CONFORMANCE_BACKENDS) - {"memory"}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", [b for b in CONFORMANCE_BACKENDS if b in ROW_OF])
def test_the_table_states_what_each_backend_declares(backend: str, request: pytest.FixtureRequest) -> None:
    target: RelayTarget = request.getfixturevalue(f"target_{backend}")
    relay = target.relay()
    try:
        relay.open()  # capabilities are probed on open: open again, now that the folder exists
        relay.open()
        assert declared(relay.capabilities) == documented_table()[ROW_OF[backend]]
    finally:
        relay.close()
