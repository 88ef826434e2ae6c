//! The component's entry point: `wasi:http/incoming-handler` with `POST /backup` and
//! `GET /health`. Configuration comes from the environment of the instance.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

use crate::{backup, config, log};

pub struct Handler;

impl wasi::exports::http::incoming_handler::Guest for Handler {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let path = path.split('?').next().unwrap_or("").to_string();
        let method = request.method();
        drop(request);
        let (status, body) = route(&method, &path);
        respond(out, status, &body);
    }
}

fn route(method: &Method, path: &str) -> (u16, Value) {
    match (method, path.trim_end_matches('/')) {
        (Method::Post, "/backup") => run_backup(),
        (Method::Get, "/health" | "") => (
            200,
            json!({"status": "ok", "service": "spaces-backup", "version": env!("CARGO_PKG_VERSION")}),
        ),
        (_, "/backup" | "/health") => (
            405,
            json!({"error": "Method not allowed", "message": "use POST /backup or GET /health"}),
        ),
        _ => (
            404,
            json!({"error": "Not found", "message": "use POST /backup or GET /health"}),
        ),
    }
}

/// Runs one backup and returns the original function's `statusCode` and `body`.
pub fn run_backup() -> (u16, Value) {
    let env: BTreeMap<String, String> = wasi::cli::environment::get_environment()
        .into_iter()
        .collect();
    let config = match config::from_env(&env) {
        Ok(c) => c,
        Err(e) => {
            let body = json!({"error": "Backup failed", "message": e.to_string(), "code": "InvalidConfiguration"});
            log::error("config_invalid", json!({"message": e.to_string()}));
            return (400, body);
        }
    };
    log::init(
        config.log_level,
        &[
            &config.credentials.access_key,
            &config.credentials.secret_key,
        ],
    );
    match backup::run(&config) {
        Ok(summary) => (200, summary.body),
        Err(e) => {
            let message = log::scrub(&e.message);
            log::error("backup_failed", json!({"code": e.code, "message": message}));
            (
                e.status,
                json!({"error": "Backup failed", "message": message, "code": e.code}),
            )
        }
    }
}

fn respond(out: ResponseOutparam, status: u16, body: &Value) {
    let bytes = log::scrub(&body.to_string()).into_bytes();
    let headers = Fields::new();
    let _ = headers.append("content-type", b"application/json");
    let _ = headers.append("content-length", bytes.len().to_string().as_bytes());
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    if let Ok(stream) = outgoing.write() {
        // The client may have gone away; there is nobody left to tell.
        let _ = crate::http::write_all(&stream, &bytes);
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

// Only the component exports the handler: a native build links a shared library whose
// version script cannot hold these export names.
#[cfg(target_arch = "wasm32")]
wasi::http::proxy::export!(Handler with_types_in wasi);
