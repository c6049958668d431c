//! The S3 client, configured for AWS, DigitalOcean Spaces and other
//! S3-compatible stores (custom endpoint, path style, checksums only when
//! required), and the streaming multipart upload.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;

use super::{Checksums, StoreArgs};

/// Each part is buffered in memory: 8 MiB, well above S3's 5 MiB minimum.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("S3 {op} failed: {message}")]
    S3 { op: &'static str, message: String },
}

pub fn err<E: std::error::Error>(op: &'static str) -> impl Fn(E) -> Error {
    move |e| {
        // The SDK's Display is terse; the source chain says what happened.
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        Error::S3 { op, message }
    }
}

pub async fn client(args: &StoreArgs) -> Client {
    let (request, response) = match args.s3_checksums {
        Checksums::WhenRequired => (
            RequestChecksumCalculation::WhenRequired,
            ResponseChecksumValidation::WhenRequired,
        ),
        Checksums::WhenSupported => (
            RequestChecksumCalculation::WhenSupported,
            ResponseChecksumValidation::WhenSupported,
        ),
    };
    let mut builder = match (&args.aws_access_key_id, &args.aws_secret_access_key) {
        (Some(key), Some(secret)) => aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .credentials_provider(Credentials::new(key, secret, None, None, "foodapp")),
        // Workload identity and the like: the SDK's default chain.
        _ => {
            let shared = aws_config::defaults(BehaviorVersion::latest()).load().await;
            aws_sdk_s3::config::Builder::from(&shared)
        }
    };
    // An unreachable store must fail the run, not hang it.
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(120))
        .build();
    builder = builder
        .timeout_config(timeouts)
        .region(Region::new(args.s3_region.clone()))
        .force_path_style(args.s3_force_path_style)
        .request_checksum_calculation(request)
        .response_checksum_validation(response);
    if let Some(endpoint) = &args.s3_endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    Client::from_conf(builder.build())
}

/// A multipart upload in progress. Parts go up one at a time as they fill.
pub struct Upload {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    parts: Vec<CompletedPart>,
}

impl Upload {
    pub async fn start(client: &Client, bucket: &str, key: &str) -> Result<Upload, Error> {
        let out = client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .content_type("application/octet-stream")
            .send()
            .await
            .map_err(err("CreateMultipartUpload"))?;
        let upload_id = out.upload_id.unwrap_or_default();
        tracing::info!(key, upload_id, "multipart upload started");
        Ok(Upload {
            client: client.clone(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            upload_id,
            parts: Vec::new(),
        })
    }

    pub async fn part(&mut self, data: Bytes) -> Result<(), Error> {
        let number = self.parts.len() as i32 + 1;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .part_number(number)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(err("UploadPart"))?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag)
                .build(),
        );
        Ok(())
    }

    pub async fn complete(self) -> Result<(), Error> {
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(self.parts))
                    .build(),
            )
            .send()
            .await
            .map_err(err("CompleteMultipartUpload"))?;
        Ok(())
    }

    /// Drops the parts uploaded so far: no partial object ever appears. When
    /// the store is unreachable this fails too; a bucket lifecycle rule
    /// (AbortIncompleteMultipartUpload) cleans up what is left then.
    pub async fn abort(self) {
        if let Err(e) = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .send()
            .await
        {
            tracing::warn!(key = %self.key, error = %err("AbortMultipartUpload")(e), "could not abort the upload");
        } else {
            tracing::info!(key = %self.key, upload_id = %self.upload_id, parts = self.parts.len(), "multipart upload aborted");
        }
    }
}

pub async fn put(
    client: &Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
    content_type: &str,
) -> Result<(), Error> {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_type(content_type)
        .body(ByteStream::from(body))
        .send()
        .await
        .map_err(err("PutObject"))?;
    Ok(())
}

/// An object's body, to stream.
pub async fn get_stream(client: &Client, bucket: &str, key: &str) -> Result<ByteStream, Error> {
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(err("GetObject"))?;
    Ok(out.body)
}

pub async fn get_bytes(client: &Client, bucket: &str, key: &str) -> Result<Vec<u8>, Error> {
    let data = get_stream(client, bucket, key)
        .await?
        .collect()
        .await
        .map_err(err("GetObject body"))?;
    Ok(data.into_bytes().to_vec())
}

/// Every key under a prefix.
/// The keys directly under `prefix` (which ends with '/'): never those of a
/// deeper prefix, which may belong to another FoodApp sharing the bucket.
pub async fn list(client: &Client, bucket: &str, prefix: &str) -> Result<Vec<String>, Error> {
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let out = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .delimiter("/")
            .set_continuation_token(token)
            .send()
            .await
            .map_err(err("ListObjectsV2"))?;
        keys.extend(
            out.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
        match out.next_continuation_token {
            Some(t) if out.is_truncated == Some(true) => token = Some(t),
            _ => return Ok(keys),
        }
    }
}

/// One key at a time: DeleteObjects sends a checksum some stores reject.
pub async fn delete(client: &Client, bucket: &str, key: &str) -> Result<(), Error> {
    client
        .delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(err("DeleteObject"))?;
    Ok(())
}

pub async fn ensure_bucket(client: &Client, bucket: &str) -> Result<(), Error> {
    if client.head_bucket().bucket(bucket).send().await.is_ok() {
        return Ok(());
    }
    client
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .map_err(err("CreateBucket"))?;
    Ok(())
}
