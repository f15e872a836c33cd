//! The controller's fleet half as a real process: enrollment, device-signed requests, deploy,
//! the signed desired state, device artifact downloads and status reports.

mod common;

use common::controller::{ADMIN, ControllerProcess};
use common::testdata;
use edgefleet_shared::deployment::DeploymentDocument;
use edgefleet_shared::fleet::{self, DEVICE_HEADER, EnrollRequest, EnrollResponse, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use edgefleet_shared::keys::{FileKey, Signer};
use edgefleet_shared::signature::SignedEnvelope;
use edgefleet_shared::trust::TrustStore;
use edgefleet_shared::verify::verify_deployment;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

/// A device's signing identity against one controller.
struct Device<'a> {
    http: &'a reqwest::Client,
    c: &'a ControllerProcess,
    key: &'a FileKey,
    id: &'a str,
}

impl Device<'_> {
    /// A signed request made at unix time `at`.
    fn signed(&self, method: reqwest::Method, path: &str, body: &[u8], at: u64) -> reqwest::RequestBuilder {
        self.http
            .request(method.clone(), self.c.url(path))
            .header(DEVICE_HEADER, self.id)
            .header(TIMESTAMP_HEADER, at.to_string())
            .header(SIGNATURE_HEADER, fleet::sign_request(self.key, method.as_str(), path, at, body))
            .body(body.to_vec())
    }
}

#[tokio::test]
async fn enroll_deploy_fetch_verify_download_and_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = ControllerProcess::start(dir.path());
    let iris = testdata().join("iris_logreg.onnx");
    c.cli_json(&["model", "push", iris.to_str().expect("utf-8"), "--name", "iris"]);
    let token = c.cli_json(&["device", "token", "create", "--uses", "1", "--ttl", "10m", "--label", "site=lab"]);
    let token = token["token"].as_str().expect("token field").to_owned();

    let http = reqwest::Client::new();
    let key = FileKey::from_seed([21; 32]);
    let enroll = |token: String, key: &FileKey| {
        http.post(c.url("/api/v1/enroll")).json(&EnrollRequest {
            token,
            public_key: key.public_key().to_base64(),
            labels: [("arch".to_owned(), "x86_64".to_owned())].into(),
        })
    };
    let r = enroll(token.clone(), &key).send().await.expect("enroll");
    assert_eq!(r.status(), StatusCode::OK);
    let enrolled: EnrollResponse = r.json().await.expect("json");
    assert_eq!(enrolled.device_id, fleet::device_id(&key.public_key()));
    assert_eq!(enrolled.labels.get("site").map(String::as_str), Some("lab"));
    let id = enrolled.device_id.clone();
    let dev = Device { http: &http, c: &c, key: &key, id: &id };
    // The token had one use.
    let again = enroll(token, &FileKey::from_seed([22; 32])).send().await.expect("enroll");
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    assert!(again.text().await.expect("body").contains("no uses left"));

    let desired_path = format!("/api/v1/devices/{id}/desired");
    let r = dev.signed(reqwest::Method::GET, &desired_path, b"", now()).send().await.expect("desired");
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "nothing deployed yet");

    let issued = c.cli_json(&["deploy", "iris:1", "--selector", "site=lab"]);
    assert_eq!(issued[0]["device_id"], id.as_str());
    assert_eq!(issued[0]["sequence"], 1);
    let r = dev.signed(reqwest::Method::GET, &desired_path, b"", now()).send().await.expect("desired");
    assert_eq!(r.status(), StatusCode::OK);
    let env: SignedEnvelope = r.json().await.expect("envelope");
    let trust_bytes = common::controller::controller_cmd(dir.path())
        .args(["public-key", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("public-key")
        .stdout;
    let trust = TrustStore::from_bytes(&trust_bytes).expect("trust");
    let doc: DeploymentDocument =
        verify_deployment(&env.document_bytes().expect("b64"), &env.signature, &trust, &id, None, now())
            .expect("verifies");
    let model = doc.model.as_ref().expect("a model");
    assert_eq!((model.name.as_str(), model.version, doc.sequence), ("iris", 1, 1));
    assert!(doc.expires_at > now() + 3600);
    // A second deploy of the same version is a new document with a higher sequence.
    c.cli_json(&["deploy", "iris:1", "--device", &id]);
    let r = dev.signed(reqwest::Method::GET, &desired_path, b"", now()).send().await.expect("desired");
    let env2: SignedEnvelope = r.json().await.expect("envelope");
    let doc2 = verify_deployment(&env2.document_bytes().expect("b64"), &env2.signature, &trust, &id, Some(1), now())
        .expect("newer");
    assert_eq!(doc2.sequence, 2);

    let model = doc.artifact("model.onnx").expect("model artifact");
    let path = format!("/api/v1/devices/{id}/artifacts/{}", model.sha256);
    let r = dev
        .signed(reqwest::Method::GET, &path, b"", now())
        .header("range", "bytes=0-9")
        .send()
        .await
        .expect("artifact");
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.expect("bytes").len(), 10);
    let other = format!("/api/v1/devices/{id}/artifacts/{}", "0".repeat(64));
    let r = dev.signed(reqwest::Method::GET, &other, b"", now()).send().await.expect("artifact");
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "only the device's own artifacts");

    // Refusals: stale timestamp, another device's key, a device speaking for another.
    let r = dev.signed(reqwest::Method::GET, &desired_path, b"", now() - 3600).send().await.expect("stale");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.expect("body").contains("stale"));
    let stranger = FileKey::from_seed([23; 32]);
    let r = Device { http: &http, c: &c, key: &stranger, id: &id }
        .signed(reqwest::Method::GET, &desired_path, b"", now())
        .send()
        .await
        .expect("forged");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let sid = fleet::device_id(&stranger.public_key());
    let r = Device { http: &http, c: &c, key: &stranger, id: &sid }
        .signed(reqwest::Method::GET, &format!("/api/v1/devices/{sid}/desired"), b"", now())
        .send()
        .await
        .expect("unknown");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.expect("body").contains("unknown device"));
    let r = http.get(c.url(&desired_path)).header(DEVICE_HEADER, sid.as_str()).send().await.expect("claim");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    let status = json!({"agent_version": "test", "uptime_secs": 5, "active": {"name": "iris", "version": 1}, "previous": null,
        "last_sequence": 2, "last_refusal": null, "last_activation": null, "requests": 10, "error_rate": 0.0});
    let body = serde_json::to_vec(&status).expect("json");
    let spath = format!("/api/v1/devices/{id}/status");
    let r = dev
        .signed(reqwest::Method::POST, &spath, &body, now())
        .header("content-type", "application/json")
        .send()
        .await
        .expect("status");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let shown: Value = c.cli_json(&["device", "show", &id]);
    assert_eq!(shown["online"], true);
    assert_eq!(shown["status"]["active"]["version"], 1);
    assert_eq!(shown["desired_sequence"], 2);
    let table = c.cli(ADMIN, &["device", "list"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("iris:1"), "{}", String::from_utf8_lossy(&table.stdout));
    assert!(key.key_id().len() == 16);
}
