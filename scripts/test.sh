#!/usr/bin/env bash
# The test suite: real TVM, real RPC on loopback, small models. Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec python -m pytest -q --durations=15 "$@"
