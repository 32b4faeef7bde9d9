# shellcheck shell=bash
# The benchmarks' peer: a Centrifugo-compatible server built from the Go
# module proxy. Centrifugo's own module is not served by the proxy this
# project reaches, so the peer is Centrifugo's engine, the
# github.com/centrifugal/centrifuge library (CENTRIFUGE_VERSION, also pinned in
# infra.d/centrifugo/go.mod and go.sum), behind the small main in
# infra.d/centrifugo/main.go. Nothing runs: `up centrifugo` builds it into
# target/infra/bin/ (cached per user) and exports CENTRIFUGO_BIN; confab-bench
# starts it on a port of its own for each run.

CENTRIFUGO_SRC=$INFRA_SCRIPTS/infra.d/centrifugo
# The build is keyed by the library's version and the peer's own source.
CENTRIFUGO_KEY=$(cat "$CENTRIFUGO_SRC/main.go" "$CENTRIFUGO_SRC/go.mod" "$CENTRIFUGO_SRC/go.sum" | sha256sum | cut -c1-12)
CENTRIFUGO_BIN_DIR=$BIN/centrifugo-$CENTRIFUGE_VERSION-$CENTRIFUGO_KEY
CENTRIFUGO_LOG=$LOG/centrifugo-install.log

centrifugo_install() {
  [[ -x $CENTRIFUGO_BIN_DIR/centrifugo-peer ]] && return 0
  bin_restore "$CENTRIFUGO_BIN_DIR" && [[ -x $CENTRIFUGO_BIN_DIR/centrifugo-peer ]] && return 0
  mkdir -p "$LOG"
  grep -q "github.com/centrifugal/centrifuge $CENTRIFUGE_VERSION\$" "$CENTRIFUGO_SRC/go.mod" ||
    die "centrifugo: infra.d/centrifugo/go.mod does not require centrifuge $CENTRIFUGE_VERSION (scripts/versions.env)"
  go_build centrifugo "$CENTRIFUGO_LOG" "$CENTRIFUGO_SRC" "$CENTRIFUGO_BIN_DIR" .
  [[ -x $CENTRIFUGO_BIN_DIR/centrifugo-peer ]] || fail centrifugo "$CENTRIFUGO_LOG" "the build made no centrifugo-peer"
  bin_save "$CENTRIFUGO_BIN_DIR"
}

centrifugo_running() { return 1; } # nothing runs; `up centrifugo` only installs
centrifugo_start() { :; }
centrifugo_wait() { [[ -x $CENTRIFUGO_BIN_DIR/centrifugo-peer ]] || fail centrifugo "$CENTRIFUGO_LOG" "not built"; }
centrifugo_env() { echo "export CENTRIFUGO_BIN=$CENTRIFUGO_BIN_DIR/centrifugo-peer"; }
centrifugo_stop() { :; }
centrifugo_clean() { :; }
centrifugo_status() {
  if [[ -x $CENTRIFUGO_BIN_DIR/centrifugo-peer ]]; then
    printf '%-11s %-24s installed %s\n' centrifugo centrifugo-peer "$CENTRIFUGO_BIN_DIR/centrifugo-peer"
  else
    printf '%-11s %-24s not installed\n' centrifugo centrifugo-peer
  fi
}
