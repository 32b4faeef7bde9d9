# shellcheck shell=bash
# A real Kubernetes control plane without a container runtime: etcd,
# kube-apiserver, kube-controller-manager and kube-scheduler built from the Go
# module proxy at KUBE_VERSION, plus kwok, which plays the kubelet of one fake
# node ("kwok-node-0") so that pods are scheduled and reported Running. Pod
# IPs are fake (nothing runs in them, never connect to them). A real node,
# where pods do run, is node.sh's (`scripts/infra up kube node`).
#
# Auth: a static bearer token (--token-auth-file) in group system:masters,
# written into target/infra/kube/admin.kubeconfig, which every component and
# the tests use. TLS: our own CA (openssl) signs the apiserver's serving cert.

ETCD_PORT=${CONFAB_ETCD_PORT:-12379}
ETCD_PEER_PORT=${CONFAB_ETCD_PEER_PORT:-12380}
KUBE_PORT=${CONFAB_KUBE_PORT:-16443}
KCM_PORT=${CONFAB_KCM_PORT:-16257}
SCHED_PORT=${CONFAB_SCHEDULER_PORT:-16259}
KWOK_PORT=${CONFAB_KWOK_PORT:-16247}
KWOK_ENABLED=${CONFAB_KWOK:-1}
KUBE_BIN=$BIN/kube-$KUBE_VERSION
ETCD_BIN=$BIN/etcd-$ETCD_VERSION
KWOK_BIN=$BIN/kwok-$KWOK_VERSION
KUBE_DIR=$INFRA/kube
PKI=$KUBE_DIR/pki
KUBECONFIG_FILE=$KUBE_DIR/admin.kubeconfig
KUBE_LOG=$LOG/kube-install.log

kube_procs() {
  echo etcd kube-apiserver kube-controller-manager kube-scheduler
  [[ $KWOK_ENABLED == 1 ]] && echo kwok
  return 0
}

# Each Go program is built in a throw-away main module of our own under
# target/infra/src/NAME-VERSION that requires the program's module.

