//! The KServe v2 HTTP API, driven over a real socket against the library's `serve::run`.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{assert_close, references, tensor_from_json, testdata};
use edgefleet_agent::config::{AgentConfig, ModelConfig};
use edgefleet_agent::tensor::{Tensor, TensorData};
use edgefleet_agent::worker::BatchingConfig;
use edgefleet_shared::inference::{Datatype, INFERENCE_HEADER_CONTENT_LENGTH, MODEL_VERSION_HEADER};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::oneshot;

struct Agent {
    base: String,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), edgefleet_agent::serve::ServeError>>,
}

impl Agent {
    async fn start(models: &[&str], tweak: impl FnOnce(&mut AgentConfig)) -> Agent {
        let mut config = AgentConfig::default();
        config.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.backend = common::tract_backend();
        for m in models {
            config.models.push(ModelConfig::new(*m, testdata().join(format!("{m}.onnx"))));
        }
        tweak(&mut config);
        config.validate().expect("valid test config");
        let (addr_tx, addr_rx) = oneshot::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(edgefleet_agent::serve::run(
            config,
            async move {
                let _ = stopped.await;
            },
            move |addr| {
                let _ = addr_tx.send(addr);
            },
        ));
        let addr = addr_rx.await.expect("agent reports its address");
        let agent = Agent { base: format!("http://{addr}"), client: reqwest::Client::new(), stop: Some(stop), task };
        agent.wait_ready().await;
        agent
    }

    /// Waits until every configured model is loaded and warm.
    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, index) = self.get("/v2/repository/index").await;
            let entries = index.as_array().expect("index is a list");
            if entries.iter().all(|e| e["state"] == "READY") {
                return;
            }
            assert!(Instant::now() < deadline, "agent not ready in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self.client.get(self.url(path)).send().await.expect("GET");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn infer(&self, model: &str, body: &Value) -> (StatusCode, Value) {
        let r = self.client.post(self.url(&format!("/v2/models/{model}/infer"))).json(body).send().await.expect("POST");
        let status = r.status();
        (status, r.json().await.expect("JSON answer"))
    }

    async fn infer_raw(&self, model: &str, body: Vec<u8>, headers: &[(&str, String)]) -> reqwest::Response {
        let mut req = self.client.post(self.url(&format!("/v2/models/{model}/infer"))).body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        req.send().await.expect("POST")
    }

    /// A request that must still succeed: the agent keeps serving after bad input.
    async fn assert_still_serving(&self) {
        let (status, body) = self.infer("mlp", &mlp_request(1)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    async fn stop(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        self.task.await.expect("agent task").expect("clean shutdown");
    }
}

fn mlp_request(rows: usize) -> Value {
    let data: Vec<f32> = (0..rows * 16).map(|i| (i as f32 * 0.37).sin()).collect();
    json!({"inputs": [{"name": "x", "shape": [rows, 16], "datatype": "FP32", "data": data}]})
}

fn assert_error(status: StatusCode, body: &Value, want: StatusCode, needle: &str) {
    assert_eq!(status, want, "{body}");
    let msg = body["error"].as_str().unwrap_or_else(|| panic!("no error field in {body}"));
    assert!(msg.contains(needle), "error {msg:?} should mention {needle:?}");
}

#[tokio::test]
async fn health_and_metadata_endpoints_answer_per_spec() {
    let agent = Agent::start(&["mlp", "iris_logreg"], |_| {}).await;
    assert_eq!(agent.get("/v2/health/live").await, (StatusCode::OK, json!({"live": true})));
    assert_eq!(agent.get("/v2/health/ready").await, (StatusCode::OK, json!({"ready": true})));

    let (status, server) = agent.get("/v2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server["name"], "edgefleet-agent");
    assert!(server["extensions"].as_array().expect("extensions").contains(&json!("binary_tensor_data")));

    let (status, meta) = agent.get("/v2/models/mlp").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(meta["platform"], "tract_onnx");
    assert_eq!(meta["versions"], json!(["1"]));
    assert_eq!(meta["inputs"], json!([{"name": "x", "datatype": "FP32", "shape": [-1, 16]}]));
    assert_eq!(meta["outputs"], json!([{"name": "probs", "datatype": "FP32", "shape": [-1, 4]}]));
    assert_eq!(agent.get("/v2/models/mlp/versions/1").await.1, meta);

    let (_, iris) = agent.get("/v2/models/iris_logreg").await;
    assert_eq!(iris["inputs"], json!([{"name": "X", "datatype": "FP32", "shape": [-1, 4]}]));
    let outs: Vec<_> = iris["outputs"].as_array().expect("outputs").iter().map(|o| o["name"].clone()).collect();
    assert_eq!(outs, vec![json!("label"), json!("probabilities")]);

    let (status, ready) = agent.get("/v2/models/mlp/ready").await;
    assert_eq!((status, ready["ready"].clone()), (StatusCode::OK, json!(true)));
    assert_eq!(agent.get("/v2/models/mlp/versions/1/ready").await.0, StatusCode::OK);

    let (status, index) = agent.get("/v2/repository/index").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        index,
        json!([{"name": "iris_logreg", "version": "1", "state": "READY"}, {"name": "mlp", "version": "1", "state": "READY"}])
    );

    let (status, body) = agent.get("/v2/nope").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "/v2/nope");
    agent.stop().await;
}

