//! KServe v2 / Open Inference Protocol wire types.
//!
//! Field names and shapes follow the [Open Inference Protocol REST spec] and Triton's
//! [binary tensor extension]. Requests keep `datatype` as a string and `shape` as signed
//! integers so that a server can answer a bad value with a precise error instead of a generic
//! deserialisation failure.
//!
//! [Open Inference Protocol REST spec]: https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/
//! [binary tensor extension]: https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_binary_data.md

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Header giving the length of the JSON part of a binary-extension request or response.
pub const INFERENCE_HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";
/// Response header naming the model version that produced an inference response.
pub const MODEL_VERSION_HEADER: &str = "x-edgefleet-model-version";
/// Tensor parameter: number of bytes of this tensor in the binary part of the body.
pub const BINARY_DATA_SIZE: &str = "binary_data_size";
/// Output parameter: return this output in the binary part of the response.
pub const BINARY_DATA: &str = "binary_data";
/// Request parameter: return every output in the binary part of the response.
pub const BINARY_DATA_OUTPUT: &str = "binary_data_output";

/// A tensor element type as named by the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Datatype {
    /// One byte per element, 0 or 1.
    Bool,
    /// Unsigned 8-bit integer.
    Uint8,
    /// Unsigned 16-bit integer.
    Uint16,
    /// Unsigned 32-bit integer.
    Uint32,
    /// Unsigned 64-bit integer.
    Uint64,
    /// Signed 8-bit integer.
    Int8,
    /// Signed 16-bit integer.
    Int16,
    /// Signed 32-bit integer.
    Int32,
    /// Signed 64-bit integer.
    Int64,
    /// IEEE 754 half precision.
    Fp16,
    /// IEEE 754 single precision.
    Fp32,
    /// IEEE 754 double precision.
    Fp64,
    /// Length-prefixed byte strings.
    Bytes,
}

impl Datatype {
    /// Every datatype, in the order the spec lists them.
    pub const ALL: [Datatype; 13] = [
        Datatype::Bool,
        Datatype::Uint8,
        Datatype::Uint16,
        Datatype::Uint32,
        Datatype::Uint64,
        Datatype::Int8,
        Datatype::Int16,
        Datatype::Int32,
        Datatype::Int64,
        Datatype::Fp16,
        Datatype::Fp32,
        Datatype::Fp64,
        Datatype::Bytes,
    ];

    /// The protocol's name for this datatype, e.g. `"FP32"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Datatype::Bool => "BOOL",
            Datatype::Uint8 => "UINT8",
            Datatype::Uint16 => "UINT16",
            Datatype::Uint32 => "UINT32",
            Datatype::Uint64 => "UINT64",
            Datatype::Int8 => "INT8",
            Datatype::Int16 => "INT16",
            Datatype::Int32 => "INT32",
            Datatype::Int64 => "INT64",
            Datatype::Fp16 => "FP16",
            Datatype::Fp32 => "FP32",
            Datatype::Fp64 => "FP64",
            Datatype::Bytes => "BYTES",
        }
    }

    /// Bytes per element in the binary encoding, or `None` for variable-size `BYTES`.
    pub const fn element_size(self) -> Option<usize> {
        match self {
            Datatype::Bool | Datatype::Uint8 | Datatype::Int8 => Some(1),
            Datatype::Uint16 | Datatype::Int16 | Datatype::Fp16 => Some(2),
            Datatype::Uint32 | Datatype::Int32 | Datatype::Fp32 => Some(4),
            Datatype::Uint64 | Datatype::Int64 | Datatype::Fp64 => Some(8),
            Datatype::Bytes => None,
        }
    }
}

impl fmt::Display for Datatype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A datatype name that the protocol does not define.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown datatype {0:?} (expected one of BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64, BYTES)")]
pub struct UnknownDatatype(pub String);

impl FromStr for Datatype {
    type Err = UnknownDatatype;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Datatype::ALL.into_iter().find(|d| d.as_str() == s).ok_or_else(|| UnknownDatatype(s.to_owned()))
    }
}

/// `POST /v2/models/{m}[/versions/{v}]/infer` request body (the JSON part). `D` is how each
/// input's `data` is held: a parsed `Value` by default; the agent reads it as the body's own
/// text (`&serde_json::value::RawValue`) and decodes the tensor from that directly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "D: Deserialize<'de>"))]
pub struct InferRequest<D = Value> {
    /// Request id, echoed in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Request parameters (e.g. `binary_data_output`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    /// Input tensors.
    pub inputs: Vec<RequestInput<D>>,
    /// Outputs to return; all outputs when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<RequestOutput>>,
}

/// One input tensor of an [`InferRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "D: Deserialize<'de>"))]
pub struct RequestInput<D = Value> {
    /// Input name, as in the model metadata.
    pub name: String,
    /// Tensor shape.
    pub shape: Vec<i64>,
    /// Datatype name, e.g. `"FP32"`.
    pub datatype: String,
    /// Tensor parameters (e.g. `binary_data_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    /// Row-major data, flat or nested; absent when the tensor is in the binary part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<D>,
}

/// One requested output of an [`InferRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestOutput {
    /// Output name, as in the model metadata.
    pub name: String,
    /// Output parameters (e.g. `binary_data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
}

/// Inference response body (the JSON part).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferResponse {
    /// Model that answered.
    pub model_name: String,
    /// Version that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// The request's id, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Response parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    /// Output tensors.
    pub outputs: Vec<ResponseOutput>,
}

/// One output tensor of an [`InferResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseOutput {
    /// Output name.
    pub name: String,
    /// Tensor shape.
    pub shape: Vec<usize>,
    /// Element type.
    pub datatype: Datatype,
    /// Tensor parameters (`binary_data_size` when the data is in the binary part).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    /// Flat row-major data; absent when the tensor is in the binary part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Vec<Value>>,
}

/// `GET /v2` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerMetadata {
    /// Server name.
    pub name: String,
    /// Server version.
    pub version: String,
    /// Protocol extensions the server supports.
    pub extensions: Vec<String>,
}

/// `GET /v2/models/{m}[/versions/{v}]` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMetadata {
    /// Model name.
    pub name: String,
    /// Versions available under this name.
    pub versions: Vec<String>,
    /// Inference engine, e.g. `"tract_onnx"` or `"onnxruntime_onnx"`.
    pub platform: String,
    /// Input tensors.
    pub inputs: Vec<TensorMetadata>,
    /// Output tensors.
    pub outputs: Vec<TensorMetadata>,
}

/// Name, datatype and shape of a model input or output; `-1` marks a dynamic dimension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorMetadata {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub datatype: Datatype,
    /// Shape; `-1` for a dimension that is only known at run time.
    pub shape: Vec<i64>,
}

/// One entry of `GET /v2/repository/index`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryEntry {
    /// Model name.
    pub name: String,
    /// Version served.
    pub version: String,
    /// `READY`, `LOADING` or `UNAVAILABLE`.
    pub state: String,
}

/// Body of every error response of the agent and the controller: `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// What was wrong, in words the caller can act on.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datatype_names_round_trip() {
        for d in Datatype::ALL {
            assert_eq!(d.as_str().parse::<Datatype>(), Ok(d));
            assert_eq!(serde_json::to_value(d).ok(), Some(Value::from(d.as_str())));
        }
        assert!("FLOAT".parse::<Datatype>().is_err());
    }

    #[test]
    fn request_rejects_unknown_fields() {
        let body = r#"{"inputs": [], "input": []}"#;
        assert!(serde_json::from_str::<InferRequest>(body).is_err());
    }
}
