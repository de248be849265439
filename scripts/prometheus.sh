#!/usr/bin/env bash
# Prometheus and promtool, for the tests of deploy/prometheus (the alert rules) and of a real
# Prometheus scraping a worker. Nothing is installed system-wide.
#
#   scripts/prometheus.sh fetch    download Debian's prometheus package into .work/prometheus and
#                                  unpack it there (once): .work/prometheus/usr/bin/{prometheus,promtool}
#   scripts/prometheus.sh bin      fetch if needed, then print the folder holding both binaries
#
# `apt-get download` needs only the host's package lists (no root); `dpkg-deb -x` unpacks without
# installing. Concurrent fetches (test processes side by side) wait for each other.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

DEST="$WORK/prometheus"
BIN="$DEST/usr/bin"
DOWNLOAD="" # the download's temporary folder, removed on exit

cleanup() {
    if [ -n "$DOWNLOAD" ]; then rm -rf "$DOWNLOAD"; fi
}
trap cleanup EXIT

fetched() {
    [ -x "$BIN/prometheus" ] && [ -x "$BIN/promtool" ]
}

fetch() {
    fetched && return 0
    need_command apt-get "the Prometheus binaries come from Debian's prometheus package: run this on Debian or Ubuntu"
    need_command dpkg-deb "install dpkg (it comes with apt)"
    need_command flock "install util-linux"
    mkdir -p "$WORK"
    exec 9>"$WORK/prometheus.lock"
    flock 9
    fetched && return 0 # another process fetched it while this one waited
    local tmp log
    tmp="$(mktemp -d "$WORK/prometheus.XXXXXX")"
    DOWNLOAD="$tmp"
    chmod 755 "$tmp" # apt-get run as root downloads as the _apt user
    log="$tmp/apt-get.log"
    info "downloading Debian's prometheus package into $DEST"
    if ! (cd "$tmp" && apt-get download prometheus) >"$log" 2>&1 && [ "$(id -u)" = 0 ]; then
        # A fresh machine (a CI image) may have empty package lists: refresh them once.
        info "refreshing the package lists (apt-get update)"
        apt-get update -qq >>"$log" 2>&1 || true
    fi
    if ! [ -e "$tmp"/prometheus_*.deb ] && ! (cd "$tmp" && apt-get download prometheus) >>"$log" 2>&1; then
        die "apt-get download prometheus failed: $(tail -n 1 "$log"); if the package is unknown, refresh the package lists (as root: apt-get update) and try again"
    fi
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root" ||
        die "dpkg-deb could not unpack $(basename "$tmp"/prometheus_*.deb); delete $DEST and try again"
    "$tmp/root/usr/bin/promtool" --version >/dev/null 2>&1 ||
        die "the unpacked promtool does not run on this host (see: $tmp/root/usr/bin/promtool --version)"
    rm -rf "$DEST"
    mv "$tmp/root" "$DEST"
    info "Prometheus $("$BIN/prometheus" --version 2>&1 | head -n 1 | awk '{print $3}') in $BIN"
}

case "${1:-}" in
fetch) fetch ;;
bin)
    fetch
    echo "$BIN"
    ;;
*) die "usage: scripts/prometheus.sh fetch|bin" ;;
esac
