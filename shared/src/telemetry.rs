//! Telemetry batches: what an agent tells the controller about the traffic it served.
//!
//! A batch covers one flush interval of one device: per served model version, the per-feature
//! histograms over the baseline's bin edges and the output class histogram for **all** rows,
//! the sampled rows (inputs, outputs, request id) and the ground-truth labels apps posted.
//!
//! On the wire (MQTT payload and spool file) a batch is a frame:
//! `b"EFT1"` · 64-byte Ed25519 signature · zstd(JSON batch). The signature covers the
//! compressed bytes, so the controller checks who sent a frame before decompressing it, and the
//! batch names its device and a per-device sequence number, so a frame signed by another device
//! or replayed is refused. See `shared/FORMATS.md`.

use serde::{Deserialize, Serialize};

use crate::keys::{PublicKey, Signer};

/// `kind` of a batch.
pub const TELEMETRY_KIND: &str = "edgefleet.telemetry/v1";
/// First bytes of a frame.
pub const FRAME_MAGIC: &[u8; 4] = b"EFT1";
/// Largest decompressed batch accepted.
pub const MAX_BATCH_BYTES: u64 = 16 * 1024 * 1024;
/// zstd level for batches (fast; telemetry is small).
const LEVEL: i32 = 3;

/// One device's telemetry for one interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryBatch {
    /// Always [`TELEMETRY_KIND`].
    pub kind: String,
    /// The sending device.
    pub device: String,
    /// Per-device batch number, increasing by one per batch.
    pub sequence: u64,
    /// Start of the interval (Unix seconds, device clock).
    pub start: u64,
    /// End of the interval.
    pub end: u64,
    /// Per served model version.
    pub models: Vec<ModelTelemetry>,
    /// Samples not taken because of the per-minute or per-hour caps.
    #[serde(default)]
    pub samples_capped: u64,
}

/// Telemetry of one model version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelTelemetry {
    /// Model name.
    pub model: String,
    /// Version number.
    pub version: u64,
    /// Rows answered in the interval.
    pub rows: u64,
    /// Per input feature (baseline column order): counts per baseline bin. Empty when the
    /// version has no baseline.
    pub features: Vec<FeatureCounts>,
    /// Rows per predicted class (the top class, or the label value).
    pub output_classes: Vec<u64>,
    /// Sampled rows.
    pub samples: Vec<Sample>,
    /// Labels posted through `/v2/models/{m}/feedback`.
    pub feedback: Vec<Feedback>,
    /// Feedback that matched a recent prediction, and how many of those were right.
    pub labeled: u64,
    /// Of `labeled`, predicted correctly.
    pub correct: u64,
}

/// One feature's histogram over the baseline bins, plus missing (NaN) values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureCounts {
    /// Count per bin (`edges.len() + 1` bins).
    pub counts: Vec<u64>,
    /// NaN values.
    pub missing: u64,
}

/// One sampled row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The request's id (the KServe `id`), if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// When it was answered (Unix milliseconds, device clock).
    pub at_ms: u64,
    /// The row's input values, flattened.
    pub inputs: Vec<f32>,
    /// The row's first output (class scores, or the value), flattened.
    pub outputs: Vec<f32>,
    /// Predicted class, when the model is a classifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted: Option<u64>,
    /// Taken because the top-class probability was under the threshold.
    #[serde(default)]
    pub low_confidence: bool,
}

/// A ground-truth label for an earlier request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feedback {
    /// The request id the label is for.
    pub request_id: String,
    /// The true class.
    pub label: u64,
    /// When it arrived (Unix milliseconds, device clock).
    pub at_ms: u64,
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Not a telemetry frame.
    #[error("not a telemetry frame: {0}")]
    Malformed(String),
    /// The signature does not verify with the device's key.
    #[error("signature does not verify with the device's key")]
    Signature,
    /// Signed by the device, but naming another device.
    #[error("batch names device {named:?}, not the sender {sender:?}")]
    WrongDevice {
        /// Device named inside.
        named: String,
        /// Device it came from.
        sender: String,
    },
}

