//! `POST /v2/models/{m}/feedback`: ground-truth labels for earlier requests, by request id.
//!
//! Body: `{"id": "req-1", "label": 2}` or `{"feedback": [{"id": ..., "label": ...}, ...]}`.
//! A label matched to a recent prediction of the serving version counts towards its accuracy;
//! every label also travels with the next telemetry batch, so the controller can attach it to
//! the sampled row with the same request id.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, resolve};

/// Labels accepted per request.
const MAX_LABELS: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Label {
    id: String,
    label: Value,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Body {
    One(Label),
    Many { feedback: Vec<Label> },
}

pub(super) async fn feedback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Json<Value>, ApiError> {
    let model = resolve(&state, &name, None)?;
    let body = super::infer::read_body(&headers, body, state.max_body_bytes).await?;
    let Some(recorder) = model.telemetry.get() else {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            message: "telemetry is off for this model (standalone serving, or telemetry.enabled = false)".into(),
        });
    };
    let labels = match serde_json::from_slice::<Body>(&body) {
        Ok(Body::One(l)) => vec![l],
        Ok(Body::Many { feedback }) => feedback,
        Err(_) => {
            return Err(ApiError::bad_request(
                r#"expected {"id": "<request id>", "label": <class>} or {"feedback": [...]}"#,
            ));
        }
    };
    if labels.len() > MAX_LABELS {
        return Err(ApiError::bad_request(format!("at most {MAX_LABELS} labels per request")));
    }
    let parsed: Vec<(String, u64)> = labels
        .into_iter()
        .map(|l| {
            let class = match &l.label {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.parse::<u64>().ok(),
                _ => None,
            };
            match class {
                Some(c) if !l.id.is_empty() => Ok((l.id, c)),
                _ => Err(ApiError::unprocessable(format!(
                    "feedback for {:?}: the id must be non-empty and the label a class number, got {}",
                    l.id, l.label
                ))),
            }
        })
        .collect::<Result<_, _>>()?;
    let matched = parsed.iter().filter(|(id, label)| recorder.feedback(id, *label)).count();
    metrics::counter!(crate::metric::FEEDBACK_LABELS).increment(parsed.len() as u64);
    Ok(Json(json!({ "accepted": parsed.len(), "matched": matched })))
}
