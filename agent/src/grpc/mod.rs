//! The KServe v2 / Open Inference Protocol gRPC API (`inference.GRPCInferenceService`, with
//! Triton's `ModelConfig` and `ModelStatistics`) on its own port, over the same repository,
//! workers, telemetry and metrics as HTTP: a request is decoded here and run by
//! [`crate::inference`]. Errors carry the status code matching the HTTP one (400/422 →
//! `INVALID_ARGUMENT`, 404 → `NOT_FOUND`, 503 → `UNAVAILABLE`, 504 → `DEADLINE_EXCEEDED`, 500 →
//! `INTERNAL`).

mod codec;

use std::net::SocketAddr;
use std::time::Instant;

use axum::http::StatusCode;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::http::{ApiError, AppState, resolve};
use crate::inference::{self, InFlight, refused};
use crate::repository::{ModelState, ServedModel};

/// The generated messages and service (`proto/grpc_service.proto`).
#[allow(missing_docs, unreachable_pub, missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("inference");
}

use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let code = match e.status {
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => tonic::Code::InvalidArgument,
            StatusCode::NOT_FOUND => tonic::Code::NotFound,
            StatusCode::PAYLOAD_TOO_LARGE => tonic::Code::ResourceExhausted,
            StatusCode::SERVICE_UNAVAILABLE => tonic::Code::Unavailable,
            StatusCode::GATEWAY_TIMEOUT => tonic::Code::DeadlineExceeded,
            _ => tonic::Code::Internal,
        };
        Status::new(code, e.message)
    }
}

/// The service over the agent's shared state.
#[derive(Debug, Clone)]
pub struct Service {
    state: AppState,
}

fn version(v: &str) -> Option<&str> {
    (!v.is_empty()).then_some(v)
}

fn counted<T>(method: &'static str, result: Result<T, ApiError>) -> Result<Response<T>, Status> {
    let status = result.map(Response::new).map_err(Status::from);
    let code = match &status {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    };
    metrics::counter!(crate::metric::GRPC_REQUESTS, "method" => method, "code" => format!("{code:?}")).increment(1);
    status
}

fn tensor_metadata(t: &crate::engine::TensorSpec) -> pb::model_metadata_response::TensorMetadata {
    let m = t.metadata();
    pb::model_metadata_response::TensorMetadata { name: m.name, datatype: m.datatype.to_string(), shape: m.shape }
}

impl Service {
    /// Decodes a request, runs it and encodes the answer.
    async fn infer(&self, request: pb::ModelInferRequest) -> Result<pb::ModelInferResponse, ApiError> {
        let model = resolve(&self.state, &request.model_name, version(&request.model_version))?;
        let _in_flight = InFlight::enter(&model);
        let started = Instant::now();
        let inputs = decode(&model, &request).map_err(|e| refused(&model, e))?;
        let outputs: Vec<usize> = if request.outputs.is_empty() {
            (0..model.engine.signature().outputs.len()).collect()
        } else {
            let wanted = request.outputs.iter().map(|o| inference::output_index(&model, &o.name));
            wanted.collect::<Result<_, _>>().map_err(|e| refused(&model, e))?
        };
        let id = version(&request.id);
        let ran = inference::run(&self.state, &model, inputs, id, started).await?;
        let response = encode(&model, request.id, &outputs, &ran.tensors);
        match &response {
            Ok(_) => ran.answered(&model),
            Err(_) => ran.failed(&model),
        }
        response
    }
}

