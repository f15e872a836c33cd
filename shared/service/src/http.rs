//! What both daemons' HTTP layers share (feature `http`).

use axum::http::StatusCode;
use axum::response::Response;

/// Makes every error answer `{"error": ...}` JSON: handlers answer their own error type
/// already, but axum's rejections (a path segment that is not a number or not UTF-8, a query
/// that does not parse, a body over a limit) and anything else a layer answers are plain text.
/// Those are rewritten by `answer(status, text)`, keeping their status and wording; success and
/// JSON responses pass untouched.
pub async fn json_errors(response: Response, answer: impl FnOnce(StatusCode, String) -> Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_owned() } else { text };
    answer(status, message)
}
