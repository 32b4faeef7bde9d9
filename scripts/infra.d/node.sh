# shellcheck shell=bash
# A real node for the control plane of kube.sh: containerd and runc (Debian's
# packages), a kubelet built from the Go module proxy at KUBE_VERSION, and CNI
# bridge networking (Debian's containernetworking-plugins) with a config of
# our own. Pods really run here, from images imported into containerd (no
# registry is pulled from: the sandbox "pause" image is built here from
# Kubernetes' pause.c, Confab's by scripts/image). See docs/testing.md,
# "A real node".
#
# Networking: a bridge of our own (CONFAB_NODE_BRIDGE, default confab0) on
# CONFAB_NODE_POD_CIDR (default 10.88.0.0/24); its .1 is the node's address
# (the kubelet listens there, not on the machine's interfaces). Pod addresses
# are routable from this machine. No kube-proxy: Services have no virtual
# addresses here, so tests connect to pods' addresses. Pods reach Kafka,
# Cassandra and the kube-apiserver of scripts/infra, which listen on the
# host's 127.0.0.1, through the chained CNI plugin node/host-forward: in a pod,
# 127.0.0.1:KAFKA_PORT, 127.0.0.1:CQL_PORT and 10.0.0.1:443 (the `kubernetes`
# Service) lead to them.
#
# Needs root (network namespaces, cgroups, mounts), cgroup v1 or v2.

