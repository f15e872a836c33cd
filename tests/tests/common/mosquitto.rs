//! Mosquitto for the external-broker tests (`.ci/run` installs it with apt).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn mosquitto_binary() -> PathBuf {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("mosquitto is not installed: apt-get install -y mosquitto (as .ci/run does)")
}

/// A Mosquitto process on a loopback port, killed when dropped.
pub struct Mosquitto(Child);

impl Mosquitto {
    /// Starts Mosquitto on 127.0.0.1:`port` with its config in `dir`.
    pub fn start(dir: &Path, port: u16) -> Mosquitto {
        Self::start_with(dir, port, "persistence false\n")
    }

    /// Starts Mosquitto with persistence in `dir` (sessions and queued QoS 1 messages survive
    /// a [`Mosquitto::stop`] and restart), as a production broker is run.
    pub fn start_persistent(dir: &Path, port: u16) -> Mosquitto {
        // Run as root (CI containers), Mosquitto would drop to its own user, which cannot write `dir`.
        let settings =
            format!("user root\npersistence true\npersistence_location {}/\nautosave_interval 1\n", dir.display());
        Self::start_with(dir, port, &settings)
    }

    fn start_with(dir: &Path, port: u16, settings: &str) -> Mosquitto {
        let conf = dir.join("mosquitto.conf");
        std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\n{settings}")).expect("conf");
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Mosquitto(child)
    }
}

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
