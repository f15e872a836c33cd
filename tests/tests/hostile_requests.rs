//! A corpus of malformed and hostile requests against both daemons' HTTP APIs: every route, with
//! wrong methods, path segments that are not numbers, not UTF-8 or out of range, bad queries,
//! every kind of credentials, bodies that are empty, truncated, deeply nested, of the wrong type
//! or over the limits. Generated here from a fixed seed (the same corpus on every run).
//!
//! Asserted for every request: an answer within its deadline (no hang), no 5xx but the documented
//! 503, every error body `{"error": "<text>"}` JSON; and afterwards: both processes alive and
//! answering a correct request correctly. The status histogram is printed (status 0: the server
//! answered and closed before the client finished sending a large body it did not read).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::controller::{ADMIN, ControllerProcess};
use common::{AgentProcess, testdata};
use rand::{RngExt as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Requests per daemon.
const CONTROLLER_REQUESTS: usize = 6_000;
const AGENT_REQUESTS: usize = 4_000;
/// Requests in flight at once.
const CONCURRENCY: usize = 8;

/// One generated request.
#[derive(Debug, Clone)]
struct Hostile {
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// Path segments: plausible, and every kind of wrong.
fn segment(rng: &mut ChaCha8Rng, plausible: &[&str]) -> String {
    let hostile = [
        "0",
        "-1",
        "1.5",
        "abc",
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551616",
        "%FF",
        "%00",
        "..",
        "%2e%2e",
        "%2F",
        "a%20b",
        "%C3%A9",
        "%F0%9F%98%80",
        "nul%00l",
        "",
    ];
    match rng.random_range(0..10) {
        0..=4 => (*pick(rng, plausible)).to_owned(),
        5 => "x".repeat(rng.random_range(100..3000)),
        _ => (*pick(rng, &hostile)).to_owned(),
    }
}

fn query(rng: &mut ChaCha8Rng) -> String {
    let q = [
        "",
        "",
        "",
        "?limit=abc",
        "?limit=-1",
        "?limit=99999999999999999999",
        "?limit=5",
        "?foo=1",
        "?window=abc",
        "?window=1h",
        "?window=0s",
        "?window=99999999999d",
        "?group=%FF",
        "?%FF=%FF",
        "?model=iris",
        "?=",
        "?&&&",
    ];
    (*pick(rng, &q)).to_owned()
}

/// JSON (and not) bodies: of every wrong shape and size.
fn body(rng: &mut ChaCha8Rng, plausible: &[Value]) -> Vec<u8> {
    match rng.random_range(0..16) {
        0 => Vec::new(),
        1 => b"{".to_vec(),
        2 => b"null".to_vec(),
        3 => b"[]".to_vec(),
        4 => "[".repeat(rng.random_range(100..5000)).into_bytes(),
        5 => (0..rng.random_range(1..2000)).map(|_| rng.random::<u8>()).collect(),
        6 => {
            json!({"model": 1, "version": [], "selector": "x", "uses": -1, "ttl_secs": 1e300}).to_string().into_bytes()
        }
        7 => json!({"uses": 4_294_967_296u64, "ttl_secs": 9_223_372_036_854_775_808u64}).to_string().into_bytes(),
        8 if rng.random_range(0..20) == 0 => vec![b' '; 3 << 20],
        9 => json!({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": "x"}]})
            .to_string()
            .into_bytes(),
        10 => json!({"inputs": [{"name": "X", "shape": [-1, 4], "datatype": "FP32", "data": [1]}]})
            .to_string()
            .into_bytes(),
        11 => json!({"inputs": [{"name": "X", "shape": [1_000_000_000_000u64, 4], "datatype": "FP32", "data": [1]}]})
            .to_string()
            .into_bytes(),
        _ => {
            let mut v = pick(rng, plausible).clone();
            if let Some(obj) = v.as_object_mut() {
                // One field changed to a wrong type or an extreme value.
                let keys: Vec<String> = obj.keys().cloned().collect();
                if let Some(k) = keys.get(rng.random_range(0..keys.len().max(1))) {
                    let wrong =
                        [json!(null), json!(-1), json!(1e300), json!("%FF"), json!([]), json!({}), json!(u64::MAX)];
                    obj.insert(k.clone(), pick(rng, &wrong).clone());
                }
                if rng.random_bool(0.3) {
                    obj.insert("unexpected_field".into(), json!(1));
                }
            }
            v.to_string().into_bytes()
        }
    }
}

fn headers(rng: &mut ChaCha8Rng, tokens: &[String], is_multipart: bool) -> Vec<(String, String)> {
    let mut h = Vec::new();
    match rng.random_range(0..10) {
        0 => {}
        1 => h.push(("authorization".into(), "Bearer ".into())),
        2 => h.push(("authorization".into(), "Basic YTpi".into())),
        3 => h.push(("authorization".into(), "Bearer efk_not-a-token".into())),
        _ => h.push(("authorization".into(), format!("Bearer {}", pick(rng, tokens)))),
    }
    let content_type = if is_multipart && rng.random_bool(0.5) {
        *pick(rng, &["multipart/form-data", "multipart/form-data; boundary=x", "multipart/form-data; boundary="])
    } else {
        *pick(rng, &["application/json", "text/plain", "", "application/octet-stream", "application/json; charset=%FF"])
    };
    if !content_type.is_empty() {
        h.push(("content-type".into(), content_type.into()));
    }
    if rng.random_bool(0.2) {
        for (k, v) in [
            ("x-edgefleet-device", "dev-0000000000000000"),
            ("x-edgefleet-timestamp", "99999999999999999999"),
            ("x-edgefleet-signature", "%%%"),
            ("range", "bytes=99999999999-1"),
            ("inference-header-content-length", "18446744073709551615"),
        ] {
            if rng.random_bool(0.5) {
                h.push((k.into(), v.into()));
            }
        }
    }
    h
}

const METHODS: &[Method] =
    &[Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH, Method::HEAD, Method::OPTIONS];

fn controller_corpus(seed: u64, tokens: &[String]) -> Vec<Hostile> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let routes: &[(&str, &[Method])] = &[
        ("/api/v1/models", &[Method::GET]),
        ("/api/v1/models/{name}", &[Method::GET]),
        ("/api/v1/models/{name}/versions", &[Method::POST]),
        ("/api/v1/models/{name}/versions/{version}", &[Method::GET]),
        ("/api/v1/models/{name}/versions/{version}/bundle", &[Method::GET]),
        ("/api/v1/models/{name}/versions/{version}/signature", &[Method::GET]),
        ("/api/v1/models/{name}/versions/{version}/drift", &[Method::GET]),
        ("/api/v1/models/{name}/aliases/{alias}", &[Method::PUT, Method::DELETE]),
        ("/api/v1/models/{name}/drift", &[Method::GET]),
        ("/api/v1/models/{name}/retrain-policy", &[Method::GET, Method::PUT]),
        ("/api/v1/artifacts/{sha}", &[Method::GET]),
        ("/api/v1/tokens", &[Method::GET, Method::POST]),
        ("/api/v1/tokens/{token}", &[Method::DELETE]),
        ("/api/v1/audit", &[Method::GET]),
        ("/api/v1/enrollment-tokens", &[Method::POST]),
        ("/api/v1/enroll", &[Method::POST]),
        ("/api/v1/devices", &[Method::GET]),
        ("/api/v1/devices/{device}", &[Method::GET]),
        ("/api/v1/devices/{device}/desired", &[Method::GET]),
        ("/api/v1/devices/{device}/trust", &[Method::GET]),
        ("/api/v1/devices/{device}/mqtt-certificate", &[Method::POST]),
        ("/api/v1/devices/{device}/artifacts/{sha}", &[Method::GET]),
        ("/api/v1/devices/{device}/status", &[Method::POST]),
        ("/api/v1/deployments", &[Method::POST]),
        ("/api/v1/rollouts", &[Method::GET, Method::POST]),
        ("/api/v1/rollouts/{id}", &[Method::GET]),
        ("/api/v1/rollouts/{id}/{action}", &[Method::POST]),
        ("/api/v1/retrain", &[Method::GET]),
        ("/api/v1/retrain/{id}", &[Method::GET]),
        ("/api/v1/retrain/{id}/files/{file}", &[Method::GET]),
        ("/api/v1/openapi.json", &[Method::GET]),
        ("/api/v1/nothing/here", &[Method::GET]),
        ("/healthz", &[Method::GET]),
        ("/metrics", &[Method::GET]),
    ];
    let sha = "0".repeat(64);
    let plausible_bodies = [
        json!({"model": "iris", "version": "1", "selector": {"site": "x"}}),
        json!({"model": "iris", "version": "1", "device": "dev-0000000000000000"}),
        json!({"uses": 1, "ttl_secs": 60, "labels": {"site": "x"}}),
        json!({"name": "t", "role": "viewer"}),
        json!({"version": 1}),
        json!({"token": "efk_x", "public_key": "AAAA", "labels": {}}),
        json!({"psi": 0.2, "feature_share": 0.3, "windows": 3, "accuracy_drop": 0.05}),
        json!({"model": "iris", "version": "1", "selector": {"site": "x"}, "waves": [1, 100], "bake_secs": 1, "gates": ["error_rate<0.1"]}),
    ];
    (0..CONTROLLER_REQUESTS)
        .map(|_| {
            let (template, methods) = pick(&mut rng, routes);
            let method =
                if rng.random_bool(0.85) { pick(&mut rng, methods).clone() } else { pick(&mut rng, METHODS).clone() };
            let mut path = (*template).to_owned();
            for (hole, plausible) in [
                ("{name}", &["iris", "nope", "IRIS", "iris.v2"][..]),
                ("{version}", &["1", "2", "latest", "production"][..]),
                ("{alias}", &["staging", "production", "1"][..]),
                ("{sha}", &[sha.as_str(), "abc"][..]),
                // Never the bootstrap admin token (id 1): the harness keeps using it.
                ("{token}", &["2", "3", "999"][..]),
                ("{device}", &["dev-0000000000000000", "dev-x"][..]),
                ("{id}", &["1", "2", "999"][..]),
                ("{action}", &["pause", "resume", "abort", "explode"][..]),
                ("{file}", &["data.csv", "manifest.json", "../controller.db", "..%2Fcontroller.db"][..]),
            ] {
                while path.contains(hole) {
                    path = path.replacen(hole, &segment(&mut rng, plausible), 1);
                }
            }
            path.push_str(&query(&mut rng));
            let multipart = template.ends_with("/versions");
            Hostile {
                headers: headers(&mut rng, tokens, multipart),
                body: if method == Method::GET && rng.random_bool(0.7) {
                    Vec::new()
                } else {
                    body(&mut rng, &plausible_bodies)
                },
                method,
                path,
            }
        })
        .collect()
}

fn agent_corpus(seed: u64) -> Vec<Hostile> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let routes: &[(&str, &[Method])] = &[
        ("/v2", &[Method::GET]),
        ("/v2/health/live", &[Method::GET]),
        ("/v2/health/ready", &[Method::GET]),
        ("/v2/repository/index", &[Method::GET, Method::POST]),
        ("/v2/models/{model}", &[Method::GET]),
        ("/v2/models/{model}/versions/{version}", &[Method::GET]),
        ("/v2/models/{model}/ready", &[Method::GET]),
        ("/v2/models/{model}/versions/{version}/ready", &[Method::GET]),
        ("/v2/models/{model}/infer", &[Method::POST]),
        ("/v2/models/{model}/versions/{version}/infer", &[Method::POST]),
        ("/v2/models/{model}/feedback", &[Method::POST]),
        ("/v2/nothing", &[Method::GET]),
        ("/metrics", &[Method::GET]),
    ];
    let row = [5.1, 3.5, 1.4, 0.2];
    let plausible_bodies = [
        json!({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": row}]}),
        json!({"inputs": [{"name": "X", "shape": [2, 4], "datatype": "FP64", "data": [row, row]}]}),
        json!({"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": vec![0.5; 16]}], "outputs": [{"name": "probs"}]}),
        json!({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}]}),
        json!({"id": "r1", "label": 2}),
        json!({"feedback": [{"id": "r1", "label": 2}]}),
        json!({"inputs": [{"name": "f64", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}),
    ];
    (0..AGENT_REQUESTS)
        .map(|_| {
            let (template, methods) = pick(&mut rng, routes);
            let method =
                if rng.random_bool(0.85) { pick(&mut rng, methods).clone() } else { pick(&mut rng, METHODS).clone() };
            let mut path = (*template).to_owned();
            for (hole, plausible) in
                [("{model}", &["iris", "mlp", "dtypes", "nope"][..]), ("{version}", &["1", "2"][..])]
            {
                while path.contains(hole) {
                    path = path.replacen(hole, &segment(&mut rng, plausible), 1);
                }
            }
            let mut headers = headers(&mut rng, &["efk_any".to_owned()], false);
            if rng.random_bool(0.1) {
                headers.push(("inference-header-content-length".into(), rng.random_range(0..200u32).to_string()));
            }
            Hostile { headers, body: body(&mut rng, &plausible_bodies), method, path }
        })
        .collect()
}

/// Sends the corpus; returns the status histogram. Panics on a hang, a 5xx other than 503, or
/// an error body that is not `{"error": "<text>"}`.
async fn send(base: &str, corpus: Vec<Hostile>) -> BTreeMap<u16, usize> {
    // A connection per request: a server may close a connection after a request whose body it
    // did not read, and a pooled client would then race it on reuse.
    let http =
        reqwest::Client::builder().timeout(Duration::from_secs(20)).pool_max_idle_per_host(0).build().expect("client");
    let corpus = Arc::new(corpus);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (http, corpus, next, base) = (http.clone(), corpus.clone(), next.clone(), base.to_owned());
            tokio::spawn(async move {
                let mut seen = BTreeMap::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(r) = corpus.get(i) else { return seen };
                    let mut req = http.request(r.method.clone(), format!("{base}{}", r.path)).body(r.body.clone());
                    for (k, v) in &r.headers {
                        req = req.header(k, v);
                    }
                    let resp = match req.send().await {
                        Ok(resp) => resp,
                        // A server may answer (e.g. 404, 413) and close before a large body it
                        // does not want has been sent: the client cannot finish writing. That is
                        // an answer, not a hang; the daemons are checked alive at the end.
                        Err(e) if edgefleet_service::tls::error_chain(&e).contains("error writing a body") => {
                            *seen.entry(0).or_insert(0) += 1;
                            continue;
                        }
                        Err(e) => panic!(
                            "request {i} {} {} {:?}: {}",
                            r.method,
                            r.path,
                            r.headers,
                            edgefleet_service::tls::error_chain(&e)
                        ),
                    };
                    let status = resp.status();
                    *seen.entry(status.as_u16()).or_insert(0) += 1;
                    let is_json = resp
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.starts_with("application/json"));
                    let bytes = resp.bytes().await.unwrap_or_else(|e| panic!("request {i} {}: body: {e}", r.path));
                    assert!(
                        !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
                        "request {i}: {} {} answered {status}: {}",
                        r.method,
                        r.path,
                        String::from_utf8_lossy(&bytes)
                    );
                    if status.is_client_error() || status.is_server_error() {
                        if r.method == Method::HEAD {
                            continue;
                        }
                        let body: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                            panic!(
                                "request {i}: {} {} answered {status} with a non-JSON body: {:?}",
                                r.method,
                                r.path,
                                String::from_utf8_lossy(&bytes)
                            )
                        });
                        assert!(is_json, "request {i}: {status} without a JSON content type");
                        let text = body["error"].as_str().unwrap_or_default();
                        assert!(!text.trim().is_empty(), "request {i}: {} {}: error body {body}", r.method, r.path);
                    }
                }
            })
        })
        .collect();
    let mut histogram = BTreeMap::new();
    for w in workers {
        for (status, n) in w.await.expect("worker") {
            *histogram.entry(status).or_insert(0) += n;
        }
    }
    histogram
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_controller_answers_every_hostile_request_with_json_and_stays_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = ControllerProcess::start(&dir.path().join("controller"));
    c.cli_json(&[
        "model",
        "push",
        &testdata().join("iris_logreg.onnx").to_string_lossy(),
        "--name",
        "iris",
        "--baseline",
        &testdata().join("iris_baseline.csv").to_string_lossy(),
    ]);
    let viewer = c.cli_json(&["token", "create", "--role", "viewer", "--name", "v"])["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let operator =
        c.cli_json(&["token", "create", "--role", "operator", "--name", "o"])["token"].as_str().expect("t").to_owned();
    let corpus = controller_corpus(20261201, &[ADMIN.to_owned(), viewer, operator]);
    let sent = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(send(&c.base, corpus))).await;
    let histogram = sent.unwrap_or_else(|panic| {
        let log: Vec<String> = c.stderr.try_iter().collect();
        eprintln!("controller exit: {:?}\ncontroller log:\n{}", c.child.try_wait(), log.join("\n"));
        std::panic::resume_unwind(panic)
    });
    eprintln!("controller: {CONTROLLER_REQUESTS} hostile requests, statuses {histogram:?}");
    assert!(c.child.try_wait().expect("wait").is_none(), "the controller died");
    let models = c.cli_json(&["model", "show", "iris:1"]);
    assert_eq!(models["version"], 1, "a correct request still answers correctly: {models}");
    c.cli_json(&["model", "push", &testdata().join("iris_logreg.onnx").to_string_lossy(), "--name", "iris"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_agent_answers_every_hostile_request_with_json_and_stays_up() {
    let model = |n: &str| format!("{n}={}", testdata().join(format!("{n}.onnx")).display());
    let mut agent = AgentProcess::serve(
        &[
            "--backend",
            "tract",
            "--model",
            &model("iris_logreg").replace("iris_logreg=", "iris="),
            "--model",
            &model("mlp"),
            "--model",
            &model("dtypes"),
        ],
        &[],
    );
    let http = reqwest::Client::new();
    agent.wait_ready(&http).await;
    let sent =
        futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(send(&agent.base, agent_corpus(20261202)))).await;
    let histogram = sent.unwrap_or_else(|panic| {
        eprintln!("agent exit: {:?}\nagent log:\n{}", agent.child.try_wait(), agent.log());
        std::panic::resume_unwind(panic)
    });
    eprintln!("agent: {AGENT_REQUESTS} hostile requests, statuses {histogram:?}");
    assert!(agent.child.try_wait().expect("wait").is_none(), "the agent died");
    let body = json!({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]});
    let r = http.post(agent.url("/v2/models/iris/infer")).json(&body).send().await.expect("infer");
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["outputs"][0]["data"][0], 0, "iris row 0 is setosa: {v}");
}

