#!/usr/bin/env bash
# The kind end-to-end suite: a real cluster with a real kubelet, the real
# image, Kafka and Cassandra in the cluster, and two users chatting through
# two different gateways. Needs Docker, kind and kubectl (not available in
# CI, which only compiles the suite; see e2e/kind/README.md).
#
#   e2e/kind/run.sh            build, create the cluster, install, test
#   KEEP=1 e2e/kind/run.sh     leave the cluster running afterwards
#   e2e/kind/run.sh down       delete the cluster
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here=$root/e2e/kind
cluster=confab-e2e
image=confab:kind
next_tag=kind-next
next_image=confab:$next_tag
work=$here/.work
kubeconfig=$work/kubeconfig

say() { printf '\n[kind] %s\n' "$*"; }
need() { command -v "$1" >/dev/null || { echo "[kind] $1 is required: $2" >&2; exit 1; }; }

if [[ ${1:-} == down ]]; then
  kind delete cluster --name "$cluster"
  exit 0
fi

need docker "https://docs.docker.com/get-docker/"
need kind "go install sigs.k8s.io/kind@latest, or https://kind.sigs.k8s.io/docs/user/quick-start/"
need kubectl "https://kubernetes.io/docs/tasks/tools/"
need cargo "https://rustup.rs"
mkdir -p "$work"

say "building the image $image"
docker build -t "$image" "$root"

if ! kind get clusters | grep -qx "$cluster"; then
  say "creating the kind cluster $cluster"
  kind create cluster --config "$here/cluster.yaml" --kubeconfig "$kubeconfig" --wait 120s
else
  kind get kubeconfig --name "$cluster" >"$kubeconfig"
fi
export KUBECONFIG=$kubeconfig

say "loading $image into the node, and the same image as $next_image (the suite rolls the pods to it)"
docker tag "$image" "$next_image"
kind load docker-image "$image" "$next_image" --name "$cluster"

say "Kafka and Cassandra"
kubectl apply -f "$here/manifests/backends.yaml"

say "the CRD, RBAC and the operator (image $image)"
kubectl create namespace confab-system --dry-run=client -o yaml | kubectl apply -f -
kubectl apply --server-side -f "$root/crds/confab.dev_chatclusters.yaml"
kubectl wait --for=condition=Established crd/chatclusters.confab.dev --timeout=60s
kubectl apply -f "$root/operator/deploy/rbac.yaml"
sed -e "s#image: ghcr.io/confab-chat/confab:.*#image: $image#" -e "s#imagePullPolicy: IfNotPresent#imagePullPolicy: Never#" \
  "$root/operator/deploy/operator.yaml" | kubectl apply -f -
kubectl -n confab-system rollout status deployment/confab-operator --timeout=180s

say "waiting for Kafka and Cassandra to be ready (Cassandra takes a minute or two)"
kubectl -n confab-backends rollout status statefulset/kafka --timeout=300s
kubectl -n confab-backends rollout status statefulset/cassandra --timeout=600s

say "the ChatCluster"
kubectl apply -f "$here/manifests/chatcluster.yaml"
kubectl -n confab-kind wait --for=condition=Available chatcluster/chat --timeout=600s
kubectl -n confab-kind get chatcluster,deploy,pods,svc,jobs

cleanup() {
  if [[ ${KEEP:-0} != 1 ]]; then kind delete cluster --name "$cluster"; fi
}
trap cleanup EXIT

say "the suite (the same chat scenario as CI's node suite; pods reached through kubectl port-forward)"
CONFAB_KIND_NEXT_TAG=$next_tag KUBECONFIG=$kubeconfig \
  cargo run --manifest-path "$root/Cargo.toml" -p confab-e2e --example kind
say "kind suite passed"
