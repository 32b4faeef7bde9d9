# shellcheck shell=bash
# Helm CLI built from the Go module proxy (helm.sh/helm/v3/cmd/helm), cached
# under target/infra/bin/helm-VERSION. Nothing runs; `up helm` installs it and
# exports HELM=/path/to/helm.

HELM_BIN_DIR=$BIN/helm-$HELM_VERSION
HELM_LOG=$LOG/helm-install.log

helm_install() {
  [[ -x $HELM_BIN_DIR/helm ]] && return 0
  bin_restore "$HELM_BIN_DIR" && [[ -x $HELM_BIN_DIR/helm ]] && return 0
  local mod=$INFRA/src/helm-$HELM_VERSION
  mkdir -p "$mod" "$LOG"
  if [[ ! -f $mod/go.sum ]]; then
    printf 'module confab.local/infra/helm\n\ngo 1.24.0\n' >"$mod/go.mod"
    (cd "$mod" && go_env go get "helm.sh/helm/v3/cmd/helm@$HELM_VERSION") >>"$HELM_LOG" 2>&1 ||
      fail helm "$HELM_LOG" "go get helm.sh/helm/v3@$HELM_VERSION failed"
  fi
  go_build helm "$HELM_LOG" "$mod" "$HELM_BIN_DIR" helm.sh/helm/v3/cmd/helm
  "$HELM_BIN_DIR/helm" version --short >>"$HELM_LOG" 2>&1 || fail helm "$HELM_LOG" "the built helm does not run"
  bin_save "$HELM_BIN_DIR"
}

helm_running() { return 1; } # nothing runs; `up helm` only installs
helm_start() { :; }
helm_wait() { "$HELM_BIN_DIR/helm" version --short >/dev/null 2>&1 || fail helm "$HELM_LOG" "$HELM_BIN_DIR/helm does not run"; }
helm_env() { echo "export HELM=$HELM_BIN_DIR/helm"; }
helm_stop() { :; }
helm_clean() { :; }
helm_status() {
  if [[ -x $HELM_BIN_DIR/helm ]]; then
    printf '%-11s %-24s installed %s\n' helm helm "$HELM_BIN_DIR/helm"
  else
    printf '%-11s %-24s not installed\n' helm helm
  fi
}