/// The corpus is the same on every run (it is committed as this generator and its seed).
#[test]
fn the_corpus_is_reproducible() {
    let a: Vec<String> =
        controller_corpus(7, &["t".into()]).iter().take(50).map(|h| format!("{} {}", h.method, h.path)).collect();
    let b: Vec<String> =
        controller_corpus(7, &["t".into()]).iter().take(50).map(|h| format!("{} {}", h.method, h.path)).collect();
    assert_eq!(a, b);
}

/// Pushes of hostile models (tests/testdata/hostile, and an embedding whose Gather the synthetic
/// inputs run past its table) are refused with a 422 naming the problem; the controller stays
/// up and registers a sound model afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_model_pushes_are_refused_and_the_controller_stays_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = ControllerProcess::start(&dir.path().join("controller"));
    let cases = [
        ("hostile/huge_input.onnx", "validation_max_tensor_bytes"),
        ("embedding.onnx", "panicked while running it on synthetic inputs"),
        ("hostile/dangling_output.onnx", "panicked while loading it"),
        ("hostile/constant_of_shape.onnx", "alloc"),
    ];
    for (file, expected) in cases {
        let out = c.cli(ADMIN, &["model", "push", &testdata().join(file).to_string_lossy(), "--name", "hostile"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{file}: {err}");
        assert!(err.contains("422") && err.contains(expected), "{file}: {err}");
        assert!(c.child.try_wait().expect("wait").is_none(), "the controller died on {file}");
    }
    let pushed =
        c.cli_json(&["model", "push", &testdata().join("iris_logreg.onnx").to_string_lossy(), "--name", "iris"]);
    assert_eq!(pushed["version"], 1);
}
