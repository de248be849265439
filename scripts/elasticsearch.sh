#!/usr/bin/env bash
# A real, local Elasticsearch node for tests and trying streamsync by hand, without Docker.
#
#   scripts/elasticsearch.sh fetch                   download the distribution (cached in ~/.m2)
#   scripts/elasticsearch.sh start NAME [PORT] [--fresh]
#                                                    start node NAME on 127.0.0.1:PORT (0 = any free
#                                                    port), wait until it is healthy, print its URL;
#                                                    --fresh wipes the node's data first
#   scripts/elasticsearch.sh stop NAME               stop node NAME (also when it is not running)
#   scripts/elasticsearch.sh url NAME                print the URL of running node NAME
#
# The distribution is Maven Central's integ-test-zip: a real, minimal Elasticsearch without a
# bundled JDK. Elasticsearch refuses to run as root, so as root the node runs as the system user
# streamsync-es. Environment: ES_VERSION, ES_JAVA_HOME, ES_HEAP (default 512m).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# The one place the Elasticsearch version is pinned. Maven Central serves the integ-test-zip only up
# to 8.19.x (no 9.x build is published there); the 8.19 Python client works with 8.x and 9.x servers.
ES_VERSION="${ES_VERSION:-8.19.21}"
ES_HEAP="${ES_HEAP:-512m}"
ES_USER=streamsync-es
M2_REPO="${M2_REPO:-$HOME/.m2/repository}"
ZIP="$M2_REPO/org/elasticsearch/distribution/integ-test-zip/elasticsearch/$ES_VERSION/elasticsearch-$ES_VERSION.zip"

node_dir() {
    local dir="$WORK/elasticsearch/$1"
    # The node's user must be able to reach its directory; fall back to /tmp when the checkout is
    # inside a directory only root can enter (e.g. /root).
    if [ "$(id -u)" = 0 ] && [ -d "$WORK" ] && ! runuser -u "$ES_USER" -- test -x "$WORK" 2>/dev/null; then
        dir="/tmp/streamsync-elasticsearch/$(echo "$ROOT" | md5sum | cut -c1-8)/$1"
    fi
    echo "$dir"
}

