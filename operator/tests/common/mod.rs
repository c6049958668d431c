//! Helpers shared by the operator's test binaries.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A self-signed server certificate for `host` (not a CA: TLS clients
/// refuse a CA as a server's own certificate), written as `tls.crt` and
/// `tls.key` in `dir`.
pub fn self_signed(dir: &Path, host: &str) {
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", &format!("/CN={host}")])
        .args(["-addext", &format!("subjectAltName=DNS:{host}")])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(dir.join("tls.key"))
        .arg("-out")
        .arg(dir.join("tls.crt"))
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// CloudNativePG's own CRDs (v1.30, unmodified): `CNPG_CRDS`, else the
/// shared directory beside the repository.
pub fn cnpg_crds_dir() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = [
        std::env::var("CNPG_CRDS").ok().map(PathBuf::from),
        Some(repo.join("../shared/crds/cloudnative-pg")),
        Some(PathBuf::from("/work/shared/crds/cloudnative-pg")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.join("postgresql.cnpg.io_clusters.yaml").exists())
        .expect("CloudNativePG's CRDs not found: set CNPG_CRDS to the directory holding postgresql.cnpg.io_clusters.yaml (v1.30)")
}