# kube_module MODDIR NAME LOGFILE CMD...: a main module of our own at MODDIR
# that requires k8s.io/kubernetes@KUBE_VERSION and its commands CMD (names
# under k8s.io/kubernetes/cmd/). k8s.io/kubernetes replaces its k8s.io/*
# staging modules with ./staging/src/... paths that its module zip lacks, so
# `go install` refuses it: our module replaces each staging module with the
# published k8s.io/<name> v0.<minor>.<patch> instead.
kube_module() {
  local mod=$1 name=$2 log=$3; shift 3
  local staging_version=v0.${KUBE_VERSION#v1.} gomod c pkgs=()
  mkdir -p "$mod"
  [[ -f $mod/go.sum ]] && return 0
  gomod=$(cd "$mod" && go_env go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" 2>>"$log" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p') ||
    fail "$name" "$log" "go mod download k8s.io/kubernetes@$KUBE_VERSION failed"
  [[ -f $gomod ]] || fail "$name" "$log" "no go.mod for k8s.io/kubernetes@$KUBE_VERSION"
  {
    printf 'module confab.local/infra/%s\n\ngo 1.24.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$name" "$KUBE_VERSION"
    sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\) => \./staging/src/.*#\t\1 => \1 '"$staging_version"'#p' "$gomod"
    printf ')\n'
  } >"$mod/go.mod"
  for c in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$c@$KUBE_VERSION"); done
  (cd "$mod" && go_env go get "${pkgs[@]}") >>"$log" 2>&1 ||
    fail "$name" "$log" "go get k8s.io/kubernetes@$KUBE_VERSION failed"
}
kube_install() {
  need_cmd openssl "the control plane's certificates"
  need_cmd curl "readiness checks"
  mkdir -p "$LOG" "$INFRA/src"

  # etcd: the server module's main package. A module of our own requires it,
  # so the server's replace directives (relative paths in its repo) do not apply.
  if [[ ! -x $ETCD_BIN/etcd ]] && ! bin_restore "$ETCD_BIN"; then
    local mod=$INFRA/src/etcd-$ETCD_VERSION
    mkdir -p "$mod"
    if [[ ! -f $mod/go.sum ]]; then
      printf 'module confab.local/infra/etcd\n\ngo 1.24.0\n' >"$mod/go.mod"
      (cd "$mod" && go_env go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION") >>"$KUBE_LOG" 2>&1 ||
        fail kube "$KUBE_LOG" "go get go.etcd.io/etcd/server/v3@$ETCD_VERSION failed"
    fi
    go_build etcd "$KUBE_LOG" "$mod" "$ETCD_BIN" go.etcd.io/etcd/server/v3
    local b
    for b in server v3; do [[ -x $ETCD_BIN/$b ]] && mv "$ETCD_BIN/$b" "$ETCD_BIN/etcd"; done
    [[ -x $ETCD_BIN/etcd ]] || fail etcd "$KUBE_LOG" "no etcd binary in $ETCD_BIN"
    bin_save "$ETCD_BIN"
  fi

  # Kubernetes: see kube_module.
  if [[ ! -x $KUBE_BIN/kube-apiserver || ! -x $KUBE_BIN/kube-controller-manager || ! -x $KUBE_BIN/kube-scheduler ]] &&
    ! bin_restore "$KUBE_BIN"; then
    local mod=$INFRA/src/kube-$KUBE_VERSION
    kube_module "$mod" kube "$KUBE_LOG" kube-apiserver kube-controller-manager kube-scheduler
    go_build kube "$KUBE_LOG" "$mod" "$KUBE_BIN" k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler
    bin_save "$KUBE_BIN"
  fi

  if [[ $KWOK_ENABLED == 1 && ! -x $KWOK_BIN/kwok ]] && ! bin_restore "$KWOK_BIN"; then
    local mod=$INFRA/src/kwok-$KWOK_VERSION
    mkdir -p "$mod"
    if [[ ! -f $mod/go.sum ]]; then
      printf 'module confab.local/infra/kwok\n\ngo 1.24.0\n' >"$mod/go.mod"
      (cd "$mod" && go_env go get "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION") >>"$KUBE_LOG" 2>&1 ||
        fail kube "$KUBE_LOG" "go get sigs.k8s.io/kwok@$KWOK_VERSION failed"
    fi
    go_build kwok "$KUBE_LOG" "$mod" "$KWOK_BIN" sigs.k8s.io/kwok/cmd/kwok
    # kwok's stock "fast" stages (node init + heartbeat, pod ready/complete/delete),
    # taken from the downloaded module.
    local src
    src=$(cd "$mod" && go_env go list -m -f '{{.Dir}}' sigs.k8s.io/kwok) || fail kwok "$KUBE_LOG" "kwok module not found"
    local f first=1
    for f in node/fast/node-initialize.yaml node/heartbeat/node-heartbeat.yaml \
      pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
      [[ -f $src/kustomize/stage/$f ]] || fail kwok "$KUBE_LOG" "stage file $f missing in $src"
      ((first)) || echo '---'
      first=0
      cat "$src/kustomize/stage/$f"
    done >"$KWOK_BIN/stages.yaml"
    bin_save "$KWOK_BIN"
  fi
}

kube_running() {
  local p
  for p in $(kube_procs); do running "$p" || return 1; done
}

kube_token() { cut -d, -f1 <"$PKI/tokens.csv"; }

kube_pki() {
  [[ -f $PKI/.complete ]] && return 0
  local log=$LOG/kube-pki.log
  rm -rf "$PKI" && mkdir -p "$PKI"
  (
    set -e
    cd "$PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=confab-infra-ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver"
    cat >apiserver.ext <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile apiserver.ext -out apiserver.crt
    openssl genrsa -out sa.key 2048
    openssl rsa -in sa.key -pubout -out sa.pub
    printf '%s,confab-admin,confab-admin,system:masters\n' "$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')" >tokens.csv
    chmod 600 ./*.key tokens.csv
  ) >>"$log" 2>&1 || fail kube "$log" "generating certificates with openssl failed"
  touch "$PKI/.complete"
}

kube_write_kubeconfig() {
  cat >"$KUBECONFIG_FILE" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: confab-infra
    cluster:
      server: https://127.0.0.1:$KUBE_PORT
      certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
  - name: confab-admin
    user:
      token: $(kube_token)
contexts:
  - name: confab-infra
    context:
      cluster: confab-infra
      user: confab-admin
      namespace: default
current-context: confab-infra
EOF
  chmod 600 "$KUBECONFIG_FILE"
}

# kube_api METHOD PATH [curl args...]: call the apiserver as admin.
kube_api() {
  local method=$1 path=$2; shift 2
  curl -sS --max-time 5 --cacert "$PKI/ca.crt" -H "Authorization: Bearer $(kube_token)" \
    -X "$method" "https://127.0.0.1:$KUBE_PORT$path" "$@"
}

kube_check_etcd() { curl -fsS --max-time 3 "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"'; }
kube_check_apiserver() { kube_api GET /readyz -f; }
kube_check_kcm() { curl -kfsS --max-time 3 "https://127.0.0.1:$KCM_PORT/healthz"; }
kube_check_scheduler() { curl -kfsS --max-time 3 "https://127.0.0.1:$SCHED_PORT/healthz"; }
kube_check_default_sa() { kube_api GET /api/v1/namespaces/default/serviceaccounts/default -f -o /dev/null && echo "default/default serviceaccount exists"; }
kube_check_node() {
  kube_api GET /api/v1/nodes/kwok-node-0 -f | python3 -c '
import json, sys
n = json.load(sys.stdin)
ready = [c for c in n.get("status", {}).get("conditions", []) if c["type"] == "Ready"]
sys.exit(0 if ready and ready[0]["status"] == "True" else "node kwok-node-0 not Ready yet")'
}

kube_create_node() {
  local body out
  body=$(
    cat <<'EOF'
{"apiVersion": "v1", "kind": "Node",
 "metadata": {"name": "kwok-node-0",
   "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
   "labels": {"kubernetes.io/hostname": "kwok-node-0", "kubernetes.io/os": "linux",
              "kubernetes.io/arch": "amd64", "type": "kwok"}},
 "status": {"allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"}}}
EOF
  )
  out=$(kube_api POST /api/v1/nodes -H 'Content-Type: application/json' -d "$body" -w '\n%{http_code}') || return 1
  case ${out##*$'\n'} in
  201 | 409) return 0 ;;
  *) echo "creating node kwok-node-0 failed: $out" >&2; return 1 ;;
  esac
}

kube_start() {
  kube_pki
  kube_write_kubeconfig
  mkdir -p "$KUBE_DIR/etcd"
  local kc=$KUBECONFIG_FILE

  if ! running etcd; then
    need_port etcd "$ETCD_PORT"
    need_port etcd "$ETCD_PEER_PORT"
    say "kube: starting etcd $ETCD_VERSION on 127.0.0.1:$ETCD_PORT"
    spawn etcd "$LOG/etcd.log" "$KUBE_DIR" \
      "$ETCD_BIN/etcd" --name=confab-infra --data-dir="$KUBE_DIR/etcd" \
      --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
      --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
      --initial-cluster="confab-infra=http://127.0.0.1:$ETCD_PEER_PORT" \
      --listen-metrics-urls="" --quota-backend-bytes=2147483648 --snapshot-count=10000 \
      --log-level=warn
  fi
  wait_ready etcd "$LOG/etcd.log" 60 kube_check_etcd

  if ! running kube-apiserver; then
    need_port kube-apiserver "$KUBE_PORT"
    say "kube: starting kube-apiserver $KUBE_VERSION on 127.0.0.1:$KUBE_PORT"
    spawn kube-apiserver "$LOG/kube-apiserver.log" "$KUBE_DIR" \
      "$KUBE_BIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
      --bind-address=127.0.0.1 --secure-port="$KUBE_PORT" --advertise-address=127.0.0.1 \
      --endpoint-reconciler-type=none --kubelet-preferred-address-types=InternalIP,Hostname \
      --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
      --client-ca-file="$PKI/ca.crt" --token-auth-file="$PKI/tokens.csv" \
      --authorization-mode=RBAC --allow-privileged=true \
      --service-account-issuer=https://kubernetes.default.svc.cluster.local \
      --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
      --service-cluster-ip-range=10.0.0.0/24 \
      --profiling=false --v=1
  fi
  wait_ready kube-apiserver "$LOG/kube-apiserver.log" 120 kube_check_apiserver

  if ! running kube-controller-manager; then
    need_port kube-controller-manager "$KCM_PORT"
    say "kube: starting kube-controller-manager"
    spawn kube-controller-manager "$LOG/kube-controller-manager.log" "$KUBE_DIR" \
      "$KUBE_BIN/kube-controller-manager" --kubeconfig="$kc" \
      --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
      --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --leader-elect=false \
      --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
      --use-service-account-credentials=true \
      --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
      --horizontal-pod-autoscaler-sync-period=5s \
      --profiling=false --v=1
  fi
  if ! running kube-scheduler; then
    need_port kube-scheduler "$SCHED_PORT"
    say "kube: starting kube-scheduler"
    spawn kube-scheduler "$LOG/kube-scheduler.log" "$KUBE_DIR" \
      "$KUBE_BIN/kube-scheduler" --kubeconfig="$kc" \
      --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
      --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --leader-elect=false \
      --profiling=false --v=1
  fi
  if [[ $KWOK_ENABLED == 1 ]] && ! running kwok; then
    need_port kwok "$KWOK_PORT"
    say "kube: starting kwok (fake node kwok-node-0)"
    spawn kwok "$LOG/kwok.log" "$KUBE_DIR" \
      "$KWOK_BIN/kwok" --kubeconfig="$kc" --config="$KWOK_BIN/stages.yaml" \
      --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
      --cidr=10.0.128.0/20 --node-ip=10.0.127.1 --server-address="127.0.0.1:$KWOK_PORT"
  fi
}

kube_wait() {
  wait_ready kube-apiserver "$LOG/kube-apiserver.log" 120 kube_check_apiserver
  wait_ready kube-controller-manager "$LOG/kube-controller-manager.log" 120 kube_check_kcm
  wait_ready kube-scheduler "$LOG/kube-scheduler.log" 120 kube_check_scheduler
  # The serviceaccount controller (in kube-controller-manager) creates it.
  wait_ready kube-controller-manager "$LOG/kube-controller-manager.log" 120 kube_check_default_sa
  if [[ $KWOK_ENABLED == 1 ]]; then
    wait_ready kwok "$LOG/kwok.log" 30 kube_create_node
    wait_ready kwok "$LOG/kwok.log" 60 kube_check_node
  fi
}

kube_env() { echo "export KUBECONFIG=$KUBECONFIG_FILE"; }

kube_stop() {
  local p
  for p in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do stop_pid "$p" 30; done
}

kube_clean() { rm -rf "$KUBE_DIR"; }

kube_status() {
  status_line kube etcd "http://127.0.0.1:$ETCD_PORT"
  status_line kube kube-apiserver "https://127.0.0.1:$KUBE_PORT"
  status_line kube kube-controller-manager "https://127.0.0.1:$KCM_PORT"
  status_line kube kube-scheduler "https://127.0.0.1:$SCHED_PORT"
  [[ $KWOK_ENABLED == 1 ]] && status_line kube kwok "127.0.0.1:$KWOK_PORT"
  return 0
}
