//! Mosquitto for the external-broker tests (`.ci/run` installs it with apt), set up as the
//! README documents it: `edgefleet-controller mosquitto-config` writes the configuration, so
//! every client authenticates by a certificate from the controller's device CA and the
//! controller keeps each device's topic rights in the dynamic-security plugin; Mosquitto serves
//! TLS with a certificate from a test CA.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::Arc;

use edgefleet_service::tls::ClientConfig;

use super::binary;
use super::controller::ControllerProcess;
use super::device::TestDevice;
use super::pki::TestPki;

fn mosquitto_binary() -> PathBuf {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("mosquitto is not installed: apt-get install -y mosquitto (as the test script does)")
}

/// A Mosquitto set-up for one controller data directory.
pub struct MosquittoSetup {
    /// Port it listens on (127.0.0.1, TLS).
    pub port: u16,
    /// The test CA of its server certificate (agents and the controller trust it).
    pub pki: TestPki,
    conf: PathBuf,
    controller_config: PathBuf,
}

impl MosquittoSetup {
    /// Runs `edgefleet-controller mosquitto-config` for `controller_data` (created if new) into
    /// `dir`, and writes the controller configuration that logs in with the certificate it made.
    /// With `persistent`, sessions and queued messages survive a restart, as in production.
    pub fn new(dir: &Path, controller_data: &Path, persistent: bool) -> MosquittoSetup {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        std::fs::create_dir_all(dir).expect("dir");
        let pki = TestPki::new(dir, &["localhost", "127.0.0.1"]);
        let out = dir.join("mosquitto");
        let status = Command::new(binary("edgefleet-controller"))
            .args(["mosquitto-config", "--data-dir"])
            .arg(controller_data)
            .arg("--out")
            .arg(&out)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--server-cert"])
            .arg(&pki.cert)
            .arg("--server-key")
            .arg(&pki.key)
            .stdout(Stdio::null())
            .status()
            .expect("mosquitto-config");
        assert!(status.success(), "mosquitto-config failed");
        let conf = out.join("mosquitto.conf");
        // Run as root (CI containers), Mosquitto would drop to its own user, which cannot read
        // the test's files.
        let mut extra = "user root\n".to_owned();
        extra.push_str(&if persistent {
            format!("persistence true\npersistence_location {}/\nautosave_interval 1\n", dir.display())
        } else {
            "persistence false\n".to_owned()
        });
        let mut text = std::fs::read_to_string(&conf).expect("conf");
        text.push_str(&extra);
        std::fs::write(&conf, text).expect("conf");
        let controller_config = dir.join("controller-mqtt.toml");
        std::fs::write(
            &controller_config,
            format!(
                "[mqtt]\nclient_cert = \"{}\"\nclient_key = \"{}\"\ndynamic_security = true\n\n[tls]\nca_file = \"{}\"\n",
                out.join("controller.crt").display(),
                out.join("controller.key").display(),
                pki.ca.display()
            ),
        )
        .expect("controller config");
        MosquittoSetup { port, pki, conf, controller_config }
    }

    /// The broker URL.
    pub fn url(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.port)
    }

    /// `edgefleet-controller serve` arguments for this broker.
    pub fn controller_args(&self) -> Vec<String> {
        vec!["--mqtt-url".into(), self.url(), "--config".into(), self.controller_config.display().to_string()]
    }

    /// [`MosquittoSetup::controller_args`] with a configuration of its own written to `path`:
    /// the broker login plus `mqtt` keys (e.g. `client_id`) and further sections (`rest`).
    pub fn controller_args_with(&self, path: &Path, mqtt: &str, rest: &str) -> Vec<String> {
        let base = std::fs::read_to_string(&self.controller_config).expect("controller config");
        std::fs::write(path, format!("{}\n{rest}", base.replacen("[mqtt]\n", &format!("[mqtt]\n{mqtt}"), 1)))
            .expect("write config");
        vec!["--mqtt-url".into(), self.url(), "--config".into(), path.display().to_string()]
    }

    /// TLS logging in with the controller's own certificate (CN `edgefleet-controller`), for a
    /// test that watches what the broker forwards to the controller.
    pub fn controller_tls(&self) -> std::sync::Arc<edgefleet_service::tls::ClientConfig> {
        let out = self.conf.parent().expect("out dir");
        edgefleet_service::tls::client_config_with_certificate_files(
            Some(&self.pki.ca),
            &out.join("controller.crt"),
            &out.join("controller.key"),
        )
        .expect("controller TLS")
    }

    /// An MQTT client for `device` logging in to this broker with its certificate from `c`.
    pub async fn device_client(
        &self,
        c: &ControllerProcess,
        device: &TestDevice,
    ) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
        let cert = device.mqtt_certificate(c).await;
        let tls = edgefleet_service::tls::client_config_with_certificate(
            Some(&self.pki.ca),
            &cert.certificate_pem,
            device.key.pkcs8_der(),
        )
        .expect("client TLS");
        rumqttc::AsyncClient::new(device.mqtt_options("127.0.0.1", self.port, Some(tls)), 256)
    }

    /// `edgefleet-agent run` arguments: trust Mosquitto's certificate.
    pub fn agent_args(&self) -> Vec<String> {
        vec!["--ca-file".into(), self.pki.ca.display().to_string()]
    }

    /// Starts Mosquitto and waits until it accepts connections.
    pub fn start(&self) -> Mosquitto {
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Mosquitto(child)
    }
}

/// A Mosquitto process, killed when dropped.
pub struct Mosquitto(Child);

impl Mosquitto {
    /// SIGTERM (Mosquitto saves its persistence file) and wait for the exit.
    pub fn stop(mut self) {
        let status = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status().expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.0.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "mosquitto did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The broker a test drives devices through: the embedded one (no TLS here), or Mosquitto set
/// up by `mosquitto-config` (TLS with a device certificate from the controller).
pub struct Broker {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Mosquitto's set-up and process, when it is Mosquitto.
    pub mosquitto: Option<(MosquittoSetup, Mosquitto)>,
}

impl Broker {
    /// TLS for `device` (Mosquitto: its certificate from the controller), or none (embedded).
    pub async fn tls(&self, c: &ControllerProcess, device: &TestDevice) -> Option<Arc<ClientConfig>> {
        let (setup, _) = self.mosquitto.as_ref()?;
        let cert = device.mqtt_certificate(c).await;
        Some(
            edgefleet_service::tls::client_config_with_certificate(
                Some(&setup.pki.ca),
                &cert.certificate_pem,
                device.key.pkcs8_der(),
            )
            .expect("client TLS"),
        )
    }

    /// TLS without any client certificate.
    pub fn tls_anonymous(&self) -> Option<Arc<ClientConfig>> {
        let (setup, _) = self.mosquitto.as_ref()?;
        Some(edgefleet_service::tls::client_config(Some(&setup.pki.ca)).expect("TLS"))
    }
}
