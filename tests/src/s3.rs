//! Real S3-compatible servers for the tests: SeaweedFS (an object store people run) and
//! moto (the reference for AWS's semantics), installed by `scripts/test` into the tests'
//! Python environment and started on loopback the first time a test binary asks, by
//! `tests/python/s3_server.py`, which stops each and deletes its data when the test
//! binary ends, however it ends (its standard input, held here, closes).

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use futures::TryStreamExt;

use transfer_service::blob::{ObjectBlobStore, S3Settings, open_s3};

/// A running S3-compatible server with one bucket the tests share; each test keeps to
/// a prefix of its own ([`S3Server::fresh_url`]).
pub struct S3Server {
    pub name: &'static str,
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
    /// Closing it stops the server.
    _alive: Mutex<ChildStdin>,
    /// The supervising script, which outlives nothing: it ends with the test binary.
    _process: Mutex<Child>,
}

/// SeaweedFS, started once per test binary.
pub fn seaweedfs() -> &'static S3Server {
    static SERVER: OnceLock<S3Server> = OnceLock::new();
    SERVER.get_or_init(|| S3Server::start("seaweedfs"))
}

/// moto, started once per test binary.
pub fn moto() -> &'static S3Server {
    static SERVER: OnceLock<S3Server> = OnceLock::new();
    SERVER.get_or_init(|| S3Server::start("moto"))
}

