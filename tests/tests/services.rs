//! The throwaway services really answer: a query through sqlx, and a bucket,
//! put and get through aws-sdk-s3 configured as for S3-compatible stores.

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run through `make test`"))
}

#[tokio::test]
async fn postgres_answers_queries() {
    let pool = sqlx::PgPool::connect(&env("DATABASE_URL")).await.unwrap();
    let version: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(version.starts_with("PostgreSQL"), "{version}");
    let sum: i64 = sqlx::query_scalar("SELECT sum(x)::int8 FROM generate_series(1, 100) x")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(sum, 5050);
}

#[tokio::test]
async fn s3_round_trips_an_object() {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(env("S3_REGION")))
        .endpoint_url(env("S3_ENDPOINT"))
        .force_path_style(true)
        .credentials_provider(Credentials::new(
            env("S3_ACCESS_KEY"),
            env("S3_SECRET_KEY"),
            None,
            None,
            "test",
        ))
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    let s3 = aws_sdk_s3::Client::from_conf(conf);
    let bucket = format!("e2e-{}", uuid::Uuid::new_v4().simple());
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let body = b"hello from foodapp".repeat(1000);
    s3.put_object()
        .bucket(&bucket)
        .key("dir/hello.txt")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    let got = s3
        .get_object()
        .bucket(&bucket)
        .key("dir/hello.txt")
        .send()
        .await
        .unwrap();
    let bytes = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(bytes.as_ref(), body.as_slice());

    // Wrong credentials are refused: the server really checks signatures.
    let bad = aws_sdk_s3::Client::from_conf(
        s3.config()
            .to_builder()
            .credentials_provider(Credentials::new(
                env("S3_ACCESS_KEY"),
                "wrong",
                None,
                None,
                "test",
            ))
            .build(),
    );
    assert!(
        bad.get_object()
            .bucket(&bucket)
            .key("dir/hello.txt")
            .send()
            .await
            .is_err()
    );
}
