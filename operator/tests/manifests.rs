//! What the operator renders is valid Kubernetes (official schemas, strict,
//! oldest and newest supported versions) and its nginx.conf loads in a real
//! nginx. Tools come from `scripts/test-services`.

use std::path::{Path, PathBuf};
use std::process::Command;

const KUBERNETES_VERSIONS: [&str; 2] = ["1.32.0", "1.37.0"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn scratch(name: &str) -> PathBuf {
    let base = std::env::var("FOODAPP_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let dir = base.join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tool(name: &str) -> PathBuf {
    if let Ok(tools) = std::env::var("FOODAPP_TOOLS") {
        let p = Path::new(&tools).join("venv/bin").join(name);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from(name)
}

fn render(example: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_foodapp-operator"))
        .args(["render", "-f"])
        .arg(repo().join("examples").join(example))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "render failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn kubernetes_validate(file: &Path) {
    for version in KUBERNETES_VERSIONS {
        let out = Command::new(tool("kubernetes-validate"))
            .args(["--strict", "--no-warn", "-k", version])
            .arg(file)
            .output()
            .unwrap_or_else(|e| {
                panic!("kubernetes-validate not found ({e}): run through `make test`")
            });
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{} invalid for Kubernetes {version}:\n{text}",
            file.display()
        );
        assert!(!text.contains("ERROR"), "{text}");
    }
}

#[test]
fn rendered_objects_pass_strict_schema_validation() {
    let dir = scratch("render");
    // Minimal: three generated Secrets, database, migration, API, gateway;
    // full adds backups.
    for (example, objects) in [("foodapp.yaml", 12), ("foodapp-full.yaml", 16)] {
        let yaml = render(example);
        assert_eq!(yaml.matches("---\n").count(), objects, "{example}");
        let file = dir.join(example);
        std::fs::write(&file, yaml).unwrap();
        kubernetes_validate(&file);
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn the_crds_pass_strict_schema_validation() {
    for entry in std::fs::read_dir(repo().join("crds")).unwrap() {
        kubernetes_validate(&entry.unwrap().path());
    }
}

#[test]
fn a_broken_manifest_is_caught_by_the_check() {
    // Guards the check itself: strict validation must reject unknown fields.
    let dir = scratch("broken");
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 80}], colour: red}\n",
    )
    .unwrap();
    let out = Command::new(tool("kubernetes-validate"))
        .args(["--strict", "-k", "1.32.0"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "an unknown field passed strict validation"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn the_gateway_config_loads_in_a_real_nginx() {
    let nginx = std::env::var("NGINX_BIN").unwrap_or_else(|_| "/usr/sbin/nginx".to_owned());
    let yaml = render("foodapp-full.yaml");
    let config_map = yaml
        .split("\n---\n")
        .find(|doc| doc.contains("kind: ConfigMap"))
        .expect("a ConfigMap is rendered");
    let cm: serde_json::Value = yaml_serde::from_str(config_map).unwrap();
    let conf = cm["data"]["nginx.conf"].as_str().unwrap();
    // The cluster DNS name of the API does not resolve here; everything
    // else is exactly what the gateway pod loads.
    let upstream = "server bistro-api.food.svc:8080";
    assert!(conf.contains(upstream));
    let local = conf.replace(upstream, "server 127.0.0.1:9");
    let dir = scratch("nginx");
    std::fs::write(dir.join("nginx.conf"), local).unwrap();
    let out = Command::new(&nginx)
        .args(["-t", "-q", "-p"])
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .output()
        .unwrap_or_else(|e| panic!("{nginx} not found ({e}): run through `make test`"));
    assert!(
        out.status.success(),
        "nginx -t failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(dir).ok();
}