KUBELET_BIN=$BIN/kubelet-$KUBE_VERSION
NODE_LOG=$LOG/node-install.log
NODE_DIR=$INFRA/node
NODE_NAME=${CONFAB_NODE_NAME:-confab-node-0}
NODE_BRIDGE=${CONFAB_NODE_BRIDGE:-confab0}
NODE_POD_CIDR=${CONFAB_NODE_POD_CIDR:-10.88.0.0/24}
NODE_IP=${NODE_POD_CIDR%.*/*}.1
KUBELET_PORT=${CONFAB_KUBELET_PORT:-10250}
KUBELET_HEALTHZ_PORT=${CONFAB_KUBELET_HEALTHZ_PORT:-10248}
CONTAINERD_SOCK=$NODE_DIR/containerd/containerd.sock
PAUSE_IMAGE=confab.local/pause:3.10
# The node is tainted (NoSchedule) and labelled with this key, value "real":
# the tests' pods that should really run select it and tolerate the taint;
# every other pod stays on kwok's fake node.
NODE_TAINT_KEY=confab.dev/node
# The cgroup (in every hierarchy) under which the kubelet puts its pods: one
# per node, so two checkouts' nodes do not share /kubepods.
NODE_CGROUP=/confab-$NODE_NAME

node_install() {
  local mod=$INFRA/src/kubelet-$KUBE_VERSION
  mkdir -p "$LOG"
  if [[ ! -x $KUBELET_BIN/kubelet || ! -x $KUBELET_BIN/kubectl ]] && ! bin_restore "$KUBELET_BIN"; then
    kube_module "$mod" kubelet "$NODE_LOG" kubelet kubectl
    go_build kubelet "$NODE_LOG" "$mod" "$KUBELET_BIN" k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubectl
    bin_save "$KUBELET_BIN"
  fi
  if [[ ! -x $KUBELET_BIN/pause ]]; then
    # The sandbox image's one program, from the same Kubernetes module.
    local src
    kube_module "$mod" kubelet "$NODE_LOG" kubelet kubectl
    src=$(cd "$mod" && go_env go list -m -f '{{.Dir}}' k8s.io/kubernetes) || fail kubelet "$NODE_LOG" "k8s.io/kubernetes module not found"
    need_cmd gcc "building the pause program of the node's sandbox image"
    gcc -Os -static -DVERSION="$KUBE_VERSION-confab" -o "$KUBELET_BIN/pause" "$src/build/pause/linux/pause.c" >>"$NODE_LOG" 2>&1 ||
      fail kubelet "$NODE_LOG" "gcc -static build/pause/linux/pause.c failed (needs gcc and libc6-dev)"
    strip "$KUBELET_BIN/pause" 2>/dev/null || true
    bin_save "$KUBELET_BIN"
  fi
  local missing=() p
  for p in containerd runc containernetworking-plugins iptables; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    need_cmd apt-get "installing ${missing[*]} (Debian packages)"
    ensure_apt_updated
    say "node: apt-get install ${missing[*]}"
    apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$LOG/apt.log" 2>&1 ||
      fail node "$LOG/apt.log" "apt-get install ${missing[*]} failed"
  fi
}

node_procs() { echo containerd kubelet; }

node_running() {
  running containerd && running kubelet
}

node_ctr() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# true when this process may not lower its oom_score_adj (no CAP_SYS_RESOURCE).
node_restrict_oom() {
  local now
  now=$(</proc/self/oom_score_adj)
  if ((now > -1000)) && (echo $((now - 1)) >/proc/self/oom_score_adj) 2>/dev/null; then
    echo false
  else
    echo true
  fi
}

node_containerd_config() {
  local d=$NODE_DIR/containerd
  mkdir -p "$d" "$NODE_DIR/cni/net.d" "$NODE_DIR/cni/bin"
  cat >"$d/config.toml" <<EOF
# Written by scripts/infra (node.sh): containerd of the node $NODE_NAME.
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "$CONTAINERD_SOCK"

[ttrpc]
  address = "$d/containerd-ttrpc.sock"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # This machine's root lacks CAP_SYS_RESOURCE (a sandboxed VM): it cannot
  # lower an oom_score_adj, and the kubelet asks -998 for every pod sandbox.
  # Clamp to containerd's own (harmless where root may lower it).
  restrict_oom_score_adj = $(node_restrict_oom)
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$NODE_DIR/cni/bin"
    conf_dir = "$NODE_DIR/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        # runc's state of this node's containers, not /run/containerd/runc
        # shared with any other containerd on the machine.
        Root = "$d/runc"
EOF
}

node_cni_config() {
  local b
  for b in bridge host-local loopback portmap; do
    [[ -x /usr/lib/cni/$b ]] || die "node: /usr/lib/cni/$b missing (Debian package containernetworking-plugins)"
    ln -sfn "/usr/lib/cni/$b" "$NODE_DIR/cni/bin/$b"
  done
  ln -sfn "$INFRA_SCRIPTS/infra.d/node/host-forward" "$NODE_DIR/cni/bin/host-forward"
  cat >"$NODE_DIR/cni/net.d/10-confab.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "confab-node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$NODE_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$NODE_DIR/cni/ipam",
        "ranges": [[{"subnet": "$NODE_POD_CIDR", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {
      "type": "host-forward",
      "forward": [
        {"from": "127.0.0.1:$KAFKA_PORT", "to": "$NODE_IP:$KAFKA_PORT"},
        {"from": "127.0.0.1:$CQL_PORT", "to": "$NODE_IP:$CQL_PORT"},
        {"from": "10.0.0.1:443", "to": "$NODE_IP:$KUBE_PORT"}
      ]
    }
  ]
}
EOF
}

# The bridge exists before the first pod: the kubelet listens on its address.
# What arrives on it for a forwarded port goes to the host's 127.0.0.1.
node_network() {
  if ! ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then
    ip link add "$NODE_BRIDGE" type bridge
  fi
  ip addr replace "$NODE_IP/${NODE_POD_CIDR#*/}" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
  sysctl -q -w "net.ipv4.conf.$NODE_BRIDGE.route_localnet=1"
  local port
  for port in "$KAFKA_PORT" "$CQL_PORT" "$KUBE_PORT"; do
    iptables -w -t nat -C PREROUTING -i "$NODE_BRIDGE" -d "$NODE_IP" -p tcp --dport "$port" \
      -j DNAT --to-destination "127.0.0.1:$port" 2>/dev/null ||
      iptables -w -t nat -A PREROUTING -i "$NODE_BRIDGE" -d "$NODE_IP" -p tcp --dport "$port" \
        -j DNAT --to-destination "127.0.0.1:$port"
  done
}

