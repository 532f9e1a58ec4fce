#!/usr/bin/env bash
# Set up Keystone VLA on a fresh Debian machine: system packages, .venv, torch (CPU build) first, then the
# package with its dev extras. Safe to re-run: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES=(libusb-1.0-0 espeak-ng sox libegl1)   # open3d needs libusb; speech tests need espeak-ng + sox
missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "[setup] installing system packages: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# torch first, pinned: 2.13.0 is the local CPU build; any other spec pulls GBs of CUDA wheels.
.venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null \
  || "${PIP[@]}" torch==2.13.0 2> >(grep -v "is ignored" >&2)
"${PIP[@]}" -e ".[dev]" 2> >(grep -v "is ignored" >&2)
echo "[setup] ready: $(.venv/bin/keystone --version)" >&2
