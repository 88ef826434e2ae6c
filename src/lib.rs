//! spaces-backup: copies every object of an S3-compatible bucket into one ZIP archive,
//! streamed into a destination bucket with multipart upload.
//!
//! ```text
//! handler ── route → job → one response
//!   ├─ backup/   list → fetch → archive → parts → upload, driven by pipeline
//!   ├─ compose/  plan → shards (backups of key ranges) → one archive of their fragments
//!   ├─ restore/  archive → bucket (puts: the concurrent PUT pool)
//!   └─ verify/   manifest against a listing; integrity: every CRC, no source needed
//! zip/    the format: spec (records), write, read, manifest, remote (a ZIP in a bucket)
//! s3/     the client: ops (one constructor per operation), sigv4, xml, retry, error
//! io/     http (the thin wasi:http layer), log
//! config, select, naming, error, model: pure, tested natively
//! ```

pub mod auth;
pub(crate) mod backup;
mod bindings;
pub(crate) mod compose;
pub(crate) mod config;
pub(crate) mod error;
pub(crate) mod handler;
pub(crate) mod io;
pub mod model;
pub mod naming;
pub(crate) mod restore;
pub(crate) mod s3;
pub(crate) mod select;
pub(crate) mod verify;
pub(crate) mod zip;
