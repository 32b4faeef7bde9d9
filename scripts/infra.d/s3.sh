# shellcheck shell=bash
# S3-compatible object storage for the attachments (confab-blobs' S3Blobs):
# SeaweedFS (github.com/seaweedfs/seaweedfs/weed at SEAWEEDFS_VERSION) built
# from the Go module proxy, cached under target/infra/bin/ and per user.
# One `weed server` runs master, volume server, filer and S3 gateway on
# 127.0.0.1; data under target/infra/s3. The S3 API takes one identity
# (key/secret below, test-only values) and the bucket CONFAB_TEST_S3_BUCKET
# is created at every start (creating an existing bucket is harmless).

S3_PORT=${CONFAB_S3_PORT:-18333}
# master, volume server and filer (HTTP; each gRPC port is 10000 above).
S3_MASTER_PORT=${CONFAB_S3_MASTER_PORT:-$((S3_PORT + 1))}
S3_VOLUME_PORT=${CONFAB_S3_VOLUME_PORT:-$((S3_PORT + 2))}
S3_FILER_PORT=${CONFAB_S3_FILER_PORT:-$((S3_PORT + 3))}
S3_BUCKET=confab-test
S3_ACCESS_KEY=confab-test-key
S3_SECRET_KEY=confab-test-secret
S3_REGION=us-east-1
S3_DIR=$INFRA/s3
S3_LOG=$LOG/s3.log
S3_INSTALL_LOG=$LOG/s3-install.log
S3_BIN_DIR=$BIN/seaweedfs-$SEAWEEDFS_VERSION

s3_install() {
  need_cmd curl "readiness checks"
  [[ -x $S3_BIN_DIR/weed ]] && return 0
  bin_restore "$S3_BIN_DIR" && [[ -x $S3_BIN_DIR/weed ]] && return 0
  local mod=$INFRA/src/seaweedfs-$SEAWEEDFS_VERSION
  mkdir -p "$mod" "$LOG"
  if [[ ! -f $mod/go.sum ]]; then
    printf 'module confab.local/infra/seaweedfs\n\ngo 1.24.0\n' >"$mod/go.mod"
    (cd "$mod" && go_env go get "github.com/seaweedfs/seaweedfs/weed@$SEAWEEDFS_VERSION") >>"$S3_INSTALL_LOG" 2>&1 ||
      fail s3 "$S3_INSTALL_LOG" "go get github.com/seaweedfs/seaweedfs@$SEAWEEDFS_VERSION failed"
  fi
  go_build s3 "$S3_INSTALL_LOG" "$mod" "$S3_BIN_DIR" github.com/seaweedfs/seaweedfs/weed
  "$S3_BIN_DIR/weed" version >>"$S3_INSTALL_LOG" 2>&1 || fail s3 "$S3_INSTALL_LOG" "the built weed does not run"
  bin_save "$S3_BIN_DIR"
}

s3_running() { running s3; }

s3_start() {
  local p
  for p in "$S3_PORT" "$S3_MASTER_PORT" "$S3_VOLUME_PORT" "$S3_FILER_PORT"; do
    need_port s3 "$p"
    need_port s3 "$((p + 10000))"
  done
  mkdir -p "$S3_DIR/data"
  cat >"$S3_DIR/identities.json" <<EOF
{
  "identities": [
    {
      "name": "confab-test",
      "credentials": [{"accessKey": "$S3_ACCESS_KEY", "secretKey": "$S3_SECRET_KEY"}],
      "actions": ["Admin", "Read", "List", "Tagging", "Write"]
    }
  ]
}
EOF
  say "s3: starting SeaweedFS on 127.0.0.1:$S3_PORT (S3 API)"
  # Small volumes (the tests keep a few MiB); no telemetry, no Iceberg or
  # Lance listeners; a missing bucket is an error, as on S3 (not created by
  # the first upload); the volume server stops at once on `down`.
  spawn s3 "$S3_LOG" "$S3_DIR" \
    "$S3_BIN_DIR/weed" server -dir="$S3_DIR/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="$S3_MASTER_PORT" -master.port.grpc="$((S3_MASTER_PORT + 10000))" \
    -master.volumeSizeLimitMB=64 -master.telemetry=false \
    -volume.port="$S3_VOLUME_PORT" -volume.port.grpc="$((S3_VOLUME_PORT + 10000))" -volume.max=50 \
    -volume.preStopSeconds=0 \
    -filer -filer.port="$S3_FILER_PORT" -filer.port.grpc="$((S3_FILER_PORT + 10000))" \
    -s3 -s3.port="$S3_PORT" -s3.port.grpc="$((S3_PORT + 10000))" -s3.config="$S3_DIR/identities.json" \
    -s3.port.iceberg=0 -s3.port.lance=0 -s3.autoCreateBucket=false
}

# s3_curl ARGS...: a request to the S3 API signed with the test identity.
s3_curl() {
  curl -fsS --max-time 5 --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" "$@"
}

# Ready once the bucket exists and a signed listing of it answers.
s3_check() {
  s3_curl -o /dev/null "http://127.0.0.1:$S3_PORT/$S3_BUCKET?list-type=2&max-keys=1" 2>/dev/null && return 0
  s3_curl -X PUT -o /dev/null "http://127.0.0.1:$S3_PORT/$S3_BUCKET" &&
    s3_curl -o /dev/null "http://127.0.0.1:$S3_PORT/$S3_BUCKET?list-type=2&max-keys=1"
}

s3_wait() { wait_ready s3 "$S3_LOG" "${CONFAB_S3_TIMEOUT:-120}" s3_check; }

s3_env() {
  echo "export CONFAB_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT"
  echo "export CONFAB_TEST_S3_BUCKET=$S3_BUCKET"
  echo "export CONFAB_TEST_S3_REGION=$S3_REGION"
  echo "export CONFAB_TEST_S3_ACCESS_KEY=$S3_ACCESS_KEY"
  echo "export CONFAB_TEST_S3_SECRET_KEY=$S3_SECRET_KEY"
}

s3_stop() { stop_pid s3 20; }

s3_clean() { rm -rf "$S3_DIR"; }

s3_status() { status_line s3 s3 "http://127.0.0.1:$S3_PORT (bucket $S3_BUCKET)"; }
