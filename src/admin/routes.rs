//! The endpoints of DESIGN.md's admin table.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{middleware, Router};
use serde::Serialize;

use super::{auth, internal, MAX_BODY};
use crate::metrics::fallback::{Seen, SLOTS};

/// The report is made by the reloader between refreshes; a request waits this long.
const REPORT_WAIT: Duration = Duration::from_secs(60);

type Shared = State<Arc<super::State>>;

pub fn router(state: Arc<super::State>) -> Router {
    let guarded = Router::new()
        .route("/", get(super::page::index))
        .route("/upload", post(super::page::upload_form))
        .route("/metrics", get(metrics))
        .route("/api/v1/certs", get(certs))
        .route(
            "/api/v1/certs/{name}",
            put(super::upload::put).delete(super::upload::delete),
        )
        .route("/api/v1/fallback-names", get(fallback_names))
        .route("/api/v1/domains", get(domains))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::require,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/login", post(super::page::login))
        .route("/logout", post(super::page::logout))
        .merge(guarded)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            super::guard::check,
        ))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): Shared) -> Response {
    match state.ready.load(Ordering::Acquire) {
        true => (StatusCode::OK, "ready\n").into_response(),
        false => (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: the listeners or the store are not ready yet\n",
        )
            .into_response(),
    }
}

async fn not_found() -> Response {
    let body = serde_json::json!({ "error": "no such endpoint" });
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

/// The text exposition: OpenMetrics when the client asks for it (Prometheus does), else
/// Prometheus' text format. Made on a blocking thread (with per-entry series at 100,000
/// entries it is megabytes).
async fn metrics(State(state): Shared, headers: HeaderMap) -> Response {
    let exposition = Arc::clone(&state.exposition);
    let openmetrics = headers.get_all(header::ACCEPT).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.contains("application/openmetrics-text"))
    });
    let encoded = tokio::task::spawn_blocking(move || match openmetrics {
        true => exposition.encode(),
        false => exposition.encode_prometheus(),
    })
    .await;
    let kind = match openmetrics {
        true => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        false => "text/plain; version=0.0.4; charset=utf-8",
    };
    match encoded {
        Ok(text) => ([(header::CONTENT_TYPE, kind)], text).into_response(),
        Err(_) => internal("the metrics could not be encoded"),
    }
}

/// The report of `mailfront certs --format json`, from the catalog that serves.
async fn certs(State(state): Shared) -> Response {
    let report = tokio::time::timeout(REPORT_WAIT, state.reports.get()).await;
    let Ok(Some(report)) = report else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the certificate report is not available (the store is reloading or stopped); \
             try again\n",
        )
            .into_response();
    };
    let shared = Arc::clone(&state);
    let body = tokio::task::spawn_blocking(move || {
        let view = crate::inspect::certs::view_of(&shared.config, report);
        serde_json::to_vec_pretty(&view)
    })
    .await;
    match body {
        Ok(Ok(body)) => json(body),
        _ => internal("the report could not be encoded"),
    }
}

#[derive(Serialize)]
struct FallbackNames {
    /// The names, most counted first.
    names: Vec<Seen>,
    /// How many names the report keeps at most.
    capacity: usize,
    /// Names not counted because handshakes came faster than they could be.
    dropped: u64,
}

/// The names served the server-wide certificate (or refused by strict SNI).
async fn fallback_names(State(state): Shared) -> Response {
    let names = state
        .names
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .top();
    let body = FallbackNames {
        names,
        capacity: SLOTS,
        dropped: state.recorder.dropped(),
    };
    match serde_json::to_vec_pretty(&body) {
        Ok(body) => json(body),
        Err(_) => internal("the names could not be encoded"),
    }
}

/// Every domain's last readiness report, as `mailfront domains --format json` prints it.
async fn domains(State(state): Shared) -> Response {
    let Some(domains) = &state.domains else {
        return (
            StatusCode::NOT_FOUND,
            "domain readiness checks are off: set [onboarding] (check_interval above 0)\n",
        )
            .into_response();
    };
    let domains = Arc::clone(domains);
    let body = tokio::task::spawn_blocking(move || serde_json::to_vec_pretty(&domains.all())).await;
    match body {
        Ok(Ok(body)) => json(body),
        _ => internal("the domain reports could not be encoded"),
    }
}

fn json(body: Vec<u8>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(body),
    )
        .into_response()
}
