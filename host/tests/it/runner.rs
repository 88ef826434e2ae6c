//! The runner against the embedded component: a request, memory metering,
//! a memory cap, and the envelope of what comes back.

use spaces_backup_host::{envelope, Runner};

const NO_ENV: &[(&str, &str)] = &[];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_through_the_embedded_component() {
    let runner = Runner::embedded().expect("the embedded component loads");
    let handled = runner
        .handle_measured(NO_ENV, "GET", "/health", "")
        .await
        .expect("GET /health runs");
    assert_eq!(
        handled.status,
        200,
        "{}",
        String::from_utf8_lossy(&handled.body)
    );
    assert!(handled.guest_memory_bytes > 0, "memory is metered");
    let v = envelope(handled.status, &handled.body);
    assert_eq!(v["statusCode"], 200);
    assert!(v["body"].is_object(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_cap_is_enforced() {
    let runner = Runner::embedded()
        .expect("the embedded component loads")
        .with_memory_limit(Some(64 * 1024));
    let err = runner
        .handle(NO_ENV, "GET", "/health", "")
        .await
        .expect_err("64 KiB is too little for any Rust component");
    let text = format!("{err:#}");
    assert!(text.contains("memory limit"), "{text}");
}
