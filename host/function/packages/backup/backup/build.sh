#!/usr/bin/env bash
# Builds what this function ships: the spaces-backup host as a static x86_64 Linux (musl)
# binary, and the component precompiled for it, so a cold start compiles nothing.
# `doctl serverless deploy host/function` runs this before it packages the folder.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../../../.." && pwd)"
target=x86_64-unknown-linux-musl
# DigitalOcean's limit for a function's package.
limit=$((48 * 1000 * 1000))

rustup target add wasm32-wasip2 "$target" >/dev/null
# ring (TLS) has C parts, built with musl-gcc (Debian: musl-tools).
command -v musl-gcc >/dev/null || {
  echo "build.sh: musl-gcc is missing (Debian/Ubuntu: apt-get install musl-tools)" >&2
  exit 1
}
# Without the `cache` feature: no on-disk compilation cache, and no zstd C code.
cargo build --release --locked --manifest-path "$root/Cargo.toml" \
  -p spaces-backup-host --no-default-features --target "$target"

mkdir -p "$here/bin"
install -m 755 "$root/target/$target/release/spaces-backup" "$here/bin/spaces-backup"
strip "$here/bin/spaces-backup" 2>/dev/null || true
# Precompiled by the very binary that will load it (same Wasmtime, same settings).
"$here/bin/spaces-backup" compile -o "$here/spaces_backup.cwasm"

size=$(cat "$here/index.js" "$here/package.json" "$here/bin/spaces-backup" \
  "$here/spaces_backup.cwasm" | wc -c)
echo "build.sh: function files: $size bytes (limit $limit)"
if [ "$size" -gt "$limit" ]; then
  echo "build.sh: the function is over DigitalOcean's 48 MB limit" >&2
  exit 1
fi
