//! The KServe v2 HTTP API, driven over a real socket against the library's `serve::run`.

mod common;

use common::server::{Agent, mlp_request};
use common::{assert_close, references, tensor_from_json, testdata};
use edgefleet_agent::config::ModelConfig;
use edgefleet_agent::worker::BatchingConfig;
use edgefleet_shared::inference::{INFERENCE_HEADER_CONTENT_LENGTH, MODEL_VERSION_HEADER};
use reqwest::StatusCode;
use serde_json::{Value, json};

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
