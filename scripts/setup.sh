# Sourced by the other scripts: makes sure the system tools and the virtual environment exist.
# Idempotent: a second run only checks. Set EDGESEG_VENV to use another venv folder.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EDGESEG_VENV:-$ROOT/.venv}"
PY="${EDGESEG_PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3

# Debian tools for cross-compiling to 64-bit ARM and for the emulated aarch64 device.
if ! command -v qemu-aarch64-static >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null \
   || ! dpkg --print-foreign-architectures | grep -qx arm64; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing qemu-user-static and gcc-aarch64-linux-gnu (arm64 packages enabled)" >&2
    dpkg --add-architecture arm64
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static gcc-aarch64-linux-gnu >/dev/null
  else
    echo "setup: WARNING: qemu-user-static / gcc-aarch64-linux-gnu missing and not root;" \
         "ARM64 cross-compilation and the emulated device will not work." \
         "Run as root: dpkg --add-architecture arm64 && apt-get update &&" \
         "apt-get install -y qemu-user-static gcc-aarch64-linux-gnu" >&2
  fi
fi

STAMP="$VENV/.edgeseg-installed"
WANT="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "setup: creating the virtual environment in $VENV (torch, TVM, ONNX Runtime, XGBoost...)" >&2
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e "$ROOT"
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
