"""The backends the conformance suite runs on, by fixture name.

Each name ``X`` here needs a session fixture ``target_X`` (in tests/conftest.py or
tests/servers/) returning a :class:`tests.servers.target.RelayTarget`. A backend
joins the suite by adding its name here and its fixture; nothing else changes.
"""

CONFORMANCE_BACKENDS = [
    "memory",
    "file",
    "ftp",
    "ftps",
    "ftp_rclone",
    "webdav",
    "webdav_rclone",
    "sftp",
    "sftp_paramiko",
    "sftp_rclone",
    "rclone_local",
    "rclone_sftp",
    "rclone_s3",
]

#: Backends a separate ``escale`` process can reach (used by end-to-end tests).
#: (``sftp_paramiko`` is the ``sftp`` server again, through the other SSH
#: transport: the conformance suite covers it, the process suites need not.)
PROCESS_BACKENDS = [b for b in CONFORMANCE_BACKENDS if b not in ("memory", "sftp_paramiko")]

#: One server per backend module (file, ftp/ftps, webdav, sftp, rclone). Every
#: end-to-end scenario runs on these; the second, independent servers
#: (``rclone serve ...``, rclone over sftp) run the conformance suite and the
#: main convergence scenario, which keeps CI within its time budget.
PRIMARY_PROCESS_BACKENDS = ["file", "ftp", "ftps", "webdav", "sftp", "rclone_local"]