impl FrameError {
    /// Short class for metrics.
    pub fn class(&self) -> &'static str {
        match self {
            FrameError::Malformed(_) => "malformed",
            FrameError::Signature => "signature",
            FrameError::WrongDevice { .. } => "wrong_device",
        }
    }
}

impl TelemetryBatch {
    /// A batch of `models` from `device` for the interval `start..end`, nothing capped.
    pub fn new(device: &str, sequence: u64, (start, end): (u64, u64), models: Vec<ModelTelemetry>) -> Self {
        TelemetryBatch {
            kind: TELEMETRY_KIND.into(),
            device: device.into(),
            sequence,
            start,
            end,
            models,
            samples_capped: 0,
        }
    }

    /// Compresses and signs the batch into a frame.
    pub fn encode(&self, signer: &dyn Signer) -> Vec<u8> {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let compressed = crate::compress::compress(&json, LEVEL).unwrap_or_default();
        let mut frame = Vec::with_capacity(4 + 64 + compressed.len());
        frame.extend_from_slice(FRAME_MAGIC);
        frame.extend_from_slice(&signer.sign(&compressed));
        frame.extend_from_slice(&compressed);
        frame
    }

    /// Checks a frame from `device` against its key, then decompresses (capped) and parses it.
    pub fn decode(frame: &[u8], device: &str, key: &PublicKey) -> Result<Self, FrameError> {
        let (signature, compressed) = split_frame(frame)?;
        if !key.verify(compressed, signature) {
            return Err(FrameError::Signature);
        }
        Self::parse(compressed, device)
    }

    /// [`Self::decode`] for many `(frame, sending device, its key)`s, their signatures checked
    /// together ([`crate::keys::verify_many`]); one result per frame, in order.
    #[cfg(feature = "batch-verify")]
    pub fn decode_many(frames: &[(&[u8], &str, &PublicKey)]) -> Vec<Result<Self, FrameError>> {
        let split: Vec<_> = frames.iter().map(|(frame, ..)| split_frame(frame)).collect();
        let signed: Vec<(&PublicKey, &[u8], &[u8])> = split
            .iter()
            .zip(frames)
            .filter_map(|(parts, (_, _, key))| parts.as_ref().ok().map(|(sig, body)| (*key, *body, *sig)))
            .collect();
        let mut verified = crate::keys::verify_many(&signed).into_iter();
        split
            .into_iter()
            .zip(frames)
            .map(|(parts, (_, device, _))| {
                let (_, compressed) = parts?;
                if !verified.next().unwrap_or(false) {
                    return Err(FrameError::Signature);
                }
                Self::parse(compressed, device)
            })
            .collect()
    }

    /// The batch in a frame's verified, compressed body, which must name `device`.
    fn parse(compressed: &[u8], device: &str) -> Result<Self, FrameError> {
        let json = crate::compress::decompress_to_vec(compressed, MAX_BATCH_BYTES)
            .map_err(|e| FrameError::Malformed(e.to_string()))?;
        let batch: TelemetryBatch = serde_json::from_slice(&json).map_err(|e| FrameError::Malformed(e.to_string()))?;
        if batch.kind != TELEMETRY_KIND {
            return Err(FrameError::Malformed(format!("kind {:?}", batch.kind)));
        }
        if batch.device != device {
            return Err(FrameError::WrongDevice { named: batch.device, sender: device.into() });
        }
        Ok(batch)
    }

    /// Sampled rows in the batch.
    pub fn sample_count(&self) -> usize {
        self.models.iter().map(|m| m.samples.len()).sum()
    }
}

