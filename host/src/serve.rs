//! `spaces-backup serve`: the HTTP interface of `wasmtime serve`, one fresh
//! component instance per request.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::envelope::{host_error_body, one_line_error};
use crate::Runner;

/// Binds `addr` and serves until Ctrl-C.
pub async fn serve(addr: SocketAddr, runner: Runner, env: Vec<(String, String)>) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    eprintln!("spaces-backup: serving HTTP on http://{local}/ (POST /backup, GET /health)");
    serve_listener(listener, runner, env, async {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("spaces-backup: shutting down");
    })
    .await
}

/// Serves requests from `listener` until `shutdown` completes. Requests in
/// flight when it does are dropped with their connections.
pub async fn serve_listener(
    listener: TcpListener,
    runner: Runner,
    env: Vec<(String, String)>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let env = Arc::new(env);
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
    env: &[(String, String)],
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<HyperOutgoingBody> {
    let what = format!("{} {}", req.method(), req.uri().path());
    match runner.call(env, req).await {
        Ok((response, task)) => {
            // Report a failure after the headers went out (e.g. a trap while
            // streaming the body): the client only sees a cut-off body.
            tokio::spawn(async move {
                match task.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => eprintln!("spaces-backup: {what}: {}", one_line_error(&e)),
                    Err(e) => eprintln!("spaces-backup: {what}: component task failed: {e}"),
                }
            });
            response
        }
        Err(e) => {
            let message = one_line_error(&e);
            eprintln!("spaces-backup: {what}: {message}");
            let body = Full::new(Bytes::from(host_error_body(&message)))
                .map_err(|never: Infallible| match never {})
                .boxed_unsync();
            let mut response = hyper::Response::new(body);
            *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            response
        }
    }
}
