//! The embedded broker: rumqttd on its own thread, listening only on a loopback port that
//! requires a password made at every start (known to the gate and the controller's own client),
//! behind the [`super::gate`] that devices connect to on the public listener.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use edgefleet_service::tls::ServerConfig;
use rumqttc::mqttbytes::v4::{Connect, Login, Packet};

use super::gate::Gate;
use crate::Error;
use crate::fleet::Fleet;

/// rumqttd usernames: the gate's (devices' sessions) and the controller's own client.
const GATE_USER: &str = "edgefleet-gate";
const CONTROLLER_USER: &str = crate::device_ca::CONTROLLER_IDENTITY;

/// The embedded broker, started, with its public listener bound but not yet served.
#[derive(Debug)]
pub struct EmbeddedBroker {
    /// The address devices use (TLS when configured).
    pub public: SocketAddr,
    /// Whether `public` speaks TLS.
    pub tls: bool,
    /// rumqttd's loopback listener.
    pub internal: SocketAddr,
    /// The controller's own login on `internal`.
    pub controller_login: Login,
    gate_login: Login,
    listener: TcpListener,
    server_tls: Option<Arc<ServerConfig>>,
}

fn free_port() -> Result<SocketAddr, Error> {
    // rumqttd does not report the port it bound, so a free one is chosen here first.
    let probe = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .map_err(|e| Error::Startup(format!("cannot bind a loopback port for the broker: {e}")))?;
    probe.local_addr().map_err(|e| Error::Startup(e.to_string()))
}

fn secret() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::Startup(format!("cannot generate the broker secret: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Starts rumqttd on a loopback port and binds the gate's public `listen` address (port 0
/// picks a free one); `tls` is the controller's server configuration for the gate.
pub fn start(listen: SocketAddr, tls: Option<Arc<ServerConfig>>) -> Result<EmbeddedBroker, Error> {
    let listener = TcpListener::bind(listen).map_err(|e| Error::Startup(format!("cannot bind MQTT {listen}: {e}")))?;
    listener.set_nonblocking(true).map_err(|e| Error::Startup(e.to_string()))?;
    let public = listener.local_addr().map_err(|e| Error::Startup(e.to_string()))?;
    let internal = free_port()?;
    let (gate_secret, controller_secret) = (secret()?, secret()?);
    let auth = HashMap::from([
        (GATE_USER.to_owned(), gate_secret.clone()),
        (CONTROLLER_USER.to_owned(), controller_secret.clone()),
    ]);
    let server = rumqttd::ServerSettings {
        name: "edgefleet-internal".into(),
        listen: internal,
        tls: None,
        next_connection_delay_ms: 1,
        connections: rumqttd::ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: edgefleet_shared::fleet::MAX_MQTT_PACKET_BYTES,
            max_inflight_count: 500,
            auth: Some(auth),
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 100_000,
            max_outgoing_packet_count: 1_000,
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(HashMap::from([("edgefleet-internal".to_owned(), server)])),
        ..Default::default()
    };
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            // rumqttd has no shutdown: the thread lives as long as the process.
            if let Err(e) = rumqttd::Broker::new(config).start() {
                tracing::error!(error = %e, "Embedded MQTT broker stopped.");
            }
        })
        .map_err(|e| Error::Startup(format!("cannot start the MQTT broker thread: {e}")))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let controller_login = Login::new(CONTROLLER_USER, controller_secret);
    let probe = loop {
        if let Some(probe) = answers_connect(internal, &controller_login) {
            break probe;
        }
        if Instant::now() > deadline {
            return Err(Error::Startup(format!("the embedded MQTT broker did not start on {internal}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // rumqttd logs every client disconnect as an error; a clean start should log none, so the
    // probe's connection stays open (pinged within its keep-alive) for the broker's lifetime.
    std::thread::Builder::new()
        .name("mqtt-probe".into())
        .spawn(move || hold(probe))
        .map_err(|e| Error::Startup(format!("cannot start the MQTT probe thread: {e}")))?;
    Ok(EmbeddedBroker {
        public,
        tls: tls.is_some(),
        internal,
        controller_login,
        gate_login: Login::new(GATE_USER, gate_secret),
        listener,
        server_tls: tls,
    })
}

impl EmbeddedBroker {
    /// Serves the public listener through the gate (from now on devices can connect).
    pub fn open_gate(self, fleet: Fleet, prefix: &str) -> Result<(), Error> {
        let listener = tokio::net::TcpListener::from_std(self.listener)
            .map_err(|e| Error::Startup(format!("MQTT listener: {e}")))?;
        let gate = Gate {
            fleet,
            prefix: prefix.to_owned(),
            broker: self.internal,
            login: self.gate_login,
            tls: self.server_tls.map(tokio_rustls::TlsAcceptor::from),
        };
        let transport = if gate.tls.is_some() { "TLS" } else { "plain TCP" };
        tracing::info!(addr = %self.public, transport, "Embedded MQTT broker listening (devices authenticate; topics are authorized).");
        tokio::spawn(gate.serve(listener));
        Ok(())
    }
}

/// Keep-alive of the readiness probe's connection (rumqttd refuses 0).
const PROBE_KEEP_ALIVE_SECS: u16 = 3600;

/// Pings the probe connection within its keep-alive until it fails (the process exits).
fn hold(mut stream: TcpStream) {
    use std::io::{Read as _, Write as _};
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    loop {
        std::thread::sleep(Duration::from_secs(u64::from(PROBE_KEEP_ALIVE_SECS) / 2));
        let mut pong = [0u8; 2];
        // PINGREQ, then its PINGRESP.
        if stream.write_all(&[0xC0, 0x00]).is_err() || stream.read_exact(&mut pong).is_err() {
            return;
        }
    }
}

/// The connection when rumqttd answers a real CONNECT on `addr` (a bare TCP probe would make it
/// log an error for the connection that never sent one). Keep-alive is off: the connection
/// is asked for [`PROBE_KEEP_ALIVE_SECS`].
fn answers_connect(addr: SocketAddr, login: &Login) -> Option<TcpStream> {
    use std::io::{Read as _, Write as _};
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut connect = Connect::new("edgefleet-probe");
    connect.keep_alive = PROBE_KEEP_ALIVE_SECS;
    connect.login = Some(login.clone());
    let mut out = tokio_util::bytes::BytesMut::new();
    if Packet::Connect(connect).write(&mut out, 1024).is_err() || stream.write_all(&out).is_err() {
        return None;
    }
    let mut ack = [0u8; 4];
    (stream.read_exact(&mut ack).is_ok() && ack[0] == 0x20 && ack[3] == 0).then_some(stream)
}
