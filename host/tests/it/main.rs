//! The host's tests, one binary: the CLI and the function wrapper as child processes,
//! `wasmtime serve`, signals, the runner, and the component's world. A module per subject.

mod common;

mod bad_input;
mod deployer;
mod function;
mod runner;
mod shards_cli;
mod signals;
mod tls;
mod verify_cli;
mod wasmtime_serve;
mod world;
