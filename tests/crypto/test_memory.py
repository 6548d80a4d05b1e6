"""Flat memory: a 2 GiB stream is sealed and opened in well under 100 MB resident.

The stream is generated lazily and never touches the disk: a thread seals it into
a pipe while the main thread opens the other end. This runs in a fresh
subprocess so that its peak RSS is not the test runner's. The peak is read from
``VmHWM`` in ``/proc/self/status`` (the high-water mark of the process's own
memory): on Linux ``ru_maxrss`` survives ``execve`` and so would report the RSS of
the (large) pytest process that spawned it. ``ru_maxrss`` is the fallback elsewhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import hashlib, io, json, os, resource, sys, threading
    sys.path.insert(0, sys.argv[1])
    from escale.crypto import create_repository_header, generate_key_file, load_secret

    TOTAL = 2 * 1024**3 + 12345          # not a multiple of the chunk size: padding is exercised
    BLOCK = 1024 * 1024
    pattern = os.urandom(BLOCK + 256)

    class Lazy(io.RawIOBase):
        def __init__(self):
            self.left = TOTAL
            self.n = 0
            self.digest = hashlib.sha256()
        def readable(self):
            return True
        def read(self, size=-1):
            size = min(self.left, BLOCK if size < 0 else size)
            if size <= 0:
                return b""
            start = self.n % 256
            data = pattern[start:start + size]
            self.n += 1
            self.left -= size
            self.digest.update(data)
            return data

    class Digest(io.RawIOBase):
        def __init__(self):
            self.digest = hashlib.sha256()
            self.size = 0
        def writable(self):
            return True
        def write(self, data):
            self.digest.update(data)
            self.size += len(data)
            return len(data)

    def peak_rss_kib():
        try:
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    key_path = os.path.join(sys.argv[2], "mem.key")
    generate_key_file(key_path)
    _, env = create_repository_header("aes-256-gcm", load_secret(key_path, None))
    source, sink = Lazy(), Digest()
    read_fd, write_fd = os.pipe()
    sealed = {}

    def sealer():
        with open(write_fd, "wb", buffering=0) as pipe:
            sealed["bytes"] = env.seal_stream("big/object", source, pipe)

    thread = threading.Thread(target=sealer)
    thread.start()
    with open(read_fd, "rb", buffering=0) as pipe:
        opened = env.open_stream("big/object", pipe, sink)
    thread.join()
    print(json.dumps({
        "opened": opened,
        "sink_size": sink.size,
        "sealed": sealed["bytes"],
        "expected_sealed": env.sealed_size(TOTAL),
        "same": source.digest.digest() == sink.digest.digest(),
        "total": TOTAL,
        "maxrss_kib": peak_rss_kib(),
    }))
    """
)


def test_two_gib_stream_in_flat_memory(tmp_path: Path) -> None:
    root = str(Path(__file__).resolve().parents[2])
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, root, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["same"] and result["opened"] == result["sink_size"] == result["total"]
    assert result["sealed"] == result["expected_sealed"]
    assert result["maxrss_kib"] < 100 * 1024, f"peak RSS {result['maxrss_kib'] // 1024} MiB"
