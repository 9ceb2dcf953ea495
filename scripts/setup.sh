#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine: system packages, the Python
# venv that carries libtorch (kept in a cache folder outside the checkout,
# keyed by version), and nothing else. Re-running skips what is already there.
set -euo pipefail
source "$(dirname "$0")/disk.sh"

TORCH_VERSION="${TORCH_VERSION:-2.11.0}"
CACHE_ROOT="${PIPELINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/avdfd-pipeline}"
VENV="$CACHE_ROOT/torch-$TORCH_VERSION"

APT_PACKAGES=(
  pkg-config clang libclang-dev
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev
  libswresample-dev libavfilter-dev libavdevice-dev
  ffmpeg sqlite3 b3sum hyperfine
  slurm-wlm munge
  python3-venv
)

need_apt=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ "${PIPELINE_NO_TORCH:-0}" != 1 ]; then
  if [ ! -f "$VENV/.complete" ]; then
    echo "setup: creating $VENV with torch==$TORCH_VERSION" >&2
    mkdir -p "$CACHE_ROOT"
    rm -rf "$VENV"
    # Measured on a fresh machine: the venv takes 4.7 GB, and pip's wheels
    # 2.6 GB in TMPDIR while it installs.
    need_disk "installing torch==$TORCH_VERSION" "$VENV" 5000 "${TMPDIR:-/tmp}" 2800
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --no-cache-dir --upgrade pip
    "$VENV/bin/pip" install -q --no-cache-dir "torch==$TORCH_VERSION"
    touch "$VENV/.complete"
  fi
  echo "$VENV"
fi
