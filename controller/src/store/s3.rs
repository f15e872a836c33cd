//! An S3-compatible bucket (AWS S3, SeaweedFS, MinIO, Ceph RGW, ...) through the `object_store`
//! crate: the same keys as the filesystem layout (`PREFIX/artifacts/ab/cdef….zst`,
//! `PREFIX/blobs/ab/cdef….zst`), several controller replicas sharing one bucket. Credentials stay
//! on the controller: devices get bytes through a replica or, with `presign_secs`, by a SigV4
//! presigned GET valid that long.

use std::ops::Range;
use std::time::Duration;

use edgefleet_shared::compress::{DEFAULT_LEVEL, compress};
use edgefleet_shared::verify::sha256_hex;
use futures::future::BoxFuture;
use futures::{FutureExt as _, TryStreamExt as _};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::signer::Signer as _;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore as _, PutPayload, RetryConfig};

use super::{ArtifactStore, ByteStream, Object, StoreError, StoredArtifact};
use crate::config::S3Config;

/// The object the start-up check looks for (its absence is the expected answer).
const PROBE: &str = "edgefleet-store-probe";

/// A bucket (and key prefix) holding the artifacts.
#[derive(Debug)]
pub struct S3Store {
    bucket: AmazonS3,
    prefix: Option<Key>,
    presign: Option<Duration>,
    /// Blocking calls run their requests to completion on this runtime.
    runtime: tokio::runtime::Handle,
    describe: String,
}

impl S3Store {
    /// A store for `config`, with credentials from it or the `AWS_*` environment and extra CA
    /// certificates from `ca_file` (beside the system's roots). Must be called inside the tokio
    /// runtime its requests will run on; nothing is contacted until [`ArtifactStore::check`].
    pub fn new(config: &S3Config, ca_file: Option<&std::path::Path>) -> Result<Self, StoreError> {
        let remote = |what: &str, e: &dyn std::fmt::Display| StoreError::Remote(format!("{what}: {e}"));
        let mut options = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(10))
            // A replica streams big artifacts to slow devices through one request.
            .with_timeout(Duration::from_secs(15 * 60));
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|source| StoreError::Io { path: path.into(), source })?;
            for cert in object_store::Certificate::from_pem_bundle(&pem).map_err(|e| remote("tls.ca_file", &e))? {
                options = options.with_root_certificate(cert);
            }
        }
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_virtual_hosted_style_request(config.virtual_hosted_style)
            .with_retry(RetryConfig {
                max_retries: 4,
                retry_timeout: Duration::from_secs(30),
                ..RetryConfig::default()
            });
        if let Some(endpoint) = &config.endpoint {
            options = options.with_allow_http(endpoint.starts_with("http://"));
            builder = builder.with_endpoint(endpoint.trim_end_matches('/'));
        }
        if let (Some(id), Some(file)) = (&config.access_key_id, &config.secret_access_key_file) {
            let secret =
                std::fs::read_to_string(file).map_err(|source| StoreError::Io { path: file.clone(), source })?;
            builder = builder.with_access_key_id(id).with_secret_access_key(secret.trim());
        }
        let bucket = builder.with_client_options(options).build().map_err(|e| remote("[artifacts.s3]", &e))?;
        let prefix = config.prefix.trim_matches('/');
        let prefix = (!prefix.is_empty())
            .then(|| Key::parse(prefix))
            .transpose()
            .map_err(|e| remote("artifacts.s3.prefix", &e))?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| StoreError::Remote(format!("the S3 store needs the controller's runtime: {e}")))?;
        let at = config.endpoint.as_deref().unwrap_or("AWS");
        Ok(S3Store {
            describe: format!(
                "s3://{}/{} at {at}",
                config.bucket,
                prefix.as_ref().map(Key::as_ref).unwrap_or_default()
            ),
            bucket,
            prefix,
            presign: (config.presign_secs > 0).then(|| Duration::from_secs(config.presign_secs)),
            runtime,
        })
    }

    fn key(&self, object: Object<'_>) -> Result<Key, StoreError> {
        let key = object.key().ok_or_else(|| object.not_found())?;
        Ok(self.child(&key))
    }

    fn child(&self, key: &str) -> Key {
        match &self.prefix {
            Some(p) => key.split('/').fold(p.clone(), |k, part| k.child(part)),
            None => Key::from_iter(key.split('/')),
        }
    }

    /// Whether the object exists.
    async fn exists(&self, key: &Key) -> Result<bool, StoreError> {
        match self.bucket.head(key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(remote(e)),
        }
    }

    /// Whether the bucket holds `object`. Blocking.
    pub fn contains(&self, object: Object<'_>) -> Result<bool, StoreError> {
        let key = self.key(object)?;
        self.runtime.block_on(self.exists(&key))
    }

    /// Writes `bytes` as they are under `object`'s key (copying a store). Blocking.
    pub fn put_exact(&self, object: Object<'_>, bytes: Vec<u8>) -> Result<(), StoreError> {
        let key = self.key(object)?;
        self.runtime.block_on(self.bucket.put(&key, PutPayload::from(bytes))).map(drop).map_err(remote)
    }
}

