//! The component's entry point, `wasi:http/incoming-handler`: route → job → one
//! response. Configuration comes from the environment of the instance; each job's
//! failure becomes the same `{error, message, code}` body.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;

use crate::bindings::wasi;
use serde::Serialize;
use serde_json::json;
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

use crate::auth::{Access, Tokens};
use crate::config::{self, Config};
use crate::error::Failure;
use crate::io::{http, log};
use crate::model::{ErrorBody, Health, VerifyAnswer};
use crate::s3::clients;
use crate::{backup, compose, restore, verify};

pub struct Handler;

impl crate::bindings::exports::wasi::http::incoming_handler::Guest for Handler {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let full = request.path_with_query().unwrap_or_default();
        let (path, query) = full.split_once('?').unwrap_or((&full, ""));
        let method = request.method();
        let authorization = request.headers().get("authorization").into_iter().next();
        drop(request);
        let env: BTreeMap<String, String> = wasi::cli::environment::get_environment()
            .into_iter()
            .collect();
        let tokens = Tokens::from_env(&env);
        if let Err(variable) = tokens.check(Access::of(path), authorization.as_deref()) {
            // Nothing about the request is logged: it may carry a wrong token.
            let message =
                format!("this server needs `Authorization: Bearer <token>` with its {variable}");
            let body = error_body("Unauthorized", &message, None);
            respond(out, 401, &body, &[("www-authenticate", b"Bearer")]);
            return;
        }
        let (status, body) = route(&method, path, query, &env, &tokens);
        respond(out, status, &body, &[]);
    }
}

const ROUTES: &str = "use POST /backup, POST /plan?shards=N, POST /compose, POST /verify?archive=KEY[&deep=true|&integrity=true], \
     POST /restore?archive=KEY&to=BUCKET[/PREFIX][&overwrite=true][&bucketSettings=true] or GET /health";

/// A response: its status and its JSON body.
type Answer = (u16, String);

fn json_body(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".into())
}

fn route(
    method: &Method,
    path: &str,
    query: &str,
    env: &BTreeMap<String, String>,
    tokens: &Tokens,
) -> Answer {
    let query = Query::parse(query);
    let job = |failed: &str, run: &dyn Fn(&Config) -> Result<Answer, Failure>| {
        job(failed, env, tokens, run)
    };
    let ok = |body: String| (200, body);
    match (method, path.trim_end_matches('/')) {
        // 202 when the run stopped at its deadline and the next one continues the archive.
        (Method::Post, "/backup") => job("Backup failed", &|config| {
            backup::run(config).map(|outcome| (outcome.status(), json_body(&outcome)))
        }),
        // A sharded backup: the plan, then each shard's POST /backup (SHARD=i/N), then this.
        (Method::Post, "/plan") => job("Plan failed", &|config| {
            let shards = shard_count(config, &query)?;
            compose::make_plan(config, shards).map(|r| ok(json_body(&r)))
        }),
        (Method::Post, "/compose") => job("Compose failed", &|config| {
            compose::compose(config).map(|r| ok(json_body(&r)))
        }),
        (Method::Post, "/verify") => job("Verify failed", &|config| {
            run_verify(config, &query).map(ok)
        }),
        (Method::Post, "/restore") => job("Restore failed", &|config| {
            run_restore(config, &query).map(ok)
        }),
        (Method::Get, "/health" | "") => (
            200,
            json_body(&Health {
                status: "ok".into(),
                service: "spaces-backup".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            }),
        ),
        (_, "/backup" | "/plan" | "/compose" | "/verify" | "/restore" | "/health") => {
            (405, error_body("Method not allowed", ROUTES, None))
        }
        _ => (404, error_body("Not found", ROUTES, None)),
    }
}

fn error_body(error: &str, message: &str, code: Option<&str>) -> String {
    json_body(&ErrorBody {
        error: error.into(),
        message: message.into(),
        code: code.map(str::to_string),
    })
}

/// Runs one job with the configuration from the environment: a bad configuration is a
/// 400 naming what is wrong, a failure its kind's status with the words for the user.
fn job(
    failed: &str,
    env: &BTreeMap<String, String>,
    tokens: &Tokens,
    run: &dyn Fn(&Config) -> Result<Answer, Failure>,
) -> Answer {
    let config = match load_config(env, tokens) {
        Ok(c) => c,
        Err(e) => {
            log::error("config_invalid", json!({"message": e.message}));
            return (e.status(), error_body(failed, &e.message, Some(e.code())));
        }
    };
    match run(&config) {
        Ok(answer) => answer,
        Err(e) => {
            let message = log::scrub(&e.message);
            let event = format!(
                "{}_failed",
                failed
                    .split(' ')
                    .next()
                    .unwrap_or("job")
                    .to_ascii_lowercase()
            );
            log::error(&event, json!({"code": e.code(), "message": message}));
            (e.status(), error_body(failed, &message, Some(e.code())))
        }
    }
}

