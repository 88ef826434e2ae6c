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
        let full = request.path_with_query().unwrap_or_default();
        let (path, query) = full.split_once('?').unwrap_or((&full, ""));
        let method = request.method();
        drop(request);
        let (status, body) = route(&method, path, query);
        respond(out, status, &body);
    }
}

const ROUTES: &str = "use POST /backup, POST /verify?archive=KEY[&deep=true|&integrity=true], \
     POST /restore?archive=KEY&to=BUCKET[/PREFIX][&overwrite=true] or GET /health";

fn route(method: &Method, path: &str, query: &str) -> (u16, Value) {
    match (method, path.trim_end_matches('/')) {
        (Method::Post, "/backup") => run_backup(),
        (Method::Post, "/verify") => run_verify(query),
        (Method::Post, "/restore") => run_restore(query),
        (Method::Get, "/health" | "") => (
            200,
            json!({"status": "ok", "service": "spaces-backup", "version": env!("CARGO_PKG_VERSION")}),
        ),
        (_, "/backup" | "/verify" | "/restore" | "/health") => (
            405,
            json!({"error": "Method not allowed", "message": ROUTES}),
        ),
        _ => (404, json!({"error": "Not found", "message": ROUTES})),
    }
}

/// The configuration from the environment, or the 400 answer that names what is wrong.
fn load_config(failed: &str) -> Result<config::Config, (u16, Value)> {
    let env: BTreeMap<String, String> = wasi::cli::environment::get_environment()
        .into_iter()
        .collect();
    match config::from_env(&env) {
        Ok(config) => {
            log::init(
                config.log_level,
                &[
                    &config.credentials.access_key,
                    &config.credentials.secret_key,
                ],
            );
            Ok(config)
        }
        Err(e) => {
            log::error("config_invalid", json!({"message": e.to_string()}));
            Err((
                400,
                json!({"error": failed, "message": e.to_string(), "code": "InvalidConfiguration"}),
            ))
        }
    }
}

/// `archive=KEY` (percent-encoded), `deep=true` and `integrity=true` from a query string.
fn verify_params(query: &str) -> (Option<String>, bool, bool) {
    let mut archive = None;
    let (mut deep, mut integrity) = (false, false);
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let on = matches!(value, "true" | "1" | "yes" | "");
        match name {
            "archive" => archive = Some(crate::util::percent_decode(value)),
            "deep" => deep = on,
            "integrity" => integrity = on,
            _ => {}
        }
    }
    (archive.filter(|a| !a.is_empty()), deep, integrity)
}

/// Compares an archive with the source bucket (see [`crate::verify`]).
pub fn run_verify(query: &str) -> (u16, Value) {
    let config = match load_config("Verify failed") {
        Ok(c) => c,
        Err(answer) => return answer,
    };
    let (Some(archive), deep, integrity) = verify_params(query) else {
        return (
            400,
            json!({"error": "Verify failed", "code": "InvalidRequest",
                   "message": "name the archive: POST /verify?archive=KEY (its key in DEST_BUCKET, percent-encoded)"}),
        );
    };
    let retries = std::rc::Rc::new(std::cell::Cell::new(0));
    let (src, dst) = backup::clients(&config, &retries);
    let result = if integrity {
        crate::integrity::run(&config, &dst, &archive)
    } else {
        crate::verify::run(&config, &src, &dst, &archive, deep)
    };
    match result {
        Ok(mut body) => {
            body["retries"] = json!(retries.get());
            log::info(
                "verify_done",
                json!({"identical": body["identical"], "archiveName": archive}),
            );
            (200, body)
        }
        Err(e) => {
            let message = log::scrub(&e.message);
            log::error("verify_failed", json!({"code": e.code, "message": message}));
            (
                e.status,
                json!({"error": "Verify failed", "message": message, "code": e.code}),
            )
        }
    }
}

/// The value of `name` in a query string, percent-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| crate::util::percent_decode(v))
    })
}

/// Restores an archive into a bucket (see [`crate::restore`]).
pub fn run_restore(query: &str) -> (u16, Value) {
    let config = match load_config("Restore failed") {
        Ok(c) => c,
        Err(answer) => return answer,
    };
    let invalid = |message: String| {
        (
            400,
            json!({"error": "Restore failed", "code": "InvalidRequest", "message": message}),
        )
    };
    let Some(archive) = query_param(query, "archive").filter(|a| !a.is_empty()) else {
        return invalid("name the archive: POST /restore?archive=KEY&to=BUCKET[/PREFIX]".into());
    };
    let Some(to) = query_param(query, "to").filter(|t| !t.is_empty()) else {
        return invalid(
            "name where to restore: POST /restore?archive=KEY&to=BUCKET[/PREFIX]".into(),
        );
    };
    let (bucket, prefix) = match crate::restore::parse_target(&to) {
        Ok(t) => t,
        Err(e) => return invalid(e),
    };
    let overwrite = query_param(query, "overwrite")
        .is_some_and(|v| matches!(v.as_str(), "true" | "1" | "yes" | ""));
    let retries = std::rc::Rc::new(std::cell::Cell::new(0));
    let (_, dst) = backup::clients(&config, &retries);
    let mut target_config = config.clone();
    target_config.source = crate::restore::target(&config, &bucket);
    let (target, _) = backup::clients(&target_config, &retries);
    match crate::restore::run(&config, &dst, &target, &archive, &prefix, overwrite) {
        Ok(mut body) => {
            body["retries"] = json!(retries.get());
            log::info("restore_done", body.clone());
            (200, body)
        }
        Err(e) => {
            let message = log::scrub(&e.message);
            log::error(
                "restore_failed",
                json!({"code": e.code, "message": message}),
            );
            (
                e.status,
                json!({"error": "Restore failed", "message": message, "code": e.code}),
            )
        }
    }
}

/// Runs one backup and returns the original function's `statusCode` and `body`.
pub fn run_backup() -> (u16, Value) {
    let config = match load_config("Backup failed") {
        Ok(c) => c,
        Err(answer) => return answer,
    };
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