/// The answer to a run: the chosen outputs, in order, as raw contents.
fn encode(
    model: &ServedModel,
    id: String,
    outputs: &[usize],
    tensors: &[crate::tensor::Tensor],
) -> Result<pb::ModelInferResponse, ApiError> {
    let sig = model.engine.signature();
    let mut response = pb::ModelInferResponse {
        model_name: model.name.clone(),
        model_version: model.version.clone(),
        id,
        ..Default::default()
    };
    for &ix in outputs {
        let tensor = tensors
            .get(ix)
            .ok_or_else(|| ApiError::internal(format!("engine returned no output {:?}", sig.outputs[ix].name)))?;
        response.outputs.push(pb::model_infer_response::InferOutputTensor {
            name: sig.outputs[ix].name.clone(),
            datatype: tensor.datatype().to_string(),
            shape: tensor.shape.iter().map(|&d| d as i64).collect(),
            ..Default::default()
        });
        response.raw_output_contents.push(codec::raw(tensor));
    }
    Ok(response)
}

/// The request's inputs as tensors in the model's order.
fn decode(model: &ServedModel, request: &pb::ModelInferRequest) -> Result<Vec<crate::tensor::Tensor>, ApiError> {
    let sig = model.engine.signature();
    let raw = &request.raw_input_contents;
    if !raw.is_empty() && raw.len() != request.inputs.len() {
        return Err(ApiError::bad_request(format!(
            "raw_input_contents has {} entries for {} inputs (one per input, in order)",
            raw.len(),
            request.inputs.len()
        )));
    }
    let mut given = Vec::with_capacity(request.inputs.len());
    for (i, input) in request.inputs.iter().enumerate() {
        let name = &input.name;
        let ix = inference::input_index(model, name)?;
        let (datatype, shape) = inference::check_input(name, &input.datatype, &input.shape, &sig.inputs[ix])?;
        let tensor = match (raw.get(i), &input.contents) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(format!("input {name:?} has both contents and raw_input_contents")));
            }
            (Some(bytes), None) => {
                crate::tensor::Tensor::from_binary(datatype, shape, bytes).map_err(|e| e.to_string())
            }
            (None, Some(contents)) => codec::from_contents(datatype, shape, contents),
            (None, None) => Err("neither contents nor raw_input_contents".to_owned()),
        };
        given.push((ix, tensor.map_err(|e| ApiError::bad_request(format!("input {name:?}: {e}")))?));
    }
    inference::order_inputs(model, given)
}

fn model_config(model: &ServedModel) -> pb::ModelConfig {
    let sig = model.engine.signature();
    let data_type =
        |d| pb::DataType::from_str_name(crate::http::triton_type(d)).unwrap_or(pb::DataType::TypeInvalid) as i32;
    let platform = model.engine.platform();
    pb::ModelConfig {
        name: model.name.clone(),
        platform: platform.to_owned(),
        backend: platform.trim_end_matches("_onnx").to_owned(),
        version_policy: Some(pb::ModelVersionPolicy {
            policy_choice: Some(pb::model_version_policy::PolicyChoice::Latest(pb::model_version_policy::Latest {
                num_versions: 1,
            })),
        }),
        max_batch_size: 0,
        input: sig
            .inputs
            .iter()
            .map(|t| {
                let m = t.metadata();
                pb::ModelInput { name: m.name, data_type: data_type(m.datatype), dims: m.shape }
            })
            .collect(),
        output: sig
            .outputs
            .iter()
            .map(|t| {
                let m = t.metadata();
                pb::ModelOutput { name: m.name, data_type: data_type(m.datatype), dims: m.shape }
            })
            .collect(),
    }
}

