//! `spaces-backup serve`: the HTTP interface of `wasmtime serve`, one fresh
//! component instance per request.
//!
//! On top of it: with `BACKUP_TOKEN` (or `RESTORE_TOKEN`) set, requests need
//! their bearer token (the component's rules, `spaces_backup::auth`, checked
//! here before the component runs, and again by it; else 401); without one, only a
//! loopback address may be served. One backup or restore runs at a time:
//! another `POST /backup` or `POST /restore` meanwhile gets 409.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::envelope::{host_error_body, one_line_error};
use crate::Runner;
use spaces_backup::auth::{Access, Tokens};

/// The variable that holds the bearer token `serve` requires. It is the
/// host's: never passed to the component, never logged.
pub const TOKEN_VAR: &str = "BACKUP_TOKEN";

/// Whether `serve` may listen on `addr` with environment `env`: a non-loopback
/// address needs a `BACKUP_TOKEN`, or anyone who can reach it could start
/// backups.
pub fn check_listen_addr(addr: SocketAddr, env: &[(String, String)]) -> Result<()> {
    if addr.ip().to_canonical().is_loopback() || token_of(env).is_some() {
        return Ok(());
    }
    bail!(
        "refusing to serve on {addr}, which is not a loopback address, without {TOKEN_VAR}: \
         set {TOKEN_VAR} (requests then need `Authorization: Bearer <token>`) \
         or listen on 127.0.0.1"
    )
}

/// The token, if set and not empty.
fn token_of(env: &[(String, String)]) -> Option<&str> {
    crate::env::get(env, TOKEN_VAR).filter(|t| !t.is_empty())
}

/// Binds `addr` and serves until Ctrl-C. Refuses a non-loopback `addr`
/// without `BACKUP_TOKEN` in `env` (see [`check_listen_addr`]).
pub async fn serve(addr: SocketAddr, runner: Runner, env: Vec<(String, String)>) -> Result<()> {
    check_listen_addr(addr, &env)?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    eprintln!("spaces-backup: serving HTTP on http://{local}/ (POST /backup, /plan, /compose, /verify, /restore; GET /health)");
    serve_listener(listener, runner, env, async {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("spaces-backup: shutting down");
    })
    .await
}

/// What every connection of a server shares.
struct State {
    /// The component's environment, without `BACKUP_TOKEN`.
    env: Vec<(String, String)>,
    tokens: Tokens,
    /// Held by the running backup, from its request until its instance ends.
    backup: Arc<tokio::sync::Mutex<()>>,
}

/// Serves requests from `listener` until `shutdown` completes. Requests in
/// flight when it does are dropped with their connections.
///
/// `env` is the component's environment, except `BACKUP_TOKEN`: if set, it
/// is the token requests need (see the module documentation).
pub async fn serve_listener(
    listener: TcpListener,
    runner: Runner,
    env: Vec<(String, String)>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let tokens = Tokens::from_env(&env.iter().cloned().collect());
    let env = Arc::new(State {
        // The component checks the tokens too, route by route.
        env,
        tokens,
        backup: Arc::new(tokio::sync::Mutex::new(())),
    });
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // E.g. EMFILE: keep serving the connections we have.
                    eprintln!("spaces-backup: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let runner = runner.clone();
        let env = env.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let runner = runner.clone();
                let env = env.clone();
                async move { Ok::<_, Infallible>(handle_one(&runner, &env, req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("spaces-backup: error serving {peer}: {e}");
            }
        });
    }
}

async fn handle_one(
    runner: &Runner,
    state: &State,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<HyperOutgoingBody> {
    let what = format!("{} {}", req.method(), req.uri().path());
    let authorization = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if let Err(variable) = state
        .tokens
        .check(Access::of(req.uri().path()), authorization)
    {
        eprintln!("spaces-backup: {what}: refused (401): missing or wrong bearer token");
        let body = serde_json::json!({
            "error": "Unauthorized",
            "message": format!("this server needs `Authorization: Bearer <token>` with its {variable}"),
        });
        let mut response = json_response(http::StatusCode::UNAUTHORIZED, body.to_string());
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    // Backups, restores, plans and composes write: one at a time.
    let writes = matches!(
        req.uri().path(),
        "/backup" | "/restore" | "/plan" | "/compose"
    );
    let running = if req.method() == http::Method::POST && writes {
        match state.backup.clone().try_lock_owned() {
            Ok(guard) => Some(guard),
            Err(_) => {
                eprintln!(
                    "spaces-backup: {what}: refused (409): a backup or restore is already running"
                );
                let body = serde_json::json!({
                    "error": "Conflict",
                    "message": "a backup or restore is already running",
                });
                return json_response(http::StatusCode::CONFLICT, body.to_string());
            }
        }
    } else {
        None
    };
    match runner.call(&state.env, req).await {
        Ok((response, task)) => {
            // Report a failure after the headers went out (e.g. a trap while
            // streaming the body): the client only sees a cut-off body.
            tokio::spawn(async move {
                match task.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => eprintln!("spaces-backup: {what}: {}", one_line_error(&e)),
                    Err(e) => eprintln!("spaces-backup: {what}: component task failed: {e}"),
                }
                // The backup is over only when its instance is.
                drop(running);
            });
            response
        }
        Err(e) => {
            let message = one_line_error(&e);
            eprintln!("spaces-backup: {what}: {message}");
            json_response(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                host_error_body(&message),
            )
        }
    }
}

fn json_response(status: http::StatusCode, body: String) -> hyper::Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from(body))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync();
    let mut response = hyper::Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(token: Option<&str>) -> Vec<(String, String)> {
        token
            .map(|t| vec![(TOKEN_VAR.to_string(), t.to_string())])
            .unwrap_or_default()
    }

    #[test]
    fn non_loopback_needs_a_token() {
        for addr in ["127.0.0.1:8080", "[::1]:8080", "127.0.0.2:0"] {
            assert!(check_listen_addr(addr.parse().unwrap(), &env(None)).is_ok());
        }
        for addr in ["0.0.0.0:8080", "[::]:8080", "192.168.1.10:80"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let err = check_listen_addr(addr, &env(None)).unwrap_err().to_string();
            assert!(err.contains(TOKEN_VAR) && err.contains("loopback"), "{err}");
            assert!(check_listen_addr(addr, &env(Some(""))).is_err());
            assert!(check_listen_addr(addr, &env(Some("s3cret"))).is_ok());
        }
    }
}
