//! What the operator renders is valid Kubernetes (official schemas, strict,
//! oldest and newest supported versions) and its nginx.conf loads in a real
//! nginx. Tools come from `scripts/test-services`.

mod common;

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

/// Kinds of other projects: checked against their own CRDs, not the
/// official Kubernetes schemas.
const FOREIGN: [&str; 3] = ["Cluster", "ScheduledBackup", "Certificate"];

#[test]
fn rendered_objects_pass_strict_schema_validation() {
    let dir = scratch("render");
    // Minimal: two generated Secrets, database, migration, API, gateway,
    // disruption budgets, network policies; full adds backups, autoscaling
    // and TLS; CloudNativePG replaces the StatefulSet and the CronJob with
    // a Cluster and a ScheduledBackup; External has no database objects.
    for (example, objects) in [
        ("foodapp.yaml", 17),
        ("foodapp-full.yaml", 22),
        ("foodapp-cloudnativepg.yaml", 20),
        ("foodapp-external.yaml", 16),
    ] {
        let yaml = render(example);
        let docs: Vec<serde_json::Value> = yaml
            .split("---\n")
            .filter(|d| !d.trim().is_empty() && !d.trim_start().starts_with('#'))
            .map(|d| yaml_serde::from_str(d).unwrap())
            .collect();
        assert_eq!(docs.len(), objects, "{example}: {}", kinds(&docs));
        let (foreign, core): (Vec<_>, Vec<_>) = docs
            .into_iter()
            .partition(|d| FOREIGN.contains(&d["kind"].as_str().unwrap_or_default()));
        let file = dir.join(example);
        let core_yaml: String = core
            .iter()
            .map(|d| format!("---\n{}", yaml_serde::to_string(d).unwrap()))
            .collect();
        std::fs::write(&file, core_yaml).unwrap();
        kubernetes_validate(&file);
        for object in &foreign {
            if object["kind"] == "Certificate" {
                // cert-manager's CRD is not at hand: its required fields.
                let spec = &object["spec"];
                assert!(spec["secretName"].is_string() && spec["dnsNames"][0].is_string());
                assert_eq!(spec["issuerRef"]["group"], "cert-manager.io");
                continue;
            }
            if let Err(errors) = cnpg::check(object) {
                panic!(
                    "{example}: {} rejected by CloudNativePG's CRD:\n{}",
                    object["kind"],
                    errors.join("\n")
                );
            }
        }
    }
    std::fs::remove_dir_all(dir).ok();
}

fn kinds(docs: &[serde_json::Value]) -> String {
    docs.iter()
        .map(|d| d["kind"].as_str().unwrap_or_default())
        .collect::<Vec<_>>()
        .join(", ")
}

/// CloudNativePG's own CRDs (v1.30, unmodified, from the shared directory
/// or `CNPG_CRDS`): the structural schema, strictly (unknown fields are
/// errors, as with `kubectl apply --validate=strict`), and its CEL rules.
mod cnpg {
    use serde_json::{Value, json};

