//! The gateway's edge settings in a real nginx, loaded with the operator's
//! config: HTTPS with HTTP/2, plain HTTP redirected with the method kept,
//! HSTS on every answer (nginx's own problem documents too), and the PROXY
//! protocol. No API behind it: what is checked is nginx's own doing.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use foodapp_e2e::binary;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path, args: &[&str], probe: u16) -> Nginx {
    let conf = Command::new(binary("foodapp-operator"))
        .args(["nginx-config", "--upstream", "127.0.0.1:9", "--dir"])
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        conf.status.success(),
        "{}",
        String::from_utf8_lossy(&conf.stderr)
    );
    std::fs::write(dir.join("nginx.conf"), conf.stdout).unwrap();
    let nginx = std::env::var("NGINX_BIN").unwrap_or_else(|_| "/usr/sbin/nginx".into());
    let child = Command::new(nginx)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .spawn()
        .unwrap();
    let server = Nginx(child);
    let start = Instant::now();
    let probe = format!("http://127.0.0.1:{probe}/healthz");
    while curl(&["-s", "-o", "/dev/null", "-w", "%{http_code}", &probe]) != "200" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nginx did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

/// curl's stdout.
fn curl(args: &[&str]) -> String {
    let out = Command::new("curl").args(args).output().expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn scratch(name: &str) -> std::path::PathBuf {
    let base = std::env::var("FOODAPP_RUN_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let dir = base.join(format!("edge-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn https_with_http2_redirects_plain_http_and_sends_hsts() {
    let dir = scratch("tls");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(dir.join("tls.key"))
        .arg("-out")
        .arg(dir.join("tls.crt"))
        .output()
        .expect("openssl");
    assert!(out.status.success());
    let (http, https, health) = (free_port(), free_port(), free_port());
    let hsts = "max-age=31536000; includeSubDomains";
    let _nginx = start(
        &dir,
        &[
            "--listen",
            &format!("127.0.0.1:{http}"),
            "--tls-listen",
            &format!("127.0.0.1:{https}"),
            "--tls-cert",
            dir.join("tls.crt").to_str().unwrap(),
            "--tls-key",
            dir.join("tls.key").to_str().unwrap(),
            "--hsts",
            hsts,
            "--health-listen",
            &format!("127.0.0.1:{health}"),
        ],
        health,
    );
    // Plain HTTP: a 308 to the same path over HTTPS (a POST stays a POST).
    let redirect = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-X",
        "POST",
        "-w",
        "%{http_code} %{redirect_url}",
        &format!("http://127.0.0.1:{http}/api/v1/orders?x=1"),
    ]);
    assert_eq!(redirect, "308 https://127.0.0.1/api/v1/orders?x=1");
    // HTTPS over HTTP/2, HSTS on nginx's own 503 (no API behind it).
    let headers = curl(&[
        "-sk",
        "--http2",
        "-D",
        "-",
        "-o",
        "/dev/null",
        &format!("https://127.0.0.1:{https}/api/v1/categories"),
    ]);
    assert!(headers.starts_with("HTTP/2 503"), "{headers}");
    assert!(
        headers
            .to_lowercase()
            .contains(&format!("strict-transport-security: {hsts}").to_lowercase()),
        "{headers}"
    );
    assert!(headers.contains("application/problem+json"), "{headers}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn the_proxy_protocol_is_required_on_the_public_port_and_not_on_the_probes() {
    let dir = scratch("proxy");
    let (http, health) = (free_port(), free_port());
    let _nginx = start(
        &dir,
        &[
            "--listen",
            &format!("127.0.0.1:{http}"),
            "--proxy-protocol",
            "--health-listen",
            &format!("127.0.0.1:{health}"),
        ],
        health,
    );
    let url = format!("http://127.0.0.1:{http}/healthz");
    let without = curl(&["-s", "-o", "/dev/null", "-w", "%{http_code}", &url]);
    assert_eq!(
        without, "000",
        "a connection without a PROXY header is refused"
    );
    let with = curl(&[
        "-s",
        "--haproxy-protocol",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &url,
    ]);
    assert_eq!(with, "200");
    std::fs::remove_dir_all(dir).ok();
}
