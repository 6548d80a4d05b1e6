"""``escale --demo``: the main job on an embedded default, explained as it runs.

Two clients, *alice* and *bob*, keep a folder in sync through a local-folder
relay, encrypted with a generated key. The demo writes a real configuration
file, runs real passes, and prints what moved, what the relay holds (opaque,
encrypted objects) and whether both folders ended identical.

Without DIR the demo works in a new temporary folder and removes it at the
end, saying so; ``--keep`` (or a failed demo) leaves it in place, and says
where. A DIR given by the user is the user's: it is kept.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile

from escale.config import load_config
from escale.crypto import generate_key_file
from escale.daemon.logs import setup_logging
from escale.errors import EX_OK, EX_SOFTWARE
from escale.sync.client import PassReport, SyncClient
from escale.sync.scanner import STATE_FOLDER

SEED = {
    "alice": {
        "README.txt": b"Files written here reach bob through the relay, encrypted.\n",
        "reports/2026-q3.csv": b"month,samples\njuly,120\naugust,98\nseptember,143\n",
        "instrument/run-001.dat": bytes(range(256)) * 4096,  # 1 MiB
    },
    "bob": {
        "notes/from-bob.md": b"# Bob's notes\nThis file goes the other way.\n",
    },
}


def tree_digest(root: str) -> dict[str, str]:
    """sha256 of every file below ``root`` (escale's own folder excluded)."""
    out = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != STATE_FOLDER]
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                out[os.path.relpath(path, root)] = hashlib.sha256(handle.read()).hexdigest()
    return out


def _say(text: str = "") -> None:
    print(text, flush=True)


def _show(client: str, report: PassReport) -> None:
    _say(f"  {client:5s} pass: {report.summary()}")
    for path in report.pushed:
        _say(f"        sent      {path}")
    for path in report.pulled:
        _say(f"        received  {path}")
    for path in report.deleted_local:
        _say(f"        deleted   {path}")
    for path in report.deleted_remote:
        _say(f"        deleted on relay {path}")
    for path in report.conflicts:
        _say(f"        conflict  {path} (both versions kept)")
    for path in report.reclaimed:
        _say(f"        reclaimed {path} from the relay (every receiver has it)")


def _write(root: str, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)


def _close_logs_under(folder: str) -> None:
    """Detach and close the log handlers writing to files below ``folder``."""
    root = logging.getLogger()
    prefix = os.path.join(folder, "")
    for handler in list(root.handlers):
        target = getattr(handler, "baseFilename", None)
        if isinstance(target, str) and target.startswith(prefix):
            root.removeHandler(handler)
            handler.close()


def run_demo(where: str | None, *, keep: bool = False) -> int:
    """Run the demo in ``where`` (a new temporary folder when None).

    The temporary folder is removed at the end unless ``keep`` is true or the
    demo failed; the last line says where it was and whether it is still there.
    """
    if where:
        base = os.path.abspath(where)
        if os.path.exists(base) and os.listdir(base):
            _say(f"escale demo: {base} is not empty; give an empty or new folder")
            return EX_SOFTWARE
        os.makedirs(base, exist_ok=True)
        return _run(base)
    base = tempfile.mkdtemp(prefix="escale-demo-")
    code = EX_SOFTWARE
    try:
        code = _run(base)
    finally:
        if keep or code != EX_OK:
            why = "as asked (--keep)" if keep else "to look at what went wrong"
            _say(f"\nThe demo folder {base} is kept {why}; remove it when done.")
        else:
            _close_logs_under(base)
            shutil.rmtree(base, ignore_errors=True)
            gone = "removed" if not os.path.exists(base) else "NOT removed (remove it by hand)"
            _say(f"\nThe demo folder {base} was {gone}; run 'escale --demo --keep' to keep it.")
    return code


def _run(base: str) -> int:
    """The demo itself, in the existing, empty folder ``base``."""
    key = os.path.join(base, "escale.key")
    generate_key_file(key)
    conf = os.path.join(base, "escale.conf")
    with open(conf, "w", encoding="utf-8") as handle:
        handle.write(
            "# written by escale --demo\n"
            f"log file = {os.path.join(base, 'escale.log')}\n\n"
            "[alice]\nlocal path = alice\nprotocol = file\nrelay directory = relay\n"
            "encryption = yes\nkey = escale.key\n\n"
            "[bob]\nlocal path = bob\nprotocol = file\nrelay directory = relay\n"
            "encryption = yes\nkey = escale.key\n")
    config = load_config(conf)
    setup_logging(config.globals)
    alice, bob = (SyncClient(c) for c in config.clients)
    _write(alice.settings.local_path, SEED["alice"])
    _write(bob.settings.local_path, SEED["bob"])

    _say(f"escale demo in {base}")
    _say(f"  configuration {conf} (two clients, one local-folder relay, AES-256-GCM)")
    _say(f"  alice has {len(SEED['alice'])} files, bob has {len(SEED['bob'])}\n")
    _say("1. First passes: each side sends what it has and receives the rest.")
    for client in (alice, bob, alice):
        _show(client.settings.name, client.run_pass())

    _say("\n2. Bob edits a report and deletes the README; alice follows.")
    _write(bob.settings.local_path, {"reports/2026-q3.csv": b"month,samples\njuly,121\n"})
    os.remove(os.path.join(bob.settings.local_path, "README.txt"))
    for client in (bob, alice, bob):
        _show(client.settings.name, client.run_pass())

    relay_root = config.clients[0].relay.directory
    objects = sorted(os.path.relpath(os.path.join(f, n), relay_root)
                     for f, _, names in os.walk(relay_root) for n in names)
    _say(f"\n3. The relay ({relay_root}) holds {len(objects)} objects, none readable without the key:")
    for name in objects[:8]:
        _say(f"        {name}")
    if len(objects) > 8:
        _say(f"        ... and {len(objects) - 8} more")
    leaked = _plaintext_on_relay(relay_root)
    _say(f"   plaintext names or contents visible on the relay: {'YES: ' + leaked if leaked else 'none'}")

    left, right = tree_digest(alice.settings.local_path), tree_digest(bob.settings.local_path)
    same = left == right
    _say(f"\n4. alice and bob now hold {len(left)} files each; identical (sha256 of every file): "
         f"{'yes' if same else 'NO'}")
    _say(f"   log: {config.globals.log_file}")
    return EX_OK if same and not leaked else EX_SOFTWARE


def _plaintext_on_relay(root: str) -> str:
    """The first seed name or content found in the relay's names or bytes, if any."""
    needles = [n.encode() for files in SEED.values() for n in files]
    needles += [os.path.basename(n).encode() for files in SEED.values() for n in files]
    needles += [data[:32] for files in SEED.values() for data in files.values()]
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                blob = path.encode() + handle.read()
            for needle in needles:
                if needle in blob:
                    return f"{needle[:20]!r} in {os.path.relpath(path, root)}"
    return ""


if __name__ == "__main__":
    sys.exit(run_demo(sys.argv[1] if len(sys.argv) > 1 else None))
