#!/usr/bin/env bash
# One command: set up .venv, then lint, type-check and run every test (unit, then
# integration against an embedded broker and PostgreSQL started by the suite itself).
# Extra arguments go to both pytest runs (e.g. -k migrations, -x).
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

echo "==> ruff (lint and format)"
ruff check pipeline tests bench
ruff format --check pipeline tests bench

echo "==> mypy --strict"
mypy

run_pytest() {
    local label="$1"; shift
    echo "==> pytest: $label"
    set +e
    python -m pytest "$@"
    local rc=$?
    set -e
    if [ "$rc" -eq 5 ]; then
        echo "    (no $label tests selected)"
        return 0
    fi
    return "$rc"
}

run_pytest "unit tests" tests/unit "$@"
run_pytest "integration tests" tests/integration "$@"
echo "==> all checks passed"
