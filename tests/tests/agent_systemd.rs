//! systemd integration: the agent speaks the notify protocol a `Type=notify` unit expects
//! (READY with a status line, watchdog pets at half of WATCHDOG_USEC, STOPPING on SIGTERM), and
//! the shipped unit passes `systemd-analyze verify` (needs systemd-analyze; on Debian it is part
//! of systemd).

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
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-images/common/edgefleet-agent.service");
    std::fs::copy(unit, root.join("etc/systemd/system/edgefleet-agent.service")).expect("copy unit");
    root
}

#[test]
fn shipped_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = verify_root(dir.path());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("/etc/systemd/system/edgefleet-agent.service")
        .output()
        .expect("systemd-analyze (part of systemd) must be installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stderr.trim().is_empty() && stdout.trim().is_empty(), "{stdout}{stderr}");
}
