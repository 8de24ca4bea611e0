#!/usr/bin/env bash
# Installs (as root, on Debian) every package the tests use. `make deps` and
# .ci/run call it; a package already installed is left alone.
set -euo pipefail
pkgs=(
  dnsperf knot-dnsutils bind9-dnsutils   # DNS load and raw queries
  nftables iptables iproute2 procps      # routing-rule checks in network namespaces
  libvirt-clients libvirt-daemon         # vm preset and libvirt events (test driver via libvirtd)
  systemd util-linux                     # crio preset against a real systemd (a user instance in its own mount namespace)
  postgresql mariadb-server redis-server # database checks against real servers
  etcd-server etcd-client                # the shared store: a 3-member cluster on loopback
  haproxy                                # ingress drain through the runtime API
  chromium                               # the status page in headless Chromium
  zonemaster-cli unbound bind9           # DNS conformance and resolvers in front of us
  jq curl openssl python3                # docs-check and helpers
  # kubectl (for `kubectl kustomize` of examples/kubernetes) comes with the machine image, not Debian
)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then echo "make deps: run as root to install packages" >&2; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# libvirtd's QEMU driver will not start without its user, group and log dir,
# which Debian's libvirt-daemon-system would create; tests start libvirtd
# themselves, so create just those.
getent group kvm >/dev/null || groupadd -r kvm
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
id libvirt-qemu >/dev/null 2>&1 || useradd -r -g libvirt-qemu -G kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
mkdir -p /var/log/libvirt
# Services from these packages must not run on their own: tests start their own.
for s in etcd haproxy libvirtd mariadb redis-server unbound named bind9 postgresql; do
  systemctl stop "$s" >/dev/null 2>&1 || service "$s" stop >/dev/null 2>&1 || true
done
