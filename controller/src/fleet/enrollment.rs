//! Enrollment tokens, enrollment, device-signed request checks, device keys and broker
//! certificates.

use std::collections::BTreeMap;

use crate::sql::{OptionalExtension, params};
use edgefleet_shared::api::fleet::EnrollmentToken;
use edgefleet_shared::fleet::{self, EnrollRequest, EnrollResponse, RequestAuthError};
use edgefleet_shared::keys::PublicKey;

use super::{Fleet, FleetError};
use edgefleet_shared::api::tokens::new_token;

use crate::auth::hash_token;
use crate::db::{self, now};

/// Longest lifetime of an enrollment token.
const MAX_TOKEN_TTL_SECS: u64 = 10 * 365 * 24 * 3600;

impl Fleet {
    /// A device's enrolled public key, if it is enrolled.
    pub async fn device_key(&self, device_id: String) -> Result<Option<PublicKey>, FleetError> {
        self.db
            .call(move |conn| -> Result<Option<PublicKey>, FleetError> {
                let key: Option<String> = conn
                    .query_row(
                        "SELECT public_key FROM devices WHERE id = ?1 AND decommissioned_at IS NULL",
                        params![device_id],
                        |r| r.get(0),
                    )
                    .optional()?;
                Ok(key.and_then(|k| PublicKey::from_base64(&k)))
            })
            .await
    }

    /// A broker client certificate for an enrolled device's key.
    pub async fn mqtt_certificate(
        &self,
        ca: &crate::device_ca::DeviceCa,
        device_id: String,
    ) -> Result<edgefleet_shared::fleet::MqttCertificate, FleetError> {
        let key = self
            .device_key(device_id.clone())
            .await?
            .ok_or_else(|| FleetError::NotFound(format!("unknown device {device_id:?}")))?;
        let issued = ca.issue_device(&device_id, &key).map_err(|e| FleetError::Ca(e.to_string()))?;
        Ok(edgefleet_shared::fleet::MqttCertificate {
            certificate_pem: issued.certificate_pem,
            expires_at: issued.expires_at,
        })
    }

    /// Creates an enrollment token.
    pub async fn create_token(
        &self,
        uses: u32,
        ttl_secs: u64,
        labels: BTreeMap<String, String>,
        actor: String,
    ) -> Result<EnrollmentToken, FleetError> {
        if uses == 0 {
            return Err(FleetError::Unprocessable("uses must be at least 1".into()));
        }
        if !(1..=MAX_TOKEN_TTL_SECS).contains(&ttl_secs) {
            return Err(FleetError::Unprocessable(format!(
                "ttl_secs {ttl_secs} is out of range: 1 to {MAX_TOKEN_TTL_SECS} (10 years)"
            )));
        }
        check_labels(&labels)?;
        let token = new_token().map_err(|e| FleetError::BadRequest(format!("cannot generate a token: {e}")))?;
        let expires_at = now() as u64 + ttl_secs;
        let (t, l) = (token.clone(), labels.clone());
        let id = self
            .db
            .call(move |conn| -> Result<i64, FleetError> {
                let tx = conn.transaction()?;
                let id: i64 = tx.query_row(
                    "INSERT INTO enrollment_tokens (hash, uses_left, expires_at, labels, created_at, created_by)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
                    params![
                        hash_token(&t),
                        uses,
                        expires_at as i64,
                        serde_json::to_string(&l).unwrap_or_default(),
                        now(),
                        actor
                    ],
                    |r| r.get(0),
                )?;
                db::audit(
                    &tx,
                    &actor,
                    "device.token.create",
                    &format!("enrollment-token:{id}"),
                    serde_json::json!({"uses": uses, "labels": l}),
                )?;
                tx.commit()?;
                Ok(id)
            })
            .await?;
        Ok(EnrollmentToken { id, token, uses, expires_at, labels })
    }

