//! The embedded broker's gate: every device connection passes through it, because rumqttd
//! authenticates at most by a static password table and authorizes no topics at all.
//!
//! The gate accepts MQTT 3.1.1 on the public listener (TLS with the controller's certificate
//! when one is configured), reads the CONNECT and lets a client in only when its client id and
//! username are an enrolled device's id and its password is fresh and signed by that device's
//! key ([`edgefleet_shared::fleet::verify_mqtt_password`]), and any last will goes to that
//! device's own status topic. It then opens the device's session on rumqttd's loopback listener
//! (whose password only the gate and the controller's own client know) and relays: everything
//! the broker sends goes to the device untouched; every packet the device sends is decoded and
//! checked first. A device may publish only on its own `status` and `telemetry` topics (never
//! retained) and subscribe only to its own `desired` topic and the fleet's `trust` topic; any
//! other packet closes the connection and is counted in
//! `edgefleet_controller_broker_denied_total{reason}`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use edgefleet_shared::fleet::{self, MAX_MQTT_PACKET_BYTES, topics};
use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode, Login, Packet};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::bytes::BytesMut;

use crate::fleet::Fleet;

/// How long a new connection may take to send its CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the gate needs to admit and relay devices.
#[derive(Clone)]
pub struct Gate {
    /// Enrolled devices and their keys.
    pub fleet: Fleet,
    /// Topic prefix.
    pub prefix: String,
    /// rumqttd's loopback listener.
    pub broker: SocketAddr,
    /// The gate's login there.
    pub login: Login,
    /// TLS on the public listener, when configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").field("broker", &self.broker).field("tls", &self.tls.is_some()).finish_non_exhaustive()
    }
}

/// Why a connection was closed.
#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed MQTT: {0}")]
    Codec(CodecError),
    #[error("refused at connect: {0}")]
    Refused(&'static str),
    #[error("denied: {0}")]
    Denied(String),
}

