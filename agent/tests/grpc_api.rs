//! The KServe v2 gRPC API over a real socket, through tonic's client: every committed fixture
//! answers as ONNX Runtime did (inputs as raw contents, the way Triton's clients send them), typed
//! contents and raw give the same answer, BYTES and FP16 round-trip, refusals carry the matching
//! status code, and the model's statistics and metrics count gRPC and HTTP requests together.

mod common;

use std::collections::HashMap;

use common::server::Agent;
use common::{Reference, assert_close, references, tensor_from_json};
use edgefleet_agent::grpc::pb;
use edgefleet_agent::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use edgefleet_agent::tensor::{Tensor, TensorData};
use edgefleet_shared::inference::Datatype;
use serde_json::json;
use tonic::transport::Channel;

async fn client(agent: &Agent) -> GrpcInferenceServiceClient<Channel> {
    let channel = Channel::from_shared(agent.grpc.clone()).expect("url").connect().await.expect("connect");
    GrpcInferenceServiceClient::new(channel)
}

fn raw(t: &Tensor) -> Vec<u8> {
    let mut out = Vec::new();
    t.write_binary(&mut out);
    out
}

/// A request with `inputs` (name, tensor) as raw contents.
fn raw_request(model: &str, inputs: &[(&str, &Tensor)]) -> pb::ModelInferRequest {
    pb::ModelInferRequest {
        model_name: model.into(),
        inputs: inputs
            .iter()
            .map(|(name, t)| pb::model_infer_request::InferInputTensor {
                name: (*name).into(),
                datatype: t.datatype().to_string(),
                shape: t.shape.iter().map(|&d| d as i64).collect(),
                ..Default::default()
            })
            .collect(),
        raw_input_contents: inputs.iter().map(|(_, t)| raw(t)).collect(),
        ..Default::default()
    }
}

/// The answer's outputs, decoded from their raw contents, by name.
fn outputs(answer: &pb::ModelInferResponse) -> HashMap<String, Tensor> {
    assert_eq!(answer.outputs.len(), answer.raw_output_contents.len(), "one raw entry per output");
    answer
        .outputs
        .iter()
        .zip(&answer.raw_output_contents)
        .map(|(o, bytes)| {
            let datatype: Datatype = o.datatype.parse().expect("datatype");
            let shape = o.shape.iter().map(|&d| d as usize).collect();
            (o.name.clone(), Tensor::from_binary(datatype, shape, bytes).expect("raw output decodes"))
        })
        .collect()
}

#[tokio::test]
async fn every_fixture_answers_over_grpc_as_onnx_runtime_did() {
    for Reference { name, tolerance, request, outputs: want, .. } in references() {
        let agent = Agent::start(&[name.as_str()], |_| {}).await;
        let mut grpc = client(&agent).await;
        let tensors: Vec<(String, Tensor)> = request["inputs"]
            .as_array()
            .expect("inputs")
            .iter()
            .map(|t| (t["name"].as_str().expect("name").to_owned(), tensor_from_json(t)))
            .collect();
        let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let answer = grpc.model_infer(raw_request(&name, &named)).await.expect("infer").into_inner();
        assert_eq!((answer.model_name.as_str(), answer.model_version.as_str()), (name.as_str(), "1"));
        let got = outputs(&answer);
        for w in &want {
            let out = w["name"].as_str().expect("name");
            assert_close(&format!("grpc/{name}/{out}"), &got[out], &tensor_from_json(w), tolerance);
        }
        agent.stop().await;
    }
}

#[tokio::test]
async fn typed_contents_answer_as_raw_and_as_http() {
    let agent = Agent::start(&["mlp"], |_| {}).await;
    let mut grpc = client(&agent).await;
    let values: Vec<f32> = (0..32).map(|i| i as f32 / 10.0).collect();
    let x = Tensor::new(vec![2, 16], TensorData::F32(values.clone())).expect("tensor");
    let by_raw = outputs(&grpc.model_infer(raw_request("mlp", &[("x", &x)])).await.expect("raw").into_inner());
    let mut typed = raw_request("mlp", &[("x", &x)]);
    typed.raw_input_contents.clear();
    typed.inputs[0].contents = Some(pb::InferTensorContents { fp32_contents: values.clone(), ..Default::default() });
    typed.id = "req-7".into();
    let answer = grpc.model_infer(typed).await.expect("typed").into_inner();
    assert_eq!(answer.id, "req-7", "the request id comes back");
    let by_typed = outputs(&answer);
    let (_, http) = agent
        .infer("mlp", &json!({"inputs": [{"name": "x", "shape": [2, 16], "datatype": "FP32", "data": values}]}))
        .await;
    let name = http["outputs"][0]["name"].as_str().expect("name");
    assert_close("typed vs raw", &by_typed[name], &by_raw[name], 0.0);
    assert_close("grpc vs http", &by_raw[name], &tensor_from_json(&http["outputs"][0]), 0.0);
    agent.stop().await;
}

