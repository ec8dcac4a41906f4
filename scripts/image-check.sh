#!/usr/bin/env bash
# Golden-image check: bake vm-agent into a Debian 12 container exactly as cloud-init/user-data.yaml
# does (its write_files and runcmd), without systemd running (the systemd-less path):
#   1. build a Debian base image offline-from-the-registry (debootstrap from this machine's apt mirror)
#   2. run the user-data's steps in it, with this checkout as the repository to clone
#   3. verify the unit with systemd-analyze, start `vm-agent serve` from the installed venv and
#      wait for /health, as systemd would after `enable --now`.
# Needs root and a Docker daemon (scripts/start-dockerd.sh). The host's CA bundle is lent to pip in
# the container, so a machine whose registry traffic goes through an inspecting proxy still works.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
base=vm-agent-imagecheck-base:bookworm
python=${PYTHON:-.venv/bin/python}

if ! docker image inspect "$base" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || { apt-get update -qq; apt-get install -y -qq debootstrap >/dev/null; }
  mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
  [ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)
  rootfs=$(mktemp -d)
  echo "== debootstrap bookworm from $mirror"
  debootstrap --variant=minbase --include=python3,python3-venv,git,ca-certificates,systemd,curl \
    bookworm "$rootfs" "$mirror" >/dev/null
  tar -C "$rootfs" -c . | docker import - "$base" >/dev/null
  rm -rf "$rootfs"
fi

echo "== steps of cloud-init/user-data.yaml"
steps=$(mktemp)
"$python" - "$repo/cloud-init/user-data.yaml" >"$steps" <<'PY'
import shlex, sys, yaml
data = yaml.safe_load(open(sys.argv[1]))
print("set -euxo pipefail")
for item in data.get("write_files", []):
    path = item["path"]
    print(f"mkdir -p {shlex.quote(path.rsplit('/', 1)[0])}")
    content = item["content"] if item["content"].endswith("\n") else item["content"] + "\n"
    print(f"cat > {shlex.quote(path)} <<'__EOF__'\n{content}__EOF__")
    print(f"chmod {item.get('permissions', '0644')} {shlex.quote(path)}")
for step in data.get("runcmd", []):
    argv = step if isinstance(step, list) else ["bash", "-c", step]
    if argv[0] == "systemctl":
        print(f"echo 'systemd-less path: skipped: {shlex.join(argv)}'")
        continue
    print(shlex.join(str(a) for a in argv))
PY

git_dir=$(mktemp -d)
git clone -q --bare "$repo" "$git_dir/vm-agent.git"
docker run --rm -v "$git_dir/vm-agent.git:/srv/vm-agent.git:ro" -v "$steps:/steps.sh:ro" \
  -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/host-ca.crt:ro -e PIP_CERT=/etc/ssl/certs/host-ca.crt \
  --network host "$base" bash -c '
    set -euo pipefail
    bash /steps.sh
    echo "== systemd-analyze verify"
    systemd-analyze verify /etc/systemd/system/vm-agent.service
    echo "== start as the unit would (EnvironmentFile, ExecStart)"
    set -a; . /etc/vm-agent/env; set +a
    export VM_AGENT_PORT=18943 CONTROL_PLANE_URL= IDENTITY_FILE=
    /opt/vm-agent/venv/bin/vm-agent serve >/tmp/agent.log 2>&1 &
    for i in $(seq 1 100); do
      if curl -skf https://127.0.0.1:18943/health; then echo; echo "image check: healthy"; exit 0; fi
      sleep 0.2
    done
    cat /tmp/agent.log; exit 1'
rm -rf "$git_dir" "$steps"
