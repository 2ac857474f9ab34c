#!/usr/bin/env bash
# Idempotent installer for the reference ThingsBoard IoT Gateway (PyPI) used by
# the differential tests (see NOTES.md beside this file).
#
# Creates a venv and pip-installs thingsboard-gateway==3.8.5 with every runtime
# dependency pinned to the set this harness was verified with.
#
#   TBGW_CACHE  venv directory (default /var/cache/tbsc/tbgw-venv-<version>)
#   PYTHON      interpreter that creates the venv (default python3; >= 3.10)
#
# Fast path (venv complete): no network, well under a second.
# Last line of stdout: absolute path of the venv's python. Logs go to stderr.
set -euo pipefail

TBGW_VERSION="3.8.5"
# Exact versions (pip freeze of a verified install on Python 3.11, linux x86_64).
PINS=(
  "thingsboard-gateway==${TBGW_VERSION}"
  "tb-mqtt-client==1.13.13"
  "tb-paho-mqtt-client==2.1.2"
  "attrs==26.1.0" "cachetools==8.0.2" "certifi==2026.10.19.post1" "cffi==2.1.1"
  "charset-normalizer==3.5.3" "cryptography==50.0.2" "decorator==5.3.1" "grpcio==1.85.3"
  "idna==3.20" "jsonpath-rw==1.4.0" "mmh3==5.3.1" "orjson==3.13.0" "packaging==26.4"
  "ply==3.11" "protobuf==7.36.2" "psutil==7.2.2" "pybase64==1.5.1" "pycparser==3.12"
  "PySocks==1.7.1" "python-dateutil==4.0.0" "PyYAML==6.0.4" "regex==2026.11.19"
  "requests==2.34.2" "service-identity==26.1.0" "simplejson==4.3.0" "six==1.17.0"
  "typing_extensions==4.16.0" "tzdata==2026.6" "urllib3==2.8.0"
)
VENV="${TBGW_CACHE:-/var/cache/tbsc/tbgw-venv-${TBGW_VERSION}}"
PY="${PYTHON:-python3}"
PIN_HASH="$(printf '%s\n' "${PINS[@]}" | sha256sum | cut -c1-16)"
STAMP="${VENV}/.tbgw-installed-${PIN_HASH}"
CHECK='import thingsboard_gateway.gateway.tb_gateway_service, thingsboard_gateway.connectors.socket.socket_connector, paho.mqtt.client'

log() { echo "[tbgw-install] $*" >&2; }

venv_ok() {
  [[ -f "$STAMP" && -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c "$CHECK" >/dev/null 2>&1
}

if venv_ok; then
  log "already installed: $VENV"
  echo "$VENV/bin/python"
  exit 0
fi

mkdir -p "$(dirname "$VENV")"
# Serialise concurrent installs of the same venv.
exec 9>"${VENV}.lock"
flock 9 2>/dev/null || true
if venv_ok; then
  log "already installed (by a concurrent run): $VENV"
  echo "$VENV/bin/python"
  exit 0
fi

if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  log "creating venv $VENV with $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
fi
rm -f "$VENV"/.tbgw-installed-*
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
log "pip installing thingsboard-gateway==${TBGW_VERSION} (+ $(( ${#PINS[@]} - 1 )) pinned deps)"
"$VENV/bin/python" -m pip install -q "${PINS[@]}" >&2
"$VENV/bin/python" -c "$CHECK" >&2
touch "$STAMP"
log "done: $VENV"
echo "$VENV/bin/python"