#[tokio::test]
async fn not_ready_without_a_model() {
    let agent = Agent::start(&[], |_| {}).await;
    assert_eq!(agent.get("/v2/health/live").await.0, StatusCode::OK);
    let (status, body) = agent.get("/v2/health/ready").await;
    assert_error(status, &body, StatusCode::SERVICE_UNAVAILABLE, "no model");
    agent.stop().await;
}

#[tokio::test]
async fn every_fixture_answers_like_onnxruntime_over_json() {
    let names: Vec<String> = references().iter().map(|r| r.name.clone()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let agent = Agent::start(&names, |_| {}).await;
    for r in references() {
        let mut request = r.request.clone();
        request["id"] = json!(format!("req-{}", r.name));
        let response = agent
            .client
            .post(agent.url(&format!("/v2/models/{}/infer", r.name)))
            .json(&request)
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), StatusCode::OK, "{}", r.name);
        assert_eq!(response.headers()[MODEL_VERSION_HEADER], "1");
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["id"], json!(format!("req-{}", r.name)), "id is echoed");
        assert_eq!(body["model_name"], r.name.as_str());
        assert_eq!(body["model_version"], "1");
        for want in &r.outputs {
            let got = body["outputs"]
                .as_array()
                .expect("outputs")
                .iter()
                .find(|o| o["name"] == want["name"])
                .expect("output present");
            assert_close(
                &format!("{}/{}", r.name, want["name"]),
                &tensor_from_json(got),
                &tensor_from_json(want),
                r.tolerance,
            );
        }
    }
    agent.stop().await;
}

#[tokio::test]
async fn nested_data_versions_and_output_selection() {
    let agent = Agent::start(&["mlp", "iris_logreg"], |_| {}).await;
    let flat = agent.infer("mlp", &mlp_request(2)).await.1;
    let mut nested = mlp_request(2);
    let data: Vec<Value> = nested["inputs"][0]["data"].as_array().expect("data").clone();
    nested["inputs"][0]["data"] = json!([data[..16].to_vec(), data[16..].to_vec()]);
    assert_eq!(agent.infer("mlp", &nested).await.1, flat);

    let r = agent
        .client
        .post(agent.url("/v2/models/mlp/versions/1/infer"))
        .json(&mlp_request(2))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.expect("json"), flat);

    let body = json!({
        "inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}],
        "outputs": [{"name": "probabilities"}]
    });
    let (status, answer) = agent.infer("iris_logreg", &body).await;
    assert_eq!(status, StatusCode::OK);
    let outputs = answer["outputs"].as_array().expect("outputs");
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0]["name"], "probabilities");
    assert_eq!(outputs[0]["shape"], json!([1, 3]));
    agent.stop().await;
}

/// Splits a binary-extension response into its JSON header and binary part.
async fn split_binary_response(r: reqwest::Response) -> (Value, Vec<u8>) {
    assert_eq!(r.status(), StatusCode::OK);
    let json_len: usize =
        r.headers()[INFERENCE_HEADER_CONTENT_LENGTH].to_str().expect("ascii").parse().expect("number");
    let bytes = r.bytes().await.expect("body");
    let (head, bin) = bytes.split_at(json_len);
    (serde_json::from_slice(head).expect("JSON header"), bin.to_vec())
}

