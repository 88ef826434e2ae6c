//! The component's end-to-end tests, one binary (it links Wasmtime once): the real
//! component, run by the host, against a real S3 server on 127.0.0.1 that checks SigV4,
//! with archives read back by independent readers. A module per subject.

mod common;

mod backup;
mod chain;
mod complete;
mod faults;
mod filters;
mod fragments;
mod host_security;
mod host_smoke;
mod keys;
mod restore;
mod retention;
mod shards;
mod verify;
mod zip64;
