# Shared by the .ci/ scripts (sourced, not run). Paths, logging, timing, host-state bookkeeping.
#
# CI_CACHE survives between runs on one machine (downloads, the Go build cache, the Kubernetes
# binaries, the Docker data root with its images); CI_STATE is this machine's live state (sockets,
# pid files, logs, the host settings to restore) and is emptied by .ci/teardown.

CI_CACHE=${CI_CACHE:-/var/cache/daily-sales-ci}
CI_STATE=${CI_STATE:-/run/daily-sales-ci}
CI_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEBIAN_MIRROR=${DEBIAN_MIRROR:-}
DOCKER_SOCK="$CI_STATE/docker.sock"
DOCKER_BIN=/usr/bin/docker          # Debian's client (20.10), the daemon's own version
KUBE_DIR="$CI_STATE/kube"
KUBECONFIG_ADMIN="$KUBE_DIR/admin.kubeconfig"
IMAGE=${IMAGE:-daily-sales-etl:0.1.0}
BASE_IMAGE=local/bookworm
PYTHON_BASE_IMAGE=local/bookworm-python3.11
export DEBIAN_FRONTEND=noninteractive

mkdir -p "$CI_CACHE" "$CI_STATE/logs" "$CI_STATE/pids" "$CI_STATE/restore"

log() { printf '[ci %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# timed NAME CMD...: run CMD, print and record its wall time in $CI_STATE/timings; returns CMD's
# status. (Under `set -e` a failing CMD ends the script before the time is printed: wanted.)
timed() {
    local name=$1 start end rc
    shift
    start=$(date +%s.%N)
    "$@"
    rc=$?
    end=$(date +%s.%N)
    awk -v n="$name" -v s="$start" -v e="$end" -v rc="$rc" \
        'BEGIN { printf "%-28s %7.1f s%s\n", n, e - s, rc ? "  (FAILED)" : "" }' \
        | tee -a "$CI_STATE/timings" >&2
    return "$rc"
}

# apt_install PKG...: install what is missing (one apt-get update per run, only when needed).
apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "apt-get install ${missing[*]}"
    if [ ! -e "$CI_STATE/apt-updated" ]; then
        apt-get update -qq && touch "$CI_STATE/apt-updated"
    fi
    # Packages such as docker.io and etcd-server would start their daemons: the scripts start
    # their own, privately. A policy-rc.d of ours is removed again right after the install.
    local own_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        own_policy=1
    fi
    local rc=0
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
    [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
    return "$rc"
}

# The Debian mirror apt is configured with (deb822 .sources or one-line lists).
debian_mirror() {
    if [ -n "$DEBIAN_MIRROR" ]; then echo "$DEBIAN_MIRROR"; return; fi
    local uri
    uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' \
        | grep -v security | head -n1)
    [ -n "$uri" ] || uri=$(grep -hsE '^deb +(\[[^]]*\] +)?https?://' /etc/apt/sources.list \
        /etc/apt/sources.list.d/*.list | grep -v security | grep -i debian \
        | sed -E 's/^deb +(\[[^]]*\] +)?//' | awk '{print $1}' | head -n1)
    echo "${uri:-http://deb.debian.org/debian}"
}

# save_sysctl KEY: remember KEY's value once (before anything of ours changes it).
save_sysctl() {
    local key=$1 file="$CI_STATE/restore/sysctl"
    grep -qs "^$key=" "$file" || echo "$key=$(sysctl -n "$key")" >>"$file"
}

# start_daemon NAME CMD...: start CMD in the background (own session) unless NAME runs already.
start_daemon() {
    local name=$1
    shift
    if daemon_running "$name"; then
        log "$name already running (pid $(cat "$CI_STATE/pids/$name"))"
        return 0
    fi
    log "starting $name"
    setsid "$@" >>"$CI_STATE/logs/$name.log" 2>&1 </dev/null &
    echo $! >"$CI_STATE/pids/$name"
}

daemon_running() {
    local pidfile="$CI_STATE/pids/$1"
    [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

# wait_for DESCRIPTION SECONDS CMD...: poll CMD until it succeeds.
wait_for() {
    local what=$1 timeout=$2 i
    shift 2
    for ((i = 0; i < timeout * 4; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.25
    done
    die "$what not ready after ${timeout}s"
}

dockerc() { "$DOCKER_BIN" -H "unix://$DOCKER_SOCK" "$@"; }

# save_iptables: remember the host's rules once, before any daemon of ours starts.
save_iptables() {
    if [ ! -e "$CI_STATE/restore/iptables" ] && command -v iptables-save >/dev/null; then
        iptables-save >"$CI_STATE/restore/iptables"
    fi
}
