#!/usr/bin/env bash
# Runs the test suite against a real Elasticsearch node of its own (a free port, fresh data) and
# stops that node afterwards, also when the tests fail. Arguments go to pytest.
# DynamoDB + Streams run in-process in the tests (moto's server on a free port), so an endpoint
# started by make services is neither needed nor touched.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

NODE="${STREAMSYNC_TEST_NODE:-test}"  # another name runs a second suite beside this one
"$ROOT/scripts/elasticsearch.sh" start "$NODE" 0 --fresh >/dev/null
trap '"$ROOT/scripts/elasticsearch.sh" stop "$NODE"' EXIT
STREAMSYNC_TEST_ES_URL="$("$ROOT/scripts/elasticsearch.sh" url "$NODE")"
export STREAMSYNC_TEST_ES_URL STREAMSYNC_TEST_ES_NODE="$NODE"
cd "$ROOT"
# pytest exits 5 when it collects no tests; that fails this script like any other failure.
"$VENV/bin/python" -m pytest "$@"