#[tokio::test]
async fn binary_extension_round_trips_fp32() {
    let agent = Agent::start(&["mlp"], |_| {}).await;
    let input = Tensor::new(vec![2, 16], TensorData::F32((0..32).map(|i| i as f32 / 10.0).collect())).expect("tensor");
    let mut bin = Vec::new();
    let size = input.write_binary(&mut bin);
    let header = json!({
        "inputs": [{"name": "x", "shape": [2, 16], "datatype": "FP32", "parameters": {"binary_data_size": size}}],
        "parameters": {"binary_data_output": true}
    });
    let mut body = serde_json::to_vec(&header).expect("json");
    let json_len = body.len();
    body.extend_from_slice(&bin);
    let r = agent.infer_raw("mlp", body, &[(INFERENCE_HEADER_CONTENT_LENGTH, json_len.to_string())]).await;
    let (head, out_bin) = split_binary_response(r).await;
    let out = &head["outputs"][0];
    assert_eq!(out["parameters"]["binary_data_size"], json!(2 * 4 * 4));
    assert!(out.get("data").is_none());
    let got = Tensor::from_binary(Datatype::Fp32, vec![2, 4], &out_bin).expect("decode");

    let json_input = json!({"inputs": [{"name": "x", "shape": [2, 16], "datatype": "FP32", "data": (0..32).map(|i| i as f32 / 10.0).collect::<Vec<_>>()}]});
    let (_, json_answer) = agent.infer("mlp", &json_input).await;
    assert_close("binary vs json", &got, &tensor_from_json(&json_answer["outputs"][0]), 0.0);
    agent.stop().await;
}

/// FP16 in both encodings: JSON numbers (rounded to half precision on the way in) and 2-byte
/// little-endian halves in the binary extension, with the same answers.
#[tokio::test]
async fn fp16_round_trips_through_json_and_binary() {
    let agent = Agent::start(&["fp16"], |_| {}).await;
    let values = [0.5, 1.0, -3.0, 1000.0, 0.1, 2.0];
    let (status, answer) = agent
        .infer("fp16", &json!({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP16", "data": values}]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let out = &answer["outputs"][0];
    assert_eq!(out["datatype"], "FP16");
    // 0.1 is 0.0999755859375 in half precision; doubled, it is written as the shortest decimal
    // that reads back as the same half (0.19995117).
    assert_eq!(out["data"], json!([1.0, 2.0, -6.0, 2000.0, 0.19995117, 4.0]), "{answer}");

    let input = Tensor::from_json(Datatype::Fp16, vec![2, 3], &json!(values)).expect("fp16");
    let mut bin = Vec::new();
    assert_eq!(input.write_binary(&mut bin), 12, "two bytes an element");
    let header = json!({
        "inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP16", "parameters": {"binary_data_size": 12}}],
        "parameters": {"binary_data_output": true}
    });
    let mut body = serde_json::to_vec(&header).expect("json");
    let json_len = body.len();
    body.extend_from_slice(&bin);
    let r = agent.infer_raw("fp16", body, &[(INFERENCE_HEADER_CONTENT_LENGTH, json_len.to_string())]).await;
    let (head, out_bin) = split_binary_response(r).await;
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], json!(12));
    let got = Tensor::from_binary(Datatype::Fp16, vec![2, 3], &out_bin).expect("decode");
    assert_close("binary vs json", &got, &tensor_from_json(out), 0.0);
    // Beyond half precision's range is refused, not turned into infinity.
    let (status, body) = agent
        .infer("fp16", &json!({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP16", "data": [1, 2, 70000]}]}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    agent.stop().await;
}

#[tokio::test]
async fn binary_extension_round_trips_int64_and_mixes_with_json() {
    let agent = Agent::start(&["dtypes"], |_| {}).await;
    let i64s = Tensor::new(vec![2, 2], TensorData::I64(vec![1 << 40, -7, 0, i64::MAX])).expect("tensor");
    let mut bin = Vec::new();
    let size = i64s.write_binary(&mut bin);
    let header = json!({
        "inputs": [
            {"name": "f64", "shape": [2, 3], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6]},
            {"name": "i32", "shape": [2, 2], "datatype": "INT32", "data": [1, 2, 3, 4]},
            {"name": "i64", "shape": [2, 2], "datatype": "INT64", "parameters": {"binary_data_size": size}},
            {"name": "u8", "shape": [2, 4], "datatype": "UINT8", "data": [0, 1, 2, 254, 4, 5, 6, 7]},
            {"name": "flag", "shape": [2, 2], "datatype": "BOOL", "data": [true, false, false, true]}
        ],
        "outputs": [{"name": "i64_out", "parameters": {"binary_data": true}}, {"name": "flag_out"}, {"name": "u8_out"}]
    });
    let mut body = serde_json::to_vec(&header).expect("json");
    let json_len = body.len();
    body.extend_from_slice(&bin);
    let r = agent.infer_raw("dtypes", body, &[(INFERENCE_HEADER_CONTENT_LENGTH, json_len.to_string())]).await;
    let (head, out_bin) = split_binary_response(r).await;
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], json!(32));
    let neg = Tensor::from_binary(Datatype::Int64, vec![2, 2], &out_bin).expect("decode");
    assert_eq!(neg.data, TensorData::I64(vec![-(1 << 40), 7, 0, -i64::MAX]));
    assert_eq!(head["outputs"][1]["data"], json!([false, true, true, false]));
    assert_eq!(head["outputs"][2]["data"], json!([1, 2, 3, 255, 5, 6, 7, 8]));
    agent.stop().await;
}

