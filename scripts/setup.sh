#!/usr/bin/env bash
# Makes this machine ready for lightd's tests and benches, idempotently (a second run only checks):
#  - a Docker Engine answering on /var/run/docker.sock (installed and started when missing),
#  - the Debian packages the tests drive: prometheus/promtool, docker-registry (+ htpasswd from
#    apache2-utils), wrk and valgrind (the REST bench), openssh-client and -server (the SFTP tests
#    and bench), e2fsprogs, util-linux, systemd (systemd-analyze), debootstrap,
#    busybox-static, python3-venv; their system services are never left running,
#  - the local images lightd-test/busybox and lightd-test/freeciv (no registry needed: both are
#    `docker import`s of roots built here), rebuilt when their lightd.test.version label is older,
#  - the shared test network lightd-test-net,
#  - a Python venv at /opt/lightd-test/venv with schemathesis and paramiko pinned by
#    scripts/schemathesis-requirements.txt (`/opt/lightd-test/venv/bin/st run ...`).
set -euo pipefail

cd "$(dirname "$0")/.."

# Bump a version when what the image build puts in changes: setup rebuilds older images.
BUSYBOX_IMAGE=lightd-test/busybox
BUSYBOX_VERSION=2
FREECIV_IMAGE=lightd-test/freeciv
FREECIV_VERSION=1
FREECIV_SUITE=bookworm
VENV=/opt/lightd-test/venv
VENV_REQUIREMENTS=scripts/schemathesis-requirements.txt
# Packages the tests and this script use. Services among them are stopped right after install.
PACKAGES=(
    apache2-utils busybox-static curl debootstrap docker-registry e2fsprogs iproute2 nftables
    openssh-client openssh-server prometheus python3-venv systemd util-linux valgrind wrk zstd
)
# zstd: the transfer bench's baseline (`tar | zstd -T0` over loopback TCP) and the data bench's (`tar -I 'zstd -T0'`).
# openssh-server's service is `ssh`: the SFTP tests' client and the SFTP bench's baseline
# sshd (started by the bench on a port of its own) are all that is wanted of it. nftables is
# wanted for its `nft` (the firewall, tests/firewall.rs' namespaces need iproute2's `ip`): its
# service loads /etc/nftables.conf, whose `flush ruleset` would drop Docker's rules.
SERVICE_PACKAGES=(prometheus docker-registry openssh-server nftables)

