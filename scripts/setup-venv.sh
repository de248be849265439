#!/usr/bin/env bash
# Creates .venv (when missing) and installs streamsync with its test extra, pinned by constraints.txt.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

need_command "$PYTHON" "install Python 3.11 or newer (Debian: apt install python3 python3-venv), or set PYTHON=/path/to/python3.11"
"$PYTHON" - <<'PY' || die "Python 3.11 or newer is required; '$PYTHON' is older. Install it or run: make PYTHON=/path/to/python3.11 ..."
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

if [ ! -x "$VENV/bin/python" ]; then
    info "creating $VENV with $("$PYTHON" --version)"
    "$PYTHON" -m venv "$VENV" 2>/dev/null ||
        { rm -rf "$VENV"; die "could not create a virtual environment with '$PYTHON -m venv'; install the venv module (Debian: apt install python3-venv)"; }
fi

info "installing streamsync and its test dependencies into $VENV (pinned by constraints.txt)"
log="$WORK/pip-install.log"
mkdir -p "$WORK"
if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -q -c "$ROOT/constraints.txt" -e "$ROOT[test]" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    die "installing Python packages failed (full log: $log); check that this machine reaches the package index (PyPI or the index configured for pip)"
fi
touch "$VENV/.installed"
