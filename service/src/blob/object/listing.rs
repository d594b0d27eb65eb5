//! Listing a bucket's unfinished multipart uploads (S3's ListMultipartUploads), which
//! `object_store` does not offer. A replica killed between creating a multipart upload
//! and writing its staging marker leaves one that only this listing finds; aborting
//! those is how nothing the ledger does not reference stays behind.
//!
//! The request is signed with `object_store`'s own SigV4 signer and credentials, sent
//! with reqwest, and its XML answer read with quick-xml.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::HttpRequestBody;
use object_store::path::Path;
use serde::Deserialize;

/// An unfinished multipart upload: its key and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenMultipart {
    pub key: Path,
    pub multipart: String,
}

/// Lists the unfinished multipart uploads of a bucket.
///
/// Contract: every multipart upload created and neither completed nor aborted whose key
/// starts with `prefix` is listed (those changing meanwhile may or may not be); keys are
/// compared as strings, so a prefix need not end at a `/`.
#[async_trait]
pub trait MultipartListing: Send + Sync + std::fmt::Debug {
    async fn list_open(&self, prefix: &Path) -> Result<Vec<OpenMultipart>, ListingError>;
}

#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    #[error("could not get credentials: {0}")]
    Credentials(#[source] object_store::Error),
    #[error("could not sign the request: {0}")]
    Signing(#[source] object_store::Error),
    #[error("the bucket's address {0:?} is not a URL")]
    Address(String),
    #[error("the request failed: {0}")]
    Request(#[from] reqwest::Error),
    #[error("the server answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("the answer is not a ListMultipartUploadsResult: {0}")]
    Answer(#[from] quick_xml::DeError),
}

/// ListMultipartUploads on an S3 bucket (Amazon's or an S3-compatible server's).
#[derive(Debug)]
pub struct S3MultipartListing {
    s3: Arc<AmazonS3>,
    /// `https://host/bucket` (path style) or `https://bucket.host`, as `object_store`
    /// addresses the bucket.
    bucket_url: String,
    region: String,
    http: reqwest::Client,
}

impl S3MultipartListing {
    pub fn new(s3: Arc<AmazonS3>, bucket_url: String, region: String) -> Self {
        // Listing is a background chore: a slow store must not hold a sweep for ever.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        Self {
            s3,
            bucket_url,
            region,
            http,
        }
    }

    /// One page of the listing, from the markers the previous page ended at.
    async fn page(
        &self,
        prefix: &str,
        from: Option<(&str, &str)>,
    ) -> Result<ListMultipartUploadsResult, ListingError> {
        let mut url = reqwest::Url::parse(&self.bucket_url)
            .map_err(|_| ListingError::Address(self.bucket_url.clone()))?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_key_only("uploads")
                .append_pair("prefix", prefix);
            if let Some((key, upload)) = from {
                query
                    .append_pair("key-marker", key)
                    .append_pair("upload-id-marker", upload);
            }
        }
        let credential = self
            .s3
            .credentials()
            .get_credential()
            .await
            .map_err(ListingError::Credentials)?;
        let mut request = http::Request::builder()
            .method(http::Method::GET)
            .uri(url.as_str())
            .body(HttpRequestBody::from(Bytes::new()))
            .map_err(|_| ListingError::Address(url.to_string()))?;
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut request, None)
            .map_err(ListingError::Signing)?;
        let response = self
            .http
            .get(url)
            .headers(request.headers().clone())
            .send()
            .await?;
        let status = response.status();
        let body = response.text().await?;
        if !status.is_success() {
            return Err(ListingError::Refused {
                status: status.as_u16(),
                body: body.chars().take(500).collect(),
            });
        }
        Ok(quick_xml::de::from_str(&body)?)
    }
}

#[async_trait]
impl MultipartListing for S3MultipartListing {
    async fn list_open(&self, prefix: &Path) -> Result<Vec<OpenMultipart>, ListingError> {
        let prefix = prefix.as_ref();
        let mut open = Vec::new();
        let mut from: Option<(String, String)> = None;
        loop {
            let markers = from.as_ref().map(|(k, u)| (k.as_str(), u.as_str()));
            let page = self.page(prefix, markers).await?;
            open.extend(page.uploads.into_iter().filter_map(|upload| {
                // A key `object_store` could not name is not one this store made.
                let key = Path::parse(&upload.key).ok()?;
                Some(OpenMultipart {
                    key,
                    multipart: upload.upload_id,
                })
            }));
            match (
                page.is_truncated,
                page.next_key_marker,
                page.next_upload_id_marker,
            ) {
                (true, Some(key), Some(upload)) if !key.is_empty() => {
                    // A server that repeats its markers would list for ever.
                    if from.as_ref() == Some(&(key.clone(), upload.clone())) {
                        break;
                    }
                    from = Some((key, upload));
                }
                _ => break,
            }
        }
        Ok(open)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListMultipartUploadsResult {
    #[serde(default)]
    is_truncated: bool,
    #[serde(default)]
    next_key_marker: Option<String>,
    #[serde(default)]
    next_upload_id_marker: Option<String>,
    #[serde(default, rename = "Upload")]
    uploads: Vec<ListedUpload>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListedUpload {
    key: String,
    upload_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_answer_names_each_upload_and_where_the_next_page_starts() {
        let answer = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>transfer</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>p/content/ab/u-2</NextKeyMarker><NextUploadIdMarker>id-2</NextUploadIdMarker>
  <MaxUploads>2</MaxUploads><IsTruncated>true</IsTruncated>
  <Upload><Key>p/content/ab/u-1</Key><UploadId>id-1</UploadId><Initiated>2026-12-07T10:00:00.000Z</Initiated></Upload>
  <Upload><Key>p/content/ab/u-2</Key><UploadId>id-2</UploadId><Initiated>2026-12-07T10:00:01.000Z</Initiated></Upload>
</ListMultipartUploadsResult>"#;
        let page: ListMultipartUploadsResult = quick_xml::de::from_str(answer).unwrap();
        assert!(page.is_truncated);
        assert_eq!(page.next_key_marker.as_deref(), Some("p/content/ab/u-2"));
        assert_eq!(page.next_upload_id_marker.as_deref(), Some("id-2"));
        let ids: Vec<_> = page.uploads.iter().map(|u| u.upload_id.as_str()).collect();
        assert_eq!(ids, ["id-1", "id-2"]);
    }

    #[test]
    fn an_empty_listing_has_no_uploads() {
        let answer = r#"<ListMultipartUploadsResult><Bucket>b</Bucket><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>"#;
        let page: ListMultipartUploadsResult = quick_xml::de::from_str(answer).unwrap();
        assert!(!page.is_truncated);
        assert!(page.uploads.is_empty());
    }
}
