#!/usr/bin/env bash
# Sets up everything Shutterlock needs on a Debian/Ubuntu machine, then runs it.
#
#   packaging/bootstrap.sh run     the daemon on the embedded defaults (creates the key on first use)
#   packaging/bootstrap.sh test    the whole test suite
#   packaging/bootstrap.sh setup   only the runtime set-up, nothing started (the Dockerfile uses this)
#
# Set-up is idempotent and quick when nothing is missing: system packages (apt, as root),
# a virtual environment in .venv with the CPU build of torch, and the project in editable mode.
#
# On a desktop (a graphical session: $DISPLAY, $WAYLAND_DISPLAY or $XDG_CURRENT_DESKTOP is set) it also
# installs what the tray icon (`shutterlock tray`, docs/TRAY.md) needs: the GTK bindings, compiled
# against Debian's development packages. A headless server gets nothing graphical. Override the guess
# with --tray or --no-tray right after the mode, e.g. `packaging/bootstrap.sh setup --tray`.
# `test` always includes the tray: its tests run a real tray on a virtual screen.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"
shift || true
tray=auto
case "${1:-}" in
  --tray) tray=yes; shift ;;
  --no-tray) tray=no; shift ;;
esac
if [ "$tray" = auto ]; then
  if [ "$mode" = test ] || [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}${XDG_CURRENT_DESKTOP:-}" ]; then
    tray=yes
  else
    tray=no
  fi
fi

RUNTIME_PACKAGES=(fonts-dejavu-core)
# PyGObject and pycairo have no Linux wheels: they build against these.
TRAY_PACKAGES=(gir1.2-gtk-3.0 libgirepository1.0-dev libcairo2-dev pkg-config gcc libc6-dev)
TEST_PACKAGES=(libimage-exiftool-perl xvfb trayer dbus-x11 dbus-bin dbus-daemon dunst x11-utils xdotool
               imagemagick procps systemd restic rclone mat2 chromium chromium-driver zbar-tools e2fsprogs util-linux
               docker-compose)
TORCH_VERSION="2.13.0"

install_system_packages() {
  local wanted=("${RUNTIME_PACKAGES[@]}")
  local python="${PYTHON:-python3}"
  [ "$mode" = "test" ] && wanted+=("${TEST_PACKAGES[@]}")
  if [ "$tray" = yes ]; then
    wanted+=("${TRAY_PACKAGES[@]}")
    # Debian's python3 keeps its C headers in python3-dev; a python.org or pyenv build ships them.
    "$python" -c "import os, sysconfig; assert os.path.exists(sysconfig.get_paths()['include'] + '/Python.h')" \
      2>/dev/null || wanted+=(python3-dev)
  fi
  # Debian splits venv support out of its python3; a python.org build (the container image) has it.
  "$python" -c "import ensurepip" 2>/dev/null || wanted+=(python3-venv)
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
  local wanted_extras=() extras=""
  [ "$mode" = "test" ] && wanted_extras+=(test)
  [ "$tray" = yes ] && wanted_extras+=(tray-gtk)
  [ ${#wanted_extras[@]} -gt 0 ] && extras="[$(IFS=,; echo "${wanted_extras[*]}")]"
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
    # The cloak's weights (a few MB, pinned by SHA-256): fetched now when the network allows; otherwise the
    # command says where to put them, and derivatives wait (held back, never shared uncloaked) until they are.
    .venv/bin/shutterlock models fetch || echo "bootstrap: continuing without the cloak's weights for now" >&2
    key_file="$(.venv/bin/python -c 'from shutterlock.config import resolve_paths; print(resolve_paths().key_file)')"
    [ -f "$key_file" ] || [ -n "${CREDENTIALS_DIRECTORY:-}" ] || .venv/bin/shutterlock init
    exec .venv/bin/shutterlock run "$@" ;;
  test)
    exec .venv/bin/python -m pytest "$@" ;;
  *) echo "usage: $0 run|test|setup" >&2; exit 2 ;;
esac
