#!/usr/bin/env bash
# docs-check: run the commands of docs/operations.md that can run here.
#
# Every fenced block whose info string is `sh runnable` is run, in document
# order, in ONE bash session (so a variable or function a block defines is
# there for the next), with `set -euo pipefail`, in a scratch directory
# holding a copy of examples/. `sh runnable needs=PROG` blocks are skipped
# when PROG is missing (a failure under HEALTHSWITCH_REQUIRE_ALL=1).
#
# The session provides what a real operator has: bin/ on PATH, and once the
# keys exist (the guide's first block makes them), a DNS server of bin/coredns
# on loopback with a sidecar of bin/healthswitch-sidecar reporting for
# cluster east. Its addresses are in $DNS (push API), $NS_ADDR/$NS_PORT (DNS)
# and $METRICS (Prometheus), the names the guide uses.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
doc=${1:-$repo/docs/operations.md}
for b in coredns healthswitch-sidecar; do
	[[ -x $repo/bin/$b ]] || { echo "docs-check: bin/$b missing; run make build" >&2; exit 1; }
done
for p in openssl curl; do
	command -v "$p" >/dev/null || { echo "docs-check: needs $p" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$repo/examples" "$work/examples"

# Extract the blocks: one file per block, and "needs" per block.
awk -v dir="$work" '
	/^```sh runnable/ { n++; inblock = 1; needs = ""
		if (match($0, /needs=[^ ]+/)) needs = substr($0, RSTART + 6, RLENGTH - 6)
		printf "%s|%d\n", needs, NR > (dir "/blocks.idx"); next }
	/^```/ && inblock { inblock = 0; next }
	inblock { print > (dir "/block" n ".sh") }
' "$doc"
[[ -s $work/blocks.idx ]] || { echo "docs-check: no runnable blocks in $doc" >&2; exit 1; }

{
	cat <<'PRELUDE'
set -euo pipefail
cd "$WORK"
export PATH="$REPO/bin:$PATH"
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT

free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 30000))
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
	done
}

# Start a local DNS server and a sidecar once the guide has made the keys.
maybe_start_dns() {
	[[ -n ${DNS:-} ]] && return
	[[ -s keys/east.key && -s keys/west.key && -s keys/admin.key ]] || return 0
	NS_ADDR=127.0.0.1 NS_PORT=$(free_port)
	local push=$(free_port) prom=$(free_port) health=$(free_port) ready=$(free_port) status=$(free_port)
	DNS=http://127.0.0.1:$push METRICS=http://127.0.0.1:$prom/metrics
	cat > Corefile <<COREFILE
svc1.net:$NS_PORT {
    bind 127.0.0.1
    healthswitch {
        cluster east 192.0.2.10 192.0.2.11 {
            key_file $PWD/keys/east.key
        }
        cluster west 198.51.100.10 198.51.100.11 {
            key_file $PWD/keys/west.key
        }
        admin_key_file $PWD/keys/admin.key
        listen 127.0.0.1:$push
        stale 2s
    }
    prometheus 127.0.0.1:$prom
    health 127.0.0.1:$health
    ready 127.0.0.1:$ready
}
COREFILE
	cat > sidecar.yaml <<SIDECAR
cluster: east
key_file: $PWD/keys/east.key
report_to: [$DNS]
listen: 127.0.0.1:$status
checks:
  - name: push-api
    tcp: {address: "127.0.0.1:$push"}
SIDECAR
	coredns -conf Corefile > coredns.log 2>&1 & pids+=($!)
	for _ in $(seq 50); do curl -fsS "$DNS/v1/status" >/dev/null 2>&1 && break; sleep 0.1; done
	curl -fsS "$DNS/v1/status" >/dev/null || { cat coredns.log; return 1; }
	healthswitch-sidecar -config sidecar.yaml > sidecar.log 2>&1 & pids+=($!)
	for _ in $(seq 50); do curl -fsS "$DNS/v1/status" | grep -q '"boot_id"' && break; sleep 0.1; done
	echo "docs-check: coredns on $NS_ADDR:$NS_PORT, push API $DNS, sidecar for east" >&2
}
PRELUDE
	i=0
	while IFS="|" read -r needs line; do
		i=$((i + 1))
		echo "maybe_start_dns"
		if [[ -n $needs ]] && ! command -v "$needs" >/dev/null; then
			if [[ ${HEALTHSWITCH_REQUIRE_ALL:-} == 1 ]]; then
				echo "echo 'docs-check: block at line $line needs $needs (and HEALTHSWITCH_REQUIRE_ALL=1)' >&2; exit 1"
			else
				echo "echo 'docs-check: SKIP block at line $line: needs $needs' >&2"
			fi
			continue
		fi
		echo "echo '--- docs/operations.md line $line' >&2"
		cat "$work/block$i.sh"
	done < "$work/blocks.idx"
	echo "echo 'docs-check: ok ($i blocks)' >&2"
} > "$work/run.sh"

WORK=$work REPO=$repo bash "$work/run.sh"
