#!/usr/bin/env bash
# Proves, after scripts/setup.sh, that the tools the tests drive work here the way the tests use
# them, and shows how (each step is a recipe for a test):
#  1. docker-registry (plain) on a free 127.0.0.1 port: push, remove, pull back;
#  2. docker-registry with htpasswd auth: the engine API pulls with an X-Registry-Auth header
#     (base64url WITH padding of {"username","password","serveraddress"}), and refuses without;
#  3. prometheus on a free port scraping a bearer-token target; promtool check config/metrics;
#  4. schemathesis (st) version, wrk, mkfs.ext4, losetup, systemd-analyze.
# Everything it starts is stopped and everything it makes removed. Usage: scripts/check-tools.sh
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=/opt/lightd-test/venv
SOCK=/var/run/docker.sock
API=http://localhost/v1.41

say() { echo "check-tools: $*" >&2; }
fail() {
    say "FAILED: $*"
    exit 1
}

work=$(mktemp -d)
pids=()
images=()
cleanup() {
    local pid image
    for pid in "${pids[@]+"${pids[@]}"}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]+"${pids[@]}"}"; do wait "$pid" 2>/dev/null || true; done
    for image in "${images[@]+"${images[@]}"}"; do docker rmi -f "$image" >/dev/null 2>&1 || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# wait_http URL [CURL-ARGS...]: until URL answers at all (any HTTP status), 10 s at most.
wait_http() {
    local url=$1
    shift
    for _ in $(seq 100); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$@" "$url")" != 000 ] && return
        sleep 0.1
    done
    fail "$url does not answer"
}
b64url() { base64 -w0 | tr '+/' '-_'; } # padding kept: the engine ignores an unpadded header

# A tiny image of its own, so a pull really downloads its layer (the busybox one stays local).
tiny_image() {
    mkdir -p "$work/tiny"
    echo "lightd check $$ $RANDOM" >"$work/tiny/hello.txt"
    tar -C "$work/tiny" -c . | docker import - "$1" >/dev/null
    images+=("$1")
}

# --- 1. registry, plain ------------------------------------------------------------------------
port=$(free_port)
cat >"$work/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $work/registry-data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$port/v2/"
ref=127.0.0.1:$port/lightd-test/tiny:1
tiny_image "$ref"
docker push -q "$ref" >/dev/null || fail "push to the plain registry"
docker rmi "$ref" >/dev/null
docker pull -q "$ref" >/dev/null || fail "pull from the plain registry"
curl -fsS "http://127.0.0.1:$port/v2/_catalog" | grep -q lightd-test/tiny || fail "catalog"
say "registry (plain) on 127.0.0.1:$port: push, rmi, pull ok (no daemon config: 127.0.0.0/8 is insecure-allowed)"
kill "${pids[-1]}"
wait "${pids[-1]}" 2>/dev/null || true
docker rmi "$ref" >/dev/null

# --- 2. registry, htpasswd ---------------------------------------------------------------------
port=$(free_port)
htpasswd -Bbn alice 's3cret' >"$work/htpasswd"
cat >"$work/registry-auth.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $work/registry-auth-data
http:
  addr: 127.0.0.1:5000
auth:
  htpasswd:
    realm: lightd-test
    path: $work/htpasswd
