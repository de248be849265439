# Shared helpers for the project's shell scripts (sourced, not run).
# Every failure names the missing thing and how to get it, in one line, instead of a stack trace.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$ROOT/.work"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"

die() {
    echo "streamsync: $*" >&2
    exit 1
}

info() {
    echo "streamsync: $*" >&2
}

need_command() { # need_command CMD "how to get it"
    command -v "$1" >/dev/null 2>&1 || die "'$1' is required but not found; $2"
}

# port_open PORT: true when something listens on 127.0.0.1:PORT.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# stop_pidfile FILE WHAT: stops the process group recorded in FILE (TERM, then KILL after 30 s).
stop_pidfile() {
    local file="$1" what="$2" pid
    [ -f "$file" ] || return 0
    pid="$(cat "$file")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 60); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$pid" 2>/dev/null; then
            info "$what did not stop within 30 s; killing it"
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        fi
        info "stopped $what"
    fi
    rm -f "$file"
}
