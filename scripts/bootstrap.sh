# Sourced by scripts/demo and scripts/test: make .venv (Python 3.11+) and install the project into it.
# Set PYTHON to choose the interpreter; EXTRAS to pick optional dependencies (e.g. "dev").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "exporter needs Python 3.11 or newer; '$PYTHON' is $("$PYTHON" --version 2>&1 || echo missing)." >&2
  echo "Install it, or run with PYTHON=/path/to/python3.11" >&2
  exit 2
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "setting up $VENV ..." >&2
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
fi
# Reinstall only when the project's dependency list changed since the last install.
stamp="$VENV/.installed-${EXTRAS:-base}"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  spec="$ROOT"
  [ -n "${EXTRAS:-}" ] && spec="$ROOT[$EXTRAS]"
  echo "installing exporter ${EXTRAS:+[$EXTRAS] }into $VENV ..." >&2
  if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec" >"$VENV/pip.log" 2>&1; then
    cat "$VENV/pip.log" >&2
    exit 2
  fi
  touch "$stamp"
fi
