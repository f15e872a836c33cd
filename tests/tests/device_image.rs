//! The Debian device image: `firmware-images/debian/build.sh` builds it with the agent, its
//! systemd unit and provisioning files; the image's file tree is checked; then it boots under
//! `qemu-system-x86_64` with software emulation (TCG) and user-mode networking, and the agent
//! inside enrolls with a controller on this host over HTTPS, takes a deployment over MQTT-TLS
//! and serves the model, reached through a forwarded port.
//!
//! Opt-in, as it needs root and a few minutes: `EDGEFLEET_IMAGE_TEST=1` (`.ci/run` sets it and
//! installs debootstrap, e2fsprogs, qemu-utils and qemu-system-x86).

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::controller::ControllerProcess;
use common::pki::TestPki;
use common::{binary, served_version_at, strs, testdata, until};

/// The host as QEMU's user-mode network shows it to the guest (its 127.0.0.1).
const GUEST_SEES_HOST: &str = "10.0.2.2";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Provisioning files for the image, as a device maker would prepare them.
fn provision(dir: &Path, controller: &str, mqtt_port: u16, pki: &TestPki, trust: &Path, token: &str) -> PathBuf {
    let api_port = controller.rsplit(':').next().expect("port");
    let p = dir.join("provision");
    std::fs::create_dir_all(&p).expect("mkdir");
    let config = format!(
        r#"[server]
listen = "0.0.0.0:8500"

[backend]
kind = "tract"

[fleet]
controller = "https://{GUEST_SEES_HOST}:{api_port}"
trust_file = "/etc/edgefleet/trust.json"
ca_file = "/etc/edgefleet/ca.crt"
enroll_token_file = "/var/lib/edgefleet/enroll-token"
data_dir = "/var/lib/edgefleet"
mqtt = "mqtts://{GUEST_SEES_HOST}:{mqtt_port}"
poll_interval_secs = 5
status_interval_secs = 5
watch_window_secs = 1

[fleet.labels]
image = "debian"
"#
    );
    std::fs::write(p.join("agent.toml"), config).expect("agent.toml");
    std::fs::copy(trust, p.join("trust.json")).expect("trust");
    std::fs::copy(&pki.ca, p.join("ca.crt")).expect("ca");
    std::fs::write(p.join("enroll-token"), token).expect("token");
    p
}

/// Runs a debugfs request (`stat PATH`, `ls DIR`) on an ext4 image without mounting it.
fn debugfs(raw: &Path, request: &str) -> String {
    run(Command::new("debugfs").arg("-R").arg(request).arg(raw))
}

fn to_raw(qcow2: &Path, raw: &Path) {
    run(Command::new("qemu-img").args(["convert", "-f", "qcow2", "-O", "raw"]).arg(qcow2).arg(raw));
    // Replays the journal of an image whose VM was stopped without a clean shutdown; exit codes
    // 0-3 mean clean or repaired.
    let out = Command::new("e2fsck").arg("-fy").arg(raw).output().expect("e2fsck (e2fsprogs)");
    let code = out.status.code().unwrap_or(8);
    assert!(code < 4, "e2fsck {} exit {code}: {}", raw.display(), String::from_utf8_lossy(&out.stdout));
}

