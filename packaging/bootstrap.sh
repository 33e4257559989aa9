#!/usr/bin/env bash
# Sets up everything Shutterlock needs on a Debian/Ubuntu machine, then runs it.
#
#   packaging/bootstrap.sh run     the daemon on the embedded defaults (creates the key on first use)
#   packaging/bootstrap.sh test    the whole test suite
#   packaging/bootstrap.sh setup   only the runtime set-up, nothing started (the Dockerfile uses this)
#
# Set-up is idempotent and quick when nothing is missing: system packages (apt, as root),
# a virtual environment in .venv with the CPU build of torch, and the project in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"
shift || true

RUNTIME_PACKAGES=()
TEST_PACKAGES=(libimage-exiftool-perl xvfb trayer dbus-x11 x11-utils xdotool imagemagick
               gir1.2-gtk-3.0 libgirepository1.0-dev libcairo2-dev pkg-config systemd restic mat2
               chromium chromium-driver zbar-tools e2fsprogs util-linux)
TORCH_VERSION="2.13.0"

install_system_packages() {
  local wanted=("${RUNTIME_PACKAGES[@]}")
  [ "$mode" = "test" ] && wanted+=("${TEST_PACKAGES[@]}")
  # Debian splits venv support out of its python3; a python.org build (the container image) has it.
  "${PYTHON:-python3}" -c "import ensurepip" 2>/dev/null || wanted+=(python3-venv)
  [ ${#wanted[@]} -eq 0 ] && return
  local missing=()
  for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return
  if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: please install: ${missing[*]} (needs root)" >&2
    return
  fi
  echo "bootstrap: installing ${missing[*]}" >&2
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

install_python_packages() {
  local python="${PYTHON:-python3}"
  [ -x .venv/bin/python ] || "$python" -m venv .venv
  local pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
  # The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
  if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
      "${pip[@]}" --index-url "$TORCH_INDEX_URL" "torch==${TORCH_VERSION}"
    else
      "${pip[@]}" "torch==${TORCH_VERSION}"
    fi
  fi
  local extras=""
  [ "$mode" = "test" ] && extras="[test,tray-gtk]"
  local stamp=".venv/.shutterlock-installed${extras}"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "${pip[@]}" -e ".${extras}"
    touch "$stamp"
  fi
}

install_system_packages
install_python_packages

case "$mode" in
  setup) ;;
  run)
    key_file="$(.venv/bin/python -c 'from shutterlock.config import resolve_paths; print(resolve_paths().key_file)')"
    [ -f "$key_file" ] || [ -n "${CREDENTIALS_DIRECTORY:-}" ] || .venv/bin/shutterlock init
    exec .venv/bin/shutterlock run "$@" ;;
  test)
    exec .venv/bin/python -m pytest "$@" ;;
  *) echo "usage: $0 run|test|setup" >&2; exit 2 ;;
esac
