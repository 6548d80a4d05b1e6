"""Benchmarks of escale, side by side with rclone and unison; never run by pytest.

``python -m bench.sync_bench`` is the synchronisation benchmark;
``python bench/crypto_bench.py`` the encryption one. See ``bench/README.rst``.
"""
