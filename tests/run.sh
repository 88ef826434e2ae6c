#!/usr/bin/env bash
# The test command: installs what the tests need and is missing, then runs every test
# (`cargo test --release --workspace`). Safe to run again; on a machine that has it all,
# it only runs the tests. CI (.ci/run) calls exactly this.
#
# It installs, when missing:
#   - the Rust target wasm32-wasip2 (rustup), for the component;
#   - the archive readers the tests compare with: python3 (zipfile), Info-ZIP unzip,
#     7-Zip, libarchive's bsdtar, a JDK (Java's ZipInputStream); Node.js for the
#     DigitalOcean Function's wrapper, and npm; curl (Debian packages, with apt-get);
#   - the deployer library @nimbella/nimbella-deployer 4.3.10 (npm, into target/), to read
#     the function's project as `doctl serverless deploy` does;
#   - wasmtime-cli 48.0.8 with the features `wasmtime serve` needs (cargo install).
#
# SPACES_BACKUP_BIG_TESTS=1 adds the full-size ZIP64 tests (~9 GB through the local
# server, about 4 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf '== %s\n' "$*" >&2; }

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  say "installing the Rust target wasm32-wasip2"
  rustup target add wasm32-wasip2
fi

need=()
command -v python3 >/dev/null || need+=(python3)
command -v unzip >/dev/null || need+=(unzip)
command -v 7z >/dev/null || need+=(p7zip-full)
command -v bsdtar >/dev/null || need+=(libarchive-tools)
command -v javac >/dev/null || need+=(default-jdk-headless)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "tests/run.sh: install these first (Debian package names): ${need[*]}" >&2
    exit 1
  fi
  say "installing ${need[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
fi

# One test runs the component under `wasmtime serve`, as README shows. Only the features
# `serve` needs: a third of the default build time.
if ! wasmtime --version 2>/dev/null | grep -q ' 48\.0\.8'; then
  say "installing wasmtime-cli 48.0.8 (about 5 minutes on 2 cores)"
  cargo install wasmtime-cli@48.0.8 --locked --no-default-features \
    --features serve,run,cranelift,component-model-async,pooling-allocator
fi

# The deployer library doctl's deployer grew from: host/tests/it/deployer.rs reads the
# function's project with it, as a deploy would.
deployer=target/test-tools/deployer
if [ ! -d "$deployer/node_modules/@nimbella/nimbella-deployer" ]; then
  say "installing @nimbella/nimbella-deployer 4.3.10 (npm) into $deployer"
  mkdir -p "$deployer"
  npm install --no-audit --no-fund --silent --prefix "$deployer" @nimbella/nimbella-deployer@4.3.10
fi

say "cargo test --release --workspace"
exec cargo test --release --workspace "$@"
