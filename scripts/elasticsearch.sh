#!/usr/bin/env bash
# A real, local Elasticsearch node for tests and trying streamsync by hand, without Docker.
#
#   scripts/elasticsearch.sh fetch                   download the distribution (cached in ~/.m2)
#   scripts/elasticsearch.sh start NAME [PORT] [--fresh] [--secure CERTDIR]
#                                                    start node NAME on 127.0.0.1:PORT (0 = any free
#                                                    port), wait until it is healthy, print its URL;
#                                                    --fresh wipes the node's data first
#   scripts/elasticsearch.sh stop NAME               stop node NAME (also when it is not running)
#   scripts/elasticsearch.sh url NAME                print the URL of running node NAME
#
# --secure CERTDIR turns security on: HTTPS only, with CERTDIR's node.pem / node-key.pem signed by
# its ca.pem, and a file-realm superuser streamsync-admin whose password is CERTDIR/admin-password.
# Optional: CERTDIR/roles.yml (file-realm roles) and CERTDIR/users (lines "name:password:role",
# more file-realm users). Without --secure, security is off: plain HTTP, no authentication.
#
# The distribution is Maven Central's integ-test-zip: a real, minimal Elasticsearch without a
# bundled JDK. Elasticsearch refuses to run as root, so as root the node runs as the system user
# streamsync-es (scripts/node-lib.sh). Environment: ES_VERSION, ES_JAVA_HOME, ES_HEAP (default 512m).
# The integ-test-zip lacks the analysis-common module, whose pattern_capture, unique and uax_url_email
# the .security index (API keys, native users) needs: scripts/es-test-analysis builds them from
# Lucene's classes into a small test-only plugin, built with Maven (cached in .work) and installed
# once into the shared distribution, so every node started from it has them.
set -euo pipefail
# shellcheck source=scripts/node-lib.sh
source "$(dirname "$0")/node-lib.sh"

# The one place the Elasticsearch version is pinned. Maven Central serves the integ-test-zip only up
# to 8.19.x (no 9.x build is published there); the 8.19 Python client works with 8.x and 9.x servers.
ES_VERSION="${ES_VERSION:-8.19.21}"

NODE_ENGINE=elasticsearch
NODE_PRODUCT=Elasticsearch
NODE_VERSION="$ES_VERSION"
NODE_ARTIFACT="org.elasticsearch.distribution.integ-test-zip:elasticsearch:$ES_VERSION:zip"
NODE_ENV=ES
# Elasticsearch 8.19 and 9.x run on JDK 21 or newer; the newest one found is used (9.x bundles 25).
NODE_JDK_MIN=21
NODE_JDK_MAX=""
NODE_JDK_HINT="install Temurin 25 (https://adoptium.net/installation/linux/: apt install temurin-25-jdk)"
NODE_USAGE_OPTIONS=" [--secure CERTDIR]"
ADMIN_USER=streamsync-admin
SECURE_DIR=""

node_option() {
    case "$1" in
    --secure) SECURE_DIR="$2" ;;
    *) return 1 ;;
    esac
}

node_configure() {
    if [ -z "$SECURE_DIR" ]; then
        NODE_SETTINGS=(xpack.security.enabled=false)
        return
    fi
    [ -d "$SECURE_DIR" ] || die "--secure $SECURE_DIR: no such folder; it must hold ca.pem, node.pem, node-key.pem and admin-password"
    SECURE_DIR="$(cd "$SECURE_DIR" && pwd)"
    local file
    for file in ca.pem node.pem node-key.pem admin-password; do
        [ -s "$SECURE_DIR/$file" ] || die "--secure $SECURE_DIR has no $file; it must hold ca.pem, node.pem, node-key.pem (PEM) and admin-password"
    done
    NODE_SCHEME=https
    # Transport TLS stays off: a single-node cluster bound to loopback has no transport peers.
    NODE_SETTINGS=(xpack.security.enabled=true
        xpack.security.http.ssl.enabled=true
        xpack.security.http.ssl.key=node-key.pem
        xpack.security.http.ssl.certificate=node.pem
        xpack.security.http.ssl.certificate_authorities=ca.pem
        xpack.security.transport.ssl.enabled=false)
}

