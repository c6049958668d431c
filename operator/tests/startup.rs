//! The operator binary as `cargo test` builds it (with the dev-dependencies'
//! features, so rustls has both aws-lc-rs and ring) starts and gets as far
//! as talking TLS to an API server: no crypto-provider panic in any build.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A kubeconfig for an HTTPS API server that is not there: the client is
/// built (TLS included) and every request then fails to connect.
fn kubeconfig(dir: &std::path::Path) -> std::path::PathBuf {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn run_starts_and_talks_tls_without_a_crypto_provider_panic() {
    let dir = std::env::temp_dir().join(format!("foodapp-startup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_foodapp-operator"))
        .args(["run", "--metrics-addr", "127.0.0.1:0"])
        .env("KUBECONFIG", kubeconfig(&dir))
        .env("POD_NAMESPACE", "foodapp-system")
        .env("RUST_LOG", "info")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stderr.read_to_string(&mut out);
        out
    });
    // Leader election retries every few seconds; one failed attempt proves
    // the client was built and a TLS connection was tried.
    std::thread::sleep(Duration::from_secs(4));
    let exited = child.try_wait().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let log = reader.join().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert!(exited.is_none(), "the operator exited: {log}");
    assert!(
        !log.contains("panicked") && !log.contains("CryptoProvider"),
        "{log}"
    );
    assert!(log.contains("leader election failed"), "{log}");
}
