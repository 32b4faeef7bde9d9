#!/usr/bin/env bash
# `confab chat`'s full-screen mode, driven in tmux against a real standalone
# server: alice and bob chat in two terminals, the server restarts in
# between (both clients show that they are reconnecting, then reconnect),
# and what was typed while it was down arrives once it is back.
#
#   CONFAB_BIN=target/debug/confab scripts/chat-tmux-test.sh
#
# Installs tmux (apt-get) when it is missing. Every wait has a deadline.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${CONFAB_BIN:-$root/target/debug/confab}
[ -x "$bin" ] || { echo "no confab binary at $bin (set CONFAB_BIN)" >&2; exit 1; }
if ! command -v tmux >/dev/null; then
  apt-get update -qq && apt-get install -y -qq tmux >/dev/null
fi

work=$(mktemp -d)
socket="confab-chat-test-$$"
server_pid=
cleanup() {
  tmux -L "$socket" kill-server 2>/dev/null || true
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
http="http://127.0.0.1:$port"

start_server() {
  "$bin" standalone --listen "127.0.0.1:$port" --admin-listen 127.0.0.1:0 --data "$work/data" \
    --jwt-secret test-secret-test-secret-test-secret! >>"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 150); do
    curl -sf "$http/" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "the server did not start:" >&2; tail -20 "$work/server.log" >&2; exit 1
}

stop_server() {
  kill -TERM "$server_pid"
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}

token() {
  local body="{\"username\":\"$1\",\"password\":\"password-123\"}"
  curl -sf -H 'Content-Type: application/json' -d "$body" "$http/v1/auth/register" >/dev/null
  curl -sf -H 'Content-Type: application/json' -d "$body" "$http/v1/auth/login" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}

# Waits until the pane of $1 shows $2 (a fixed string).
shows() {
  for _ in $(seq 1 200); do
    if tmux -L "$socket" capture-pane -p -t "$1" | grep -qF -- "$2"; then return 0; fi
    sleep 0.1
  done
  echo "FAIL: $1 never showed '$2'; it shows:" >&2
  tmux -L "$socket" capture-pane -p -t "$1" >&2
  exit 1
}

type_line() {
  tmux -L "$socket" send-keys -t "$1" -l -- "$2"
  tmux -L "$socket" send-keys -t "$1" Enter
}

start_server
alice=$(token alice)
bob=$(token bob)
tmux -L "$socket" new-session -d -s chat -n alice -x 120 -y 30 \
  "CONFAB_TOKEN=$alice $bin chat --server $http --room r; sleep 30"
tmux -L "$socket" new-window -t chat -n bob \
  "CONFAB_TOKEN=$bob $bin chat --server $http --room r; sleep 30"

shows chat:alice "connected as alice"
shows chat:bob "connected as bob"
type_line chat:alice "hello from alice"
shows chat:bob "alice: hello from alice"
type_line chat:bob "hello from bob"
shows chat:alice "bob: hello from bob"
type_line chat:bob "/who"
shows chat:bob "online in r:"

stop_server
shows chat:alice "reconnecting"
shows chat:bob "reconnecting"
type_line chat:alice "typed while the server was down"
start_server
shows chat:alice "connected as alice"
shows chat:bob "alice: typed while the server was down"
type_line chat:bob "after the restart"
shows chat:alice "bob: after the restart"

# A room with news shows its unread count in the list.
type_line chat:alice "/join other"
shows chat:alice "┌other"
type_line chat:alice "/join r"
type_line chat:bob "/join other"
type_line chat:bob "news"
shows chat:bob "bob: news"
shows chat:alice "other (1)"

type_line chat:alice "/quit"
type_line chat:bob "/quit"
echo "1 passed, 0 failed: confab chat in tmux (two terminals, a server restart between)"
