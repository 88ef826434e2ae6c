//! spaces-backup: copies every object of an S3-compatible bucket into one ZIP archive,
//! streamed into a destination bucket with multipart upload.
//!
//! The pipeline, one file per stage: [`list`] → [`fetch`] → [`archive`] → [`upload`],
//! driven by [`backup`]. Pure logic ([`sigv4`], [`xml`], [`config`], [`naming`],
//! [`parts`], [`retry`], [`filter`], [`zipformat`]) is apart from I/O ([`http`], the thin `wasi:http` layer).

pub mod archive;
pub mod backup;
pub mod config;
pub mod fetch;
pub mod filter;
pub mod handler;
pub mod http;
pub mod integrity;
pub mod list;
pub mod log;
pub mod naming;
pub mod parts;
pub mod puts;
pub mod restore;
pub mod retention;
pub mod retry;
pub mod s3;
pub mod sigv4;
pub mod upload;
pub mod util;
pub mod verify;
pub mod xml;
pub mod zipformat;
pub mod zipread;