#[tokio::test]
async fn malformed_json_is_400() {
    let agent = Agent::start(&["mlp"], |_| {}).await;
    let r = agent.infer_raw("mlp", b"{\"inputs\": [".to_vec(), &[("content-type", "application/json".into())]).await;
    let status = r.status();
    assert_error(status, &r.json().await.expect("json"), StatusCode::BAD_REQUEST, "malformed JSON");
    agent.assert_still_serving().await;
    agent.stop().await;
}

#[tokio::test]
async fn unknown_model_and_version_are_404() {
    let agent = Agent::start(&["mlp"], |_| {}).await;
    let (status, body) = agent.infer("nope", &mlp_request(1)).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "unknown model \"nope\"");
    let r = agent
        .client
        .post(agent.url("/v2/models/mlp/versions/7/infer"))
        .json(&mlp_request(1))
        .send()
        .await
        .expect("POST");
    let status = r.status();
    assert_error(status, &r.json().await.expect("json"), StatusCode::NOT_FOUND, "no version \"7\"");
    let (status, body) = agent.get("/v2/models/mlp/versions/7").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "no version");
    agent.assert_still_serving().await;
    agent.stop().await;
}

#[tokio::test]
async fn unknown_input_name_is_422() {
    let agent = Agent::start(&["mlp"], |_| {}).await;
    let mut body = mlp_request(1);
    body["inputs"][0]["name"] = json!("y");
    let (status, answer) = agent.infer("mlp", &body).await;
    assert_error(status, &answer, StatusCode::UNPROCESSABLE_ENTITY, "unknown input \"y\" (model inputs: x)");
    agent.assert_still_serving().await;
    agent.stop().await;
}