node_network_down() {
  local rule rules
  rules=$(iptables -w -t nat -S PREROUTING 2>/dev/null | grep -F -- "-i $NODE_BRIDGE ") || true
  while read -r rule; do
    # shellcheck disable=SC2086 # the rule's words
    [[ -n $rule ]] && { iptables -w -t nat ${rule/-A/-D} 2>/dev/null || true; }
  done <<<"$rules"
  ip link del "$NODE_BRIDGE" 2>/dev/null || true
}

# The cgroup the kubelet's pods go under, in every hierarchy (v1), or in the
# unified one (v2). A v1 cpuset cgroup needs its cpus and mems set.
node_cgroups() {
  local h
  if [[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]]; then
    mkdir -p "/sys/fs/cgroup$NODE_CGROUP"
    return
  fi
  for h in /sys/fs/cgroup/*/; do
    h=${h%/}
    [[ -f $h/cgroup.procs ]] || continue
    mkdir -p "$h$NODE_CGROUP"
    if [[ -f $h/cpuset.cpus && -z $(<"$h$NODE_CGROUP/cpuset.cpus") ]]; then
      cat "$h/cpuset.cpus" >"$h$NODE_CGROUP/cpuset.cpus"
      cat "$h/cpuset.mems" >"$h$NODE_CGROUP/cpuset.mems"
    fi
  done
}

node_kubelet_config() {
  local d=$NODE_DIR/kubelet
  mkdir -p "$d"
  cat >"$d/config.yaml" <<EOF
# Written by scripts/infra (node.sh): the kubelet of the node $NODE_NAME.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
imageServiceEndpoint: unix://$CONTAINERD_SOCK
# containerd 1.6 does not report its cgroup driver (the kubelet falls back
# to this); cgroup v1 needs failCgroupV1: false since Kubernetes 1.35.
cgroupDriver: cgroupfs
cgroupRoot: $NODE_CGROUP
failCgroupV1: false
failSwapOn: false
# The kube-apiserver reaches this kubelet (logs, exec) without a client
# certificate; the kubelet listens only on the bridge's address.
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
maxPods: 60
podLogsDir: $NODE_DIR/pod-logs
serializeImagePulls: false
# A shared test machine: do not evict pods because other programs fill it.
evictionHard:
  memory.available: 50Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
imageMinimumGCAge: 87600h
nodeStatusUpdateFrequency: 5s
registerNode: true
# Only pods that ask for this node run here (kwok's fake node takes the rest).
registerWithTaints:
  - key: $NODE_TAINT_KEY
    value: real
    effect: NoSchedule
EOF
}

node_pause_image() {
  node_ctr images check "name==$PAUSE_IMAGE" 2>/dev/null | grep -q "$PAUSE_IMAGE" && return 0
  local tar=$NODE_DIR/pause.tar
  python3 "$INFRA_SCRIPTS/oci-image.py" --name "$PAUSE_IMAGE" --out "$tar" --entrypoint '["/pause"]' \
    --user 65535:65535 --file "$KUBELET_BIN/pause:/pause:755" >>"$LOG/containerd.log" 2>&1 ||
    fail containerd "$LOG/containerd.log" "writing the pause image failed"
  node_ctr images import "$tar" >>"$LOG/containerd.log" 2>&1 ||
    fail containerd "$LOG/containerd.log" "ctr images import $tar failed"
}

node_check_containerd() { ctr --address "$CONTAINERD_SOCK" version >/dev/null && echo "containerd answers on $CONTAINERD_SOCK"; }
node_check_kubelet() { curl -fsS --max-time 3 "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz"; }
# Ready, as reported by the kubelet started last (a Node left by an earlier
# kubelet still says Ready for a while).
node_check_ready() {
  local since=0
  [[ -f $RUN/kubelet.started ]] && since=$(<"$RUN/kubelet.started")
  kube_api GET "/api/v1/nodes/$NODE_NAME" -f | python3 -c '
import datetime, json, sys
n = json.load(sys.stdin)
since = int(sys.argv[1])
ready = [c for c in n.get("status", {}).get("conditions", []) if c["type"] == "Ready"]
if ready and ready[0]["status"] == "True":
    beat = datetime.datetime.fromisoformat(ready[0]["lastHeartbeatTime"].replace("Z", "+00:00")).timestamp()
    if beat >= since - 1:
        print("node", n["metadata"]["name"], "Ready")
        sys.exit(0)
    sys.exit("the Ready condition is from an earlier kubelet")
sys.exit("node not Ready yet: " + (ready[0].get("message", "") if ready else "no Ready condition"))' "$since"
}

node_start() {
  [[ $(id -u) == 0 ]] || die "node: needs root (network namespaces, cgroups, mounts)"
  need_cmd containerd "the node's container runtime"
  need_cmd iptables "the node's networking"
  running kube-apiserver || die "node: needs the control plane: scripts/infra up kube node"
  mkdir -p "$NODE_DIR"
  node_containerd_config
  node_cni_config
  node_network
  node_cgroups

  if ! running containerd; then
    say "node: starting containerd $(containerd --version | awk '{print $3}') ($CONTAINERD_SOCK)"
    spawn containerd "$LOG/containerd.log" "$NODE_DIR" \
      containerd --config "$NODE_DIR/containerd/config.toml" --log-level warn
  fi
  wait_ready containerd "$LOG/containerd.log" 60 node_check_containerd
  node_pause_image

  if ! running kubelet; then
    need_port kubelet "$KUBELET_HEALTHZ_PORT"
    node_kubelet_config
    say "node: starting kubelet $KUBE_VERSION (node $NODE_NAME at $NODE_IP)"
    now >"$RUN/kubelet.started"
    spawn kubelet "$LOG/kubelet.log" "$NODE_DIR" \
      "$KUBELET_BIN/kubelet" --config="$NODE_DIR/kubelet/config.yaml" --kubeconfig="$KUBECONFIG_FILE" \
      --root-dir="$NODE_DIR/kubelet/root" --cert-dir="$NODE_DIR/kubelet/pki" \
      --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --node-labels="$NODE_TAINT_KEY=real" --v=1
  fi
}

node_wait() {
  wait_ready containerd "$LOG/containerd.log" 60 node_check_containerd
  wait_ready kubelet "$LOG/kubelet.log" 120 node_check_kubelet
  wait_ready kubelet "$LOG/kubelet.log" 120 node_check_ready
}

node_env() {
  echo "export CONFAB_NODE=$NODE_NAME"
  echo "export CONTAINERD_ADDRESS=$CONTAINERD_SOCK"
  echo "export KUBECTL=$KUBELET_BIN/kubectl"
}

# The pods' containers are containerd's children (shims): stop them first,
# then the kubelet, then containerd, then unmount what the kubelet mounted.
node_stop() {
  stop_pid kubelet 30
  if running containerd; then
    local id
    for id in $(node_ctr tasks ls -q 2>/dev/null); do
      node_ctr tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
  fi
  stop_pid containerd 30
  node_shims_stop
  node_unmount
  node_network_down
}

# containerd-shim-runc-v2 processes of this node (their argv names our
# containerd's socket) outlive containerd: kill them and their containers.
node_shims_stop() {
  local pid
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" || true); do
    pkill -KILL -P "$pid" 2>/dev/null || true
    kill -KILL "$pid" 2>/dev/null || true
  done
}

node_unmount() {
  local m
  # Deepest first.
  awk -v d="$NODE_DIR/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
}

node_clean() {
  # The Node object and the pods bound to it go too (if the API server runs).
  if running kube-apiserver; then kube_api DELETE "/api/v1/nodes/$NODE_NAME" -o /dev/null 2>/dev/null || true; fi
  rm -f "$RUN/kubelet.started"
  node_unmount
  rm -rf "$NODE_DIR"
  local h
  for h in /sys/fs/cgroup /sys/fs/cgroup/*/; do
    h=${h%/}
    [[ -d $h$NODE_CGROUP ]] || continue
    find "$h$NODE_CGROUP" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

node_status() {
  status_line node containerd "$CONTAINERD_SOCK"
  status_line node kubelet "$NODE_NAME at $NODE_IP:$KUBELET_PORT"
}
