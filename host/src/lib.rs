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
//! - `demo` (feature `demo`, on by default, off in the function build): the
//!   `spaces-backup demo` command end to end, on the test kit's S3 server.
//!
//! The S3 servers and clients the tests use live in the test kit
//! (`tests/testkit`), not here: what ships is only what runs.

#[cfg(feature = "demo")]
pub mod demo;
pub mod env;
mod envelope;
mod outgoing;
pub mod progress;
mod runner;
mod serve;
pub mod trust;

pub use envelope::{envelope, envelope_line, host_error_body, host_error_envelope, one_line_error};
pub use outgoing::AllowList;
pub use runner::{Handled, Runner, EMBEDDED_COMPONENT, EMBEDDED_COMPONENT_PATH};
pub use serve::{check_listen_addr, serve, serve_listener, TOKEN_VAR};