/// The configuration from the environment, with the log set up to redact its secrets
/// (the keys and the tokens).
fn load_config(env: &BTreeMap<String, String>, tokens: &Tokens) -> Result<Config, Failure> {
    let config = config::from_env(env)
        .map_err(|e| Failure::new(crate::error::Kind::Configuration, e.to_string()))?;
    let mut secrets = vec![
        config.credentials.access_key.as_str(),
        config.credentials.secret_key.as_str(),
    ];
    secrets.extend(tokens.secrets());
    log::init(config.log_level, &secrets);
    Ok(config)
}

/// A request's query parameters, percent-decoded.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: &str) -> Self {
        Self(
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// A parameter's value; empty counts as absent.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// A flag: present with no value, or `true`, `1`, `yes`.
    fn flag(&self, name: &str) -> bool {
        self.0
            .iter()
            .any(|(k, v)| k == name && matches!(v.as_str(), "true" | "1" | "yes" | ""))
    }
}

fn invalid(message: &str) -> Failure {
    Failure::new(crate::error::Kind::Request, message)
}

/// The shards a plan is asked for: `?shards=N`, else SHARDS.
fn shard_count(config: &Config, query: &Query) -> Result<u32, Failure> {
    let max = compose::plan::MAX_SHARDS;
    match query.get("shards") {
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| invalid(&format!("shards: '{v}' is not a number from 1 to {max}"))),
        None => config
            .shards
            .ok_or_else(|| invalid("say how many shards: POST /plan?shards=N (or set SHARDS)")),
    }
}

/// Compares an archive with the source bucket (see [`crate::verify`]).
fn run_verify(config: &Config, query: &Query) -> Result<String, Failure> {
    let archive = query.get("archive").ok_or_else(|| {
        invalid(
            "name the archive: POST /verify?archive=KEY (its key in DEST_BUCKET, percent-encoded)",
        )
    })?;
    let retries = Rc::new(Cell::new(0));
    let (src, dst) = clients(config, &retries);
    let mut answer = if query.flag("integrity") {
        VerifyAnswer::Integrity(verify::integrity::run(&dst, archive)?)
    } else {
        VerifyAnswer::Compare(verify::run(
            config,
            &src,
            &dst,
            archive,
            query.flag("deep"),
        )?)
    };
    let identical = match &mut answer {
        VerifyAnswer::Integrity(r) => {
            r.retries = retries.get();
            r.identical
        }
        VerifyAnswer::Compare(r) => {
            r.retries = retries.get();
            r.identical
        }
    };
    log::info(
        "verify_done",
        json!({"identical": identical, "archiveName": archive}),
    );
    Ok(json_body(&answer))
}

/// Restores an archive into a bucket (see [`crate::restore`]).
fn run_restore(config: &Config, query: &Query) -> Result<String, Failure> {
    let archive = query
        .get("archive")
        .ok_or_else(|| invalid("name the archive: POST /restore?archive=KEY&to=BUCKET[/PREFIX]"))?;
    let to = query.get("to").ok_or_else(|| {
        invalid("name where to restore: POST /restore?archive=KEY&to=BUCKET[/PREFIX]")
    })?;
    let (bucket, prefix) = restore::parse_target(to).map_err(|e| invalid(&e))?;
    let retries = Rc::new(Cell::new(0));
    let (_, dst) = clients(config, &retries);
    let mut target_config = config.clone();
    target_config.source = restore::target(config, &bucket);
    let (target, _) = clients(&target_config, &retries);
    let mut report = restore::run(
        config,
        &dst,
        &target,
        archive,
        &prefix,
        query.flag("overwrite"),
        query.flag("bucketSettings"),
    )?;
    report.retries = retries.get();
    log::info(
        "restore_done",
        serde_json::to_value(&report).unwrap_or_default(),
    );
    Ok(json_body(&report))
}

fn respond(out: ResponseOutparam, status: u16, body: &str, extra: &[(&str, &[u8])]) {
    let bytes = log::scrub(body).into_bytes();
    let headers = Fields::new();
    let _ = headers.append("content-type", b"application/json");
    for (name, value) in extra {
        let _ = headers.append(name, value);
    }
    let _ = headers.append("content-length", bytes.len().to_string().as_bytes());
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    if let Ok(stream) = outgoing.write() {
        // The client may have gone away; there is nobody left to tell.
        let _ = http::write_all(&stream, &bytes);
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

// Only the component exports the handler: a native build links a shared library whose
// version script cannot hold these export names.
#[cfg(target_arch = "wasm32")]
crate::bindings::export!(Handler with_types_in crate::bindings);
