//! The controller as a real process: registry, artifacts, tokens, restart, refusals.

mod common;

use std::process::Command;

use common::controller::{ADMIN, ControllerProcess};
use common::{binary, testdata};
use edgefleet_shared::compress::decompress_to_vec;
use edgefleet_shared::signature::DocumentSignature;
use edgefleet_shared::trust::TrustStore;
use edgefleet_shared::verify::{VerifyError, sha256_hex};
use reqwest::StatusCode;
use serde_json::Value;

const DATASET: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn fixture(name: &str) -> String {
    testdata().join(name).to_string_lossy().into_owned()
}

fn push(c: &ControllerProcess, model: &str, name: &str, extra: &[&str]) -> Value {
    let path = fixture(&format!("{model}.onnx"));
    let mut args = vec!["model", "push", path.as_str(), "--name", name];
    args.extend_from_slice(extra);
    c.cli_json(&args)
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn push_list_show_alias_download_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = ControllerProcess::start(dir.path());
    assert_eq!(
        c.admin_token_line.as_deref(),
        Some("admin token: taken from EDGEFLEET_ADMIN_TOKEN"),
        "the secret itself is never printed"
    );
    let lineage =
        ["--metric", "accuracy=0.97", "--param", "lr=0.1", "--dataset-hash", DATASET, "--code-commit", "abc123"];
    let iris_csv = fixture("iris_baseline.csv");
    let bc_csv = fixture("breast_cancer_baseline.csv");
    let mlp_csv = fixture("mlp_baseline.csv");
    let wine_csv = fixture("wine_baseline.csv");
    // dtypes has five inputs and Magika 2,048 byte features: no tabular baseline fits them.
    let mut pushes = vec![
        ("iris_logreg", "iris", Some(iris_csv.as_str())),
        ("breast_cancer_mlp", "breast-cancer", Some(bc_csv.as_str())),
        ("mlp", "mlp", Some(mlp_csv.as_str())),
        ("wine_forest", "wine", Some(wine_csv.as_str())),
        ("dtypes", "dtypes", None),
        ("magika", "magika", None),
    ];
    for (file, name, baseline) in pushes.drain(..) {
        let mut args: Vec<&str> = lineage.to_vec();
        if let Some(b) = baseline {
            args.extend(["--baseline", b]);
        }
        let v = push(&c, file, name, &args);
        assert_eq!(v["version"], 1, "{name}");
        let l = &v["manifest"]["lineage"];
        assert_eq!(
            (l["dataset_sha256"].as_str(), l["code_commit"].as_str()),
            (Some(DATASET), Some("abc123")),
            "{name}"
        );
        assert_eq!(l["metrics"]["accuracy"], 0.97);
        assert_eq!(l["params"]["lr"], "0.1");
        assert_eq!(v["manifest"]["baseline"].is_null(), baseline.is_none(), "{name}");
        assert!(!v["manifest"]["self_test"]["cases"][0]["outputs"].as_array().expect("golden outputs").is_empty());
    }
    let v2 = push(&c, "iris_logreg", "iris", &["--baseline", &iris_csv, "--parent", "1"]);
    assert_eq!(v2["version"], 2);

    let list = c.cli_json(&["model", "list"]);
    let names: Vec<&str> = list.as_array().expect("list").iter().filter_map(|m| m["name"].as_str()).collect();
    assert_eq!(names, ["breast-cancer", "dtypes", "iris", "magika", "mlp", "wine"]);

    let show = c.cli_json(&["model", "show", "iris:2"]);
    assert_eq!(show["manifest"]["lineage"]["parent_version"], 1);
    let profile = &show["manifest"]["baseline"];
    assert_eq!(profile["rows"], 150);
    assert_eq!(profile["features"].as_array().expect("features").len(), 4);
    let outputs = profile["outputs"].as_array().expect("output profiles");
    assert_eq!(outputs.len(), 2, "label and probabilities");
    assert_eq!(outputs[0]["type"], "classes");
    let human = c.cli(ADMIN, &["model", "show", "iris:2"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("lineage:   parent 1"), "{text}");

    c.cli_json(&["model", "alias", "iris:1", "production"]);
    assert_eq!(c.cli_json(&["model", "show", "iris:production"])["version"], 1);
    let moved = c.cli_json(&["model", "alias", "iris:2", "production"]);
    assert_eq!(moved["aliases"]["production"], 2);
    assert_eq!(c.cli_json(&["model", "show", "iris:production"])["version"], 2);

    let http = reqwest::Client::new();
    let model_artifact = show["artifacts"]
        .as_array()
        .expect("artifacts")
        .iter()
        .find(|a| a["name"] == "model.onnx")
        .expect("model")
        .clone();
    let sha = model_artifact["sha256"].as_str().expect("sha").to_owned();
    let whole = check_download(&http, &c, &sha, &model_artifact).await;
    assert_eq!(
        decompress_to_vec(&whole, model_artifact["size"].as_u64().expect("size")).expect("unpack"),
        std::fs::read(fixture("iris_logreg.onnx")).expect("read")
    );

    let audit = c.cli_json(&["audit"]);
    let actions: Vec<&str> = audit.as_array().expect("audit").iter().filter_map(|a| a["action"].as_str()).collect();
    assert!(actions.contains(&"model.push") && actions.contains(&"model.alias"), "{actions:?}");

    // A lost admin token is recovered by whoever can write the data directory: a new one, in
    // a file only its owner reads, that works at once against the running controller.
    let recovered = common::controller::controller_cmd(dir.path())
        .args(["recover-admin", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("recover-admin");
    assert!(recovered.status.success(), "{}", stderr(&recovered));
    let file = dir.path().join("admin-token");
    assert!(String::from_utf8_lossy(&recovered.stdout).contains(&file.display().to_string()));
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).expect("token file").permissions());
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(&file).expect("read").trim().to_owned();
    assert!(!String::from_utf8_lossy(&recovered.stdout).contains(&token), "the secret is not printed");
    let listed = c.cli(&token, &["--output", "json", "token", "list"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("recovered-admin"));

    c.stop();
    let c = ControllerProcess::start(dir.path());
    assert!(c.admin_token_line.is_none(), "the admin token is printed on the first start only");
    let list_again = c.cli_json(&["model", "list"]);
    assert_eq!(
        list_again,
        list.as_array()
            .map(|l| {
                let mut l = l.clone();
                for m in &mut l {
                    if m["name"] == "iris" {
                        m["aliases"] = serde_json::json!({"production": 2});
                    }
                }
                Value::Array(l)
            })
            .expect("list")
    );
    assert_eq!(c.cli_json(&["model", "show", "iris:production"]), show_with_alias(&show));
    let again = check_download(&http, &c, &sha, &model_artifact).await;
    assert_eq!(again, whole);
}

fn show_with_alias(show: &Value) -> Value {
    let mut s = show.clone();
    s["aliases"] = serde_json::json!(["production"]);
    s
}

/// Downloads an artifact whole and by ranges; checks headers, digests and resumption.
async fn check_download(http: &reqwest::Client, c: &ControllerProcess, sha: &str, info: &Value) -> Vec<u8> {
    let url = c.url(&format!("/api/v1/artifacts/{sha}"));
    let r = http.get(&url).bearer_auth(ADMIN).send().await.expect("GET");
    assert_eq!(r.status(), StatusCode::OK);
    let compressed_size = info["compressed_size"].as_u64().expect("compressed size");
    assert_eq!(r.headers()["content-length"], compressed_size.to_string().as_str());
    let etag = r.headers()["etag"].to_str().expect("etag").to_owned();
    assert_eq!(etag, format!("\"{}\"", info["compressed_sha256"].as_str().expect("digest")));
    let whole = r.bytes().await.expect("body").to_vec();
    assert_eq!(sha256_hex(&whole), info["compressed_sha256"].as_str().expect("digest"));

    // Resume: the first 100 bytes, then the rest.
    let head = http.get(&url).bearer_auth(ADMIN).header("range", "bytes=0-99").send().await.expect("range");
    assert_eq!(head.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(head.headers()["content-range"], format!("bytes 0-99/{compressed_size}").as_str());
    assert_eq!(head.headers()["content-length"], "100");
    let mut joined = head.bytes().await.expect("body").to_vec();
    let tail = http.get(&url).bearer_auth(ADMIN).header("range", "bytes=100-").send().await.expect("range");
    assert_eq!(tail.status(), StatusCode::PARTIAL_CONTENT);
    joined.extend_from_slice(&tail.bytes().await.expect("body"));
    assert_eq!(joined, whole);

    let past = http
        .get(&url)
        .bearer_auth(ADMIN)
        .header("range", format!("bytes={compressed_size}-"))
        .send()
        .await
        .expect("range");
    assert_eq!(past.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let cached = http.get(&url).bearer_auth(ADMIN).header("if-none-match", &etag).send().await.expect("etag");
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    whole
}

#[test]
fn refusals_are_clear_and_leave_no_partial_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = ControllerProcess::start(dir.path());
    let tmp = tempfile::tempdir().expect("tmp");
    let junk = tmp.path().join("junk.onnx");
    std::fs::write(&junk, b"definitely not protobuf").expect("write");
    let truncated = tmp.path().join("truncated.onnx");
    let magika = std::fs::read(fixture("magika.onnx")).expect("read");
    std::fs::write(&truncated, &magika[..magika.len() / 2]).expect("write");

    for (path, name, needle) in
        [(&junk, "junk", "not a valid ONNX model"), (&truncated, "truncated", "not a valid ONNX model")]
    {
        let o = c.cli(ADMIN, &["model", "push", path.to_str().expect("utf-8"), "--name", name]);
        assert_eq!(o.status.code(), Some(1), "{name}");
        assert!(stderr(&o).contains("422") && stderr(&o).contains(needle), "{name}: {}", stderr(&o));
    }
    let bc = fixture("breast_cancer_baseline.csv");
    let o = c.cli(ADMIN, &["model", "push", &fixture("iris_logreg.onnx"), "--name", "iris", "--baseline", &bc]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("30 columns, but model input \"X\" takes 4 features"), "{}", stderr(&o));
    let ragged = tmp.path().join("ragged.csv");
    std::fs::write(&ragged, "a,b,c,d\n1,2,3,4\n5,6,7\n").expect("write");
    let o = c.cli(
        ADMIN,
        &[
            "model",
            "push",
            &fixture("iris_logreg.onnx"),
            "--name",
            "iris",
            "--baseline",
            ragged.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("line 3: 3 fields, the header has 4"), "{}", stderr(&o));
    assert_eq!(c.cli_json(&["model", "list"]), serde_json::json!([]), "refused pushes leave nothing behind");

    push(&c, "iris_logreg", "iris", &[]);
    let o = c.cli(ADMIN, &["model", "push", &fixture("iris_logreg.onnx"), "--name", "iris", "--version", "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("409") && stderr(&o).contains("already has version 1"), "{}", stderr(&o));
    // A valid model tract cannot run is refused in words that say so and name the operator.
    let o = c.cli(ADMIN, &["model", "push", &fixture("det.onnx"), "--name", "det"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("422") && err.contains("tract does not implement the ONNX operator Det"), "{err}");
    assert!(!err.contains("not a valid ONNX model"), "{err}");
    // Byte strings too (validated on synthetic words).
    let text = push(&c, "bytes", "text", &[]);
    assert_eq!(text["manifest"]["inputs"][0]["datatype"], "BYTES", "{text}");
    assert!(text["manifest"]["self_test"]["cases"][0]["outputs"][0]["data"][0].is_string(), "{text}");
    // Half floats register (validated on synthetic FP16 inputs), schema and golden outputs included.
    let half = push(&c, "fp16", "half", &[]);
    assert_eq!(half["manifest"]["inputs"][0]["datatype"], "FP16", "{half}");
    assert_eq!(half["manifest"]["self_test"]["cases"][0]["outputs"][0]["datatype"], "FP16", "{half}");
    // Registry guards. A model whose outputs change from run to run is refused at push (no
    // device could pass its self-test).
    let o = c.cli(ADMIN, &["model", "push", &fixture("nondeterministic.onnx"), "--name", "noise"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("422") && stderr(&o).contains("not deterministic"), "{}", stderr(&o));
    // The same bytes again: accepted as a new version, with a warning.
    let again = c.cli(ADMIN, &["--output", "json", "model", "push", &fixture("iris_logreg.onnx"), "--name", "iris"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stderr(&again).contains("warning: the same model bytes are already version(s) 1"), "{}", stderr(&again));
    let answer: Value = serde_json::from_slice(&again.stdout).expect("json");
    assert_eq!(answer["version"], 2);
    assert_eq!(answer["warnings"].as_array().map(Vec::len), Some(1), "{answer}");
    // A schema that breaks the latest version's callers: refused unless allowed.
    let o = c.cli(ADMIN, &["model", "push", &fixture("mlp.onnx"), "--name", "iris"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("409") && err.contains("would break callers of iris:2") && err.contains("input \"X\" is gone"),
        "{err}"
    );
    assert!(err.contains("--allow-schema-change"), "{err}");
    let allowed = push(&c, "mlp", "iris", &["--allow-schema-change"]);
    assert_eq!(allowed["version"], 3);
    assert!(
        allowed["warnings"][0].as_str().is_some_and(|w| w.starts_with("schema changed from version 2 (allowed)")),
        "{allowed}"
    );
    assert!(c.cli_json(&["model", "show", "iris:3"]).get("warnings").is_none(), "warnings belong to the push's answer");
    let o = c.cli(ADMIN, &["model", "show", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("404") && stderr(&o).contains("unknown model \"nope\""), "{}", stderr(&o));
    let o = c.cli("wrong-token", &["model", "list"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("401"), "{}", stderr(&o));

    let viewer = c.cli_json(&["token", "create", "--role", "viewer", "--name", "dashboard"]);
    let viewer_token = viewer["token"].as_str().expect("token");
    let o = c.cli(viewer_token, &["model", "push", &fixture("mlp.onnx"), "--name", "mlp"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("403") && stderr(&o).contains("operator role"), "{}", stderr(&o));
    assert!(c.cli(viewer_token, &["model", "list"]).status.success(), "viewers may read");
    c.cli_json(&["token", "revoke", &viewer["id"].to_string()]);
    assert!(stderr(&c.cli(viewer_token, &["model", "list"])).contains("401"), "revoked tokens stop working");

    let list = c.cli_json(&["model", "list"]);
    let iris = list.as_array().expect("list").iter().find(|m| m["name"] == "iris").expect("iris");
    assert_eq!(iris["versions"], serde_json::json!([1, 2, 3]), "only the accepted versions exist");
    let unreachable = Command::new(binary("edgefleet"))
        .args(["--controller", "http://127.0.0.1:9", "model", "list"])
        .output()
        .expect("run");
    assert_eq!(unreachable.status.code(), Some(69));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushes_get_distinct_increasing_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = ControllerProcess::start(dir.path());
    let http = reqwest::Client::new();
    let model = std::fs::read(fixture("mlp.onnx")).expect("read");
    // Ten concurrent pushes: five models, two pushes each.
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let http = http.clone();
            let url = c.url(&format!("/api/v1/models/model-{}/versions", i % 5));
            let model = model.clone();
            tokio::spawn(async move {
                let form = reqwest::multipart::Form::new()
                    .part("model", reqwest::multipart::Part::bytes(model).file_name("m.onnx"));
                let r = http.post(url).bearer_auth(ADMIN).multipart(form).send().await.expect("push");
                assert_eq!(r.status(), StatusCode::CREATED);
                let v: Value = r.json().await.expect("json");
                (v["name"].as_str().expect("name").to_owned(), v["version"].as_u64().expect("version"))
            })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.expect("task"));
    }
    got.sort();
    let want: Vec<(String, u64)> =
        (0..5).flat_map(|m| [(format!("model-{m}"), 1), (format!("model-{m}"), 2)]).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn signed_manifests_verify_against_the_public_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = ControllerProcess::start(dir.path());
    push(&c, "iris_logreg", "iris", &["--baseline", &fixture("iris_baseline.csv")]);
    let trust_path = dir.path().join("trust.json");
    let o = common::controller::controller_cmd(dir.path())
        .args(["public-key", "--data-dir"])
        .arg(dir.path())
        .arg("--out")
        .arg(&trust_path)
        .output()
        .expect("public-key");
    assert!(o.status.success(), "{}", stderr(&o));
    let trust = TrustStore::from_bytes(&std::fs::read(&trust_path).expect("trust")).expect("valid trust file");

    let http = reqwest::Client::new();
    let bundle = http
        .get(c.url("/api/v1/models/iris/versions/1/bundle"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("bundle")
        .bytes()
        .await
        .expect("bytes");
    let sig: DocumentSignature = http
        .get(c.url("/api/v1/models/iris/versions/1/signature"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("sig")
        .json()
        .await
        .expect("json");
    trust.check(&bundle, &sig).expect("the controller's signature verifies");
    let info = c.cli_json(&["model", "show", "iris:1"]);
    assert_eq!(sha256_hex(&bundle), info["bundle_sha256"].as_str().expect("digest"));
    let mut tampered = bundle.to_vec();
    tampered[10] ^= 1;
    assert!(matches!(trust.check(&tampered, &sig), Err(VerifyError::BadSignature { .. })));

    let doc: Value = http.get(c.url("/api/v1/openapi.json")).send().await.expect("openapi").json().await.expect("json");
    assert!(doc["paths"]["/api/v1/models/{name}/versions"]["post"].is_object(), "push is documented");
    let missing = http.get(c.url("/api/v1/models")).send().await.expect("no token");
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    let body: Value = missing.json().await.expect("json");
    assert!(body["error"].as_str().expect("error").contains("Bearer"));
}

/// Without `EDGEFLEET_ADMIN_TOKEN` the first start generates the admin token and writes it to a
/// 0600 file; stdout (the journal) gets its path, never the secret.
#[tokio::test]
async fn a_generated_admin_token_goes_to_a_private_file_not_the_journal() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = common::controller::controller_cmd(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--mqtt-listen", "127.0.0.1:0"])
        .env_remove("EDGEFLEET_ADMIN_TOKEN")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut printed = Vec::new();
    let url = loop {
        let line = lines.next().expect("the controller stopped").expect("line");
        if let Some(url) = line.strip_prefix("edgefleet-controller listening on ") {
            break url.to_owned();
        }
        printed.push(line);
    };
    let file = dir.path().join("admin-token");
    assert_eq!(
        printed,
        vec![format!("admin token: written to {} (mode 0600): read it, store it, delete the file", file.display())]
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).expect("token file").permissions());
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(&file).expect("read").trim().to_owned();
    let r = reqwest::Client::new().get(format!("{url}/api/v1/tokens")).bearer_auth(&token).send().await.expect("list");
    assert_eq!(r.status(), StatusCode::OK, "the token in the file is the admin token");
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    assert!(child.wait().expect("wait").success(), "a clean stop");
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut log).expect("stderr");
    // A clean start and stop (embedded broker included) logs no error, in plain text (stderr
    // is no terminal here, as under systemd).
    assert!(log.contains("listening"), "{log}");
    assert!(!log.contains(" ERROR ") && !log.contains(" WARN "), "{log}");
    assert!(!log.contains('\x1b'), "colour codes outside a terminal: {log}");
    assert!(!log.contains(&token), "the token reached the log");
}
