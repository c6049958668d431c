//! The gateway's retries, with real nginx loading the operator's config in
//! front of two upstreams: one that takes each request and drops the
//! connection without answering (an API pod stopping mid-request), and one
//! that answers. What may be sent twice is sent again and succeeds; what
//! may not never reaches the second upstream.

use std::sync::Arc;
use std::time::Duration;

use foodapp_e2e::binary;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Reads one HTTP/1.1 request (head and Content-Length body); its first line.
async fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    head.lines().next().map(str::to_owned)
}

/// An upstream on `port`: answering (counting what it got), or dropping
/// every request after reading it.
async fn upstream(answers: bool, seen: Arc<std::sync::Mutex<Vec<String>>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                while let Some(line) = read_request(&mut stream).await {
                    seen.lock().unwrap().push(line);
                    if !answers {
                        // Read, never answered: the connection just ends.
                        return;
                    }
                    let body = r#"{"ok":true}"#;
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-QUIT", &self.0.id().to_string()])
            .status();
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
    }
}

#[tokio::test]
async fn what_may_be_sent_again_is_retried_and_nothing_else() {
    let dropped = Arc::new(std::sync::Mutex::new(Vec::new()));
    let answered = Arc::new(std::sync::Mutex::new(Vec::new()));
    let dying = upstream(false, dropped.clone()).await;
    let live = upstream(true, answered.clone()).await;
    let dir = std::env::temp_dir().join(format!("retries-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let conf = std::process::Command::new(binary("foodapp-operator"))
        .args(["nginx-config", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--upstream", &format!("127.0.0.1:{dying}")])
        .args(["--upstream", &format!("127.0.0.1:{live}")])
        .arg("--dir")
        .arg(&dir)
        .args(["--requests-per-second", "1000", "--burst", "1000"])
        .output()
        .unwrap();
    assert!(conf.status.success());
    std::fs::write(dir.join("nginx.conf"), conf.stdout).unwrap();
    let nginx = std::env::var("NGINX_BIN").unwrap_or_else(|_| "/usr/sbin/nginx".into());
    let _nginx = Nginx(
        std::process::Command::new(nginx)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Round robin: of two requests in a row that are not retried, one goes
    // to the dying upstream; a retried one goes to both.
    let send = |method: reqwest::Method, path: String, key: Option<String>| {
        let mut r = client.request(method, format!("{base}{path}"));
        if let Some(k) = key {
            r = r.header("idempotency-key", k);
        }
        async move { r.body("{}").send().await.unwrap().status().as_u16() }
    };
    let mut reads = Vec::new();
    let mut keyed = Vec::new();
    let mut plain = Vec::new();
    let mut other = Vec::new();
    for i in 0..6 {
        reads.push(
            send(
                reqwest::Method::GET,
                format!("/api/v1/menu-items?limit={i}"),
                None,
            )
            .await,
        );
    }
    for i in 0..6 {
        keyed.push(
            send(
                reqwest::Method::POST,
                format!("/api/v1/orders?x={i}"),
                Some(format!("k-{i}")),
            )
            .await,
        );
    }
    for _ in 0..6 {
        plain.push(send(reqwest::Method::POST, "/api/v1/orders".to_owned(), None).await);
    }
    // A key on an endpoint that does not honour keys is no licence.
    for i in 0..6 {
        other.push(
            send(
                reqwest::Method::POST,
                "/api/v1/categories".to_owned(),
                Some(format!("c-{i}")),
            )
            .await,
        );
    }
    assert_eq!(reads, [200; 6], "reads are sent again");
    assert_eq!(
        keyed, [200; 6],
        "orders with an Idempotency-Key are sent again"
    );
    let refused = |v: &[u16]| v.iter().filter(|s| **s == 503).count();
    assert!(
        refused(&plain) >= 1 && plain.iter().all(|s| *s == 200 || *s == 503),
        "an order without a key is never sent twice: {plain:?}"
    );
    assert!(refused(&other) >= 1, "{other:?}");
    let answered = answered.lock().unwrap().clone();
    let dropped = dropped.lock().unwrap().clone();
    let count =
        |lines: &[String], prefix: &str| lines.iter().filter(|l| l.starts_with(prefix)).count();
    // Every write reached at most one upstream that could act on it.
    assert_eq!(
        count(&answered, "POST /api/v1/orders HTTP") + count(&dropped, "POST /api/v1/orders HTTP"),
        6,
        "{answered:?} {dropped:?}"
    );
    assert_eq!(
        count(&answered, "POST /api/v1/categories") + count(&dropped, "POST /api/v1/categories"),
        6
    );
    // The retried ones arrive at the API under their own path and query.
    assert_eq!(
        count(&answered, "POST /api/v1/orders?x="),
        6,
        "{answered:?}"
    );
    assert!(!answered.iter().any(|l| l.contains("__retryable")));
}