fn model_statistics(model: &ServedModel) -> pb::ModelStatistics {
    let s = crate::http::stats_snapshot(model);
    let d = |(count, ns): (u64, u64)| Some(pb::StatisticDuration { count, ns });
    pb::ModelStatistics {
        name: model.name.clone(),
        version: model.version.clone(),
        last_inference: s.last_inference_ms,
        inference_count: s.ok,
        execution_count: s.ok,
        inference_stats: Some(pb::InferStatistics {
            success: d((s.ok, s.success_ns)),
            fail: d((s.failed, s.fail_ns)),
            queue: d((s.ok, s.queue_ns)),
            compute_input: d((s.ok, 0)),
            compute_infer: d((s.ok, s.compute_ns)),
            compute_output: d((s.ok, 0)),
            cache_hit: d((0, 0)),
            cache_miss: d((0, 0)),
        }),
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Service {
    async fn server_live(&self, _: Request<pb::ServerLiveRequest>) -> Result<Response<pb::ServerLiveResponse>, Status> {
        counted("ServerLive", Ok(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        counted("ServerReady", Ok(pb::ServerReadyResponse { ready: self.state.repository.any_ready() }))
    }

    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let r = request.into_inner();
        // Triton answers ready = false (not an error) for a model that is not serving.
        let ready = resolve(&self.state, &r.name, version(&r.version)).is_ok();
        counted("ModelReady", Ok(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        counted(
            "ServerMetadata",
            Ok(pb::ServerMetadataResponse {
                name: "edgefleet-agent".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                extensions: crate::http::EXTENSIONS.iter().map(|s| s.to_string()).collect(),
            }),
        )
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let r = request.into_inner();
        let answer = resolve(&self.state, &r.name, version(&r.version)).map(|m| {
            let sig = m.engine.signature();
            pb::ModelMetadataResponse {
                name: m.name.clone(),
                versions: vec![m.version.clone()],
                platform: m.engine.platform().into(),
                inputs: sig.inputs.iter().map(tensor_metadata).collect(),
                outputs: sig.outputs.iter().map(tensor_metadata).collect(),
            }
        });
        counted("ModelMetadata", answer)
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        use tracing::Instrument as _;
        let span = tracing::debug_span!("grpc", method = "ModelInfer");
        let answer = self.infer(request.into_inner()).instrument(span).await;
        counted("ModelInfer", answer)
    }

    async fn model_config(
        &self,
        request: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let r = request.into_inner();
        let answer = resolve(&self.state, &r.name, version(&r.version))
            .map(|m| pb::ModelConfigResponse { config: Some(model_config(&m)) });
        counted("ModelConfig", answer)
    }

    async fn model_statistics(
        &self,
        request: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        let r = request.into_inner();
        let answer = if r.name.is_empty() {
            let all = self.state.repository.list().into_iter().filter_map(|(_, s)| match s {
                ModelState::Ready(m) => Some(model_statistics(&m)),
                _ => None,
            });
            Ok(pb::ModelStatisticsResponse { model_stats: all.collect() })
        } else {
            resolve(&self.state, &r.name, version(&r.version))
                .map(|m| pb::ModelStatisticsResponse { model_stats: vec![model_statistics(&m)] })
        };
        counted("ModelStatistics", answer)
    }
}

/// The gRPC server, bound and serving until `stop` turns true.
#[derive(Debug)]
pub struct GrpcServer {
    /// Bound address.
    pub addr: SocketAddr,
    /// The server task.
    pub task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl GrpcServer {
    /// Serves `state` on `listener` until `stop` turns true (in-flight calls finish first).
    pub fn start(
        listener: TcpListener,
        state: AppState,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> std::io::Result<GrpcServer> {
        let addr = listener.local_addr()?;
        let limit = state.max_body_bytes;
        let service = GrpcInferenceServiceServer::new(Service { state }).max_decoding_message_size(limit);
        // Small request/response pairs: Nagle's delay would dominate their latency. tonic goes
        // straight on after an accept error, so out of file descriptors it would spin: pause.
        let incoming =
            tokio_stream::StreamExt::then(tokio_stream::wrappers::TcpListenerStream::new(listener), |s| async {
                match &s {
                    Ok(tcp) => {
                        let _ = tcp.set_nodelay(true);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "gRPC accept failed; pausing 100 ms.");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
                s
            });
        let task = tokio::spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming_shutdown(
            incoming,
            async move {
                let _ = stop.wait_for(|stop| *stop).await;
            },
        ));
        tracing::info!(%addr, "gRPC API listening.");
        Ok(GrpcServer { addr, task })
    }
}