EOF
# The address in the file is overridden by the environment (any config key: REGISTRY_<PATH>).
REGISTRY_HTTP_ADDR=127.0.0.1:$port docker-registry serve "$work/registry-auth.yml" >"$work/registry-auth.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$port/v2/"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/")" = 401 ] || fail "no 401 without credentials"
[ "$(curl -s -o /dev/null -w '%{http_code}' -u alice:s3cret "http://127.0.0.1:$port/v2/")" = 200 ] || fail "no 200 with credentials"
ref=127.0.0.1:$port/lightd-test/tiny
tiny_image "$ref:1"
good=$(printf '{"username":"alice","password":"s3cret","serveraddress":"127.0.0.1:%s"}' "$port" | b64url)
bad=$(printf '{"username":"alice","password":"wrong","serveraddress":"127.0.0.1:%s"}' "$port" | b64url)
# Push through the engine API too (the CLI would need `docker login`, which writes ~/.docker).
curl -fsS --unix-socket "$SOCK" -X POST -H "X-Registry-Auth: $good" \
    "$API/images/${ref}/push?tag=1" | grep -q '"Digest"' || fail "push with X-Registry-Auth"
docker rmi "$ref:1" >/dev/null
# expect_create STATUS TEXT AUTH-HEADER-VALUE|'': POST /images/create answers STATUS with TEXT.
expect_create() {
    local status=$1 text=$2 auth=() got
    [ -z "$3" ] || auth=(-H "X-Registry-Auth: $3")
    got=$(curl -sS -o "$work/create.out" -w '%{http_code}' --unix-socket "$SOCK" -X POST "${auth[@]}" \
        "$API/images/create?fromImage=${ref}&tag=1")
    if [ "$got" != "$status" ] || ! grep -q "$text" "$work/create.out"; then
        fail "POST /images/create (auth '$3'): HTTP $got, wanted $status with '$text': $(cat "$work/create.out")"
    fi
}
expect_create 500 'no basic auth credentials' ''
expect_create 500 'unauthorized: authentication required' "$bad"
# Base64url without its '=' padding is not decoded: the engine goes on as if no header came.
unpadded=$(printf '%s' "$good" | tr -d '=')
[ "$unpadded" = "$good" ] || expect_create 500 'no basic auth credentials' "$unpadded"
expect_create 200 'Downloaded newer image' "$good"
docker image inspect "$ref:1" >/dev/null || fail "pulled image missing"
say "registry (htpasswd) on 127.0.0.1:$port: X-Registry-Auth pull/push ok; no/wrong auth -> HTTP 500"
kill "${pids[-1]}"
wait "${pids[-1]}" 2>/dev/null || true

# --- 3. prometheus -----------------------------------------------------------------------------
target_port=$(free_port)
cat >"$work/target.py" <<'EOF'
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.headers.get("Authorization") != "Bearer tok123":
            self.send_response(401); self.end_headers(); return
        body = b"# HELP lightd_check_up A gauge.\n# TYPE lightd_check_up gauge\nlightd_check_up 1\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOF
python3 "$work/target.py" "$target_port" &
pids+=($!)
wait_http "http://127.0.0.1:$target_port/metrics"
curl -fsS -H 'Authorization: Bearer tok123' "http://127.0.0.1:$target_port/metrics" | promtool check metrics ||
    fail "promtool check metrics"
port=$(free_port)
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: lightd
    metrics_path: /metrics
    authorization:
      type: Bearer
      credentials: tok123
    static_configs:
      - targets: ['127.0.0.1:$target_port']
EOF
promtool check config "$work/prometheus.yml" >/dev/null || fail "promtool check config"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prometheus-data" \
    --web.listen-address="127.0.0.1:$port" --log.level=warn >"$work/prometheus.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$port/-/ready"
# Targets show up only after the discovery manager's first update (about 5 s), then every 1 s.
up=
for _ in $(seq 60); do
    if curl -fsS "http://127.0.0.1:$port/api/v1/query?query=lightd_check_up" | grep -q '"value":\[[0-9.]*,"1"\]'; then
        up=1
        break
    fi
    sleep 0.5
done
[ -n "$up" ] || fail "prometheus never scraped the bearer-token target: $(curl -s "http://127.0.0.1:$port/api/v1/targets")"
say "prometheus on 127.0.0.1:$port scraped a Bearer-token target"

# --- 4. the rest -------------------------------------------------------------------------------
"$VENV/bin/st" --version | grep -q "$(grep -m1 '^schemathesis==' scripts/schemathesis-requirements.txt | cut -d= -f3)" ||
    fail "schemathesis version"
for tool in wrk mkfs.ext4 resize2fs losetup mount umount systemd-analyze; do
    command -v "$tool" >/dev/null || fail "$tool missing"
done
say "$("$VENV/bin/st" --version), $(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2), $(systemd-analyze --version | head -n1)"
say "all ok"