#[tokio::test]
async fn missing_input_is_422() {
    let agent = Agent::start(&["dtypes", "mlp"], |_| {}).await;
    let body = json!({"inputs": [{"name": "f64", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]});
    let (status, answer) = agent.infer("dtypes", &body).await;
    assert_error(status, &answer, StatusCode::UNPROCESSABLE_ENTITY, "missing input \"i32\"");
    agent.assert_still_serving().await;
    agent.stop().await;
}

#[tokio::test]
async fn wrong_shape_says_expected_and_got() {
    let agent = Agent::start(&["mlp"], |_| {}).await;
    let body = json!({"inputs": [{"name": "x", "shape": [1, 15], "datatype": "FP32", "data": vec![0.0; 15]}]});
    let (status, answer) = agent.infer("mlp", &body).await;
    assert_error(status, &answer, StatusCode::UNPROCESSABLE_ENTITY, "expected [-1, 16], got [1, 15]");
    agent.assert_still_serving().await;
    agent.stop().await;
}

#[tokio::test]
async fn wrong_datatype_is_422() {
    let agent = Agent::start(&["mlp"], |_| {}).await;
    let mut body = mlp_request(1);
    body["inputs"][0]["datatype"] = json!("FP64");
    let (status, answer) = agent.infer("mlp", &body).await;
    assert_error(status, &answer, StatusCode::UNPROCESSABLE_ENTITY, "datatype FP64 does not match the model's FP32");
    body["inputs"][0]["datatype"] = json!("FLOAT");
    let (status, answer) = agent.infer("mlp", &body).await;
    assert_error(status, &answer, StatusCode::BAD_REQUEST, "unknown datatype \"FLOAT\"");
    agent.assert_still_serving().await;
    agent.stop().await;
}

#[tokio::test]
async fn data_length_not_matching_shape_is_400() {
    let agent = Agent::start(&["mlp"], |_| {}).await;
    let mut body = mlp_request(2);
    body["inputs"][0]["data"].as_array_mut().expect("array").pop();
    let (status, answer) = agent.infer("mlp", &body).await;
    assert_error(status, &answer, StatusCode::BAD_REQUEST, "needs 32 elements but data has 31");
    agent.assert_still_serving().await;
    agent.stop().await;
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let agent = Agent::start(&["mlp"], |c| c.server.max_body_bytes = 4096).await;
    let (status, answer) = agent.infer("mlp", &mlp_request(64)).await;
    assert_error(status, &answer, StatusCode::PAYLOAD_TOO_LARGE, "limit of 4096 bytes");
    // Chunked bodies carry no Content-Length; the limit holds while reading them too.
    let chunks = futures_stream(serde_json::to_vec(&mlp_request(64)).expect("json"));
    let r = agent
        .client
        .post(agent.url("/v2/models/mlp/infer"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("POST");
    let status = r.status();
    assert_error(status, &r.json().await.expect("json"), StatusCode::PAYLOAD_TOO_LARGE, "limit");
    agent.assert_still_serving().await;
    agent.stop().await;
}

fn futures_stream(bytes: Vec<u8>) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = bytes.chunks(1024).map(|c| Ok(c.to_vec())).collect();
    futures::stream::iter(chunks)
}

#[tokio::test]
async fn invalid_binary_header_length_is_400() {
    let agent = Agent::start(&["mlp"], |_| {}).await;
    let body = serde_json::to_vec(&mlp_request(1)).expect("json");
    let len = body.len();
    for (value, needle) in
        [((len + 10).to_string(), "but the body has only"), ("twelve".to_string(), "must be a byte count")]
    {
        let r = agent.infer_raw("mlp", body.clone(), &[(INFERENCE_HEADER_CONTENT_LENGTH, value)]).await;
        let status = r.status();
        assert_error(status, &r.json().await.expect("json"), StatusCode::BAD_REQUEST, needle);
    }
    // A header shorter than the JSON cuts it: the JSON part is then malformed.
    let r = agent.infer_raw("mlp", body.clone(), &[(INFERENCE_HEADER_CONTENT_LENGTH, (len - 5).to_string())]).await;
    let status = r.status();
    assert_error(status, &r.json().await.expect("json"), StatusCode::BAD_REQUEST, "malformed JSON");
    agent.assert_still_serving().await;
    agent.stop().await;
}

#[tokio::test]
async fn full_queue_answers_503_and_recovers() {
    let agent = Agent::start(&["slow", "mlp"], |c| {
        for m in &mut c.models {
            m.queue_capacity = 1;
        }
    })
    .await;
    let rows = 64;
    let body =
        json!({"inputs": [{"name": "x", "shape": [rows, 256], "datatype": "FP32", "data": vec![0.5f32; rows * 256]}]});
    let calls = (0..12).map(|_| agent.infer("slow", &body));
    let results = futures::future::join_all(calls).await;
    let ok = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let rejected: Vec<_> = results.iter().filter(|(s, _)| *s == StatusCode::SERVICE_UNAVAILABLE).collect();
    assert_eq!(ok + rejected.len(), results.len(), "only 200 or 503: {results:?}");
    assert!(ok >= 1, "some requests are served");
    assert!(!rejected.is_empty(), "a queue of 1 must refuse some of 12 concurrent slow requests");
    assert!(rejected[0].1["error"].as_str().expect("error").contains("overloaded"));
    assert_eq!(agent.infer("slow", &body).await.0, StatusCode::OK, "serves again once drained");
    agent.stop().await;
}

#[tokio::test]
async fn dynamic_batching_merges_requests_and_splits_results_correctly() {
    let unbatched = Agent::start(&["mlp"], |_| {}).await;
    let requests: Vec<Value> = (1..=8)
        .map(|k| {
            let rows = 1 + k % 3;
            let data: Vec<f32> = (0..rows * 16).map(|i| ((i * k) as f32 * 0.13).cos()).collect();
            json!({"id": format!("r{k}"), "inputs": [{"name": "x", "shape": [rows, 16], "datatype": "FP32", "data": data}]})
        })
        .collect();
    let mut expected = Vec::new();
    for r in &requests {
        expected.push(unbatched.infer("mlp", r).await.1);
    }
    unbatched.stop().await;

    // A different name keeps this agent's metrics apart from the first one's in this process.
    let batched = Agent::start(&[], |c| {
        let mut model = ModelConfig::new("mlp_batched", testdata().join("mlp.onnx"));
        model.batching = Some(BatchingConfig { max_batch_size: 16, max_queue_delay_us: 50_000 });
        c.models.push(model);
    })
    .await;
    let answers = futures::future::join_all(requests.iter().map(|r| batched.infer("mlp_batched", r))).await;
    for ((status, got), want) in answers.iter().zip(&expected) {
        assert_eq!(*status, StatusCode::OK, "{got}");
        assert_eq!(got["id"], want["id"]);
        assert_close(
            got["id"].as_str().expect("id"),
            &tensor_from_json(&got["outputs"][0]),
            &tensor_from_json(&want["outputs"][0]),
            1e-6,
        );
    }
    let metrics =
        batched.client.get(batched.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{metrics}"))
    };
    // Warm-up runs outside the histogram: the 8 requests carry 17 rows, in fewer than 8 runs.
    let runs = value("edgefleet_agent_inference_batch_rows_count{model=\"mlp_batched\"");
    let rows = value("edgefleet_agent_inference_batch_rows_sum{model=\"mlp_batched\"");
    assert_eq!(rows, 17.0);
    assert!(runs < 8.0, "batching merged nothing: {runs} runs for 8 requests");
    assert!(
        metrics.contains("edgefleet_agent_inference_requests_total{model=\"mlp_batched\",version=\"1\"} 8"),
        "{metrics}"
    );
    batched.stop().await;
}

/// Triton's model configuration and statistics extensions, shaped as tritonclient reads them.
#[tokio::test]
async fn model_config_and_statistics_answer_as_triton_does() {
    let agent = Agent::start(&["mlp"], |_| {}).await;
    let (status, server) = agent.get("/v2").await;
    assert_eq!(status, StatusCode::OK);
    for ext in ["model_configuration", "statistics"] {
        assert!(server["extensions"].as_array().expect("extensions").contains(&json!(ext)), "{server}");
    }
    let (status, config) = agent.get("/v2/models/mlp/config").await;
    assert_eq!(status, StatusCode::OK, "{config}");
    assert_eq!(config["name"], "mlp");
    assert_eq!(config["platform"], "tract_onnx");
    assert_eq!(config["input"][0], json!({"name": "x", "data_type": "TYPE_FP32", "dims": [-1, 16]}), "{config}");
    assert_eq!(config["output"][0]["data_type"], "TYPE_FP32");
    assert_eq!(agent.get("/v2/models/mlp/versions/1/config").await.1, config);

    let (_, before) = agent.get("/v2/models/mlp/stats").await;
    assert_eq!(before["model_stats"][0]["inference_count"], 0, "{before}");
    for rows in [1, 2, 3] {
        let (status, _) = agent.infer("mlp", &mlp_request(rows)).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, after) = agent.get("/v2/models/mlp/versions/1/stats").await;
    assert_eq!(status, StatusCode::OK, "{after}");
    let s = &after["model_stats"][0];
    assert_eq!(
        (s["name"].clone(), s["version"].clone(), s["inference_count"].clone()),
        (json!("mlp"), json!("1"), json!(3))
    );
    let success = &s["inference_stats"]["success"];
    assert_eq!(success["count"], 3);
    assert!(success["ns"].as_u64() > Some(0) && s["inference_stats"]["compute_infer"]["ns"].as_u64() > Some(0), "{s}");
    assert!(s["last_inference"].as_u64() > Some(1_700_000_000_000), "Unix milliseconds: {s}");
    let (_, all) = agent.get("/v2/models/stats").await;
    assert_eq!(all["model_stats"].as_array().map(Vec::len), Some(1));
    let (status, missing) = agent.get("/v2/models/nope/config").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(missing["error"].is_string());
    agent.stop().await;
}
