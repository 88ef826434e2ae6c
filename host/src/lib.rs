//! A small Wasmtime host for the `spaces-backup` WebAssembly component.
//!
//! The component exports `wasi:http/incoming-handler` (the `wasi:http/proxy`
//! world) and reads its configuration from environment variables. This crate
//! runs it the way `wasmtime serve -Scli` would, one fresh instance per
//! request, and adds what the CLI, the demo and the integration tests share:
//!
//! - [`Runner`]: compile once, then [`Runner::handle`] one request with a given
//!   environment and get `(status, body)` back;
//! - [`serve()`]: the same HTTP interface as `wasmtime serve`;
//! - [`envelope()`]: the `{"statusCode", "body"}` JSON the CLI prints;
//! - [`s3server`]: an S3 server on 127.0.0.1 (s3s's protocol layer, which
//!   checks SigV4 signatures, over s3s-fs or the in-memory [`memstore`]),
//!   with helpers to seed buckets and inspect what landed;
//! - [`memstore`]: an in-memory S3 backend for s3s that stores every legal
//!   key exactly (s3s-fs cannot store keys that are not file paths);
//! - [`demo`]: the `spaces-backup demo` command end to end.

pub mod demo;
pub mod env;
mod envelope;
pub mod memstore;
mod outgoing;
pub mod progress;
mod runner;
pub mod s3server;
mod serve;

pub use envelope::{envelope, envelope_line, host_error_body, host_error_envelope, one_line_error};
pub use outgoing::AllowList;
pub use runner::{Handled, Runner, EMBEDDED_COMPONENT, EMBEDDED_COMPONENT_PATH};
pub use serve::{check_listen_addr, serve, serve_listener, TOKEN_VAR};
