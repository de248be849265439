# shellcheck shell=bash
# Shared by scripts/elasticsearch.sh and scripts/opensearch.sh (sourced, not run): a real, local search
# node for tests and trying streamsync by hand, without Docker.
#
# The engine script sets these variables, then calls node_main "$@":
#   NODE_ENGINE     elasticsearch | opensearch: the node directories' subfolder and the dist name
#   NODE_PRODUCT    Elasticsearch | OpenSearch, for messages
#   NODE_VERSION    the version to run
#   NODE_ARTIFACT   Maven coordinates of its zip, group:artifact:version:zip
#   NODE_ENV        prefix of the distribution's environment variables: ES | OPENSEARCH
#                   (<prefix>_JAVA_HOME, _PATH_CONF, _TMPDIR, _JAVA_OPTS; our own <prefix>_HEAP)
#   NODE_JDK_MIN, NODE_JDK_MAX   allowed Java major versions (MAX empty: no upper bound)
#   NODE_JDK_HINT   how to get such a JDK, for the error when none is found
#   NODE_SETTINGS   extra -E settings (array)
#   NODE_SCHEME     http (default) or https
# and may define these hooks:
#   node_option OPT VALUE   handles an engine-specific `--opt VALUE` of fetch/start (return 1: unknown)
#   node_configure          runs after the options are parsed, before any command
#   node_prepare DIR        runs before a start, after the node's config/ exists; may write
#                           DIR/curl.conf (curl options every request to the node uses: CA, user)
#
# Layout, under NODE_BASE (.work, or /tmp/streamsync-nodes/<hash of the checkout> when the node user
# cannot enter .work): dist/<engine>-<version>/ (the unpacked distribution, shared by every node and
# read-only to them) and nodes/<engine>/<name>/ (config, data, logs, tmp, pid, version, scheme).
# Elasticsearch and OpenSearch refuse to run as root, so as root the node runs as the system user
# streamsync-es.

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NODE_USER=streamsync-es
M2_REPO="${M2_REPO:-$HOME/.m2/repository}"
NODE_START_TIMEOUT="${STREAMSYNC_NODE_START_TIMEOUT:-180}"
# Set by the engine script (see above).
NODE_ENGINE="" NODE_PRODUCT="" NODE_VERSION="" NODE_ARTIFACT="" NODE_ENV=""
NODE_JDK_MIN="" NODE_JDK_MAX="" NODE_JDK_HINT=""
NODE_SETTINGS=()
NODE_SCHEME=http
NODE_USAGE_OPTIONS="" # the engine's extra start options, for the usage line

is_root() { [ "$(id -u)" = 0 ]; }

# traversable_by_others DIR: every folder from / down to DIR lets other users through (o+x), which is
# what the node user, a system user in no group, needs to reach anything inside DIR.
traversable_by_others() {
    local path="$1"
    while [ -n "$path" ] && [ "$path" != / ]; do
        [ -e "$path" ] && [ -z "$(find "$path" -maxdepth 0 -perm -o=x)" ] && return 1
        path="$(dirname "$path")"
    done
    return 0
}

node_base() {
    if is_root && ! traversable_by_others "$WORK"; then
        # The checkout sits in a folder only root can enter (mktemp -d, /root): the node user could
        # reach neither the distribution nor its own directories there.
        echo "/tmp/streamsync-nodes/$(echo "$ROOT" | md5sum | cut -c1-8)"
    else
        echo "$WORK"
    fi
}

node_dir() { echo "$(node_base)/nodes/$NODE_ENGINE/$1"; }
dist_dir() { echo "$(node_base)/dist/$NODE_ENGINE-$NODE_VERSION"; }

zip_path() {
    local group artifact version
    IFS=: read -r group artifact version _ <<<"$NODE_ARTIFACT"
    echo "$M2_REPO/${group//.//}/$artifact/$version/$artifact-$version.zip"
}

# ---- Java ----------------------------------------------------------------------------------------

