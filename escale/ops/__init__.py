"""Whole-repository operations: backup, restore, migrate and fix.

Each works on a relay repository as a whole, under the relay's lease (see
``doc/operations.rst``): :mod:`~escale.ops.backup`, :mod:`~escale.ops.restore`
(with the archive format in :mod:`~escale.ops.archive`), :mod:`~escale.ops.migrate`
(with the configuration rewrite in :mod:`~escale.ops.reconfigure`) and
:mod:`~escale.ops.fix`. :mod:`~escale.ops.copy` holds the verified object copy
they share. Library code only: nothing here prints.
"""
