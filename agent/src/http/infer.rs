//! `POST /v2/models/{m}[/versions/{v}]/infer`: decode, validate against the model, queue,
//! encode. JSON and Triton's binary tensor extension share every step but the byte layout.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use edgefleet_shared::inference::{
    BINARY_DATA, BINARY_DATA_OUTPUT, BINARY_DATA_SIZE, Datatype, INFERENCE_HEADER_CONTENT_LENGTH, InferRequest,
    MODEL_VERSION_HEADER, RequestInput,
};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{ApiError, AppState, resolve};
use crate::inference::{self, InFlight, refused};
use crate::repository::ServedModel;
use crate::tensor::{JsonData, Tensor};

pub(super) async fn infer(
    State(state): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    run(state, model, None, headers, body).await.unwrap_or_else(IntoResponse::into_response)
}

pub(super) async fn infer_version(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    run(state, model, Some(version), headers, body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn run(
    state: AppState,
    name: String,
    version: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let model = resolve(&state, &name, version.as_deref())?;
    let _in_flight = InFlight::enter(&model);
    let bytes = read_body(&headers, body, state.max_body_bytes).await?;
    let started = Instant::now();
    let Decoded { request, inputs, outputs } = decode(&headers, &bytes, &model).map_err(|e| refused(&model, e))?;
    let ran = inference::run(&state, &model, inputs, request.id.as_deref(), started).await?;
    let response = encode(&model, &request, &outputs, &ran.tensors);
    match &response {
        Ok(_) => ran.answered(&model),
        Err(_) => ran.failed(&model),
    }
    response
}

/// Reads a request body up to `limit` (`server.max_body_bytes`), refusing more with 413.
pub(super) async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(limit));
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) {
            ApiError::too_large(limit)
        } else {
            ApiError::bad_request(format!("cannot read request body: {e}"))
        }
    })
}

/// Which outputs to return, and how.
struct OutputChoice {
    index: usize,
    binary: bool,
}

/// A request whose inputs' `data` is still the body's text, decoded into each tensor directly.
type RequestText<'a> = InferRequest<&'a RawValue>;

struct Decoded<'a> {
    request: RequestText<'a>,
    inputs: Vec<Tensor>,
    outputs: Vec<OutputChoice>,
}

fn decode<'a>(headers: &HeaderMap, body: &'a [u8], model: &ServedModel) -> Result<Decoded<'a>, ApiError> {
    let sig = model.engine.signature();
    let (json_part, mut binary) = split_binary(headers, body)?;
    let request: RequestText<'a> =
        serde_json::from_slice(json_part).map_err(|e| ApiError::bad_request(format!("malformed JSON request: {e}")))?;

    let mut given = Vec::with_capacity(request.inputs.len());
    for input in &request.inputs {
        let ix = inference::input_index(model, &input.name)?;
        given.push((ix, decode_input(input, &sig.inputs[ix], &mut binary)?));
    }
    if !binary.is_empty() {
        return Err(ApiError::bad_request(format!(
            "binary part has {} bytes that no input claims (check binary_data_size)",
            binary.len()
        )));
    }
    let inputs = inference::order_inputs(model, given)?;

    let all_binary = bool_param(request.parameters.as_ref(), BINARY_DATA_OUTPUT)?.unwrap_or(false);
    let outputs = match &request.outputs {
        None => (0..sig.outputs.len()).map(|index| OutputChoice { index, binary: all_binary }).collect(),
        Some(wanted) => wanted
            .iter()
            .map(|w| {
                let index = inference::output_index(model, &w.name)?;
                let binary = bool_param(w.parameters.as_ref(), BINARY_DATA)?.unwrap_or(all_binary);
                Ok(OutputChoice { index, binary })
            })
            .collect::<Result<_, ApiError>>()?,
    };
    Ok(Decoded { request, inputs, outputs })
}

/// Splits a body into its JSON header and binary part per `Inference-Header-Content-Length`.
fn split_binary<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), ApiError> {
    let Some(value) = headers.get(INFERENCE_HEADER_CONTENT_LENGTH) else {
        return Ok((body, &[]));
    };
    let len = value.to_str().ok().and_then(|v| v.trim().parse::<usize>().ok()).ok_or_else(|| {
        ApiError::bad_request(format!("{INFERENCE_HEADER_CONTENT_LENGTH} must be a byte count, got {value:?}"))
    })?;
    if len > body.len() {
        return Err(ApiError::bad_request(format!(
            "{INFERENCE_HEADER_CONTENT_LENGTH} is {len} but the body has only {} bytes",
            body.len()
        )));
    }
    Ok(body.split_at(len))
}