/// A frame's signature and compressed body.
fn split_frame(frame: &[u8]) -> Result<(&[u8], &[u8]), FrameError> {
    if frame.len() < 4 + 64 || &frame[..4] != FRAME_MAGIC {
        return Err(FrameError::Malformed("missing the EFT1 header".into()));
    }
    Ok(frame[4..].split_at(64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::FileKey;

    fn batch(device: &str) -> TelemetryBatch {
        TelemetryBatch {
            kind: TELEMETRY_KIND.into(),
            device: device.into(),
            sequence: 7,
            start: 1,
            end: 2,
            models: vec![ModelTelemetry {
                model: "iris".into(),
                version: 1,
                rows: 3,
                features: vec![FeatureCounts { counts: vec![1, 2], missing: 0 }],
                output_classes: vec![0, 3],
                samples: vec![Sample {
                    request_id: Some("r1".into()),
                    at_ms: 5,
                    inputs: vec![5.1, 3.5],
                    outputs: vec![0.1, 0.9],
                    predicted: Some(1),
                    low_confidence: false,
                }],
                feedback: vec![],
                labeled: 0,
                correct: 0,
            }],
            samples_capped: 0,
        }
    }

    #[test]
    fn frames_round_trip_and_refuse_other_keys_and_devices() {
        let (me, other) = (FileKey::from_seed([1; 32]), FileKey::from_seed([2; 32]));
        let frame = batch("dev-a").encode(&me);
        assert_eq!(TelemetryBatch::decode(&frame, "dev-a", &me.public_key()).expect("decode"), batch("dev-a"));
        assert!(matches!(TelemetryBatch::decode(&frame, "dev-a", &other.public_key()), Err(FrameError::Signature)));
        let claimed = batch("dev-b").encode(&me);
        assert!(matches!(
            TelemetryBatch::decode(&claimed, "dev-a", &me.public_key()),
            Err(FrameError::WrongDevice { .. })
        ));
        let mut flipped = frame.clone();
        *flipped.last_mut().expect("byte") ^= 1;
        assert!(matches!(TelemetryBatch::decode(&flipped, "dev-a", &me.public_key()), Err(FrameError::Signature)));
        assert!(matches!(TelemetryBatch::decode(b"nope", "dev-a", &me.public_key()), Err(FrameError::Malformed(_))));
    }

    #[cfg(feature = "batch-verify")]
    #[test]
    fn many_frames_decode_together_as_each_would_alone() {
        let (a, b) = (FileKey::from_seed([1; 32]), FileKey::from_seed([2; 32]));
        let (ka, kb) = (a.public_key(), b.public_key());
        let good_a = batch("dev-a").encode(&a);
        let good_b = batch("dev-b").encode(&b);
        let all_good: Vec<(&[u8], &str, &PublicKey)> =
            vec![(&good_a, "dev-a", &ka), (&good_b, "dev-b", &kb), (&good_a, "dev-a", &ka)];
        let decoded = TelemetryBatch::decode_many(&all_good);
        assert_eq!(decoded.len(), 3);
        assert_eq!(decoded[1].as_ref().expect("b"), &batch("dev-b"));
        assert!(decoded.iter().all(Result::is_ok));

        let mut flipped = good_a.clone();
        *flipped.last_mut().expect("byte") ^= 1;
        let claimed = batch("dev-b").encode(&a);
        let mixed: Vec<(&[u8], &str, &PublicKey)> = vec![
            (&good_a, "dev-a", &ka),
            (&good_a, "dev-a", &kb),
            (&flipped, "dev-a", &ka),
            (b"nope", "dev-a", &ka),
            (&claimed, "dev-a", &ka),
            (&good_b, "dev-b", &kb),
        ];
        let together = TelemetryBatch::decode_many(&mixed);
        let alone: Vec<_> = mixed.iter().map(|(f, d, k)| TelemetryBatch::decode(f, d, k)).collect();
        assert_eq!(together.len(), alone.len());
        for (t, a) in together.iter().zip(&alone) {
            assert_eq!(format!("{t:?}"), format!("{a:?}"));
        }
        assert!(together[0].is_ok() && together[5].is_ok());
        assert!(matches!(together[1], Err(FrameError::Signature)));
        assert!(matches!(together[2], Err(FrameError::Signature)));
    }
}