impl Gate {
    /// Accepts device connections on `listener` forever.
    pub async fn serve(self, listener: TcpListener) {
        let gate = Arc::new(self);
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "Broker gate cannot accept a connection.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let gate = gate.clone();
            tokio::spawn(async move {
                let result = match gate.tls.clone() {
                    Some(tls) => match tokio::time::timeout(CONNECT_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(stream)) => gate.relay(stream).await,
                        Ok(Err(e)) => Err(Closed::Io(e)),
                        Err(_) => Err(Closed::Refused("TLS handshake timed out")),
                    },
                    None => gate.relay(stream).await,
                };
                match result {
                    Ok(()) => {}
                    Err(Closed::Denied(why)) => tracing::warn!(%peer, %why, "Broker gate closed a connection."),
                    Err(e) => tracing::debug!(%peer, error = %e, "Broker gate connection ended."),
                }
            });
        }
    }

    async fn relay<S: AsyncRead + AsyncWrite + Unpin + Send>(&self, client: S) -> Result<(), Closed> {
        // Subscribed before the device is admitted, so a decommission racing the CONNECT is seen.
        let mut decommissions = self.fleet.decommissions();
        let (mut from_client, mut to_client) = tokio::io::split(client);
        let mut buf = BytesMut::with_capacity(4096);
        let connect = match tokio::time::timeout(CONNECT_TIMEOUT, next_packet(&mut from_client, &mut buf)).await {
            Ok(Ok(Some(Packet::Connect(c)))) => c,
            Ok(Ok(_)) => return Err(Closed::Refused("the first packet is not CONNECT")),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Closed::Refused("no CONNECT in time")),
        };
        let device = match self.admit(&connect).await {
            Ok(device) => device,
            Err((code, why)) => {
                let will = connect.last_will.as_ref().map(|w| w.topic.as_str());
                tracing::info!(client_id = %connect.client_id, reason = why, will, "Broker gate refused a connection.");
                metrics::counter!(crate::metric::BROKER_DENIED, "reason" => why).increment(1);
                let mut out = BytesMut::new();
                let _ = ConnAck::new(code, false).write(&mut out);
                let _ = to_client.write_all(&out).await;
                return Err(Closed::Refused(why));
            }
        };
        let mut upstream = TcpStream::connect(self.broker).await?;
        let _ = upstream.set_nodelay(true);
        let mut connect = connect;
        connect.login = Some(self.login.clone());
        let mut out = BytesMut::new();
        Packet::Connect(connect).write(&mut out, MAX_MQTT_PACKET_BYTES).map_err(Closed::Codec)?;
        upstream.write_all(&out).await?;
        let (mut from_broker, mut to_broker) = upstream.into_split();
        let acl = Acl::new(&self.prefix, &device);
        let inbound = async {
            loop {
                let Some(packet) = next_packet(&mut from_client, &mut buf).await? else { return Ok(()) };
                if let Err(why) = acl.allows(&packet) {
                    metrics::counter!(crate::metric::BROKER_DENIED, "reason" => why.0).increment(1);
                    return Err(Closed::Denied(format!("device {device}: {}", why.1)));
                }
                out.clear();
                packet.write(&mut out, MAX_MQTT_PACKET_BYTES).map_err(Closed::Codec)?;
                to_broker.write_all(&out).await?;
            }
        };
        let outbound = async {
            tokio::io::copy(&mut from_broker, &mut to_client).await?;
            Ok::<(), Closed>(())
        };
        let decommissioned = async {
            loop {
                match decommissions.recv().await {
                    Ok(id) if id == device => break,
                    Ok(_) => {}
                    // Missed some: look the device up again.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        if matches!(self.fleet.device_key(device.clone()).await, Ok(None)) {
                            break;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
            metrics::counter!(crate::metric::BROKER_DENIED, "reason" => "decommissioned").increment(1);
            Err(Closed::Denied(format!("device {device} was decommissioned")))
        };
        // Whichever side ends first ends the connection (the broker then fires the will); a
        // decommission ends it at once.
        tokio::select! {
            r = inbound => r,
            r = outbound => r,
            r = decommissioned => r,
        }
    }

    /// The device id a CONNECT authenticates, or the CONNACK code and reason to refuse it.
    async fn admit(
        &self,
        connect: &rumqttc::mqttbytes::v4::Connect,
    ) -> Result<String, (ConnectReturnCode, &'static str)> {
        let Some(login) = &connect.login else {
            return Err((ConnectReturnCode::NotAuthorized, "anonymous"));
        };
        if login.username != connect.client_id {
            return Err((ConnectReturnCode::BadClientId, "client_id_mismatch"));
        }
        let device = connect.client_id.clone();
        let key = match self.fleet.device_key(device.clone()).await {
            Ok(Some(key)) => key,
            Ok(None) => return Err((ConnectReturnCode::BadUserNamePassword, "unknown_device")),
            Err(e) => {
                tracing::error!(error = %e, "Broker gate cannot look a device up.");
                return Err((ConnectReturnCode::ServiceUnavailable, "lookup_failed"));
            }
        };
        let now = crate::db::now() as u64;
        if fleet::verify_mqtt_password(&key, &device, &login.password, now).is_err() {
            return Err((ConnectReturnCode::BadUserNamePassword, "bad_password"));
        }
        if connect.last_will.as_ref().is_some_and(|w| w.topic != topics::status(&self.prefix, &device) || w.retain) {
            return Err((ConnectReturnCode::NotAuthorized, "foreign_will"));
        }
        Ok(device)
    }
}

/// Reads the next whole packet, or `None` at a clean end of stream.
async fn next_packet<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut BytesMut) -> Result<Option<Packet>, Closed> {
    loop {
        match Packet::read(buf, MAX_MQTT_PACKET_BYTES) {
            Ok(packet) => return Ok(Some(packet)),
            Err(CodecError::InsufficientBytes(_)) => {}
            Err(e) => return Err(Closed::Codec(e)),
        }
        if reader.read_buf(buf).await? == 0 {
            return if buf.is_empty() { Ok(None) } else { Err(Closed::Refused("connection closed mid-packet")) };
        }
    }
}

