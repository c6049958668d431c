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

/// The CRD of another project's kind, unmodified: CloudNativePG's (v1.30,
/// from `cnpg_crds_dir`), the Barman Cloud Plugin's (v0.14.0) and
/// cert-manager's (v1.21.1), from the directories beside CloudNativePG's.
pub fn foreign_crd(kind: &str) -> PathBuf {
    let cnpg = cnpg_crds_dir();
    let (dir, file) = match kind {
        "Cluster" | "ScheduledBackup" | "Backup" => (
            cnpg.clone(),
            format!("postgresql.cnpg.io_{}s.yaml", kind.to_lowercase()),
        ),
        "ObjectStore" => (
            cnpg.join("../plugin-barman-cloud"),
            "barmancloud.cnpg.io_objectstores.yaml".to_owned(),
        ),
        "Certificate" => (
            cnpg.join("../cert-manager"),
            "cert-manager.io_certificates.yaml".to_owned(),
        ),
        other => panic!("no CRD of kind {other} is at hand"),
    };
    let path = dir.join(file);
    assert!(
        path.exists(),
        "{} not found beside CloudNativePG's CRDs",
        path.display()
    );
    path
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
