#!/usr/bin/env bash
# A real, local OpenSearch node for tests and trying streamsync by hand, without Docker.
#
#   scripts/opensearch.sh fetch [--version V]        download the distribution (cached in ~/.m2)
#   scripts/opensearch.sh start NAME [PORT] [--fresh] [--version V]
#                                                    start node NAME on 127.0.0.1:PORT (0 = any free
#                                                    port), wait until it is healthy, print its URL;
#                                                    --fresh wipes the node's data first
#   scripts/opensearch.sh stop NAME                  stop node NAME (also when it is not running)
#   scripts/opensearch.sh url NAME                   print the URL of running node NAME
#
# The distribution is Maven Central's org.opensearch.distribution.integ-test-zip: a real, minimal
# OpenSearch without a bundled JDK and without the security plugin (plain HTTP, no authentication).
# 2.19.6 holds only transport-netty4 (no painless, no _delete_by_query); 3.x ships ~22 modules.
# OpenSearch refuses to run as root, so as root the node runs as the system user streamsync-es
# (scripts/node-lib.sh). Environment: OPENSEARCH_VERSION (default: the newest pin),
# OPENSEARCH_JAVA_HOME, OPENSEARCH_HEAP (default 512m).
set -euo pipefail
# shellcheck source=scripts/node-lib.sh
source "$(dirname "$0")/node-lib.sh"

# The one place the OpenSearch versions are pinned; the last one is the default.
OPENSEARCH_VERSIONS=(2.19.6 3.6.0)
OPENSEARCH_VERSION="${OPENSEARCH_VERSION:-${OPENSEARCH_VERSIONS[-1]}}"

NODE_ENGINE=opensearch
NODE_PRODUCT=OpenSearch
NODE_ENV=OPENSEARCH
NODE_USAGE_OPTIONS=" [--version V]"

node_option() {
    case "$1" in
    --version) OPENSEARCH_VERSION="$2" ;;
    *) return 1 ;;
    esac
}

node_configure() {
    case " ${OPENSEARCH_VERSIONS[*]} " in
    *" $OPENSEARCH_VERSION "*) ;;
    *) die "OpenSearch $OPENSEARCH_VERSION is not pinned; choose one of ${OPENSEARCH_VERSIONS[*]} (pinned in scripts/opensearch.sh)" ;;
    esac
    NODE_VERSION="$OPENSEARCH_VERSION"
    NODE_ARTIFACT="org.opensearch.distribution.integ-test-zip:opensearch:$OPENSEARCH_VERSION:zip"
    case "$OPENSEARCH_VERSION" in
    2.*)
        # 2.x needs the Security Manager, which JDK 24 removed; it runs on Java 11 to 23.
        NODE_JDK_MIN=11
        NODE_JDK_MAX=23
        NODE_JDK_HINT="install OpenJDK 17 (Debian: apt install openjdk-17-jre-headless)"
        ;;
    *)
        NODE_JDK_MIN=21
        NODE_JDK_MAX=""
        NODE_JDK_HINT="install Temurin 25 (https://adoptium.net/installation/linux/: apt install temurin-25-jdk)"
        ;;
    esac
}

node_main "$@"
