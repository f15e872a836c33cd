//! A man in the middle between agents and the controller: forwards every request, except that
//! the desired-state and trust answers can be made hostile on demand (stalled, endless,
//! corrupted, replayed, forged), as a broken cache or an attacker on the path would.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use edgefleet_shared::fleet::TRUST_VERSION_HEADER;

/// What `GET .../desired` answers.
#[derive(Debug, Clone)]
pub enum Desired {
    /// The controller's answer.
    Forward,
    /// Headers, then one byte every 5 s, for ever.
    Stall,
    /// Headers, then bytes for ever, as fast as they are read.
    Endless,
    /// The controller's answer with one bit of the signature flipped, once; then `Forward`.
    CorruptOnce,
    /// This body instead of the controller's.
    Serve(Vec<u8>),
}

#[derive(Debug)]
struct Mode {
    desired: Desired,
    /// A trust chain to serve instead of the controller's, and the version to claim.
    trust: Option<(Vec<u8>, u64)>,
}

#[derive(Debug)]
struct Shared {
    upstream: String,
    http: reqwest::Client,
    mode: Mutex<Mode>,
    stalled: AtomicUsize,
    served_desired: AtomicUsize,
    forwarded: Mutex<Vec<Vec<u8>>>,
}

/// A running proxy.
#[derive(Debug, Clone)]
pub struct Proxy {
    /// Its base URL (give it to agents as `--controller`).
    pub url: String,
    shared: Arc<Shared>,
}

/// Counts a stalled answer while its body is being sent.
struct Stalling(Arc<Shared>);

impl Drop for Stalling {
    fn drop(&mut self) {
        self.0.stalled.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Proxy {
    /// Starts a proxy on 127.0.0.1 in front of `upstream` (a controller's base URL).
    pub async fn start(upstream: &str) -> Proxy {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            mode: Mutex::new(Mode { desired: Desired::Forward, trust: None }),
            stalled: AtomicUsize::new(0),
            served_desired: AtomicUsize::new(0),
            forwarded: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let app = axum::Router::new().fallback(handle).with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Proxy { url, shared }
    }

    /// Sets what desired-state requests get from now on.
    pub fn set_desired(&self, desired: Desired) {
        self.shared.mode.lock().expect("mode").desired = desired;
    }

    /// Serves `chain` (JSON bytes) for trust requests and claims `version` on desired answers.
    pub fn set_trust(&self, chain: Vec<u8>, version: u64) {
        self.shared.mode.lock().expect("mode").trust = Some((chain, version));
    }

    /// Trust requests reach the controller again.
    pub fn clear_trust(&self) {
        self.shared.mode.lock().expect("mode").trust = None;
    }

    /// Answers being stalled right now.
    pub fn stalled(&self) -> usize {
        self.shared.stalled.load(Ordering::SeqCst)
    }

    /// Desired-state requests answered so far (any way).
    pub fn desired_requests(&self) -> usize {
        self.shared.served_desired.load(Ordering::SeqCst)
    }

    /// The controller's desired-state answers that were forwarded, oldest first.
    pub fn forwarded_desired(&self) -> Vec<Vec<u8>> {
        self.shared.forwarded.lock().expect("forwarded").clone()
    }
}

async fn forward(
    shared: &Shared,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, Bytes) {
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let mut request = shared.http.request(method, format!("{}{path}", shared.upstream)).body(body);
    for (name, value) in headers {
        if name.as_str().starts_with("x-edgefleet-") || name == "content-type" || name == "range" {
            request = request.header(name, value);
        }
    }
    let Ok(resp) = request.send().await else {
        return (StatusCode::BAD_GATEWAY, HeaderMap::new(), Bytes::new());
    };
    let status = resp.status();
    let mut out = HeaderMap::new();
    for name in ["content-type", TRUST_VERSION_HEADER, "content-range", "etag"] {
        if let Some(v) = resp.headers().get(name) {
            out.insert(name, v.clone());
        }
    }
    (status, out, resp.bytes().await.unwrap_or_default())
}

fn respond(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Flips one bit in the signature of an envelope's JSON.
fn corrupt(envelope: &[u8]) -> Vec<u8> {
    let mut value: serde_json::Value = serde_json::from_slice(envelope).expect("an envelope");
    let sig = value["signature"]["signature"].as_str().expect("signature").to_owned();
    let mut bytes = sig.into_bytes();
    bytes[10] = if bytes[10] == b'A' { b'B' } else { b'A' };
    value["signature"]["signature"] = serde_json::Value::String(String::from_utf8(bytes).expect("ascii"));
    serde_json::to_vec(&value).expect("json")
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let (desired, trust) = {
        let mode = shared.mode.lock().expect("mode");
        (mode.desired.clone(), mode.trust.clone())
    };
    if method == Method::GET
        && path.ends_with("/trust")
        && let Some((chain, _)) = trust
    {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        return respond(StatusCode::OK, h, Body::from(chain));
    }
    if !(method == Method::GET && path.ends_with("/desired")) {
        let (status, h, body) = forward(&shared, method, &uri, &headers, body).await;
        return respond(status, h, Body::from(body));
    }
    shared.served_desired.fetch_add(1, Ordering::SeqCst);
    let claim = |h: &mut HeaderMap| {
        if let Some((_, version)) = &trust {
            h.insert(TRUST_VERSION_HEADER, HeaderValue::from(*version));
        }
    };
    let json = || {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        claim(&mut h);
        h
    };
    match desired {
        Desired::Forward | Desired::CorruptOnce => {
            let (status, mut h, body) = forward(&shared, method, &uri, &headers, body).await;
            claim(&mut h);
            if status != StatusCode::OK {
                return respond(status, h, Body::from(body));
            }
            shared.forwarded.lock().expect("forwarded").push(body.to_vec());
            if matches!(desired, Desired::CorruptOnce) {
                shared.mode.lock().expect("mode").desired = Desired::Forward;
                return respond(status, h, Body::from(corrupt(&body)));
            }
            respond(status, h, Body::from(body))
        }
        Desired::Serve(body) => respond(StatusCode::OK, json(), Body::from(body)),
        Desired::Stall => {
            shared.stalled.fetch_add(1, Ordering::SeqCst);
            let guard = Stalling(shared.clone());
            let stream = futures::stream::unfold(guard, |guard| async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Some((Ok::<_, std::io::Error>(Bytes::from_static(b" ")), guard))
            });
            let first = futures::stream::once(async { Ok::<_, std::io::Error>(Bytes::from_static(b"{")) });
            respond(StatusCode::OK, json(), Body::from_stream(futures::StreamExt::chain(first, stream)))
        }
        Desired::Endless => {
            let chunk = Bytes::from(vec![b' '; 64 * 1024]);
            let stream = futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
            respond(StatusCode::OK, json(), Body::from_stream(stream))
        }
    }
}
