//! Every API request gets a tracing span (`http{method, route, status}`) and is counted in
//! `edgefleet_controller_http_requests_total{method, route, status}` and timed in
//! `edgefleet_controller_http_request_seconds{method, route}`. Routes are the templates
//! (`/api/v1/models/{name}`), never the raw path, so hostile paths cannot blow up label
//! cardinality; anything no route matched is `unmatched`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::metric;

/// The route template that answered, handed from the inner layer to the outer one.
#[derive(Debug, Clone)]
struct Route(String);

/// Inner layer (`route_layer`): notes which route template matched.
pub(super) async fn tag_route(matched: MatchedPath, request: Request, next: Next) -> Response {
    let route = matched.as_str().to_owned();
    let mut response = next.run(request).await;
    response.extensions_mut().insert(Route(route));
    response
}

/// Outer layer: the span, the counter and the timer of every request.
pub(super) async fn observe(request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_owned();
    let span = tracing::info_span!("http", method = %method, route = Empty, status = Empty);
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let route = response.extensions().get::<Route>().map_or("unmatched", |r| r.0.as_str()).to_owned();
    let status = response.status();
    span.record("route", route.as_str());
    span.record("status", status.as_u16());
    let seconds = started.elapsed().as_secs_f64();
    tracing::debug!(parent: &span, ms = seconds * 1000.0, "Request answered.");
    metrics::counter!(metric::HTTP_REQUESTS, "method" => method.clone(), "route" => route.clone(),
        "status" => status.as_str().to_owned())
    .increment(1);
    metrics::histogram!(metric::HTTP_REQUEST_SECONDS, "method" => method, "route" => route).record(seconds);
    response
}
