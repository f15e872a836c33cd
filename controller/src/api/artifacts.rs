//! `GET /api/v1/artifacts/{sha256}`: the zstd-compressed bytes of an artifact, with HTTP Range
//! support so an interrupted download resumes, and a strong `ETag`; for devices, a redirect to
//! the object store's presigned URL when it hands them out.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use edgefleet_shared::api::tokens::Role;

use super::{ApiError, AppState};
use crate::auth::Caller;
use crate::store::{Object, StoreError};

/// Header: SHA-256 of the uncompressed artifact.
const UNCOMPRESSED_SHA256: &str = "x-edgefleet-uncompressed-sha256";
/// Header: uncompressed size.
const UNCOMPRESSED_SIZE: &str = "x-edgefleet-uncompressed-size";

/// Downloads an artifact (compressed). Supports one `Range: bytes=...` range.
#[utoipa::path(get, path = "/api/v1/artifacts/{sha256}",
    responses((status = 200, description = "zstd bytes"), (status = 206, description = "a byte range"), (status = 404, body = edgefleet_shared::api::ErrorBody), (status = 416, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn download(
    caller: Caller,
    State(state): State<AppState>,
    Path(sha256): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    serve_artifact(&state, &sha256, &headers, Delivery::Here).await
}

/// How a device may be given an artifact's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delivery {
    /// From this controller (operators, and devices that could not reach the store).
    Here,
    /// A redirect to a presigned URL of the object store when it hands them out, else from here.
    Redirect,
}

/// Serves an artifact's compressed bytes honouring `Range` and `If-None-Match`; shared by the
/// operator route and the device route.
pub(super) async fn serve_artifact(
    state: &AppState,
    sha256: &str,
    headers: &HeaderMap,
    delivery: Delivery,
) -> Result<Response, ApiError> {
    let info = state.registry.artifact(sha256.to_owned()).await?;
    let object = Object::Artifact(&info.sha256);
    if delivery == Delivery::Redirect
        && let Some(resp) = redirect(state, object).await
    {
        return Ok(resp);
    }
    let mut resp = serve_object(state, object, info.compressed_size, &info.compressed_sha256, headers).await?;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&info.sha256) {
        h.insert(UNCOMPRESSED_SHA256, v);
    }
    h.insert(UNCOMPRESSED_SIZE, HeaderValue::from(info.size));
    Ok(resp)
}

/// Serves a delta (a zstd frame against a base the device holds) from the store's blobs, with
/// `Range` and `If-None-Match` as for artifacts.
pub(super) async fn serve_delta(
    state: &AppState,
    sha256: &str,
    headers: &HeaderMap,
    delivery: Delivery,
) -> Result<Response, ApiError> {
    let object = Object::Blob(sha256);
    let len = state.registry.store().size(object).await.map_err(|e| match e {
        StoreError::NotFound(_) => ApiError::not_found(format!("no delta {sha256}")),
        e => store_failed(&e),
    })?;
    if delivery == Delivery::Redirect
        && let Some(resp) = redirect(state, object).await
    {
        return Ok(resp);
    }
    serve_object(state, object, len, sha256, headers).await
}

/// `307` to a presigned URL of the object, when the store hands them out; `None` (serve the bytes
/// here) when it does not or cannot sign one now.
async fn redirect(state: &AppState, object: Object<'_>) -> Option<Response> {
    match state.registry.store().presign(object).await {
        Ok(Some(url)) => {
            let location = HeaderValue::from_str(&url).ok()?;
            metrics::counter!(crate::metric::ARTIFACT_REDIRECTS).increment(1);
            let mut resp = StatusCode::TEMPORARY_REDIRECT.into_response();
            resp.headers_mut().insert(header::LOCATION, location);
            resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Some(resp)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(object = object.sha256(), error = %e, "Cannot presign; serving the bytes through the controller.");
            None
        }
    }
}

fn store_failed(e: &StoreError) -> ApiError {
    tracing::error!(error = %e, "Artifact store failed.");
    ApiError::unavailable("the artifact store failed; try again")
}

/// Serves the `len` bytes of `object` (whose digest is `sha256`, the strong ETag), or the one
/// range `Range` asks for.
async fn serve_object(
    state: &AppState,
    object: Object<'_>,
    len: u64,
    sha256: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let etag = format!("\"{sha256}\"");
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let range = match headers.get(header::RANGE) {
        None => None,
        Some(v) => match parse_range(v.to_str().unwrap_or_default(), len) {
            RangeSpec::Whole => None,
            RangeSpec::Part(start, end) => Some((start, end)),
            RangeSpec::Unsatisfiable => {
                let mut resp =
                    ApiError { status: StatusCode::RANGE_NOT_SATISFIABLE, message: format!("range outside 0..{len}") }
                        .into_response();
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return Ok(resp);
            }
        },
    };
    let (status, start, count) = match range {
        Some((s, e)) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        None => (StatusCode::OK, 0, len),
    };
    let stream = state.registry.store().stream(object, start..start + count).await.map_err(|e| match e {
        StoreError::NotFound(_) => {
            tracing::error!(object = object.sha256(), "Artifact missing from the store.");
            ApiError::internal("artifact missing from the store")
        }
        e => store_failed(&e),
    })?;
    let body = Body::from_stream(stream);
    metrics::counter!(crate::metric::ARTIFACT_BYTES_SERVED).increment(count);
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/zstd"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", start + count - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok(resp)
}

#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    Whole,
    Part(u64, u64),
    Unsatisfiable,
}

/// Parses one `bytes=` range (RFC 9110 §14.1.2) against a length. Multiple ranges and other
/// units are answered with the whole body, which the RFC allows.
fn parse_range(value: &str, len: u64) -> RangeSpec {
    let Some(spec) = value.trim().strip_prefix("bytes=") else { return RangeSpec::Whole };
    if spec.contains(',') {
        return RangeSpec::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else { return RangeSpec::Unsatisfiable };
    let (a, b) = (a.trim(), b.trim());
    let parsed = match (a.is_empty(), b.is_empty()) {
        (true, false) => {
            b.parse::<u64>().ok().filter(|&n| n > 0).map(|n| (len.saturating_sub(n), len.saturating_sub(1)))
        }
        (false, true) => a.parse::<u64>().ok().map(|s| (s, len.saturating_sub(1))),
        (false, false) => match (a.parse::<u64>(), b.parse::<u64>()) {
            (Ok(s), Ok(e)) if s <= e => Some((s, e.min(len.saturating_sub(1)))),
            _ => None,
        },
        (true, true) => None,
    };
    match parsed {
        Some((s, e)) if len > 0 && s < len && s <= e => RangeSpec::Part(s, e),
        _ => RangeSpec::Unsatisfiable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range("bytes=0-9", 100), RangeSpec::Part(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), RangeSpec::Part(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), RangeSpec::Part(90, 99));
        assert_eq!(parse_range("bytes=95-200", 100), RangeSpec::Part(95, 99));
        assert_eq!(parse_range("bytes=100-", 100), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 100), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeSpec::Whole);
        assert_eq!(parse_range("items=0-1", 100), RangeSpec::Whole);
    }
}