say() { echo "setup: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Everything made in a scratch folder is removed on any exit, failures included.
SCRATCH=()
MADE_POLICY=
cleanup() {
    local dir mnt
    [ -z "$MADE_POLICY" ] || as_root rm -f "$MADE_POLICY"
    for dir in "${SCRATCH[@]+"${SCRATCH[@]}"}"; do
        [ -d "$dir" ] || continue
        # debootstrap unmounts what it mounted, but never delete through a mount left behind.
        { findmnt -rn -o TARGET | grep -F "$dir/" || true; } | sort -r | while read -r mnt; do
            as_root umount -l "$mnt" || true
        done
        as_root rm -rf --one-file-system "$dir" || true
    done
}
trap cleanup EXIT
# new_scratch: a fresh scratch folder in $SCRATCH_DIR (not by $(...): the list must be this shell's).
SCRATCH_DIR=
new_scratch() {
    SCRATCH_DIR=$(mktemp -d -p "${TMPDIR:-/var/tmp}" lightd-setup.XXXXXX)
    SCRATCH+=("$SCRATCH_DIR")
}

APT_UPDATED=
# apt_install [--with-recommends] PACKAGE...: quiet install; the output is shown only on failure.
apt_install() {
    local recommends=--no-install-recommends log
    if [ "$1" = --with-recommends ]; then
        recommends=
        shift
    fi
    say "installing $*"
    log=$(mktemp)
    if [ -z "$APT_UPDATED" ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$log" 2>&1 || {
            cat "$log" >&2
            exit 1
        }
        APT_UPDATED=1
    fi
    # shellcheck disable=SC2086 # $recommends is one flag or nothing
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $recommends "$@" >"$log" 2>&1 || {
        cat "$log" >&2
        exit 1
    }
    rm -f "$log"
}

ensure_docker() {
    if docker info >/dev/null 2>&1; then return; fi
    command -v dockerd >/dev/null 2>&1 || apt_install --with-recommends docker.io
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

# Installs what is missing of PACKAGES (no apt-get update when nothing is). The services of
# newly installed packages are kept from starting (policy-rc.d) and stopped and disabled should
# one have started anyway: the tests run their own prometheus and registry on ports they choose.
ensure_packages() {
    local missing=() pkg status policy=/usr/sbin/policy-rc.d
    for pkg in "${PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
        [ "${status:0:2}" = ii ] || missing+=("$pkg")
    done
    [ ${#missing[@]} = 0 ] && return
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# lightd setup: no service starts while it installs packages\nexit 101\n' |
            as_root tee "$policy" >/dev/null
        MADE_POLICY=$policy
        as_root chmod 755 "$policy"
    fi
    apt_install "${missing[@]}"
    if [ -n "$MADE_POLICY" ]; then
        as_root rm -f "$MADE_POLICY"
        MADE_POLICY=
    fi
    for pkg in "${missing[@]}"; do
        case " ${SERVICE_PACKAGES[*]} " in *" $pkg "*) quiesce_service "$pkg" ;; esac
    done
}

quiesce_service() {
    local svc=$1
    [ "$svc" != openssh-server ] || svc=ssh
    if [ -d /run/systemd/system ]; then
        as_root systemctl disable --now "$svc.service" >/dev/null 2>&1 || true
    elif [ -x "/etc/init.d/$svc" ] && as_root "/etc/init.d/$svc" status >/dev/null 2>&1; then
        as_root "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
    fi
}

image_version() {
    docker image inspect -f '{{index .Config.Labels "lightd.test.version"}}' "$1" 2>/dev/null || true
}

# Whether IMAGE carries at least VERSION in its lightd.test.version label.
image_current() {
    local have
    have=$(image_version "$1")
    [[ "$have" =~ ^[0-9]+$ ]] && [ "$have" -ge "$2" ]
}

# After a rebuild under the same tag, drops the image it replaced (when nothing uses it).
drop_replaced() {
    local old=$1 image=$2 new
    [ -n "$old" ] || return 0
    new=$(docker image inspect -f '{{.Id}}' "$image")
    [ "$old" = "$new" ] || docker rmi "$old" >/dev/null 2>&1 || true
}

ensure_busybox_image() {
    local image=$BUSYBOX_IMAGE root old
    image_current "$image" "$BUSYBOX_VERSION" && return
    old=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
    new_scratch
    root=$SCRATCH_DIR
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
    # Game servers run as 1000:1000 (the user lightd starts them as), named like Pterodactyl's.
    printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'container:x:1000:1000::/home/container:/bin/sh' \
        >"$root/etc/passwd"
    printf '%s\n' 'root:x:0:' 'container:x:1000:' >"$root/etc/group"
    as_root chown 1000:1000 "$root/home/container"
    say "building $image (version $BUSYBOX_VERSION)"
    as_root tar --numeric-owner -C "$root" -c . | docker import \
        --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
        --change "LABEL lightd.test.version=$BUSYBOX_VERSION" \
        --change 'CMD ["/bin/sh"]' - "$image" >/dev/null
    drop_replaced "$old" "$image"
    # shellcheck disable=SC2016 # $HOME is the container's
    check_image "$image" 'container /home/container' \
        -u 1000:1000 "$image" sh -c 'touch "$HOME/x" && echo "$(id -un) $HOME"'
}

# check_image IMAGE TEXT DOCKER-RUN-ARGS...: a fresh build whose run does not print TEXT is removed.
check_image() {
    local image=$1 text=$2 out
    shift 2
    out=$(docker run --rm "$@" 2>&1) || true
    [[ "$out" == *"$text"* ]] && return
    say "$image does not behave: 'docker run $*' printed: $out"
    docker rmi "$image" >/dev/null 2>&1 || true
    exit 1
}

# The URI of the first enabled 'deb' source for SUITE in apt's own configuration (one-line
# sources.list / *.list, then deb822 *.sources), else of one for the suite's main archive.
apt_mirror() {
    local suite=$1 want file uri
    for want in "$suite" '[^-]*'; do
        for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [ -r "$file" ] || continue
            uri=$(awk -v want="^$want\$" '
                $1 == "deb" {
                    i = 2
                    if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                    if ($(i + 1) ~ want) { print $i; exit }
                }' "$file")
            [ -z "$uri" ] || { echo "${uri%/}"; return; }
        done
        for file in /etc/apt/sources.list.d/*.sources; do
            [ -r "$file" ] || continue
            uri=$(awk -v want="^$want\$" '
                BEGIN { RS = ""; FS = "\n" }
                {
                    types = ""; uris = ""; suites = ""; enabled = "yes"; key = ""
                    for (n = 1; n <= NF; n++) {
                        line = $n
                        if (line ~ /^[ \t]*#/) continue
                        if (match(line, /^[A-Za-z0-9-]+:/)) {
                            key = tolower(substr(line, 1, RLENGTH - 1)); val = substr(line, RLENGTH + 1)
                        } else val = line
                        if (key == "types") types = types " " val
                        else if (key == "uris") uris = uris " " val
                        else if (key == "suites") suites = suites " " val
                        else if (key == "enabled") enabled = tolower(val)
                    }
                    gsub(/[ \t]/, "", enabled)
                    if (enabled == "no") next
                    nt = split(types, t, /[ \t]+/); deb = 0
                    for (n = 1; n <= nt; n++) if (t[n] == "deb") deb = 1
                    if (!deb) next
                    ns = split(suites, s, /[ \t]+/)
                    for (n = 1; n <= ns; n++) if (s[n] ~ want) { split(uris, u, /[ \t]+/); print u[2]; exit }
                }' "$file")
            [ -z "$uri" ] || { echo "${uri%/}"; return; }
        done
    done
    echo http://deb.debian.org/debian
}

# lightd-test/freeciv: Debian's freeciv-server on a minbase root, run as 1000:1000 (it refuses
# root). About 45 s on a fresh machine: debootstrap ~30 s, trimming and import ~10 s.
ensure_freeciv_image() {
    local image=$FREECIV_IMAGE root mirror proxy='' old started log out
    image_current "$image" "$FREECIV_VERSION" && return
    started=$(date +%s)
    old=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
    mirror=${LIGHTD_DEBIAN_MIRROR:-$(apt_mirror "$FREECIV_SUITE")}
    # debootstrap fetches with wget, which reads http_proxy but not apt's own proxy setting.
    eval "$(apt-config shell proxy Acquire::http::Proxy)"
    new_scratch
    root=$SCRATCH_DIR/root
    log=$SCRATCH_DIR/debootstrap.log
    say "building $image (version $FREECIV_VERSION): debootstrap $FREECIV_SUITE from $mirror"
    as_root env ${proxy:+http_proxy="$proxy"} debootstrap --variant=minbase --components=main \
        --include=freeciv-server "$FREECIV_SUITE" "$root" "$mirror" >"$log" 2>&1 || {
        tail -n 30 "$log" >&2
        say "debootstrap failed (the end of its log is above)"
        exit 1
    }
    as_root chroot "$root" groupadd -g 1000 container
    as_root chroot "$root" useradd -u 1000 -g 1000 -d /home/container -m -s /bin/bash container
    # Small where it is easy: no package caches or lists, docs, man pages, translations or logs
    # (freeciv-server then speaks English), no device nodes (Docker brings its own /dev), and
    # dpkg told to leave docs out of anything installed in it later.
    # shellcheck disable=SC2016 # expanded by that sh
    as_root sh -euc '
        cd "$1"
        rm -rf var/cache/apt/archives/*.deb var/cache/apt/*.bin var/lib/apt/lists/* \
            var/cache/debconf/*-old var/lib/dpkg/*-old \
            usr/share/doc/* usr/share/man/* usr/share/info/* usr/share/lintian \
            usr/share/locale/*/ etc/hostname
        find var/log -type f -exec truncate -s 0 {} +
        find dev -mindepth 1 -delete
        : >etc/resolv.conf
        printf "%s\n" "path-exclude=/usr/share/doc/*" "path-exclude=/usr/share/man/*" \
            "path-exclude=/usr/share/info/*" "path-exclude=/usr/share/locale/*" \
            "path-include=/usr/share/locale/locale.alias" >etc/dpkg/dpkg.cfg.d/lightd-nodoc
    ' sh "$root"
    [ -x "$root/usr/games/freeciv-server" ] || {
        say "freeciv-server is not at /usr/games/freeciv-server in the built root"
        exit 1
    }
    as_root tar --numeric-owner -C "$root" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/games' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'WORKDIR /home/container' \
        --change 'EXPOSE 5556/tcp' \
        --change "LABEL lightd.test.version=$FREECIV_VERSION" \
        --change 'CMD ["/usr/games/freeciv-server", "--port", "5556"]' - "$image" >/dev/null
    drop_replaced "$old" "$image"
    # It runs as 1000:1000, and refuses to serve as root.
    check_image "$image" 'Freeciv version' -u 1000:1000 "$image" freeciv-server --version
    check_image "$image" 'trying to run me as superuser' -i "$image" freeciv-server <<<quit
    say "built $image in $(($(date +%s) - started)) s ($(docker image inspect -f '{{.Size}}' "$image" |
        awk '{ printf "%d MB", $1 / 1000000 }'))"
}

# The network the tests' daemons share, made once here so parallel daemons never race to create it.
ensure_network() {
    # Servers reach each other only through published ports, as on lightd's own network. Made
    # here, it proves nothing of lightd's own: tests/security.rs has the daemon make a network
    # itself (a fresh name) to check that servers are kept apart there.
    local icc
    icc=$(docker network inspect -f '{{index .Options "com.docker.network.bridge.enable_icc"}}' lightd-test-net 2>/dev/null || true)
    [ "$icc" = false ] && return
    if docker network inspect lightd-test-net >/dev/null 2>&1; then
        say "recreating lightd-test-net with inter-container traffic off"
        docker network rm lightd-test-net >/dev/null
    fi
    docker network create --label lightd.managed=true -o com.docker.network.bridge.enable_icc=false \
        lightd-test-net >/dev/null
}

# schemathesis (st) in its own venv, every package pinned; rebuilt when the pins change.
ensure_venv() {
    local want stamp=$VENV/.lightd-requirements.sha256
    want=$(sha256sum <"$VENV_REQUIREMENTS" | cut -d' ' -f1)
    if [ -x "$VENV/bin/st" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] &&
        "$VENV/bin/python" -c '' 2>/dev/null; then
        return
    fi
    say "creating $VENV ($(grep -m1 '^schemathesis==' "$VENV_REQUIREMENTS"))"
    as_root rm -rf "$VENV"
    as_root mkdir -p "$(dirname "$VENV")"
    as_root /usr/bin/python3 -m venv "$VENV"
    as_root env PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/pip" install -q --no-deps \
        -r "$VENV_REQUIREMENTS" || {
        as_root rm -rf "$VENV"
        exit 1
    }
    as_root "$VENV/bin/pip" check >/dev/null
    echo "$want" | as_root tee "$stamp" >/dev/null
}

# A registry some other party left on the port the registry tests like to use is worth a word.
# The test build (target/, about 2.5 GiB with clippy's) and the images need room; a full disk
# otherwise shows up later as a linker's bus error. Say so plainly, before anything is built.
NEED_FREE_KIB=$((3 * 1024 * 1024))
check_disk() {
    local dir free
    for dir in . "$(docker info --format '{{.DockerRootDir}}' 2>/dev/null || echo /var/lib/docker)"; do
        [ -d "$dir" ] || continue
        free=$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')
        say "free space under $dir: $((free / 1024)) MiB"
        if [ "$free" -lt "$NEED_FREE_KIB" ]; then
            say "error: under 3 GiB free under $dir; the build and the tests need about that much"
            df -h "$dir" >&2
            exit 1
        fi
    done
}

warn_busy_ports() {
    if (exec 3<>/dev/tcp/127.0.0.1/5000) 2>/dev/null; then
        say "warning: something already listens on 127.0.0.1:5000 (a system docker-registry?)"
    fi
}

ensure_docker
check_disk
ensure_packages
ensure_busybox_image
ensure_freeciv_image
ensure_network
ensure_venv
warn_busy_ports
say "ready: $(docker version --format 'engine {{.Server.Version}}, API {{.Server.APIVersion}}')"
