//! systemd integration: the agent speaks the notify protocol a `Type=notify` unit expects
//! (READY with a status line, watchdog pets at half of WATCHDOG_USEC, STOPPING on SIGTERM), and
//! the shipped units pass `systemd-analyze verify` (needs systemd-analyze; on Debian it is part
//! of systemd); the first-boot pickup moves a token and labels off the boot partition and the
//! agent enrolls with them.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{AgentProcess, binary, testdata};

fn receive_until(socket: &UnixDatagram, what: &str, secs: u64, mut done: impl FnMut(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        assert!(Instant::now() < deadline, "timed out waiting for {what}; got {seen:?}");
        socket.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
        if let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            let finished = done(&message);
            seen.push(message);
            if finished {
                return seen;
            }
        }
    }
}

#[test]
fn notify_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    let model = format!("iris={}", testdata().join("iris_logreg.onnx").display());
    let mut agent = AgentProcess::serve(
        &["--model", &model, "--backend", "tract"],
        &[("NOTIFY_SOCKET", &socket_path), ("WATCHDOG_USEC", Path::new("400000"))],
    );
    let ready = receive_until(&socket, "READY=1", 30, |m| m.contains("READY=1"));
    let last = ready.last().expect("a message");
    assert!(last.contains("STATUS=serving 1 model(s)"), "{last}");
    // 400 ms watchdog: pets every 200 ms.
    let started = Instant::now();
    let pets = receive_until(&socket, "watchdog pets", 10, {
        let mut count = 0;
        move |m| {
            count += usize::from(m.contains("WATCHDOG=1"));
            count == 3
        }
    });
    assert!(started.elapsed() < Duration::from_secs(3), "three pets took {:?}: {pets:?}", started.elapsed());
    agent.terminate();
    receive_until(&socket, "STOPPING=1", 30, |m| m.contains("STOPPING=1"));
    assert!(agent.wait_exit(Duration::from_secs(30)).success());
}

/// A root directory holding what `systemd-analyze verify --root` needs: the system's own units,
/// the agent binary where the unit expects it, and the unit.
fn verify_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("usr/bin")).expect("mkdir");
    std::fs::create_dir_all(root.join("usr/lib/systemd")).expect("mkdir");
    std::fs::create_dir_all(root.join("etc/systemd/system")).expect("mkdir");
    let copied = Command::new("cp")
        .args(["-a", "/usr/lib/systemd/system"])
        .arg(root.join("usr/lib/systemd"))
        .status()
        .expect("cp");
    assert!(copied.success(), "copying /usr/lib/systemd/system failed");
    std::fs::copy(binary("edgefleet-agent"), root.join("usr/bin/edgefleet-agent")).expect("copy agent");
    for unit in ["edgefleet-agent.service", "edgefleet-firstboot.service"] {
        std::fs::copy(common().join(unit), root.join("etc/systemd/system").join(unit)).expect("copy unit");
    }
    std::fs::create_dir_all(root.join("usr/libexec/edgefleet")).expect("mkdir");
    std::fs::copy(common().join("edgefleet-firstboot"), root.join("usr/libexec/edgefleet/firstboot")).expect("copy");
    root
}

/// `firmware-images/common`.
fn common() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-images/common")
}

#[test]
fn shipped_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = verify_root(dir.path());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("/etc/systemd/system/edgefleet-agent.service")
        .arg("/etc/systemd/system/edgefleet-firstboot.service")
        .output()
        .expect("systemd-analyze (part of systemd) must be installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stderr.trim().is_empty() && stdout.trim().is_empty(), "{stdout}{stderr}");
}

/// Mass flashing writes `edgefleet/enroll-token` and `edgefleet/labels` to the FAT boot
/// partition; the first-boot script moves them into the state directory (0600, CRLF line ends
/// undone) and off the partition, and the agent enrolls with the token and those labels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_boot_moves_the_token_and_labels_off_the_boot_partition() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let c = common::controller::ControllerProcess::start(&dir.path().join("controller"));
    let token = c.cli_json(&["device", "token", "create", "--label", "batch=2026-12"])["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let boot = dir.path().join("boot/firmware/edgefleet");
    std::fs::create_dir_all(&boot).expect("mkdir");
    std::fs::write(boot.join("enroll-token"), format!("{token}\r\n")).expect("token");
    std::fs::write(boot.join("labels"), "# written by the flashing station\r\nsite=plant-3\r\nhardware = rpi4\r\n")
        .expect("labels");
    let state = dir.path().join("state");
    let user = String::from_utf8(Command::new("id").arg("-un").output().expect("id").stdout).expect("utf8");
    let out = Command::new("sh")
        .arg(common().join("edgefleet-firstboot"))
        .env("EDGEFLEET_BOOT_DIRS", format!("{} {}", dir.path().join("nowhere").display(), boot.display()))
        .env("EDGEFLEET_STATE_DIR", &state)
        .env("EDGEFLEET_USER", user.trim())
        .output()
        .expect("firstboot");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!boot.join("enroll-token").exists() && !boot.join("labels").exists(), "the secret left the card");
    for name in ["enroll-token", "labels"] {
        let mode = std::fs::metadata(state.join(name)).expect("moved").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    assert_eq!(std::fs::read_to_string(state.join("enroll-token")).expect("read"), format!("{token}\n"));

    let trust = c.trust_file(dir.path());
    let mut args = c.agent_args(&trust, &state, 0);
    args.extend(["--enroll-token-file", &state.join("enroll-token").display().to_string()].map(str::to_owned));
    args.extend(["--labels-file", &state.join("labels").display().to_string()].map(str::to_owned));
    let _agent = AgentProcess::run(&common::strs(&args));
    common::until("the agent enrolled", 60, async || {
        c.cli_json(&["device", "list"]).as_array().is_some_and(|l| l.len() == 1)
    })
    .await;
    let device = &c.cli_json(&["device", "list"])[0];
    assert_eq!(
        device["labels"],
        serde_json::json!({"batch": "2026-12", "site": "plant-3", "hardware": "rpi4"}),
        "the token's labels and the card's: {device}"
    );
    assert!(!state.join("enroll-token").exists(), "the used token is deleted");

    // Nothing on the card: the script changes nothing and says so.
    let out = Command::new("sh")
        .arg(common().join("edgefleet-firstboot"))
        .env("EDGEFLEET_BOOT_DIRS", boot.display().to_string())
        .env("EDGEFLEET_STATE_DIR", &state)
        .output()
        .expect("firstboot");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no enrollment token"));
}
