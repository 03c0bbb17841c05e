#!/usr/bin/env bash
# Points a Zendesk client not written here (Python's zenpy) at the sandbox:
# it must list, restore, purge and read job statuses unchanged.
# Usage: tests/third_party/run.sh [path/to/zd-retention]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/debug/zd-retention}
venv=target/third-party-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/third_party/requirements.txt
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" sandbox --listen "127.0.0.1:$port" --tickets 250 --time-scale 60 >target/third-party-sandbox.log 2>&1 &
sandbox=$!
trap 'kill -INT $sandbox 2>/dev/null; wait $sandbox 2>/dev/null || true; cat target/third-party-sandbox.log' EXIT
for _ in $(seq 50); do
  (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
ZENPY_FORCE_NETLOC="127.0.0.1:$port" ZENPY_FORCE_SCHEME=http EXPECTED_TICKETS=250 \
  "$venv/bin/python" tests/third_party/zenpy_check.py
