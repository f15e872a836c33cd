//! A device identity for tests that speak the device side of the protocol themselves (no agent
//! process): enrollment, device-signed HTTP requests, the broker login, a broker certificate.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use edgefleet_service::tls::ClientConfig;
use edgefleet_shared::fleet::{self, DEVICE_HEADER, MqttCertificate, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use edgefleet_shared::keys::{FileKey, Signer as _};
use rumqttc::{AsyncClient, EventLoop, LastWill, MqttOptions, QoS, TlsConfiguration, Transport};

use super::controller::ControllerProcess;

/// A device: its id and key.
pub struct TestDevice {
    pub id: String,
    pub key: FileKey,
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

impl TestDevice {
    /// A new key, enrolled with `token`.
    pub async fn enroll(c: &ControllerProcess, token: &str) -> TestDevice {
        let key = FileKey::generate().expect("key");
        let body = serde_json::json!({"token": token, "public_key": key.public_key().to_base64()});
        let resp = reqwest::Client::new().post(c.url("/api/v1/enroll")).json(&body).send().await.expect("enroll");
        assert!(resp.status().is_success(), "enrollment refused: {}", resp.text().await.unwrap_or_default());
        let answer: serde_json::Value = resp.json().await.expect("json");
        let id = answer["device_id"].as_str().expect("device_id").to_owned();
        assert_eq!(id, fleet::device_id(&key.public_key()));
        TestDevice { id, key }
    }

    /// The identity of an agent whose data directory is `data` (its `device.key`).
    pub fn from_agent_dir(data: &Path) -> TestDevice {
        let key = FileKey::load(&data.join("device.key")).expect("device key");
        TestDevice { id: fleet::device_id(&key.public_key()), key }
    }

    /// A device-signed request to `path` on the controller.
    pub fn request(&self, c: &ControllerProcess, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.request_with(&reqwest::Client::new(), c, method, path)
    }

    /// [`TestDevice::request`] through `http` (e.g. a client that does not follow redirects).
    pub fn request_with(
        &self,
        http: &reqwest::Client,
        c: &ControllerProcess,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let at = now();
        let sig = fleet::sign_request(&self.key, method.as_str(), path, at, b"");
        http.request(method, c.url(path))
            .header(DEVICE_HEADER, &self.id)
            .header(TIMESTAMP_HEADER, at.to_string())
            .header(SIGNATURE_HEADER, sig)
    }

    /// A broker client certificate for this device from the controller's device CA.
    pub async fn mqtt_certificate(&self, c: &ControllerProcess) -> MqttCertificate {
        let path = format!("/api/v1/devices/{}/mqtt-certificate", self.id);
        let resp = self.request(c, reqwest::Method::POST, &path).send().await.expect("certificate");
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap_or_default());
        resp.json().await.expect("json")
    }

    /// MQTT options logging in as this device (signed password, signed will), as the agent does;
    /// over TLS with `tls` when given.
    pub fn mqtt_options(&self, host: &str, port: u16, tls: Option<Arc<ClientConfig>>) -> MqttOptions {
        let login = fleet::device_login(&self.key, &self.id, fleet::DEFAULT_TOPIC_PREFIX, now());
        let mut options = MqttOptions::new(&self.id, host, port);
        options.set_credentials(login.username, login.password);
        options.set_last_will(LastWill::new(login.will_topic, login.will_payload, QoS::AtLeastOnce, false));
        options.set_keep_alive(Duration::from_secs(5));
        options.set_max_packet_size(1 << 20, 1 << 20);
        if let Some(tls) = tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
        }
        options
    }

    /// A client connected as this device.
    pub fn mqtt(&self, host: &str, port: u16, tls: Option<Arc<ClientConfig>>) -> (AsyncClient, EventLoop) {
        AsyncClient::new(self.mqtt_options(host, port, tls), 16)
    }
}