impl S3Server {
    fn start(name: &'static str) -> Self {
        let python = std::env::var("TRANSFER_TEST_PYTHON").unwrap_or_else(|_| {
            panic!(
                "TRANSFER_TEST_PYTHON is not set: run the tests with scripts/test, which \
                 installs SeaweedFS and moto into target/test-python and sets it"
            )
        });
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/s3_server.py");
        let mut child = Command::new(&python)
            .arg(script)
            .arg(name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} with {python}: {e}"));
        let alive = child.stdin.take().expect("the server's stdin");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("the server's stdout"))
            .read_line(&mut line)
            .expect("reading whether the server started");
        let fields: Vec<&str> = line.split_whitespace().collect();
        let ["ready", endpoint, access_key, secret_key, bucket] = fields[..] else {
            panic!(
                "{name} did not start (its output is above; scripts/test installs it \
                 into target/test-python from tests/python/requirements.txt): {line:?}"
            );
        };
        Self {
            name,
            endpoint: endpoint.to_owned(),
            access_key: access_key.to_owned(),
            secret_key: secret_key.to_owned(),
            bucket: bucket.to_owned(),
            _alive: Mutex::new(alive),
            _process: Mutex::new(child),
        }
    }

    /// `s3://bucket/<a prefix no other test uses>`.
    pub fn fresh_url(&self) -> String {
        format!(
            "s3://{}/t-{}",
            self.bucket,
            uuid::Uuid::new_v4().as_simple()
        )
    }

    /// What reaches this server, as `transferd` would be told.
    pub fn settings(&self) -> S3Settings {
        S3Settings {
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            access_key_id: Some(self.access_key.clone()),
            secret_access_key: Some(self.secret_key.clone()),
            session_token: None,
            virtual_hosted_style: false,
            sign_payload: None,
        }
    }

    /// The flags that point a `transferd` process at `url` on this server.
    pub fn transferd_args(&self, url: &str) -> Vec<String> {
        [
            "--blob-store",
            url,
            "--s3-endpoint",
            &self.endpoint,
            "--s3-region",
            "us-east-1",
            "--s3-access-key-id",
            &self.access_key,
            "--s3-secret-access-key",
            &self.secret_key,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// The keys and ids of the multipart uploads still open under `url`'s prefix (asked
    /// with boto3, as a second opinion on the store's own listing).
    pub async fn multipart_uploads(&self, url: &str) -> Vec<String> {
        let prefix = self.prefix_of(url);
        let listed = self
            .boto3(&format!(
                "listed = s3.list_multipart_uploads(Bucket='{bucket}', Prefix='{prefix}/')\n\
                 for upload in listed.get('Uploads', []):\n    print(upload['Key'], upload['UploadId'])\n",
                bucket = self.bucket,
            ))
            .await;
        listed.lines().map(str::to_owned).collect()
    }

    /// Creates a multipart upload at `key` under `url`'s prefix behind the blob store's
    /// back (as a replica killed before it wrote its staging marker leaves one); returns
    /// its id.
    pub async fn create_multipart(&self, url: &str, key: &str) -> String {
        let prefix = self.prefix_of(url);
        let created = self
            .boto3(&format!(
                "print(s3.create_multipart_upload(Bucket='{bucket}', Key='{prefix}/{key}')['UploadId'])\n",
                bucket = self.bucket,
            ))
            .await;
        created.trim().to_owned()
    }

    /// Aborts a multipart upload (`key id`, as [`Self::multipart_uploads`] lists them)
    /// behind the blob store's back.
    pub async fn abort_multipart(&self, listed: &str) {
        let (key, id) = listed.split_once(' ').expect("`key id`");
        self.boto3(&format!(
            "s3.abort_multipart_upload(Bucket='{bucket}', Key='{key}', UploadId='{id}')\n",
            bucket = self.bucket,
        ))
        .await;
    }

    fn prefix_of<'a>(&self, url: &'a str) -> &'a str {
        url.strip_prefix(&format!("s3://{}/", self.bucket))
            .expect("a URL of this server's bucket")
    }

    /// Runs `script` with `s3`, a boto3 client of this server; returns what it printed.
    async fn boto3(&self, script: &str) -> String {
        let python = std::env::var("TRANSFER_TEST_PYTHON").expect("TRANSFER_TEST_PYTHON");
        let script = format!(
            "import boto3\n\
             s3 = boto3.client('s3', endpoint_url='{endpoint}', region_name='us-east-1', \
                 aws_access_key_id='{key}', aws_secret_access_key='{secret}')\n{script}",
            endpoint = self.endpoint,
            key = self.access_key,
            secret = self.secret_key,
        );
        let output = tokio::process::Command::new(python)
            .args(["-c", &script])
            .output()
            .await
            .expect("running boto3");
        assert!(
            output.status.success(),
            "boto3 failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Points a server's settings at `url` (from [`Self::fresh_url`]) on this server.
    pub fn configure(&self, settings: &mut transfer_service::Settings, url: &str) {
        let blobs = &mut settings.blobs;
        blobs.blob_store = Some(url.to_owned());
        blobs.s3_endpoint = Some(self.endpoint.clone());
        blobs.s3_region = Some("us-east-1".into());
        blobs.s3_access_key_id = Some(self.access_key.clone());
        blobs.s3_secret_access_key = Some(self.secret_key.clone());
    }

    /// The keys of every object under `url`'s prefix, relative to it, sorted.
    pub async fn keys(&self, url: &str) -> Vec<String> {
        let prefix = url
            .strip_prefix(&format!("s3://{}/", self.bucket))
            .expect("a URL of this server's bucket");
        transfer_service::blob::use_ring_for_tls();
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(&self.bucket)
            .with_access_key_id(&self.access_key)
            .with_secret_access_key(&self.secret_key)
            .build()
            .expect("an S3 client");
        let listed: Vec<object_store::ObjectMeta> =
            object_store::ObjectStore::list(&store, Some(&object_store::path::Path::from(prefix)))
                .try_collect()
                .await
                .expect("listing the bucket");
        let mut keys: Vec<String> = listed
            .into_iter()
            .map(|meta| {
                let key = meta.location.to_string();
                key.strip_prefix(&format!("{prefix}/"))
                    .unwrap_or(&key)
                    .to_owned()
            })
            .collect();
        keys.sort();
        keys
    }

    /// A blob store on `url` (from [`Self::fresh_url`]) of this server.
    pub fn blob_store(&self, url: &str) -> ObjectBlobStore {
        open_s3(url, &self.settings()).expect("an S3 blob store")
    }
}