/// What one device may do on the broker.
#[derive(Debug)]
struct Acl {
    publish: [String; 2],
    subscribe: [String; 2],
}

impl Acl {
    fn new(prefix: &str, device: &str) -> Self {
        Acl {
            publish: [topics::status(prefix, device), topics::telemetry(prefix, device)],
            subscribe: [topics::desired(prefix, device), topics::trust(prefix)],
        }
    }

    /// Ok, or the metric reason and a description of what was refused.
    fn allows(&self, packet: &Packet) -> Result<(), (&'static str, String)> {
        match packet {
            Packet::Publish(p) => {
                let topic = &p.topic;
                if p.retain {
                    Err(("retained_publish", format!("a retained publish on {topic}")))
                } else if self.publish.contains(topic) {
                    Ok(())
                } else {
                    Err(("foreign_publish", format!("a publish on {topic}")))
                }
            }
            Packet::Subscribe(s) => match s.filters.iter().find(|f| !self.subscribe.contains(&f.path)) {
                Some(f) => Err(("foreign_subscribe", format!("a subscription to {}", f.path))),
                None if s.filters.iter().any(|f| f.qos == QoS::ExactlyOnce) => {
                    Err(("qos2_subscribe", "a QoS 2 subscription".into()))
                }
                None => Ok(()),
            },
            Packet::Connect(_) => Err(("second_connect", "a second CONNECT".into())),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                Err(("server_packet", "a packet only a broker sends".into()))
            }
            Packet::PubAck(_)
            | Packet::PubRec(_)
            | Packet::PubRel(_)
            | Packet::PubComp(_)
            | Packet::Unsubscribe(_)
            | Packet::PingReq
            | Packet::Disconnect => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use rumqttc::mqttbytes::v4::{Publish, Subscribe, SubscribeFilter};

    use super::*;

    const P: &str = fleet::DEFAULT_TOPIC_PREFIX;

    fn publish(topic: &str, retain: bool) -> Packet {
        let mut p = Publish::new(topic, QoS::AtLeastOnce, b"x".to_vec());
        p.retain = retain;
        p.pkid = 1;
        Packet::Publish(p)
    }

    fn subscribe(filters: &[&str]) -> Packet {
        Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: filters.iter().map(|f| SubscribeFilter::new((*f).to_owned(), QoS::AtLeastOnce)).collect(),
        })
    }

    #[test]
    fn a_device_publishes_only_its_own_status_and_telemetry() {
        let acl = Acl::new(P, "dev-a");
        assert!(acl.allows(&publish(&topics::status(P, "dev-a"), false)).is_ok());
        assert!(acl.allows(&publish(&topics::telemetry(P, "dev-a"), false)).is_ok());
        for topic in
            [topics::status(P, "dev-b"), topics::telemetry(P, "dev-b"), topics::desired(P, "dev-a"), topics::trust(P)]
        {
            assert_eq!(acl.allows(&publish(&topic, false)).map_err(|e| e.0), Err("foreign_publish"), "{topic}");
        }
        assert_eq!(acl.allows(&publish(&topics::status(P, "dev-a"), true)).map_err(|e| e.0), Err("retained_publish"));
    }

    #[test]
    fn a_device_subscribes_only_to_its_own_desired_state_and_the_trust_topic() {
        let acl = Acl::new(P, "dev-a");
        assert!(acl.allows(&subscribe(&[&topics::desired(P, "dev-a"), &topics::trust(P)])).is_ok());
        for filter in [
            topics::desired(P, "dev-b"),
            topics::telemetry(P, "dev-b"),
            topics::status(P, "+"),
            format!("{P}/#"),
            "#".to_owned(),
            "$share/g/edgefleet/v1/devices/+/telemetry".to_owned(),
        ] {
            let packet = subscribe(&[&topics::desired(P, "dev-a"), &filter]);
            assert_eq!(acl.allows(&packet).map_err(|e| e.0), Err("foreign_subscribe"), "{filter}");
        }
    }
}