java_home() {
    local candidate
    if [ -n "${ES_JAVA_HOME:-}" ]; then
        [ -x "$ES_JAVA_HOME/bin/java" ] || die "ES_JAVA_HOME=$ES_JAVA_HOME has no bin/java"
        echo "$ES_JAVA_HOME"
        return
    fi
    # Elasticsearch 8.19 and 9.x run on JDK 21 or newer; prefer Temurin 25, the JDK 9.x bundles.
    for candidate in /usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/temurin-25* /usr/lib/jvm/*-25-* \
        /usr/lib/jvm/temurin-21* /usr/lib/jvm/*-21-*; do
        if [ -x "$candidate/bin/java" ]; then
            echo "$candidate"
            return
        fi
    done
    die "Elasticsearch $ES_VERSION needs a JDK 21 or newer and none was found under /usr/lib/jvm; install Temurin 25 (https://adoptium.net/installation/linux/: apt install temurin-25-jdk) or set ES_JAVA_HOME"
}

fetch() {
    [ -f "$ZIP" ] && return 0
    need_command mvn "Maven fetches the Elasticsearch test distribution from Maven Central (Debian: apt install maven)"
    info "downloading Elasticsearch $ES_VERSION (org.elasticsearch.distribution.integ-test-zip) with Maven"
    mkdir -p "$WORK"
    if ! mvn -B -q dependency:get -Dmaven.repo.local="$M2_REPO" -Dtransitive=false \
        -Dartifact="org.elasticsearch.distribution.integ-test-zip:elasticsearch:$ES_VERSION:zip" \
        >"$WORK/mvn-fetch.log" 2>&1; then
        tail -n 5 "$WORK/mvn-fetch.log" >&2
        die "could not download org.elasticsearch.distribution.integ-test-zip:elasticsearch:$ES_VERSION:zip from Maven Central (log: $WORK/mvn-fetch.log); check this machine's network or Maven proxy settings (~/.m2/settings.xml)"
    fi
    [ -f "$ZIP" ] || die "Maven reported success but $ZIP is missing"
}

unpack() { # unpack DIR: the distribution, shared by all nodes, read-only to them
    local dist="$WORK/elasticsearch/dist/elasticsearch-$ES_VERSION"
    if [ ! -x "$dist/bin/elasticsearch" ]; then
        need_command unzip "it unpacks the Elasticsearch distribution (Debian: apt install unzip)"
        rm -rf "$dist.partial"
        mkdir -p "$dist.partial"
        unzip -q "$ZIP" -d "$dist.partial"
        rm -rf "$dist"
        mv "$dist.partial/elasticsearch-$ES_VERSION" "$dist"
        rm -rf "$dist.partial"
    fi
    echo "$dist"
}

ensure_node_user() {
    [ "$(id -u)" = 0 ] || return 0
    id "$ES_USER" >/dev/null 2>&1 && return 0
    need_command useradd "Elasticsearch refuses to run as root and a user must be created for it (Debian: apt install passwd)"
    useradd --system --no-create-home --shell /usr/sbin/nologin "$ES_USER" ||
        die "could not create the system user $ES_USER that runs Elasticsearch (it refuses to run as root)"
}

url_of() {
    local dir port
    dir="$(node_dir "$1")"
    [ -f "$dir/logs/http.ports" ] || return 1
    port="$(sed -n '1s/.*://p' "$dir/logs/http.ports")"
    echo "http://127.0.0.1:$port"
}

start() {
    local name="$1" port="${2:-0}" fresh="${3:-}" dir dist jdk pid url deadline version
    need_command curl "it checks the node's health (Debian: apt install curl)"
    dir="$(node_dir "$name")"
    if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null && url="$(url_of "$name")"; then
        info "Elasticsearch node '$name' is already running at $url"
        echo "$url"
        return 0
    fi
    if [ "$port" != 0 ] && port_open "$port"; then
        die "port 127.0.0.1:$port is already in use; stop what listens there (make services-down?) or choose another port"
    fi
    fetch
    jdk="$(java_home)"
    ensure_node_user
    dist="$(unpack)"
    [ "$fresh" = --fresh ] && rm -rf "$dir"
    mkdir -p "$dir/data" "$dir/logs" "$dir/tmp"
    rm -f "$dir/logs/http.ports"
    if [ ! -f "$dir/config/elasticsearch.yml" ]; then
        cp -r "$dist/config" "$dir/config"
        printf -- '-Xms%s\n-Xmx%s\n' "$ES_HEAP" "$ES_HEAP" >"$dir/config/jvm.options.d/heap.options"
    fi
    [ "$(id -u)" = 0 ] && chown -R "$ES_USER:" "$dir"

    local -a cmd=(env -i PATH=/usr/bin:/bin HOME=/tmp LANG=C.UTF-8
        ES_JAVA_HOME="$jdk" ES_PATH_CONF="$dir/config" ES_TMPDIR="$dir/tmp"
        "$dist/bin/elasticsearch"
        -E "cluster.name=streamsync-$name" -E "node.name=$name"
        -E discovery.type=single-node -E network.host=127.0.0.1
        -E "http.port=$port" -E transport.port=0 -E node.portsfile=true
        -E "path.data=$dir/data" -E "path.logs=$dir/logs"
        -E xpack.security.enabled=false
        -E cluster.routing.allocation.disk.threshold_enabled=false
        -E discovery.initial_state_timeout=0s -E action.destructive_requires_name=false)
    [ "$(id -u)" = 0 ] && cmd=(runuser -u "$ES_USER" -- "${cmd[@]}")
    # setsid gives the node its own process group, so stop ends the launcher and the server alike.
    setsid "${cmd[@]}" </dev/null >>"$dir/logs/es.out" 2>&1 &
    pid=$!
    echo "$pid" >"$dir/pid"

    info "starting Elasticsearch $ES_VERSION node '$name' (JDK: $jdk, heap: $ES_HEAP, log: $dir/logs/es.out)"
    deadline=$((SECONDS + 180))
    until url="$(url_of "$name")" &&
        curl -fsS "$url/_cluster/health?wait_for_status=yellow&timeout=1s" >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$dir/logs/es.out" >&2
            rm -f "$dir/pid"
            die "Elasticsearch node '$name' exited during start-up; its last log lines are above"
        fi
        if [ $SECONDS -ge $deadline ]; then
            tail -n 30 "$dir/logs/es.out" >&2
            stop "$name"
            die "Elasticsearch node '$name' was not healthy within 180 s; its last log lines are above"
        fi
        sleep 0.5
    done
    version="$(curl -fsS "$url/_nodes/_local?filter_path=nodes.*.version" | sed 's/.*"version":"\([^"]*\)".*/\1/')"
    info "Elasticsearch $version ready at $url (node '$name')"
    echo "$url"
}

stop() {
    stop_pidfile "$(node_dir "$1")/pid" "Elasticsearch node '$1'"
}

case "${1:-}" in
fetch) fetch ;;
start)
    [ $# -ge 2 ] || die "usage: $0 start NAME [PORT] [--fresh]"
    name="$2"
    shift 2
    port=0
    fresh=""
    for arg in "$@"; do
        case "$arg" in
        --fresh) fresh=--fresh ;;
        *) port="$arg" ;;
        esac
    done
    start "$name" "$port" "$fresh"
    ;;
stop)
    [ $# -eq 2 ] || die "usage: $0 stop NAME"
    stop "$2"
    ;;
url)
    [ $# -eq 2 ] || die "usage: $0 url NAME"
    url_of "$2" || die "Elasticsearch node '$2' is not running"
    ;;
*) die "usage: $0 fetch | start NAME [PORT] [--fresh] | stop NAME | url NAME" ;;
esac
