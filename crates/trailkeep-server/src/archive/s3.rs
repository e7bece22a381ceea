//! A small client of one S3-compatible bucket (AWS S3, Garage, MinIO, Ceph RGW…): put, get,
//! head, list and delete objects under an optional key prefix.
//!
//! It knows nothing of what the objects mean, so the archive and the routing targets share it.
//! Requests are signed with SigV4 by the `object_store` crate, which also retries failed requests
//! (5xx, timeouts, connection errors) with exponential backoff, bounded by [`S3Target::retry`].
//! The secret access key is never printed: [`S3Target`]'s `Debug` leaves it out.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload, RetryConfig};

/// Where objects go: an S3-compatible endpoint, a bucket, and the credentials to write it.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Target {
    /// `http(s)://host[:port]`; `None` for AWS S3 itself (virtual-hosted style).
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Keys start with `<prefix>/` when not empty.
    pub prefix: String,
    /// How long one request is retried before it fails.
    pub retry: Duration,
}

impl std::fmt::Debug for S3Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Target")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<hidden>")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl S3Target {
    /// `s3://bucket/prefix` at `endpoint`, for messages and for telling targets apart.
    pub fn describe(&self) -> String {
        let mut s = format!("s3://{}", self.bucket);
        if !self.prefix.is_empty() {
            s.push('/');
            s.push_str(&self.prefix);
        }
        if let Some(e) = &self.endpoint {
            s.push_str(" at ");
            s.push_str(e);
        }
        s
    }

    /// Parses `s3://bucket[/prefix]` into the bucket and the prefix.
    pub fn parse_url(url: &str) -> Result<(String, String), S3Error> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            S3Error::Config(format!("{url:?} is not an s3://bucket[/prefix] URL"))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(S3Error::Config(format!("{url:?} names no bucket")));
        }
        Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
    }
}

/// Why a bucket operation failed.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("object storage configuration: {0}")]
    Config(String),
    #[error("object {key}: {message}")]
    Request { key: String, message: String },
    #[error("object {key} is larger than the limit of {limit} bytes")]
    TooLarge { key: String, limit: u64 },
}

/// One object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key relative to the target's prefix.
    pub key: String,
    pub size: u64,
}

/// A connected bucket. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Bucket {
    store: Arc<AmazonS3>,
    prefix: String,
    describe: String,
}

impl Bucket {
    /// A client of `target` (no request is made yet).
    pub fn new(target: &S3Target) -> Result<Bucket, S3Error> {
        if target.bucket.is_empty() || target.access_key_id.is_empty() {
            return Err(S3Error::Config(
                "an S3 target needs a bucket and an access key id".into(),
            ));
        }
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&target.bucket)
            .with_region(&target.region)
            .with_access_key_id(&target.access_key_id)
            .with_secret_access_key(&target.secret_access_key)
            .with_retry(RetryConfig {
                max_retries: 10,
                retry_timeout: target.retry,
                backoff: object_store::BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
            });
        if let Some(endpoint) = &target.endpoint {
            // Self-hosted servers are addressed path-style; plain HTTP only when asked for.
            builder = builder
                .with_endpoint(endpoint.trim_end_matches('/'))
                .with_virtual_hosted_style_request(false)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let store = builder
            .build()
            .map_err(|e| S3Error::Config(e.to_string()))?;
        Ok(Bucket {
            store: Arc::new(store),
            prefix: target.prefix.trim_matches('/').to_string(),
            describe: target.describe(),
        })
    }

    /// `s3://bucket/prefix at endpoint`.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }

    fn relative(&self, path: &ObjectPath) -> String {
        let full = path.as_ref();
        if self.prefix.is_empty() {
            full.to_string()
        } else {
            full.strip_prefix(&self.prefix)
                .map(|k| k.trim_start_matches('/'))
                .unwrap_or(full)
                .to_string()
        }
    }

    fn error(key: &str, e: object_store::Error) -> S3Error {
        S3Error::Request {
            key: key.to_string(),
            message: e.to_string(),
        }
    }

    /// Writes `bytes` at `key` (replacing what is there).
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), S3Error> {
        self.store
            .put(&self.path(key), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| Self::error(key, e))
    }

    /// The object at `key`, `None` when there is none; refused when larger than `limit` bytes.
    pub async fn get(&self, key: &str, limit: u64) -> Result<Option<Vec<u8>>, S3Error> {
        let result = match self.store.get(&self.path(key)).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(Self::error(key, e)),
        };
        if result.meta.size > limit {
            return Err(S3Error::TooLarge {
                key: key.to_string(),
                limit,
            });
        }
        let bytes = result.bytes().await.map_err(|e| Self::error(key, e))?;
        if bytes.len() as u64 > limit {
            return Err(S3Error::TooLarge {
                key: key.to_string(),
                limit,
            });
        }
        Ok(Some(bytes.to_vec()))
    }

    /// The size of the object at `key`, `None` when there is none.
    pub async fn head(&self, key: &str) -> Result<Option<u64>, S3Error> {
        match self.store.head(&self.path(key)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Self::error(key, e)),
        }
    }

    /// Every object whose key starts with `dir/` (all objects when `dir` is empty), in key
    /// order, at most `limit` of them (more is an error rather than a silent cut).
    pub async fn list(&self, dir: &str, limit: usize) -> Result<Vec<ObjectInfo>, S3Error> {
        let prefix = match (self.prefix.is_empty(), dir.is_empty()) {
            (true, true) => None,
            (true, false) => Some(ObjectPath::from(dir)),
            (false, true) => Some(ObjectPath::from(self.prefix.as_str())),
            (false, false) => Some(self.path(dir)),
        };
        let mut stream = self.store.list(prefix.as_ref());
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            let meta = item.map_err(|e| Self::error(dir, e))?;
            if out.len() == limit {
                return Err(S3Error::Request {
                    key: dir.to_string(),
                    message: format!("more than {limit} objects"),
                });
            }
            out.push(ObjectInfo {
                key: self.relative(&meta.location),
                size: meta.size,
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Removes the object at `key` (no error when there is none).
    pub async fn delete(&self, key: &str) -> Result<(), S3Error> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Self::error(key, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_the_hidden_secret() {
        assert_eq!(
            S3Target::parse_url("s3://audit/tk/prod/").unwrap(),
            ("audit".to_string(), "tk/prod".to_string())
        );
        assert_eq!(
            S3Target::parse_url("s3://audit").unwrap(),
            ("audit".to_string(), String::new())
        );
        assert!(S3Target::parse_url("http://audit").is_err());
        assert!(S3Target::parse_url("s3:///x").is_err());
        let t = S3Target {
            endpoint: Some("http://127.0.0.1:3900".into()),
            bucket: "b".into(),
            region: "garage".into(),
            access_key_id: "GK1".into(),
            secret_access_key: "very-secret".into(),
            prefix: String::new(),
            retry: Duration::from_secs(1),
        };
        assert!(!format!("{t:?}").contains("very-secret"));
    }
}
