#!/usr/bin/env bash
# Makes this machine ready for lightd's tests and benches:
#  - a Docker Engine answering on /var/run/docker.sock (installed and started when missing),
#  - the local image lightd-test/busybox (no registry needed: docker import of busybox-static).
set -euo pipefail

say() { echo "setup: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
    say "installing $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_docker() {
    if docker info >/dev/null 2>&1; then return; fi
    command -v dockerd >/dev/null 2>&1 || apt_install docker.io
    if ! docker info >/dev/null 2>&1; then
        say "starting dockerd"
        as_root sh -c 'nohup dockerd >/var/log/lightd-dockerd.log 2>&1 &'
        for _ in $(seq 1 60); do
            docker info >/dev/null 2>&1 && break
            sleep 1
        done
    fi
    docker info >/dev/null 2>&1 || {
        say "Docker engine does not answer; see /var/log/lightd-dockerd.log"
        exit 1
    }
}

ensure_image() {
    local image=lightd-test/busybox
    if docker image inspect "$image" >/dev/null 2>&1; then return; fi
    dpkg -s busybox-static >/dev/null 2>&1 || apt_install busybox-static
    local root
    root=$(mktemp -d)
    trap 'rm -rf "$root"' RETURN
    mkdir -p "$root"/{bin,etc,tmp,root,usr/bin,home/container,app/data}
    chmod 1777 "$root/tmp"
    cp /bin/busybox "$root/bin/busybox"
    for applet in $("$root/bin/busybox" --list); do
        [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
    done
    ln -s ../../bin/busybox "$root/usr/bin/env"
    # Game images expect bash; a shim to busybox sh is enough for our scripts.
    printf '#!/bin/sh\nexec /bin/sh "$@"\n' >"$root/bin/bash"
    chmod 755 "$root/bin/bash"
    echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
    echo 'root:x:0:' >"$root/etc/group"
    say "building $image"
    tar -C "$root" -c . | docker import \
        --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
        --change 'CMD ["/bin/sh"]' - "$image" >/dev/null
}

# The network the tests' daemons share, made once here so parallel daemons never race to create it.
ensure_network() {
    docker network inspect lightd-test-net >/dev/null 2>&1 ||
        docker network create --label lightd.managed=true lightd-test-net >/dev/null
}

ensure_docker
ensure_image
ensure_network
say "ready: $(docker version --format 'engine {{.Server.Version}}, API {{.Server.APIVersion}}')"