fn decode_input(
    input: &RequestInput<&RawValue>,
    spec: &crate::engine::TensorSpec,
    binary: &mut &[u8],
) -> Result<Tensor, ApiError> {
    let name = &input.name;
    let (datatype, shape) = inference::check_input(name, &input.datatype, &input.shape, spec)?;
    let size_param = input.parameters.as_ref().and_then(|p| p.get(BINARY_DATA_SIZE));
    let tensor = match (size_param, &input.data) {
        (Some(size), None) => {
            let size = size.as_u64().and_then(|s| usize::try_from(s).ok()).ok_or_else(|| {
                ApiError::bad_request(format!("input {name:?}: {BINARY_DATA_SIZE} must be a byte count, got {size}"))
            })?;
            if size > binary.len() {
                return Err(ApiError::bad_request(format!(
                    "input {name:?}: {BINARY_DATA_SIZE} is {size} but only {} binary bytes remain",
                    binary.len()
                )));
            }
            let (mine, rest) = binary.split_at(size);
            *binary = rest;
            Tensor::from_binary(datatype, shape, mine)
        }
        (None, Some(data)) => Tensor::from_json_text(datatype, shape, data.get()),
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(format!("input {name:?} has both data and {BINARY_DATA_SIZE}")));
        }
        (None, None) => {
            return Err(ApiError::bad_request(format!("input {name:?} has neither data nor {BINARY_DATA_SIZE}")));
        }
    };
    tensor.map_err(|e| ApiError::bad_request(format!("input {name:?}: {e}")))
}

fn bool_param(params: Option<&Map<String, Value>>, key: &str) -> Result<Option<bool>, ApiError> {
    match params.and_then(|p| p.get(key)) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(ApiError::bad_request(format!("parameter {key} must be true or false, got {other}"))),
    }
}

#[derive(Serialize)]
struct ResponseBody<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<OutputBody<'a>>,
}

#[derive(Serialize)]
struct OutputBody<'a> {
    name: &'a str,
    datatype: Datatype,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinaryParams>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<JsonData<'a>>,
}

#[derive(Serialize)]
struct BinaryParams {
    binary_data_size: usize,
}

fn encode(
    model: &ServedModel,
    request: &RequestText<'_>,
    choice: &[OutputChoice],
    tensors: &[Tensor],
) -> Result<Response, ApiError> {
    let sig = model.engine.signature();
    let mut binary = Vec::new();
    let mut outputs = Vec::with_capacity(choice.len());
    for c in choice {
        let tensor = tensors
            .get(c.index)
            .ok_or_else(|| ApiError::internal(format!("engine returned no output {:?}", sig.outputs[c.index].name)))?;
        let (parameters, data) = if c.binary {
            (Some(BinaryParams { binary_data_size: tensor.write_binary(&mut binary) }), None)
        } else {
            (None, Some(tensor.json_data()))
        };
        outputs.push(OutputBody {
            name: &sig.outputs[c.index].name,
            datatype: tensor.datatype(),
            shape: &tensor.shape,
            parameters,
            data,
        });
    }
    let body =
        ResponseBody { model_name: &model.name, model_version: &model.version, id: request.id.as_deref(), outputs };
    let mut bytes =
        serde_json::to_vec(&body).map_err(|e| ApiError::internal(format!("cannot encode response: {e}")))?;
    let version = HeaderValue::from_str(&model.version).unwrap_or(HeaderValue::from_static("unknown"));
    if binary.is_empty() {
        return Ok((
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
                (header::HeaderName::from_static(MODEL_VERSION_HEADER), version),
            ],
            bytes,
        )
            .into_response());
    }
    let json_len = bytes.len();
    bytes.extend_from_slice(&binary);
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
            (header::HeaderName::from_static(INFERENCE_HEADER_CONTENT_LENGTH), HeaderValue::from(json_len)),
            (header::HeaderName::from_static(MODEL_VERSION_HEADER), version),
        ],
        bytes,
    )
        .into_response())
}
