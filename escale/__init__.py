"""escale: an encrypted, relay-based file synchronisation daemon.

``__version__`` is the one definition of the version: ``setup.py`` reads it from
here, and ``escale --version`` and ``escalectl --version`` print it.
"""

__version__ = "0.1.0"
