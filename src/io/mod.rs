//! What touches the outside: `wasi:http` requests and responses, clocks and randomness
//! ([`http`]), and the JSON log lines on stderr ([`log`]).

pub mod http;
pub mod log;
