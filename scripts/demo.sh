#!/usr/bin/env bash
# One command: set up .venv and run the main job on embedded Kafka and PostgreSQL.
# Arguments are passed to `pipeline demo` (try --help, --keep).
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec pipeline demo "$@"
