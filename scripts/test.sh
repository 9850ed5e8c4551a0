#!/usr/bin/env bash
# The test suite: real TVM, real RPC on loopback, small models. Extra arguments go to pytest
# (`-n 0` runs it in one process). Two workers, each taking whole test files (tests/conftest.py
# groups the files that share a costly fixture): with one, much of the time is spent waiting on
# processes and RPC, and the machine's 2 cores were busy ~60%.
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec python -m pytest -q -n 2 --durations=15 "$@"
