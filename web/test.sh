#!/usr/bin/env bash
# Everything the web client and the TypeScript SDK must pass, for CI and people:
# npm ci, type check, SDK unit tests, SDK package build, `npm pack` of the SDK
# (imported by Node from the tarball), dist freshness, and the end-to-end
# suites against a real server (browser, and the SDK under Node).
#
#   CONFAB_BIN=target/debug/confab web/test.sh     (from the repository root)
#
# CONFAB_BIN is the confab binary (relative paths are taken from the directory
# you run this in; default: target/debug/confab beside web/). The browser suite
# is not optional: a missing binary is a failure. NPM_CACHE sets npm's cache
# directory (default: npm's own), CHROMIUM the browser (default /usr/bin/chromium,
# installed with apt-get when missing).
set -euo pipefail

caller_dir=$PWD
web_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

bin=${CONFAB_BIN:-$web_dir/../target/debug/confab}
case $bin in
  /*) ;;
  *) bin=$caller_dir/$bin ;;
esac

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cd "$web_dir"

major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "web/test.sh needs Node.js 20 or newer (found $(node --version))" >&2
  exit 1
fi

step "npm ci"
npm_args=(--no-audit --no-fund --prefer-offline)
if [ -n "${NPM_CACHE:-}" ]; then npm_args+=(--cache "$NPM_CACHE"); fi
npm ci "${npm_args[@]}"

step "type check (SDK, tests, app)"
npm run --silent typecheck

step "SDK unit tests"
npm run --silent test:unit

step "SDK package build"
npm run --silent build --workspace @confab/sdk

step "SDK package: npm pack, then the packed files imported by Node"
pack_dir=$(mktemp -d)
trap 'rm -rf "$pack_dir"' EXIT
npm pack --silent --workspace @confab/sdk --pack-destination "$pack_dir" >/dev/null
tarball=$(ls "$pack_dir"/*.tgz)
tar -xzf "$tarball" -C "$pack_dir"
for f in package.json README.md dist/index.js dist/index.d.ts src/index.ts; do
  [ -f "$pack_dir/package/$f" ] || { echo "the SDK package lacks $f ($tarball)" >&2; exit 1; }
done
node --input-type=module -e "
  const sdk = await import('$pack_dir/package/dist/index.js');
  for (const name of ['ConfabClient', 'Connection', 'login', 'register']) {
    if (typeof sdk[name] !== 'function') { console.error('the packed SDK does not export ' + name); process.exit(1); }
  }
  console.log('packed SDK: ' + Object.keys(sdk).length + ' exports, imported by Node ' + process.version);
"

step "web/dist matches the sources"
npm run --silent check-dist

step "browser end-to-end tests"
if [ ! -x "$bin" ]; then
  echo "no confab binary at $bin: build it (cargo build -p confab) or set CONFAB_BIN" >&2
  exit 1
fi
chromium=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
  echo "installing Debian's chromium for the browser tests"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
CONFAB_BIN=$bin CHROMIUM=$chromium npm run --silent test:e2e

step "web: all passed"
