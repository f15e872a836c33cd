//! A real agent (`serve::run`) on a free port, driven over HTTP by the integration tests.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use edgefleet_agent::config::{AgentConfig, ModelConfig};
use edgefleet_shared::inference::INFERENCE_HEADER_CONTENT_LENGTH;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::testdata;

/// An agent serving models from `tests/testdata`, stopped by [`Agent::stop`].
pub struct Agent {
    base: String,
    /// The gRPC API (`http://host:port`, as tonic's channels take it).
    pub grpc: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), edgefleet_agent::serve::ServeError>>,
}

impl Agent {
    pub async fn start(models: &[&str], tweak: impl FnOnce(&mut AgentConfig)) -> Agent {
        let mut config = AgentConfig::default();
        config.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.server.grpc_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.backend = super::tract_backend();
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
            move |at| {
                let _ = addr_tx.send(at);
            },
        ));
        let at: edgefleet_agent::serve::Listening = addr_rx.await.expect("agent reports its address");
        let agent = Agent {
            base: format!("http://{}", at.http),
            grpc: format!("http://{}", at.grpc.expect("gRPC on")),
            client: reqwest::Client::new(),
            stop: Some(stop),
            task,
        };
        agent.wait_ready().await;
        agent
    }

    /// Waits until every configured model is loaded and warm.
    pub async fn wait_ready(&self) {
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

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self.client.get(self.url(path)).send().await.expect("GET");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn infer(&self, model: &str, body: &Value) -> (StatusCode, Value) {
        let r = self.client.post(self.url(&format!("/v2/models/{model}/infer"))).json(body).send().await.expect("POST");
        let status = r.status();
        (status, r.json().await.expect("JSON answer"))
    }

    pub async fn infer_raw(&self, model: &str, body: Vec<u8>, headers: &[(&str, String)]) -> reqwest::Response {
        let mut req = self.client.post(self.url(&format!("/v2/models/{model}/infer"))).body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        req.send().await.expect("POST")
    }

    /// A request that must still succeed: the agent keeps serving after bad input.
    pub async fn assert_still_serving(&self) {
        let (status, body) = self.infer("mlp", &mlp_request(1)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        self.task.await.expect("agent task").expect("clean shutdown");
    }
}

/// A valid request for `mlp.onnx` with `rows` rows.
pub fn mlp_request(rows: usize) -> Value {
    let data: Vec<f32> = (0..rows * 16).map(|i| (i as f32 * 0.37).sin()).collect();
    json!({"inputs": [{"name": "x", "shape": [rows, 16], "datatype": "FP32", "data": data}]})
}

/// Splits a binary-extension response into its JSON header and binary part.
pub async fn split_binary_response(r: reqwest::Response) -> (Value, Vec<u8>) {
    assert_eq!(r.status(), StatusCode::OK);
    let json_len: usize =
        r.headers()[INFERENCE_HEADER_CONTENT_LENGTH].to_str().expect("ascii").parse().expect("number");
    let bytes = r.bytes().await.expect("body");
    let (head, bin) = bytes.split_at(json_len);
    (serde_json::from_slice(head).expect("JSON header"), bin.to_vec())
}
