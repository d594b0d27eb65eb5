//! Opening an S3 bucket (Amazon's or an S3-compatible server's) as a blob store, from
//! `--blob-store s3://bucket/prefix` and settings given as flags or as the standard
//! `AWS_*` environment variables (flags win).

use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;

use super::{ObjectBlobStore, S3MultipartListing};
use crate::blob::PartRules;

/// Where and how to reach the bucket; `None` leaves a setting to the `AWS_*` variables
/// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, ...) or to the instance's role.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// An S3-compatible server's address (`http://` is allowed only when named here).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// `https://bucket.host/key` instead of the path-style `https://host/bucket/key`.
    pub virtual_hosted_style: bool,
    /// Sign request bodies (their SHA-256 in the SigV4 signature); `None`: only over
    /// plain `http://`, where nothing else checks them in transit.
    pub sign_payload: Option<bool>,
}

/// A blob store's location that is not `s3://bucket[/prefix]`, or settings that do not
/// make an S3 client.
#[derive(Debug, thiserror::Error)]
#[error("--blob-store {url}: {reason}")]
pub struct S3ConfigError {
    url: String,
    reason: String,
}

/// The bucket and key prefix an `s3://bucket/prefix` URL names.
fn parse_url(url: &str) -> Result<(String, Path), String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or("expected s3://bucket or s3://bucket/prefix")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err("names no bucket".into());
    }
    let prefix = Path::parse(prefix.trim_end_matches('/'))
        .map_err(|e| format!("the prefix is not a valid key prefix: {e}"))?;
    Ok((bucket.to_owned(), prefix))
}

/// Makes ring the process's TLS provider, as object stores' HTTP client needs (its
/// rustls comes without one). Already installed, by an earlier store or the TLS set-up,
/// is as good.
pub fn use_ring_for_tls() {
    // Deprecated for lacking post-quantum key exchange, which ring does not have; the
    // workspace builds rustls on ring alone rather than on aws-lc's C build.
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Opens the bucket `url` names (`s3://bucket/prefix`) as a blob store, with S3's part
/// rules. Nothing is sent yet: an unreachable store shows on first use.
pub fn open_s3(url: &str, settings: &S3Settings) -> Result<ObjectBlobStore, S3ConfigError> {
    let config_error = |reason: String| S3ConfigError {
        url: url.to_owned(),
        reason,
    };
    let (bucket, prefix) = parse_url(url).map_err(config_error)?;
    use_ring_for_tls();
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(endpoint) = &settings.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    if let Some(region) = &settings.region {
        builder = builder.with_region(region);
    }
    if let Some(key) = &settings.access_key_id {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = &settings.secret_access_key {
        builder = builder.with_secret_access_key(secret);
    }
    if let Some(token) = &settings.session_token {
        builder = builder.with_token(token);
    }
    if settings.virtual_hosted_style {
        builder = builder.with_virtual_hosted_style_request(true);
    }
    let over_plain_http = builder
        .get_config_value(&AmazonS3ConfigKey::S3Endpoint)
        .or(builder.get_config_value(&AmazonS3ConfigKey::Endpoint))
        .is_some_and(|endpoint| endpoint.starts_with("http://"));
    let sign_payload = settings.sign_payload.unwrap_or(over_plain_http);
    builder = builder.with_unsigned_payload(!sign_payload);
    let bucket_url = bucket_url(&builder);
    let region = builder
        .get_config_value(&AmazonS3ConfigKey::Region)
        .unwrap_or_else(|| "us-east-1".to_owned());
    let store = Arc::new(builder.build().map_err(|e| config_error(e.to_string()))?);
    let blobs = ObjectBlobStore::new(Arc::clone(&store) as _, prefix, PartRules::S3);
    Ok(match bucket_url {
        Some(url) => blobs.with_listing(Arc::new(S3MultipartListing::new(store, url, region))),
        None => blobs,
    })
}

/// The bucket's address as `object_store` makes it (`AmazonS3Builder::build`): the
/// endpoint as given for virtual-hosted style, else the endpoint and the bucket, else
/// Amazon's. `None` for S3 Express buckets, whose zonal endpoints are left to
/// `object_store` (their multipart uploads are found by their markers only).
fn bucket_url(builder: &AmazonS3Builder) -> Option<String> {
    let value = |key| builder.get_config_value(&key);
    if value(AmazonS3ConfigKey::S3Express).as_deref() == Some("true") {
        return None;
    }
    let bucket = value(AmazonS3ConfigKey::Bucket)?;
    let region = value(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".to_owned());
    let virtual_hosted =
        value(AmazonS3ConfigKey::VirtualHostedStyleRequest).as_deref() == Some("true");
    let endpoint = value(AmazonS3ConfigKey::S3Endpoint).or(value(AmazonS3ConfigKey::Endpoint));
    Some(match (endpoint, virtual_hosted) {
        (Some(endpoint), true) => endpoint,
        (Some(endpoint), false) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
        (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
        (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3_url_names_a_bucket_and_an_optional_prefix() {
        assert_eq!(
            parse_url("s3://media").unwrap(),
            ("media".to_owned(), Path::default())
        );
        assert_eq!(
            parse_url("s3://media/transfer/eu/").unwrap(),
            ("media".to_owned(), Path::from("transfer/eu"))
        );
        assert!(parse_url("s3:///prefix").is_err());
        assert!(parse_url("gs://media").is_err());
        assert!(parse_url("s3://media/a//b").is_err());
    }
}