struct Vm(Child);

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn boot(image_dir: &Path, overlay: &Path, host_port: u16, console: &Path) -> Vm {
    let console = std::fs::File::create(console).expect("console log");
    let child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "1024", "-smp", "2", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(image_dir.join("vmlinuz"))
        .arg("-initrd")
        .arg(image_dir.join("initrd.img"))
        .args(["-append", "root=/dev/vda rw console=ttyS0 panic=-1"])
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=qcow2", overlay.display()))
        .args(["-netdev", &format!("user,id=n0,hostfwd=tcp:127.0.0.1:{host_port}-:8500")])
        .args(["-device", "virtio-net-pci,netdev=n0"])
        .stdin(Stdio::null())
        .stdout(console.try_clone().expect("console"))
        .stderr(console)
        .spawn()
        .expect("qemu-system-x86_64 (apt-get install qemu-system-x86)");
    Vm(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_builds_boots_enrolls_and_serves() {
    if std::env::var_os("EDGEFLEET_IMAGE_TEST").is_none() {
        eprintln!("skipped: set EDGEFLEET_IMAGE_TEST=1 to build and boot the device image (needs root)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new(dir.path(), &["127.0.0.1", GUEST_SEES_HOST]);
    let mqtt_port = free_port();
    let mut args = vec!["--mqtt-listen".to_owned(), format!("127.0.0.1:{mqtt_port}")];
    args.extend(pki.controller_args());
    let mut c = ControllerProcess::start_with(&dir.path().join("controller"), &strs(&args));
    c.ca_file = Some(pki.ca.clone());
    c.cli_json(&["model", "push", &testdata().join("iris_logreg.onnx").to_string_lossy(), "--name", "iris"]);
    let trust = c.trust_file(dir.path());
    let token = c.cli_json(&["device", "token", "create"])["token"].as_str().expect("token").to_owned();
    let provisioning = provision(dir.path(), &c.base, mqtt_port, &pki, &trust, &token);

    // Build.
    let image_dir = dir.path().join("image");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-images/debian/build.sh");
    let started = Instant::now();
    run(Command::new(script)
        .arg("--agent")
        .arg(binary("edgefleet-agent"))
        .arg("--out")
        .arg(&image_dir)
        .arg("--provision")
        .arg(&provisioning));
    eprintln!("image built in {:.0} s", started.elapsed().as_secs_f64());
    let image = image_dir.join("edgefleet-debian.qcow2");
    let image_bytes = std::fs::metadata(&image).expect("image").len();
    eprintln!("image: {:.0} MiB (qcow2)", image_bytes as f64 / 1048576.0);

    // The image's own file tree (read from the disk image, not the build directory).
    let raw = dir.path().join("image.raw");
    to_raw(&image, &raw);
    for (path, mode) in [
        ("/usr/bin/edgefleet-agent", "0755"),
        ("/etc/systemd/system/edgefleet-agent.service", "0644"),
        ("/etc/systemd/system/edgefleet-firstboot.service", "0644"),
        ("/usr/libexec/edgefleet/firstboot", "0755"),
        ("/etc/edgefleet/agent.toml", "0644"),
        ("/etc/edgefleet/trust.json", "0644"),
        ("/etc/edgefleet/ca.crt", "0644"),
        ("/var/lib/edgefleet/enroll-token", "0600"),
        ("/usr/lib/sysusers.d/edgefleet.conf", "0644"),
    ] {
        let stat = debugfs(&raw, &format!("stat {path}"));
        assert!(
            stat.contains("Type: regular") && stat.contains(&format!("Mode:  {mode}")),
            "{path} missing or not mode {mode} in the image: {stat}"
        );
    }
    let wants = debugfs(&raw, "ls /etc/systemd/system/multi-user.target.wants");
    assert!(wants.contains("edgefleet-agent.service"), "the unit is not enabled: {wants}");
    assert!(wants.contains("edgefleet-firstboot.service"), "the first-boot unit is not enabled: {wants}");
    std::fs::remove_file(&raw).expect("rm raw");
    // The unit verifies against the image's own systemd.
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", image_dir.join("rootfs").display()))
        .arg("/etc/systemd/system/edgefleet-agent.service")
        .arg("/etc/systemd/system/edgefleet-firstboot.service")
        .output()
        .expect("systemd-analyze");
    let complaints = String::from_utf8_lossy(&verify.stderr).into_owned();
    assert!(verify.status.success() && complaints.trim().is_empty(), "{complaints}");

    // Boot on a copy-on-write overlay, so the built image stays as shipped.
    let overlay = dir.path().join("overlay.qcow2");
    run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"]).arg(&image).arg(&overlay));
    let host_port = free_port();
    let console = dir.path().join("console.log");
    let booted = Instant::now();
    let vm = boot(&image_dir, &overlay, host_port, &console);
    let console_tail = || {
        let text = std::fs::read_to_string(&console).unwrap_or_default();
        text.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    };
    let mut id = String::new();
    let enrolled = tokio::time::timeout(Duration::from_secs(300), async {
        until("the device in the image to enroll", 300, async || {
            id = c.cli_json(&["device", "list"])[0]["id"].as_str().unwrap_or_default().to_owned();
            !id.is_empty()
        })
        .await;
    })
    .await;
    assert!(enrolled.is_ok(), "no enrollment; console:\n{}", console_tail());
    let boot_to_enrolled = booted.elapsed();
    c.cli_json(&["deploy", "iris:1", "--device", &id]);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while served_version_at(&http, &format!("http://127.0.0.1:{host_port}/v2/models/iris/infer")).await.as_deref()
        != Some("1")
    {
        assert!(Instant::now() < deadline, "the image never served v1; console:\n{}", console_tail());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let boot_to_serving = booted.elapsed();
    eprintln!(
        "boot to enrolled: {:.1} s; boot to serving v1 (deployed after enrollment): {:.1} s",
        boot_to_enrolled.as_secs_f64(),
        boot_to_serving.as_secs_f64()
    );
    let shown = c.cli_json(&["device", "show", &id]);
    assert_eq!(shown["labels"]["image"], "debian", "{shown}");
    drop(vm);

    // On the device's disk: the token was consumed, the key generated (0600), the model slot kept.
    let raw = dir.path().join("overlay.raw");
    to_raw(&overlay, &raw);
    let state = debugfs(&raw, "ls -l /var/lib/edgefleet");
    assert!(state.contains("state.json"), "no agent state on the device: {state}");
    assert!(!state.contains("enroll-token"), "the enrollment token was not deleted: {state}");
    let key = debugfs(&raw, "stat /var/lib/edgefleet/device.key");
    assert!(key.contains("Mode:  0600"), "device key: {key}");
    let slot = debugfs(&raw, "ls /var/lib/edgefleet/models/iris/1");
    let models = debugfs(&raw, "ls -l /var/lib/edgefleet/models/iris");
    assert!(slot.contains(".complete"), "model slot: {slot}; models/iris: {models}");
}
