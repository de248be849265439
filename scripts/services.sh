#!/usr/bin/env bash
# Local services for trying streamsync by hand:
#   a search node on 127.0.0.1:9200 (ENGINE=elasticsearch, the default, or ENGINE=opensearch) and a
#   DynamoDB + DynamoDB Streams endpoint (moto) on 127.0.0.1:5000.
#   scripts/services.sh up | down
# Tests do not need these: make test starts its own node on a free port and moto in-process.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ES_PORT="${ES_PORT:-9200}"
ENGINE="${ENGINE:-elasticsearch}"
case "$ENGINE" in
elasticsearch | opensearch) ;;
*) die "ENGINE=$ENGINE: choose elasticsearch or opensearch" ;;
esac
MOTO_PORT="${MOTO_PORT:-5000}"
MOTO_DIR="$WORK/moto"

up() {
    "$ROOT/scripts/$ENGINE.sh" start services "$ES_PORT" >/dev/null
    if [ -f "$MOTO_DIR/pid" ] && kill -0 "$(cat "$MOTO_DIR/pid")" 2>/dev/null; then
        info "DynamoDB + Streams endpoint (moto) is already running at http://127.0.0.1:$MOTO_PORT"
    else
        port_open "$MOTO_PORT" &&
            die "port 127.0.0.1:$MOTO_PORT is already in use; stop what listens there or set MOTO_PORT"
        mkdir -p "$MOTO_DIR"
        setsid "$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" </dev/null >"$MOTO_DIR/moto.log" 2>&1 &
        echo $! >"$MOTO_DIR/pid"
        for _ in $(seq 1 60); do
            port_open "$MOTO_PORT" && break
            kill -0 "$(cat "$MOTO_DIR/pid")" 2>/dev/null ||
                { tail -n 20 "$MOTO_DIR/moto.log" >&2; die "moto_server exited during start-up; see above"; }
            sleep 0.5
        done
        port_open "$MOTO_PORT" || die "moto_server did not listen on 127.0.0.1:$MOTO_PORT within 30 s (log: $MOTO_DIR/moto.log)"
        info "DynamoDB + Streams endpoint (moto) ready at http://127.0.0.1:$MOTO_PORT"
    fi
    info "services are up: $ENGINE http://127.0.0.1:$ES_PORT, DynamoDB http://127.0.0.1:$MOTO_PORT (stop them with: make services-down)"
}

down() {
    stop_pidfile "$MOTO_DIR/pid" "DynamoDB + Streams endpoint (moto)"
    "$ROOT/scripts/elasticsearch.sh" stop services
    "$ROOT/scripts/opensearch.sh" stop services
}

case "${1:-}" in
up) up ;;
down) down ;;
*) die "usage: $0 up | down" ;;
esac