#[tokio::test]
async fn bytes_and_fp16_round_trip() {
    let agent = Agent::start(&["bytes", "fp16"], |_| {}).await;
    let mut grpc = client(&agent).await;
    let words = ["héllo", "", "a longer line of text"];
    let text = Tensor::from_json(Datatype::Bytes, vec![3], &json!(words)).expect("bytes");
    let number = Tensor::new(vec![3], TensorData::F32(vec![1.0, 2.0, 3.0])).expect("fp32");
    let answer = grpc.model_infer(raw_request("bytes", &[("text", &text), ("x", &number)])).await.expect("bytes");
    let answer = answer.into_inner();
    let echo = answer.outputs.iter().position(|o| o.name == "echo").expect("echo");
    assert_eq!(answer.outputs[echo].datatype, "BYTES");
    assert_eq!(outputs(&answer)["echo"], text, "the strings come back, length-prefixed");
    // A length prefix that runs past the data is INVALID_ARGUMENT, not a panic.
    let one = Tensor::new(vec![1], TensorData::F32(vec![1.0])).expect("fp32");
    let short = Tensor::new(vec![1], TensorData::Bytes(vec![Vec::new()])).expect("bytes");
    let mut bad = raw_request("bytes", &[("text", &short), ("x", &one)]);
    bad.raw_input_contents[0] = vec![9, 0, 0, 0];
    let refused = grpc.model_infer(bad).await.expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{}", refused.message());

    let half = Tensor::from_json(Datatype::Fp16, vec![2, 3], &json!([0.5, 1.0, -2.25, 3.0, 100.0, 0.0])).expect("fp16");
    let answer = outputs(&grpc.model_infer(raw_request("fp16", &[("x", &half)])).await.expect("fp16").into_inner());
    let (_, http) = agent
        .infer("fp16", &json!({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP16", "data": [0.5, 1.0, -2.25, 3.0, 100.0, 0.0]}]}))
        .await;
    let name = http["outputs"][0]["name"].as_str().expect("name");
    assert_eq!(answer[name].datatype(), Datatype::Fp16);
    assert_close("fp16 grpc vs http", &answer[name], &tensor_from_json(&http["outputs"][0]), 0.0);
    agent.stop().await;
}

#[tokio::test]
async fn refusals_carry_the_matching_status_code() {
    let agent = Agent::start(&["mlp"], |_| {}).await;
    let mut grpc = client(&agent).await;
    let x = Tensor::new(vec![1, 16], TensorData::F32(vec![0.0; 16])).expect("tensor");
    let code = |r: Result<tonic::Response<pb::ModelInferResponse>, tonic::Status>| match r {
        Ok(_) => panic!("accepted"),
        Err(s) => (s.code(), s.message().to_owned()),
    };
    let (c, m) = code(grpc.model_infer(raw_request("nope", &[("x", &x)])).await);
    assert_eq!(c, tonic::Code::NotFound, "{m}");
    assert!(m.contains("unknown model"), "{m}");

    let mut wrong_type = raw_request("mlp", &[("x", &x)]);
    wrong_type.inputs[0].datatype = "INT64".into();
    let (c, m) = code(grpc.model_infer(wrong_type).await);
    assert_eq!(c, tonic::Code::InvalidArgument);
    assert!(m.contains("does not match the model's FP32"), "{m}");

    let mut short = raw_request("mlp", &[("x", &x)]);
    short.raw_input_contents[0].truncate(10);
    let (c, m) = code(grpc.model_infer(short).await);
    assert_eq!(c, tonic::Code::InvalidArgument, "{m}");

    let mut extra = raw_request("mlp", &[("x", &x)]);
    extra.raw_input_contents.push(vec![0; 4]);
    let (c, m) = code(grpc.model_infer(extra).await);
    assert_eq!(c, tonic::Code::InvalidArgument);
    assert!(m.contains("one per input"), "{m}");

    let mut neither = raw_request("mlp", &[("x", &x)]);
    neither.raw_input_contents.clear();
    let (c, m) = code(grpc.model_infer(neither).await);
    assert_eq!(c, tonic::Code::InvalidArgument);
    assert!(m.contains("neither contents nor raw_input_contents"), "{m}");

    let mut unknown_output = raw_request("mlp", &[("x", &x)]);
    unknown_output
        .outputs
        .push(pb::model_infer_request::InferRequestedOutputTensor { name: "zz".into(), ..Default::default() });
    let (c, m) = code(grpc.model_infer(unknown_output).await);
    assert_eq!(c, tonic::Code::InvalidArgument);
    assert!(m.contains("unknown output"), "{m}");

    let ready = grpc.model_ready(pb::ModelReadyRequest { name: "nope".into(), version: String::new() }).await;
    assert!(!ready.expect("answered").into_inner().ready, "an unknown model is not ready (no error, as Triton)");
    // Still serving after all that.
    assert!(grpc.model_infer(raw_request("mlp", &[("x", &x)])).await.is_ok());
    agent.stop().await;
}

#[tokio::test]
async fn metadata_config_and_statistics_count_both_transports() {
    let agent = Agent::start(&["mlp"], |_| {}).await;
    let mut grpc = client(&agent).await;
    assert!(grpc.server_live(pb::ServerLiveRequest {}).await.expect("live").into_inner().live);
    assert!(grpc.server_ready(pb::ServerReadyRequest {}).await.expect("ready").into_inner().ready);
    let server = grpc.server_metadata(pb::ServerMetadataRequest {}).await.expect("server").into_inner();
    assert_eq!(server.name, "edgefleet-agent");
    assert!(server.extensions.iter().any(|e| e == "statistics"));
    let meta = grpc
        .model_metadata(pb::ModelMetadataRequest { name: "mlp".into(), version: "1".into() })
        .await
        .expect("metadata")
        .into_inner();
    let (_, http_meta) = agent.get("/v2/models/mlp").await;
    assert_eq!(meta.platform, http_meta["platform"].as_str().expect("platform"));
    assert_eq!(meta.inputs[0].name, http_meta["inputs"][0]["name"].as_str().expect("name"));
    assert_eq!(json!(meta.inputs[0].shape), http_meta["inputs"][0]["shape"]);
    let config = grpc
        .model_config(pb::ModelConfigRequest { name: "mlp".into(), version: String::new() })
        .await
        .expect("config")
        .into_inner()
        .config
        .expect("config");
    assert_eq!(config.input[0].data_type, pb::DataType::TypeFp32 as i32);
    assert_eq!(json!(config.input[0].dims), http_meta["inputs"][0]["shape"]);

    let x = Tensor::new(vec![1, 16], TensorData::F32(vec![0.5; 16])).expect("tensor");
    for _ in 0..3 {
        grpc.model_infer(raw_request("mlp", &[("x", &x)])).await.expect("infer");
    }
    let body = json!({"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": vec![0.5; 16]}]});
    let (status, _) = agent.infer("mlp", &body).await;
    assert!(status.is_success());
    let stats = grpc
        .model_statistics(pb::ModelStatisticsRequest { name: "mlp".into(), version: String::new() })
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(stats.model_stats[0].inference_count, 4, "three gRPC and one HTTP request");
    let (_, http_stats) = agent.get("/v2/models/mlp/stats").await;
    assert_eq!(http_stats["model_stats"][0]["inference_count"], 4);
    let all = grpc.model_statistics(pb::ModelStatisticsRequest::default()).await.expect("all").into_inner();
    assert_eq!(all.model_stats.len(), 1);

    let text = agent.client.get(agent.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    let value = |prefix: &str, label: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(value("edgefleet_agent_inference_requests_total", "model=\"mlp\""), 4.0);
    assert_eq!(value("edgefleet_agent_grpc_requests_total", "method=\"ModelInfer\""), 3.0);
    agent.stop().await;
}