    /// Enrolls a device with a token: records its public key and labels. Enrolling the same key
    /// again (a device that lost its state file) returns the same id and consumes a use.
    pub async fn enroll(&self, req: EnrollRequest) -> Result<EnrollResponse, FleetError> {
        let key = PublicKey::from_base64(&req.public_key)
            .ok_or_else(|| FleetError::BadRequest("public_key is not a base64 Ed25519 key".into()))?;
        check_labels(&req.labels)?;
        let settings = self.settings.clone();
        let this = self.clone();
        self.db
            .call(move |conn| -> Result<EnrollResponse, FleetError> {
                let tx = conn.transaction()?;
                let row: Option<(i64, i64, i64, String, Option<i64>)> = tx
                    .query_row(
                        "SELECT id, uses_left, expires_at, labels, revoked_at FROM enrollment_tokens WHERE hash = ?1",
                        params![hash_token(&req.token)],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                    )
                    .optional()?;
                let Some((token_id, uses_left, expires_at, token_labels, revoked_at)) = row else {
                    return Err(FleetError::Unauthorized("unknown enrollment token".into()));
                };
                if revoked_at.is_some() {
                    return Err(FleetError::Unauthorized("enrollment token was revoked".into()));
                }
                if uses_left <= 0 {
                    return Err(FleetError::Unauthorized("enrollment token has no uses left".into()));
                }
                if expires_at <= now() {
                    return Err(FleetError::Unauthorized("enrollment token expired".into()));
                }
                let mut labels = req.labels.clone();
                let token_labels: BTreeMap<String, String> = serde_json::from_str(&token_labels).unwrap_or_default();
                labels.extend(token_labels);
                let id = fleet::device_id(&key);
                let decommissioned: Option<i64> = tx
                    .query_row("SELECT decommissioned_at FROM devices WHERE id = ?1", params![id], |r| r.get(0))
                    .optional()?
                    .flatten();
                if decommissioned.is_some() {
                    return Err(FleetError::Forbidden(format!(
                        "device {id:?} was decommissioned; its key cannot enroll again (a device given back to service needs a new key: remove the agent's state directory)"
                    )));
                }
                tx.execute("UPDATE enrollment_tokens SET uses_left = uses_left - 1 WHERE id = ?1", params![token_id])?;
                tx.execute(
                    "INSERT INTO devices (id, public_key, labels, enrolled_at, enrollment_token) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (id) DO UPDATE SET labels = excluded.labels, enrollment_token = excluded.enrollment_token",
                    params![id, key.to_base64(), serde_json::to_string(&labels).unwrap_or_default(), now(), token_id],
                )?;
                db::audit(&tx, &format!("enrollment-token:{token_id}"), "device.enroll", &id, serde_json::json!({"labels": labels}))?;
                this.reconcile(&tx, Some(&id))?;
                tx.commit()?;
                tracing::info!(device = %id, "Device enrolled.");
                Ok(EnrollResponse { device_id: id, mqtt_url: settings.mqtt_url.clone(), topic_prefix: settings.topic_prefix.clone(), labels })
            })
            .await
    }

    /// Checks a device-signed request and records the contact.
    pub async fn authenticate(
        &self,
        device_id: String,
        method: String,
        path_and_query: String,
        timestamp: u64,
        body_digest_input: Vec<u8>,
        signature: String,
    ) -> Result<(), FleetError> {
        self.db
            .call(move |conn| -> Result<(), FleetError> {
                let row: Option<(String, Option<i64>)> = conn
                    .query_row(
                        "SELECT public_key, decommissioned_at FROM devices WHERE id = ?1",
                        params![device_id],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                if row.as_ref().is_some_and(|(_, decommissioned)| decommissioned.is_some()) {
                    return Err(FleetError::Unauthorized(format!("device {device_id:?} is decommissioned")));
                }
                let key = row
                    .and_then(|(k, _)| PublicKey::from_base64(&k))
                    .ok_or_else(|| FleetError::Unauthorized(format!("unknown device {device_id:?}")))?;
                fleet::verify_request(
                    &key,
                    &method,
                    &path_and_query,
                    timestamp,
                    &body_digest_input,
                    &signature,
                    now() as u64,
                )
                .map_err(|e: RequestAuthError| FleetError::Unauthorized(e.to_string()))?;
                conn.execute(
                    "UPDATE devices SET last_seen = ?1, offline_at = NULL WHERE id = ?2",
                    params![now(), device_id],
                )?;
                Ok(())
            })
            .await
    }
}

pub(super) fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), FleetError> {
    for (k, v) in labels {
        if k.is_empty()
            || k.len() > 63
            || v.len() > 255
            || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
        {
            return Err(FleetError::BadRequest(format!(
                "label {k:?}={v:?}: keys are 1-63 of [A-Za-z0-9-_./], values up to 255 bytes"
            )));
        }
    }
    Ok(())
}