    pub fn schema(kind: &str) -> Value {
        let file = super::common::cnpg_crds_dir()
            .join(format!("postgresql.cnpg.io_{}s.yaml", kind.to_lowercase()));
        let crd: Value = yaml_serde::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let version = crd["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "v1")
            .unwrap();
        version["schema"]["openAPIV3Schema"].clone()
    }

    /// An OpenAPI v3 structural schema as JSON Schema.
    pub fn to_json_schema(s: &Value) -> Value {
        let Some(map) = s.as_object() else {
            return s.clone();
        };
        let mut out = serde_json::Map::new();
        for (k, v) in map {
            match k.as_str() {
                "properties" => {
                    let props = v
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(name, p)| (name.clone(), to_json_schema(p)))
                        .collect();
                    out.insert(k.clone(), Value::Object(props));
                }
                "items" | "additionalProperties" if v.is_object() => {
                    out.insert(k.clone(), to_json_schema(v));
                }
                "allOf" | "anyOf" | "oneOf" => {
                    let all = v.as_array().unwrap().iter().map(to_json_schema).collect();
                    out.insert(k.clone(), Value::Array(all));
                }
                "nullable" | "x-kubernetes-validations" | "format" => {}
                k if k.starts_with("x-kubernetes") => {}
                _ => {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        if map.get("x-kubernetes-int-or-string") == Some(&json!(true)) {
            out.remove("type");
            out.insert(
                "anyOf".into(),
                json!([{"type": "integer"}, {"type": "string"}]),
            );
        }
        if let (Some(true), Some(t)) = (
            map.get("nullable").and_then(Value::as_bool),
            out.get("type").cloned(),
        ) {
            out.insert("type".into(), json!([t, "null"]));
        }
        let open = map.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
        if map.contains_key("properties") && !open && !map.contains_key("additionalProperties") {
            out.insert("additionalProperties".into(), json!(false));
        }
        Value::Object(out)
    }

    pub fn check(object: &Value) -> Result<(), Vec<String>> {
        check_update(object, None)
    }

    /// `object` as an update of `old` (CloudNativePG's transition rules,
    /// `oldSelf`, apply only then).
    pub fn check_update(object: &Value, old: Option<&Value>) -> Result<(), Vec<String>> {
        assert_eq!(object["apiVersion"], "postgresql.cnpg.io/v1");
        let schema = schema(object["kind"].as_str().unwrap());
        let mut errors: Vec<String> = Vec::new();
        let validator = jsonschema::validator_for(&to_json_schema(&schema)).unwrap();
        errors.extend(
            validator
                .iter_errors(object)
                .map(|e| format!("{}: {e}", e.instance_path())),
        );
        if let Err(e) = kube::core::cel::Validator::new().validate(&schema, object, old) {
            errors.extend(e.into_vec().into_iter().map(|e| e.message));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

#[test]
fn the_cloudnativepg_check_rejects_what_cloudnativepg_would() {
    // Guards the check itself: an unknown field, a wrong type, a CEL rule.
    let good = json_cluster();
    cnpg::check(&good).unwrap();
    let mut unknown = good.clone();
    unknown["spec"]["instancez"] = 3.into();
    assert!(cnpg::check(&unknown).is_err());
    let mut wrong_type = good.clone();
    wrong_type["spec"]["instances"] = "three".into();
    assert!(cnpg::check(&wrong_type).is_err());
    let mut both_images = good.clone();
    both_images["spec"]["imageName"] = "ghcr.io/cloudnative-pg/postgresql:17".into();
    both_images["spec"]["imageCatalogRef"] = serde_json::json!({"apiGroup": "postgresql.cnpg.io", "kind": "ClusterImageCatalog", "name": "pg", "major": 17});
    let errors = cnpg::check(&both_images).unwrap_err();
    assert!(
        errors.iter().any(|e| e.contains("mutually exclusive")),
        "{errors:?}"
    );
}

#[test]
fn a_switch_to_another_cluster_makes_a_new_schedule_never_an_update_the_crd_refuses() {
    // ScheduledBackup.spec.cluster is immutable since CloudNativePG 1.30
    // (the CRD's rule `self == oldSelf`): repointing one is refused.
    use foodapp_operator::build::{Model, cnpg::scheduled_backup};
    let mut app: foodapp_operator::crd::FoodApp = yaml_serde::from_str(
        &std::fs::read_to_string(repo().join("examples/foodapp-cloudnativepg.yaml")).unwrap(),
    )
    .unwrap();
    app.metadata.uid = Some("6f1c".into());
    let backup = app.spec.backup.clone().expect("the example backs up");
    let as_value = |m: &Model| {
        let mut v = serde_json::to_value(scheduled_backup(m, &backup)).unwrap();
        v["apiVersion"] = "postgresql.cnpg.io/v1".into();
        v["kind"] = "ScheduledBackup".into();
        v
    };
    let mut model = foodapp_operator::controller::validate::job_model(&app, "agent:1").unwrap();
    let before = as_value(&model);
    cnpg::check(&before).unwrap();
    // The same Cluster: an update that passes.
    cnpg::check_update(&before, Some(&before)).unwrap();
    // What repointing the same object would be: refused by the CRD.
    let mut repointed = before.clone();
    repointed["spec"]["cluster"]["name"] = "shop-db-abc123".into();
    let errors = cnpg::check_update(&repointed, Some(&before)).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("immutable")), "{errors:?}");
    // What the operator makes after a switch: another object, a create.
    model.db_cluster = "shop-db-abc123".into();
    let after = as_value(&model);
    assert_ne!(after["metadata"]["name"], before["metadata"]["name"]);
    assert_eq!(after["spec"]["cluster"]["name"], "shop-db-abc123");
    cnpg::check(&after).unwrap();
}

fn json_cluster() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": "shop-db", "namespace": "food"},
        "spec": {"instances": 3, "storage": {"size": "1Gi"}}
    })
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
    let dir = scratch("nginx");
    // The full example serves TLS: a throwaway certificate where the
    // Secret is mounted.
    assert!(conf.contains("ssl_certificate /etc/nginx/tls/tls.crt;"));
    common::self_signed(&dir, "localhost");
    let local = conf
        .replace(upstream, "server 127.0.0.1:9")
        .replace("/etc/nginx/tls/", &format!("{}/", dir.display()));
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
