# shellcheck shell=bash
# Prometheus from Debian's package (the binary only: its systemd unit is not
# used). Our own config, storage under target/infra, file_sd targets that
# tests write: target/infra/prometheus/targets/*.json, e.g.
#   [{"targets": ["127.0.0.1:40123"], "labels": {"job": "my-test"}}]
# (a "job" label in the file overrides the scrape job's name).

PROMETHEUS_PORT=${CONFAB_PROMETHEUS_PORT:-19090}
PROM_DIR=$INFRA/prometheus
PROM_LOG=$LOG/prometheus.log
PROM_BIN=${CONFAB_PROMETHEUS_BIN:-/usr/bin/prometheus}

prometheus_install() {
  need_cmd curl "readiness checks"
  if [[ -x $PROM_BIN ]] && [[ $(dpkg-query -W -f='${Version}' prometheus 2>/dev/null) == "$PROMETHEUS_DEB_VERSION" || -n ${CONFAB_PROMETHEUS_BIN:-} ]]; then
    return 0
  fi
  local log=$LOG/prometheus-install.log
  mkdir -p "$LOG"
  [[ $(id -u) == 0 ]] || die "prometheus: not installed and not root; run: sudo apt-get install -y prometheus=$PROMETHEUS_DEB_VERSION (or set CONFAB_PROMETHEUS_BIN)"
  say "prometheus: apt-get install prometheus=$PROMETHEUS_DEB_VERSION"
  ensure_apt_updated
  # No service manager runs here; keep the package's scripts from starting one.
  local policy=/usr/sbin/policy-rc.d had_policy=0
  [[ -e $policy ]] && had_policy=1
  if ((had_policy == 0)); then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"; fi
  local rc=0
  apt-get install -y -q --no-install-recommends "prometheus=$PROMETHEUS_DEB_VERSION" >>"$log" 2>&1 || rc=$?
  ((had_policy == 0)) && rm -f "$policy"
  ((rc == 0)) || fail prometheus "$log" "apt-get install prometheus failed"
  [[ -x $PROM_BIN ]] || fail prometheus "$log" "$PROM_BIN missing after apt-get install"
}

prometheus_running() { running prometheus; }

prometheus_start() {
  need_port prometheus "$PROMETHEUS_PORT"
  mkdir -p "$PROM_DIR/data" "$PROM_DIR/targets"
  cat >"$PROM_DIR/prometheus.yml" <<EOF
# Written by scripts/infra at every start.
global:
  scrape_interval: 2s
  scrape_timeout: 1s
  evaluation_interval: 2s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["127.0.0.1:$PROMETHEUS_PORT"]
  # Tests register their own targets here; the files are re-read every 2s.
  - job_name: file_sd
    file_sd_configs:
      - files: ["$PROM_DIR/targets/*.json", "$PROM_DIR/targets/*.yml"]
        refresh_interval: 2s
EOF
  say "prometheus: starting on 127.0.0.1:$PROMETHEUS_PORT"
  spawn prometheus "$PROM_LOG" "$PROM_DIR" \
    "$PROM_BIN" --config.file="$PROM_DIR/prometheus.yml" \
    --storage.tsdb.path="$PROM_DIR/data" --storage.tsdb.retention.time=1d \
    --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" --web.enable-lifecycle
}

prometheus_check() {
  curl -fsS --max-time 3 "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" &&
    curl -fsS --max-time 3 "http://127.0.0.1:$PROMETHEUS_PORT/api/v1/status/config" -o /dev/null
}

prometheus_wait() { wait_ready prometheus "$PROM_LOG" "${CONFAB_PROMETHEUS_TIMEOUT:-60}" prometheus_check; }

prometheus_env() {
  echo "export PROMETHEUS_URL=http://127.0.0.1:$PROMETHEUS_PORT"
  echo "export PROMETHEUS_TARGETS_DIR=$PROM_DIR/targets"
}

prometheus_stop() { stop_pid prometheus 20; }

prometheus_clean() { rm -rf "$PROM_DIR"; }

prometheus_status() { status_line prometheus prometheus "http://127.0.0.1:$PROMETHEUS_PORT"; }