fn remote(e: object_store::Error) -> StoreError {
    StoreError::Remote(e.to_string())
}

fn found(object: Object<'_>) -> impl FnOnce(object_store::Error) -> StoreError + '_ {
    move |e| match e {
        object_store::Error::NotFound { .. } => object.not_found(),
        e => remote(e),
    }
}

impl ArtifactStore for S3Store {
    fn put(&self, bytes: &[u8]) -> Result<StoredArtifact, StoreError> {
        let sha256 = sha256_hex(bytes);
        let key = self.key(Object::Artifact(&sha256))?;
        let size = bytes.len() as u64;
        self.runtime.block_on(async {
            // Never rewritten: devices were told the stored object's compressed digest.
            match self.bucket.get(&key).await {
                Ok(got) => {
                    let existing = got.bytes().await.map_err(remote)?;
                    let compressed_sha256 = sha256_hex(&existing);
                    return Ok(StoredArtifact {
                        compressed_sha256,
                        compressed_size: existing.len() as u64,
                        size,
                        sha256,
                    });
                }
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(remote(e)),
            }
            let packed =
                compress(bytes, DEFAULT_LEVEL).map_err(|e| StoreError::Remote(format!("compressing {sha256}: {e}")))?;
            let stored = StoredArtifact {
                compressed_sha256: sha256_hex(&packed),
                compressed_size: packed.len() as u64,
                size,
                sha256: sha256.clone(),
            };
            self.bucket.put(&key, PutPayload::from(packed)).await.map_err(remote)?;
            Ok(stored)
        })
    }

    fn put_blob(&self, bytes: &[u8]) -> Result<(String, u64), StoreError> {
        let sha256 = sha256_hex(bytes);
        let key = self.key(Object::Blob(&sha256))?;
        self.runtime.block_on(async {
            if !self.exists(&key).await? {
                self.bucket.put(&key, PutPayload::from(bytes.to_vec())).await.map_err(remote)?;
            }
            Ok::<_, StoreError>(())
        })?;
        Ok((sha256, bytes.len() as u64))
    }

    fn read(&self, object: Object<'_>) -> Result<Vec<u8>, StoreError> {
        let key = self.key(object)?;
        self.runtime.block_on(async {
            let got = self.bucket.get(&key).await.map_err(found(object))?;
            Ok(got.bytes().await.map_err(remote)?.to_vec())
        })
    }

    fn size<'a>(&'a self, object: Object<'a>) -> BoxFuture<'a, Result<u64, StoreError>> {
        async move {
            let key = self.key(object)?;
            Ok(self.bucket.head(&key).await.map_err(found(object))?.size)
        }
        .boxed()
    }

    fn stream<'a>(&'a self, object: Object<'a>, range: Range<u64>) -> BoxFuture<'a, Result<ByteStream, StoreError>> {
        async move {
            let key = self.key(object)?;
            let options = GetOptions { range: Some(GetRange::Bounded(range)), ..GetOptions::default() };
            let got = self.bucket.get_opts(&key, options).await.map_err(found(object))?;
            Ok(Box::pin(got.into_stream().map_err(std::io::Error::other)) as ByteStream)
        }
        .boxed()
    }

    fn presign<'a>(&'a self, object: Object<'a>) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        async move {
            let Some(ttl) = self.presign else { return Ok(None) };
            let key = self.key(object)?;
            let url = self.bucket.signed_url(reqwest::Method::GET, &key, ttl).await.map_err(remote)?;
            Ok(Some(url.to_string()))
        }
        .boxed()
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            self.exists(&self.child(PROBE)).await.map(drop).map_err(|e| {
                StoreError::Remote(format!(
                    "cannot reach {}: {e} (does the bucket exist, are the credentials right?)",
                    self.describe
                ))
            })
        }
        .boxed()
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_follow_the_filesystem_layout_under_the_prefix() {
        let sha = "ab".repeat(32);
        let config = S3Config {
            endpoint: Some("http://127.0.0.1:1".into()),
            bucket: "b".into(),
            prefix: "/fleet/one/".into(),
            access_key_id: None,
            secret_access_key_file: None,
            ..S3Config::default()
        };
        let store = S3Store::new(&config, None).expect("store");
        let key = store.key(Object::Artifact(&sha)).expect("key");
        assert_eq!(key.as_ref(), format!("fleet/one/artifacts/ab/{}.zst", &sha[2..]));
        assert_eq!(
            store.key(Object::Blob(&sha)).expect("key").as_ref(),
            format!("fleet/one/blobs/ab/{}.zst", &sha[2..])
        );
        assert!(matches!(store.key(Object::Blob("../../etc")), Err(StoreError::NotFound(_))));
        assert_eq!(store.describe(), "s3://b/fleet/one at http://127.0.0.1:1");
    }
}