node_prepare() { # node_prepare DIR: the certificates, roles and file-realm users in the node's config
    local dir="$1" password wanted escaped
    install_test_analysis "$(dist_dir)"
    [ -n "$SECURE_DIR" ] || return 0
    cp "$SECURE_DIR/ca.pem" "$SECURE_DIR/node.pem" "$SECURE_DIR/node-key.pem" "$dir/config/"
    chmod 600 "$dir/config/node-key.pem"
    [ -f "$SECURE_DIR/roles.yml" ] && cp "$SECURE_DIR/roles.yml" "$dir/config/roles.yml"
    password="$(cat "$SECURE_DIR/admin-password")"
    [ ${#password} -ge 6 ] || die "$SECURE_DIR/admin-password holds fewer than 6 characters; Elasticsearch's file realm needs at least 6"
    wanted="$(umask 077 && mktemp)"
    { echo "$ADMIN_USER:$password:superuser"; cat "$SECURE_DIR/users" 2>/dev/null || true; } >"$wanted"
    # Each user costs a JVM start (seconds on a small machine): only when the list changed.
    if ! cmp -s "$wanted" "$dir/users.added" 2>/dev/null; then
        add_file_users "$dir" "$wanted"
        mv "$wanted" "$dir/users.added"
    else
        rm -f "$wanted"
    fi
    # Every request of this script to the node: the CA and the superuser (kept out of ps listings).
    escaped="${password//\\/\\\\}"
    escaped="${escaped//\"/\\\"}"
    (
        umask 077
        printf 'cacert = "%s"\nuser = "%s:%s"\n' "$dir/config/ca.pem" "$ADMIN_USER" "$escaped" >"$dir/curl.conf"
    )
}

add_file_users() { # add_file_users DIR FILE: each "name:password:role" line of FILE as a file-realm user
    local dir="$1" file="$2" name password role jdk
    jdk="$(java_home)"
    local -a users=(env -i PATH=/usr/bin:/bin HOME=/tmp LANG=C.UTF-8 ES_JAVA_HOME="$jdk"
        ES_PATH_CONF="$dir/config" "$(dist_dir)/bin/elasticsearch-users")
    while IFS=: read -r name password role; do
        [ -n "$name" ] || continue
        if grep -q "^$name:" "$dir/config/users" 2>/dev/null; then
            "${users[@]}" userdel "$name" >/dev/null 2>&1 || true
        fi
        "${users[@]}" useradd "$name" -p "$password" -r "$role" >"$dir/logs/users.out" 2>&1 || {
            cat "$dir/logs/users.out" >&2
            die "elasticsearch-users could not add the user $name (from $file) to node $dir (output above)"
        }
    done <"$file"
}

TEST_ANALYSIS_SRC="$ROOT/scripts/es-test-analysis"
TEST_ANALYSIS=streamsync-test-analysis

# install_test_analysis DIST: builds scripts/es-test-analysis (once per version of its sources) and
# installs it into the distribution DIST, unless DIST has it already or has analysis-common itself.
install_test_analysis() {
    local dist="$1" digest installed build partial log jdk
    [ -d "$dist/modules/analysis-common" ] && return 0
    # The plugin's version ends in this digest: a change of the sources replaces an installed copy.
    digest="$( (cd "$TEST_ANALYSIS_SRC" && find pom.xml src -type f | LC_ALL=C sort | xargs sha256sum &&
        echo "$ES_VERSION") | sha256sum | cut -c1-12)"
    installed="$(sed -n 's/^version=//p' "$dist/plugins/$TEST_ANALYSIS/plugin-descriptor.properties" 2>/dev/null || true)"
    [ "${installed##*-}" = "$digest" ] && return 0
    jdk="$(java_home)"
    build="$WORK/es-test-analysis/$ES_VERSION-$digest"
    log="$WORK/es-test-analysis/build.log"
    if [ ! -f "$build/$TEST_ANALYSIS.zip" ]; then
        need_command mvn "Maven builds the Elasticsearch test plugin scripts/es-test-analysis (Debian: apt install maven)"
        info "building the test analysis plugin scripts/es-test-analysis for Elasticsearch $ES_VERSION with Maven"
        mkdir -p "$WORK/es-test-analysis"
        partial="$build.partial.$$"
        # --release 21 in pom.xml: compiled by the node's own JDK (21 or newer).
        if ! (cd "$TEST_ANALYSIS_SRC" && JAVA_HOME="$jdk" mvn -B -q package -Dmaven.repo.local="$M2_REPO" \
            -Dbuild.dir="$partial" -Delasticsearch.version="$ES_VERSION" -Dsource.digest="$digest") >"$log" 2>&1; then
            rm -rf "$partial"
            # Maven's errors, without its advice on how to read them.
            grep '^\[ERROR\] ' "$log" | grep -v -e '^\[ERROR\] *$' -e '-\(e\|X\) switch' -e '^\[ERROR\] \(-> \)\?\[Help' \
                -e 'For more information' | awk '!seen[$0]++' | head -n 5 >&2
            if grep -q 'COMPILATION ERROR' "$log"; then
                die "the test plugin scripts/es-test-analysis does not compile against Elasticsearch $ES_VERSION (errors above, log: $log); fix its sources"
            fi
            die "Maven could not build the test plugin scripts/es-test-analysis (log: $log); check the network to Maven Central (proxy: ~/.m2/settings.xml) and that org.elasticsearch:elasticsearch:$ES_VERSION is published there"
        fi
        # Another start may have built it meanwhile; then its copy stays and this one goes.
        mv -T "$partial" "$build" 2>/dev/null || rm -rf "$partial"
    fi
    local -a plugin=(env -i PATH=/usr/bin:/bin HOME=/tmp LANG=C.UTF-8 ES_JAVA_HOME="$jdk" "$dist/bin/elasticsearch-plugin")
    [ -n "$installed" ] && { "${plugin[@]}" remove "$TEST_ANALYSIS" >"$log" 2>&1 || true; }
    if ! "${plugin[@]}" install --batch "file://$build/$TEST_ANALYSIS.zip" >"$log" 2>&1; then
        # Another start may have installed it meanwhile.
        installed="$(sed -n 's/^version=//p' "$dist/plugins/$TEST_ANALYSIS/plugin-descriptor.properties" 2>/dev/null || true)"
        if [ "${installed##*-}" != "$digest" ]; then
            tail -n 5 "$log" >&2
            die "could not install the test plugin $build/$TEST_ANALYSIS.zip into $dist (log: $log); delete $dist to unpack the distribution afresh"
        fi
    fi
    info "installed the test analysis plugin $TEST_ANALYSIS into $dist"
}

node_main "$@"
