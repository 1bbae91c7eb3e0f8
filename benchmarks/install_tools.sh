#!/bin/sh
# Find or install the reference tools the benchmark harness compares pktbench with:
# iperf3, sockperf, redis-server + redis-benchmark, netperf (+ netserver), irtt (the steady
# prober watch_cost.py compares `pktbench watch` with), a C compiler, and
# ethtool + nft for the veth GSO row (segmentation off, a counter at the receiver's ingress).
# iperf3 with UDP GSO (3.20+, --gsro) is not packaged in Debian yet: run.py builds it from
# ../shared/tools when that exists (see README.md).
# netperf lives only in Debian's non-free component, so when it is not installable a
# deb822 source for non-free (same mirror and suite as the existing Debian source) is
# added under /etc/apt/sources.list.d/. Services are never started (policy-rc.d).
# Usage: sh benchmarks/install_tools.sh        (needs root when something is missing)
set -eu

need=""
for pair in iperf3:iperf3 sockperf:sockperf redis-server:redis-server \
            redis-benchmark:redis-tools netperf:netperf netserver:netperf cc:gcc taskset:util-linux \
            ethtool:ethtool nft:nftables irtt:irtt; do
    bin=${pair%%:*}; pkg=${pair#*:}
    command -v "$bin" >/dev/null 2>&1 || need="$need $pkg"
done
if [ -z "$need" ]; then
    echo "reference tools: all present"; exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "missing:$need; run this script as root to install them" >&2; exit 1
fi

nonfree=/etc/apt/sources.list.d/debian-nonfree-netperf.sources
case "$need" in *netperf*)
    if ! grep -rqs 'non-free' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null; then
        # Reuse the mirror and suite of the main Debian entry so versions stay consistent.
        mirror=$(awk '/^URIs:/ && $2 ~ /debian\/?$/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
        suite=$(awk '/^Suites:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
        [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
        [ -n "$suite" ] || suite=$(. /etc/os-release && echo "$VERSION_CODENAME")
        printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$mirror" "$suite" > "$nonfree"
        echo "added $nonfree ($mirror $suite non-free)"
    fi ;;
esac

# Installing redis-server must not start a daemon on this host.
rcd=/usr/sbin/policy-rc.d; made_rcd=0
if [ ! -e "$rcd" ]; then printf '#!/bin/sh\nexit 101\n' > "$rcd"; chmod +x "$rcd"; made_rcd=1; fi
trap '[ "$made_rcd" = 1 ] && rm -f "$rcd"' EXIT

apt-get update -qq
apt-cache policy netperf | sed -n '1,3p'
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(echo $need | tr ' ' '\n' | sort -u)
for b in iperf3 sockperf redis-server redis-benchmark netperf netserver cc ethtool nft irtt; do
    printf '%-16s %s\n' "$b" "$(command -v "$b" || echo MISSING)"
done
