#!/usr/bin/env bash
# bench/s3.sh: GC of an S3 datastore of N objects (default 100,000) on
# versitygw, README "S3 performance".
#
#   bash bench/s3.sh [WORK]      # env: N=100000 GARBAGE=0.2 DELAY=50ms CASES="..."
#
# Builds chunkgc and bench/s3bench into WORK (default /var/tmp/chunkgc-s3bench),
# a self-signed certificate for 127.0.0.1, and starts versitygw over TLS
# (posix backend, WORK/vgw) on a free loopback port; the datastore "bench"
# is written straight into versitygw's directory (s3bench gen: an object
# is the file <dir>/<bucket>/<key>, LastModified its mtime) with its local
# cache in WORK/cache: one empty marker per object, indexes referencing
# 1-GARBAGE of them, objects and markers 48 h old. Each case restores that
# datastore, then runs
#
#   /usr/bin/time -v chunkgc gc --output json --tuning gc-atime-safety-check=0,gc-s3-list-ranges=R bench
#
# and prints wall time, phase 2 time, the requests the run sent by method
# (its own counters, retries included), objects removed and peak RSS. The
# cases: direct to versitygw with 1 and 16 key ranges, then through
# s3bench proxy (internal/testkit/s3proxy over TLS) adding DELAY to every
# request, with 1 and 16 ranges.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/var/tmp/chunkgc-s3bench}
N=${N:-100000}
GARBAGE=${GARBAGE:-0.2}
DELAY=${DELAY:-50ms}
CASES=${CASES:-"direct:1 direct:16 proxy:1 proxy:16"}
VGW=${VERSITYGW:-$(command -v versitygw || echo /var/cache/chunkgc/gobin/versitygw)}

mkdir -p "$WORK/locks" "$WORK/vgw"
go build -o "$WORK/chunkgc" ./cmd/chunkgc
go build -o "$WORK/s3bench" ./bench/s3bench
freeport() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
if [ ! -f "$WORK/cert.pem" ]; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=s3bench \
		-addext subjectAltName=IP:127.0.0.1 -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
fi
FP=$(openssl x509 -in "$WORK/cert.pem" -noout -fingerprint -sha256 | cut -d= -f2 | tr A-F a-f)
AK=s3bench-access
SK=s3bench-secret-key
VPORT=$(freeport)

ROOT_ACCESS_KEY=$AK ROOT_SECRET_KEY=$SK "$VGW" --port "127.0.0.1:$VPORT" --quiet --region us-west-1 \
	--cert "$WORK/cert.pem" --key "$WORK/key.pem" posix "$WORK/vgw" >"$WORK/versitygw.log" 2>&1 &
VPID=$!
PROXY_PID=
cleanup() {
	[ -z "$PROXY_PID" ] || kill "$PROXY_PID" 2>/dev/null || true
	kill "$VPID" 2>/dev/null || true
	wait 2>/dev/null || true
}
trap cleanup EXIT
# versitygw wants the payload hash header; this is the empty body's.
s3curl() {
	curl -sfk --aws-sigv4 "aws:amz:us-west-1:s3" --user "$AK:$SK" \
		-H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" "$@"
}
for _ in $(seq 100); do
	s3curl -o /dev/null "https://127.0.0.1:$VPORT/" && break
	sleep 0.1
done
[ -d "$WORK/vgw/bench" ] || s3curl -X PUT -o /dev/null "https://127.0.0.1:$VPORT/bench"

"$WORK/s3bench" proxy -delay "$DELAY" -cert "$WORK/cert.pem" -key "$WORK/key.pem" "https://127.0.0.1:$VPORT" \
	>"$WORK/proxy.addr" 2>"$WORK/proxy.log" &
PROXY_PID=$!
for _ in $(seq 100); do
	[ -s "$WORK/proxy.addr" ] && break
	sleep 0.1
done
PPORT=$(cut -d: -f2 "$WORK/proxy.addr")

endpoint() {
	printf 's3-endpoint: %s\n\taccess-key %s\n\tendpoint 127.0.0.1\n\tfingerprint %s\n\tpath-style true\n\tport %s\n\tregion us-west-1\n\tsecret-key %s\n\n' \
		"$1" "$AK" "$FP" "$2" "$SK"
}
{ endpoint direct "$VPORT"; endpoint proxy "$PPORT"; } >"$WORK/s3.cfg"
chmod 600 "$WORK/s3.cfg"
for ep in direct proxy; do
	printf 'datastore: bench\n\tbackend type=s3,client=%s,bucket=bench\n\tpath %s\n' "$ep" "$WORK/cache" >"$WORK/datastore-$ep.cfg"
done

echo "S3 datastore: $N objects, garbage $GARBAGE, versitygw $VPORT, proxy $PPORT (+$DELAY per request); $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-8s %6s %8s %8s %6s %5s %5s %5s %8s %8s\n' case ranges wall-s phase2-s LIST POST HEAD GET removed rss-MiB
for c in $CASES; do
	ep=${c%%:*}
	ranges=${c##*:}
	"$WORK/s3bench" gen -objects "$N" -garbage "$GARBAGE" -store bench "$WORK/cache" "$WORK/vgw/bench" >/dev/null
	out="$WORK/out-$ep-$ranges"
	/usr/bin/time -v -o "$out.time" "$WORK/chunkgc" gc --config "$WORK/datastore-$ep.cfg" --s3-config "$WORK/s3.cfg" \
		--lock-dir "$WORK/locks" --log-format json --log-level warn --output json \
		--tuning "gc-atime-safety-check=0,gc-s3-list-ranges=$ranges" bench >"$out.json" 2>"$out.log"
	python3 - "$ep" "$ranges" "$out" <<'EOF'
import json, re, sys
ep, ranges, out = sys.argv[1:]
st = json.load(open(out + ".json"))
st = st.get("status", st)
t = open(out + ".time").read()
m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", t)
wall = int(m.group(1) or 0) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1)) / 1024
s3 = st["s3"]
req = s3["requests"]
lists = req["get"] - 1  # one GET reads .in-use
print("%-8s %6s %8.1f %8.1f %6d %5d %5d %5d %8d %8.0f" % (ep, ranges, wall, st["duration-phase2-s"], lists, req["post"],
      req["head"], 1, st["removed-chunks"], rss))
EOF
done