java_major() { # java_major JDK_DIR: the JDK's major version (17, 21, 25, ...) or nothing
    local version=""
    if [ -f "$1/release" ]; then
        version="$(sed -n 's/^JAVA_VERSION="\([^"]*\)".*/\1/p' "$1/release")"
    fi
    if [ -z "$version" ]; then
        version="$("$1/bin/java" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n 1)"
    fi
    version="${version#1.}" # 1.8.0 -> 8
    echo "${version%%[.+-]*}"
}

jdk_range() { # "11 to 23" or "21 or newer"
    if [ -n "$NODE_JDK_MAX" ]; then echo "$NODE_JDK_MIN to $NODE_JDK_MAX"; else echo "$NODE_JDK_MIN or newer"; fi
}

jdk_fits() { # jdk_fits MAJOR
    [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge "$NODE_JDK_MIN" ] &&
        { [ -z "$NODE_JDK_MAX" ] || [ "$1" -le "$NODE_JDK_MAX" ]; }
}

# java_home: the JDK to run the node with: <prefix>_JAVA_HOME when set (it must fit), otherwise the
# newest JDK under /usr/lib/jvm whose major version is in the allowed range.
java_home() {
    local var="${NODE_ENV}_JAVA_HOME" jdk major best="" best_major=0 seen=" " found=""
    if [ -n "${!var:-}" ]; then
        jdk="${!var}"
        [ -x "$jdk/bin/java" ] || die "$var=$jdk has no bin/java; point it at a JDK $(jdk_range) or unset it"
        major="$(java_major "$jdk")"
        jdk_fits "$major" ||
            die "$NODE_PRODUCT $NODE_VERSION needs a JDK $(jdk_range) but $var=$jdk is Java ${major:-of unknown version}; $NODE_JDK_HINT or point $var at another JDK"
        echo "$jdk"
        return
    fi
    for jdk in /usr/lib/jvm/*; do
        [ -x "$jdk/bin/java" ] || continue
        jdk="$(readlink -f "$jdk")"
        case "$seen" in *" $jdk "*) continue ;; esac
        seen="$seen$jdk "
        major="$(java_major "$jdk")"
        found="$found${found:+, }${major:-?}"
        if jdk_fits "$major" && [ "$major" -gt "$best_major" ]; then
            best="$jdk"
            best_major="$major"
        fi
    done
    [ -n "$best" ] ||
        die "$NODE_PRODUCT $NODE_VERSION needs a JDK $(jdk_range) and none was found under /usr/lib/jvm (found Java: ${found:-none}); $NODE_JDK_HINT or set $var"
    echo "$best"
}

# ---- distribution --------------------------------------------------------------------------------

node_fetch() {
    local zip log
    zip="$(zip_path)"
    [ -f "$zip" ] && return 0
    need_command mvn "Maven fetches the $NODE_PRODUCT test distribution from Maven Central (Debian: apt install maven)"
    info "downloading $NODE_PRODUCT $NODE_VERSION ($NODE_ARTIFACT) with Maven"
    mkdir -p "$WORK"
    log="$WORK/mvn-fetch-$NODE_ENGINE-$NODE_VERSION.log"
    if ! mvn -B -q dependency:get -Dmaven.repo.local="$M2_REPO" -Dtransitive=false \
        -Dartifact="$NODE_ARTIFACT" >"$log" 2>&1; then
        tail -n 5 "$log" >&2
        die "could not download $NODE_ARTIFACT from Maven Central (log: $log); check this machine's network or Maven proxy settings (~/.m2/settings.xml)"
    fi
    [ -f "$zip" ] || die "Maven reported success but $zip is missing"
}

# unpack: the distribution, unpacked once and shared by all nodes; prints its directory. It belongs
# to whoever unpacked it (root, when the nodes run as the node user), so the nodes cannot change it.
unpack() {
    local dist tmp top
    dist="$(dist_dir)"
    if [ ! -x "$dist/bin/$NODE_ENGINE" ]; then
        need_command unzip "it unpacks the $NODE_PRODUCT distribution (Debian: apt install unzip)"
        mkdir -p "$(dirname "$dist")"
        tmp="$(mktemp -d "$dist.partial.XXXXXX")"
        unzip -q "$(zip_path)" -d "$tmp" || { rm -rf "$tmp"; die "could not unpack $(zip_path); delete it so that it is downloaded again"; }
        top="$(find "$tmp" -mindepth 1 -maxdepth 1 -type d | head -n 1)"
        chmod -R u+rwX,go+rX,go-w "$top"
        chmod 755 "$top"/bin/*
        rm -rf "$dist"
        # Another start may have unpacked it meanwhile; then its copy stays and this one goes.
        mv -T "$top" "$dist" 2>/dev/null || true
        rm -rf "$tmp"
        [ -x "$dist/bin/$NODE_ENGINE" ] || die "unpacking $(zip_path) gave no bin/$NODE_ENGINE in $dist"
    fi
    echo "$dist"
}

ensure_node_user() {
    is_root || return 0
    id "$NODE_USER" >/dev/null 2>&1 && return 0
    need_command useradd "$NODE_PRODUCT refuses to run as root and a user must be created for it (Debian: apt install passwd)"
    useradd --system --no-create-home --shell /usr/sbin/nologin "$NODE_USER" 2>/dev/null ||
        id "$NODE_USER" >/dev/null 2>&1 ||
        die "could not create the system user $NODE_USER that runs $NODE_PRODUCT (it refuses to run as root)"
}

# ---- nodes ---------------------------------------------------------------------------------------

node_running() { # node_running DIR
    [ -f "$1/pid" ] && kill -0 "$(cat "$1/pid")" 2>/dev/null
}

url_of() { # url_of DIR: the URL the node listens on, from the ports file it writes
    local port scheme=http
    [ -f "$1/logs/http.ports" ] || return 1
    port="$(sed -n '1s/.*://p' "$1/logs/http.ports")"
    [ -n "$port" ] || return 1
    [ -f "$1/scheme" ] && scheme="$(cat "$1/scheme")"
    echo "$scheme://127.0.0.1:$port"
}

node_curl() { # node_curl DIR URL-PATH...: curl with the node's own options (CA, credentials)
    local dir="$1" url
    shift
    url="$(url_of "$dir")" || return 1
    local -a opts=(-fsS --max-time 10)
    [ -f "$dir/curl.conf" ] && opts+=(-K "$dir/curl.conf")
    curl "${opts[@]}" "$url$1" "${@:2}"
}

# make_paths_absolute CONFIG_DIR NODE_DIR: the GC log, heap dumps and JVM error files of jvm.options
# go into the node's own folders, not relative to the working or install folder.
make_paths_absolute() {
    local node="$2"
    sed -i \
        -e "s|-XX:HeapDumpPath=data\b|-XX:HeapDumpPath=$node/data|" \
        -e "s|-XX:ErrorFile=\(logs/\)\?hs_err|-XX:ErrorFile=$node/logs/hs_err|" \
        -e "s|file=\(logs/\)\?gc\.log|file=$node/logs/gc.log|" \
        -e "s|-Xloggc:\(logs/\)\?gc\.log|-Xloggc:$node/logs/gc.log|" \
        "$1/jvm.options"
    if ! grep -q '^[^#]*-XX:HeapDumpPath=' "$1/jvm.options"; then
        mkdir -p "$1/jvm.options.d"
        echo "-XX:HeapDumpPath=$node/data" >"$1/jvm.options.d/heap-dump-path.options"
    fi
}

# fix_for LOG NAME: one sentence naming the likely fix for a node that did not come up.
fix_for() {
    local log="$1" name="$2"
    if grep -q "Security Manager is not supported\|UnsupportedClassVersionError\|Unrecognized VM option\|JavaVersionChecker\|requires Java" "$log" 2>/dev/null; then
        echo "the JDK does not suit $NODE_PRODUCT $NODE_VERSION; give it a JDK $(jdk_range) with ${NODE_ENV}_JAVA_HOME"
    elif grep -q "Could not create the Java Virtual Machine" "$log" 2>/dev/null; then
        echo "the JVM refused an option (above); check ${NODE_ENV}_HEAP and the node's config/jvm.options, or start it with --fresh"
    elif grep -q "BindException\|Address already in use" "$log" 2>/dev/null; then
        echo "its port is taken; choose another port, or 0 for any free one"
    elif grep -q "failed to obtain node lock\|LockObtainFailedException" "$log" 2>/dev/null; then
        echo "another process holds its data folder; stop it ($0 stop $name) or start it with --fresh"
    elif grep -q "IndexFormatTooNewException\|IndexFormatTooOldException\|cannot upgrade a node\|incompatible" "$log" 2>/dev/null; then
        echo "its data was written by another version; start it with --fresh"
    elif grep -q "OutOfMemoryError\|Cannot allocate memory\|insufficient memory" "$log" 2>/dev/null; then
        echo "the machine is short of memory; stop other nodes or lower ${NODE_ENV}_HEAP"
    elif grep -q "AccessDeniedException\|Permission denied" "$log" 2>/dev/null; then
        echo "the node user $NODE_USER cannot use a file it needs (see the log); start it with --fresh"
    else
        echo "fix what the log lines above name, or start it again with --fresh"
    fi
}

node_start() { # node_start NAME PORT FRESH
    local name="$1" port="$2" fresh="$3" dir dist jdk pid url started deadline version heap var
    need_command curl "it checks the node's health (Debian: apt install curl)"
    umask 022 # the node user must be able to read the distribution and enter the folders
    dir="$(node_dir "$name")"
    if node_running "$dir" && url="$(url_of "$dir")"; then
        version="$(cat "$dir/version" 2>/dev/null || true)"
        if [ "$version" != "$NODE_VERSION" ] || [ "${url%%:*}" != "$NODE_SCHEME" ]; then
            die "$NODE_PRODUCT node '$name' is already running ($NODE_PRODUCT ${version:-?} at $url), not $NODE_PRODUCT $NODE_VERSION over $NODE_SCHEME; stop it first ($0 stop $name)"
        fi
        info "$NODE_PRODUCT node '$name' is already running at $url"
        echo "$url"
        return 0
    fi
    [[ "$port" =~ ^[0-9]+$ ]] || die "the port must be a number (0 = any free port), not '$port'"
    var="${NODE_ENV}_HEAP"
    heap="${!var:-512m}"
    [[ "$heap" =~ ^[0-9]+[kmg]$ ]] || die "$var=$heap is not a JVM heap size; use e.g. 512m or 1g"
    if [ "$port" != 0 ] && port_open "$port"; then
        die "port 127.0.0.1:$port is already in use; stop what listens there (make services-down?) or choose another port"
    fi
    if [ "$fresh" != --fresh ] && [ -f "$dir/version" ] && [ "$(cat "$dir/version")" != "$NODE_VERSION" ]; then
        die "$NODE_PRODUCT node '$name' holds data of $NODE_PRODUCT $(cat "$dir/version"), not $NODE_VERSION; start it with --fresh to replace it, or choose another name"
    fi
    jdk="$(java_home)"
    node_fetch
    ensure_node_user
    dist="$(unpack)"
    [ "$fresh" = --fresh ] && rm -rf "$dir"
    mkdir -p "$dir/data" "$dir/logs" "$dir/tmp"
    echo "$NODE_VERSION" >"$dir/version"
    rm -f "$dir/logs/http.ports" "$dir/scheme" "$dir/curl.conf"
    [ "$NODE_SCHEME" = http ] || echo "$NODE_SCHEME" >"$dir/scheme"
    if [ ! -d "$dir/config" ]; then
        cp -r "$dist/config" "$dir/config.partial"
        make_paths_absolute "$dir/config.partial" "$dir"
        mv "$dir/config.partial" "$dir/config"
    fi
    if declare -F node_prepare >/dev/null; then node_prepare "$dir"; fi
    if is_root; then
        chown -R "$NODE_USER:" "$dir"
        # The node's own state, not the files that tell this script how to reach it.
        local own
        for own in version scheme curl.conf; do
            [ -f "$dir/$own" ] && chown root: "$dir/$own"
        done
        chmod 755 "$(node_base)" "$(node_base)/nodes" "$(node_base)/nodes/$NODE_ENGINE" "$(node_base)/dist"
    fi

    local -a cmd=(env -i PATH=/usr/bin:/bin HOME=/tmp LANG=C.UTF-8
        "${NODE_ENV}_JAVA_HOME=$jdk" "${NODE_ENV}_PATH_CONF=$dir/config" "${NODE_ENV}_TMPDIR=$dir/tmp"
        "${NODE_ENV}_JAVA_OPTS=-Xms$heap -Xmx$heap"
        "$dist/bin/$NODE_ENGINE"
        -E "cluster.name=streamsync-$name" -E "node.name=$name"
        -E discovery.type=single-node -E network.host=127.0.0.1
        -E "http.port=$port" -E transport.port=0 -E node.portsfile=true
        -E "path.data=$dir/data" -E "path.logs=$dir/logs"
        -E cluster.routing.allocation.disk.threshold_enabled=false
        -E discovery.initial_state_timeout=0s -E action.destructive_requires_name=false)
    local setting
    for setting in "${NODE_SETTINGS[@]}"; do cmd+=(-E "$setting"); done
    is_root && cmd=(runuser -u "$NODE_USER" -- "${cmd[@]}")
    # setsid gives the node its own process group, so stop ends the launcher and the server alike.
    # It starts in its own folder: the node user may not be allowed into the caller's.
    (cd "$dir" && exec setsid "${cmd[@]}" </dev/null >>"$dir/logs/node.out" 2>&1) &
    pid=$!
    echo "$pid" >"$dir/pid"

    info "starting $NODE_PRODUCT $NODE_VERSION node '$name' (JDK: $jdk, heap: $heap, log: $dir/logs/node.out)"
    started=$SECONDS
    deadline=$((started + NODE_START_TIMEOUT))
    until node_curl "$dir" "/_cluster/health?wait_for_status=yellow&timeout=1s" >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$dir/logs/node.out" >&2
            rm -f "$dir/pid"
            die "$NODE_PRODUCT node '$name' exited during start-up (log: $dir/logs/node.out); $(fix_for "$dir/logs/node.out" "$name")"
        fi
        if [ $SECONDS -ge "$deadline" ]; then
            tail -n 30 "$dir/logs/node.out" >&2
            node_stop "$name"
            die "$NODE_PRODUCT node '$name' was not healthy within $NODE_START_TIMEOUT s (log: $dir/logs/node.out); if the machine is busy, stop other nodes or raise STREAMSYNC_NODE_START_TIMEOUT, else $(fix_for "$dir/logs/node.out" "$name")"
        fi
        sleep 0.5
    done
    url="$(url_of "$dir")"
    version="$(node_curl "$dir" "/_nodes/_local?filter_path=nodes.*.version" | sed 's/.*"version":"\([^"]*\)".*/\1/')"
    info "$NODE_PRODUCT $version ready at $url (node '$name', healthy after $((SECONDS - started)) s)"
    echo "$url"
}

node_stop() { # node_stop NAME
    stop_pidfile "$(node_dir "$1")/pid" "$NODE_PRODUCT node '$1'"
}

node_url() { # node_url NAME
    local dir
    dir="$(node_dir "$1")"
    if ! node_running "$dir" || ! url_of "$dir"; then
        die "$NODE_PRODUCT node '$1' is not running; start it with $0 start $1"
    fi
}

# ---- command line --------------------------------------------------------------------------------

node_usage() {
    die "usage: $0 fetch | start NAME [PORT] [--fresh]$NODE_USAGE_OPTIONS | stop NAME | url NAME"
}

# node_options ARG...: parses start/fetch arguments into NODE_ARG_PORT and NODE_ARG_FRESH; options
# with a value go to the engine's node_option hook.
node_options() {
    NODE_ARG_PORT=0
    NODE_ARG_FRESH=""
    while [ $# -gt 0 ]; do
        case "$1" in
        --fresh) NODE_ARG_FRESH=--fresh ;;
        --*)
            [ $# -ge 2 ] || die "option $1 needs a value; usage: $0 start NAME [PORT] [--fresh]$NODE_USAGE_OPTIONS"
            if ! declare -F node_option >/dev/null || ! node_option "$1" "$2"; then
                die "unknown option $1; usage: $0 start NAME [PORT] [--fresh]$NODE_USAGE_OPTIONS"
            fi
            shift
            ;;
        *) NODE_ARG_PORT="$1" ;;
        esac
        shift
    done
}

node_check_engine() { # the variables every engine script must set
    local var
    for var in NODE_ENGINE NODE_PRODUCT NODE_VERSION NODE_ARTIFACT NODE_ENV NODE_JDK_MIN NODE_JDK_HINT; do
        [ -n "${!var:-}" ] || die "$0 sets no $var (see scripts/node-lib.sh)"
    done
}

node_main() {
    local command="${1:-}"
    [ $# -gt 0 ] && shift
    if [ $# -gt 0 ] && [ "$command" != fetch ] && ! [[ "$1" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]*$ ]]; then
        die "node name '$1' is not allowed; use letters, digits, '.', '_' and '-'"
    fi
    case "$command" in
    fetch)
        node_options "$@"
        if declare -F node_configure >/dev/null; then node_configure; fi
        node_check_engine
        node_fetch
        ;;
    start)
        [ $# -ge 1 ] || node_usage
        local name="$1"
        shift
        node_options "$@"
        if declare -F node_configure >/dev/null; then node_configure; fi
        node_check_engine
        node_start "$name" "$NODE_ARG_PORT" "$NODE_ARG_FRESH"
        ;;
    stop)
        [ $# -eq 1 ] || node_usage
        node_stop "$1"
        ;;
    url)
        [ $# -eq 1 ] || node_usage
        node_url "$1"
        ;;
    *) node_usage ;;
    esac
}
