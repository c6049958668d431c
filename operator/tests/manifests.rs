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
const FOREIGN: [&str; 4] = ["Cluster", "ScheduledBackup", "ObjectStore", "Certificate"];

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
        ("foodapp-cloudnativepg.yaml", 21),
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

/// The CRDs of the projects the operator drives, unmodified: CloudNativePG
/// (v1.30), the Barman Cloud Plugin (v0.14.0) and cert-manager (v1.21.1),
/// from the shared directory or `CNPG_CRDS`: the structural schema,
/// strictly (unknown fields are errors, as with `kubectl apply
/// --validate=strict`), and their CEL rules.
mod cnpg {
    use serde_json::{Value, json};

    pub fn schema(kind: &str) -> Value {
        let file = super::common::foreign_crd(kind);
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
        assert!(
            [
                "postgresql.cnpg.io/v1",
                "barmancloud.cnpg.io/v1",
                "cert-manager.io/v1"
            ]
            .contains(&object["apiVersion"].as_str().unwrap_or_default()),
            "{}",
            object["apiVersion"]
        );
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

/// What CloudNativePG (v1.30.0) and the Barman Cloud Plugin (v0.14.0) check
/// in code, beyond their CRDs, on the kinds of objects the operator makes:
/// each rule with the file and function it is taken from. The plugin has no
/// admission webhook: its ObjectStore is checked by its CRD alone, and its
/// rules here are what its controllers need at run time.
mod webhook {
    use serde_json::Value;

    pub struct Rule {
        pub source: &'static str,
        pub kind: &'static str,
        pub check: fn(&Value) -> Option<String>,
    }

    fn dns_1035(s: &str) -> bool {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b[0].is_ascii_lowercase()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[b.len() - 1] != b'-'
    }

    /// `ParseTargetTime` (machinery v0.5.0 pkg/types/time.go): RFC 3339,
    /// with or without a zone, or PostgreSQL's space-separated form.
    fn target_time(s: &str) -> bool {
        let (date, rest) = s.split_at(s.len().min(10));
        let date_ok = date.len() == 10
            && date.bytes().enumerate().all(|(i, c)| {
                if i == 4 || i == 7 {
                    c == b'-'
                } else {
                    c.is_ascii_digit()
                }
            });
        if !date_ok {
            return false;
        }
        if rest.is_empty() {
            return true;
        }
        let Some(time) = rest.strip_prefix('T').or_else(|| rest.strip_prefix(' ')) else {
            return false;
        };
        let hms = &time[..time.len().min(8)];
        let clock = hms.len() == 8
            && hms.bytes().enumerate().all(|(i, c)| {
                if i == 2 || i == 5 {
                    c == b':'
                } else {
                    c.is_ascii_digit()
                }
            });
        let mut zone = &time[hms.len()..];
        if let Some(frac) = zone.strip_prefix('.') {
            let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return false;
            }
            zone = &frac[digits..];
        }
        let zone_ok = zone.is_empty()
            || zone == "Z"
            || ((zone.starts_with('+') || zone.starts_with('-'))
                && zone.len() == 6
                && zone.as_bytes()[3] == b':');
        clock && zone_ok
    }

    /// `resource.ParseQuantity`.
    fn quantity(s: &str) -> Option<f64> {
        foodapp_operator::quantity::bytes(s)
    }

    fn plugins(c: &Value) -> Vec<&Value> {
        c["spec"]["plugins"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|p| p["enabled"].as_bool() != Some(false))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub const RULES: &[Rule] = &[
        Rule {
            source: "cloudnative-pg internal/webhook/v1/cluster_webhook.go, validateName",
            kind: "Cluster",
            check: |c| {
                let name = c["metadata"]["name"].as_str().unwrap_or_default();
                (!dns_1035(name) || name.len() > 50).then(|| {
                    format!("cluster name {name} must be a DNS label of at most 50 characters")
                })
            },
        },
        Rule {
            source: "cloudnative-pg pkg/specs/jobs.go, CreatePrimaryJobViaRecovery / getJobName (the Job's pod hostname; cloudnative-pg#6753)",
            kind: "Cluster",
            check: |c| {
                let job = format!(
                    "{}-1-full-recovery",
                    c["metadata"]["name"].as_str().unwrap_or_default()
                );
                (job.len() > 63).then(|| format!("recovery Job {job} is longer than 63"))
            },
        },
        Rule {
            source: "cloudnative-pg internal/webhook/v1/cluster_webhook.go, validateImageName",
            kind: "Cluster",
            check: |c| {
                let image = c["spec"]["imageName"].as_str()?;
                let without_digest = image.split('@').next().unwrap_or_default();
                let last = without_digest.rsplit('/').next().unwrap_or_default();
                let tag = last.split_once(':').map(|(_, t)| t);
                match tag {
                    None if image.contains('@') => {
                        Some("Can't use just the image sha as we can't detect upgrades".into())
                    }
                    None | Some("latest") => {
                        Some("Can't use 'latest' as image tag as we can't detect upgrades".into())
                    }
                    Some(t) if !t.starts_with(|ch: char| ch.is_ascii_digit()) => {
                        Some(format!("invalid version tag {t}"))
                    }
                    Some(_) => None,
                }
            },
        },
        Rule {
            source: "cloudnative-pg internal/webhook/v1/cluster_webhook.go, validateBootstrapMethod",
            kind: "Cluster",
            check: |c| {
                let b = &c["spec"]["bootstrap"];
                let n = ["initdb", "recovery", "pg_basebackup"]
                    .iter()
                    .filter(|m| !b[**m].is_null())
                    .count();
                (n > 1).then(|| "Only one bootstrap method can be specified at a time".into())
            },
        },
        Rule {
            source: "cloudnative-pg internal/webhook/v1/cluster_webhook.go, validateInitDB / validateRecoveryApplicationDatabase",
            kind: "Cluster",
            check: |c| {
                ["initdb", "recovery"].iter().find_map(|m| {
                    let b = &c["spec"]["bootstrap"][*m];
                    (!b.is_null() && b["database"].is_null() != b["owner"].is_null())
                        .then(|| format!("bootstrap.{m} needs both database and owner"))
                })
            },
        },
        Rule {
            source: "cloudnative-pg internal/webhook/v1/cluster_webhook.go, validateBootstrapRecoverySource",
            kind: "Cluster",
            check: |c| {
                let source = c["spec"]["bootstrap"]["recovery"]["source"].as_str()?;
                let found = c["spec"]["externalClusters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|e| e["name"] == source);
                match found {
                    None => Some(format!("External cluster {source} not found")),
                    Some(e)
                        if e["connectionParameters"].is_null()
                            && e["barmanObjectStore"].is_null()
                            && e["plugin"].is_null() =>
                    {
                        Some(format!(
                            "External cluster {source} cannot be used for recovery"
                        ))
                    }
                    Some(_) => None,
                }
            },
        },
        Rule {
            source: "cloudnative-pg internal/webhook/v1/cluster_webhook.go, validateRecoveryTarget (machinery pkg/types/time.go, ParseTargetTime)",
            kind: "Cluster",
            check: |c| {
                let t =
                    c["spec"]["bootstrap"]["recovery"]["recoveryTarget"]["targetTime"].as_str()?;
                (!target_time(t)).then(|| format!("The format of TargetTime is invalid: {t}"))
            },
        },
        Rule {
            source: "cloudnative-pg internal/webhook/v1/cluster_webhook.go, validateExternalClusters / validateExternalCluster",
            kind: "Cluster",
            check: |c| {
                let all = c["spec"]["externalClusters"].as_array()?;
                let mut names: Vec<&str> = all.iter().filter_map(|e| e["name"].as_str()).collect();
                names.sort_unstable();
                if names.windows(2).any(|w| w[0] == w[1]) {
                    return Some("the list of external clusters contains duplicate values".into());
                }
                all.iter()
                    .find(|e| {
                        e["connectionParameters"].is_null()
                            && e["barmanObjectStore"].is_null()
                            && e["plugin"].is_null()
                    })
                    .map(|_| {
                        "one of connectionParameters, plugin and barmanObjectStore is required"
                            .into()
                    })
            },
        },
        Rule {
            source: "cloudnative-pg internal/webhook/v1/cluster_webhook.go, validatePluginConfiguration",
            kind: "Cluster",
            check: |c| {
                let archivers = plugins(c)
                    .iter()
                    .filter(|p| p["isWALArchiver"].as_bool() == Some(true))
                    .count();
                if archivers > 1 {
                    return Some("Cannot enable more than one WAL archiver plugin".into());
                }
                (archivers == 1 && !c["spec"]["backup"]["barmanObjectStore"].is_null()).then(|| {
                    "Cannot enable a WAL archiver plugin when barmanObjectStore is configured"
                        .into()
                })
            },
        },
        Rule {
            source: "cloudnative-pg internal/webhook/v1/cluster_webhook.go, getInTreeBarmanWarnings (a warning on every apply: in-tree Barman Cloud is removed in 1.31.0)",
            kind: "Cluster",
            check: |c| {
                let in_tree = !c["spec"]["backup"]["barmanObjectStore"].is_null()
                    || c["spec"]["externalClusters"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|e| !e["barmanObjectStore"].is_null());
                in_tree.then(|| "Native support for Barman Cloud backups and recovery is deprecated and will be completely removed in CloudNativePG 1.31.0".into())
            },
        },
        Rule {
            source: "cloudnative-pg internal/webhook/v1/cluster_webhook.go, validateStorageSize",
            kind: "Cluster",
            check: |c| {
                let size = c["spec"]["storage"]["size"].as_str();
                match size {
                    None => Some("Size not configured".into()),
                    Some(s) if quantity(s).is_none() => {
                        Some(format!("Size value isn't valid: {s}"))
                    }
                    Some(_) => None,
                }
            },
        },
        Rule {
            source: "cloudnative-pg internal/webhook/v1/cluster_webhook.go, validateResources",
            kind: "Cluster",
            check: |c| {
                let r = &c["spec"]["resources"];
                ["cpu", "memory"].iter().find_map(|k| {
                    let req = quantity(r["requests"][*k].as_str()?)?;
                    let lim = quantity(r["limits"][*k].as_str()?)?;
                    (lim > 0.0 && req > lim)
                        .then(|| format!("{k} request is greater than the limit"))
                })
            },
        },
        Rule {
            source: "cloudnative-pg internal/webhook/v1/cluster_webhook.go, validateAntiAffinity",
            kind: "Cluster",
            check: |c| {
                let t = c["spec"]["affinity"]["podAntiAffinityType"].as_str()?;
                (!["preferred", "required", ""].contains(&t)).then(|| {
                    format!("pod anti-affinity type must be 'preferred' or 'required', not {t}")
                })
            },
        },
        Rule {
            source: "plugin-barman-cloud internal/cnpgi/operator/config/config.go, NewFromCluster (barmanObjectName names the ObjectStore; serverName of an external cluster defaults to the new Cluster's own name)",
            kind: "Cluster",
            check: |c| {
                if let Some(p) = plugins(c)
                    .into_iter()
                    .find(|p| p["name"] == "barman-cloud.cloudnative-pg.io")
                    && p["parameters"]["barmanObjectName"]
                        .as_str()
                        .unwrap_or_default()
                        .is_empty()
                {
                    return Some("the plugin has no barmanObjectName".into());
                }
                c["spec"]["externalClusters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|e| e["plugin"]["name"] == "barman-cloud.cloudnative-pg.io")
                    .find(|e| {
                        e["plugin"]["parameters"]["serverName"].as_str().unwrap_or_default().is_empty()
                            || e["plugin"]["parameters"]["barmanObjectName"].as_str().unwrap_or_default().is_empty()
                    })
                    .map(|e| format!("external cluster {} reads an archive without naming its ObjectStore and serverName", e["name"]))
            },
        },
        Rule {
            source: "plugin-barman-cloud internal/cnpgi/restore/restore.go, checkBackupDestination (Expected empty archive)",
            kind: "Cluster",
            check: |c| {
                let own = plugins(c)
                    .into_iter()
                    .find(|p| p["isWALArchiver"].as_bool() == Some(true))?;
                let server = |p: &Value| {
                    (
                        p["parameters"]["barmanObjectName"].clone(),
                        p["parameters"]["serverName"].clone(),
                    )
                };
                c["spec"]["externalClusters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|e| !e["plugin"].is_null())
                    .any(|e| server(&e["plugin"]) == server(own))
                    .then(|| {
                        "the recovered Cluster archives into the folder it recovers from".into()
                    })
            },
        },
        Rule {
            source: "cloudnative-pg internal/webhook/v1/scheduledbackup_webhook.go, validate (robfig/cron v1.2.0: five fields run every hour)",
            kind: "ScheduledBackup",
            check: |s| {
                let schedule = s["spec"]["schedule"].as_str().unwrap_or_default();
                (schedule.split_whitespace().count() != 6).then(|| {
                    format!("Schedule parameter may not have the right number of arguments (usually six arguments are needed): {schedule}")
                })
            },
        },
        Rule {
            source: "cloudnative-pg internal/webhook/v1/backup_webhook.go, BackupCustomValidator.validate (each Backup the schedule creates)",
            kind: "ScheduledBackup",
            check: |s| {
                (s["spec"]["method"] == "plugin"
                    && s["spec"]["pluginConfiguration"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .is_empty())
                .then(|| {
                    "spec.pluginConfiguration cannot be empty when the backup method is plugin"
                        .into()
                })
            },
        },
    ];

    /// Every rule's refusal of `object`.
    pub fn refusals(object: &Value) -> Vec<String> {
        RULES
            .iter()
            .filter(|r| object["kind"] == r.kind)
            .filter_map(|r| (r.check)(object).map(|m| format!("{m} [{}]", r.source)))
            .collect()
    }
}

/// The CloudNativePG objects the operator makes for `app` (in-use Cluster,
/// schedule, ObjectStore) and the Cluster a point-in-time restore recovers.
fn cloudnativepg_objects(app: &foodapp_operator::crd::FoodApp) -> Vec<serde_json::Value> {
    use foodapp_operator::build::cnpg;
    let mut model = foodapp_operator::controller::validate::job_model(app, "agent:1").unwrap();
    let backup = app.spec.backup.clone().unwrap();
    model.cnpg_archive = cnpg::Archive::Plugin;
    let recovered = foodapp_operator::build::names::recovered_cluster(&model.name, "r1");
    vec![
        serde_json::to_value(cnpg::cluster(&model)).unwrap(),
        serde_json::to_value(cnpg::scheduled_backup(&model, &backup).unwrap()).unwrap(),
        serde_json::to_value(cnpg::object_store(&model, &backup)).unwrap(),
        serde_json::to_value(cnpg::recovered_cluster(
            &model,
            &recovered,
            &model.db_server_name,
            "2026-11-22T09:30:00Z",
        ))
        .unwrap(),
    ]
}

fn example_app(name: &str) -> foodapp_operator::crd::FoodApp {
    let mut app: foodapp_operator::crd::FoodApp = yaml_serde::from_str(
        &std::fs::read_to_string(repo().join("examples/foodapp-cloudnativepg.yaml")).unwrap(),
    )
    .unwrap();
    app.metadata.name = Some(name.to_owned());
    app.metadata.uid = Some("6f1c2d3e-0000-4000-8000-000000000001".into());
    app
}

#[test]
fn every_cloudnativepg_object_passes_what_cloudnativepg_checks_in_code() {
    // The longest name the FoodApp CRD admits for this engine.
    for name in ["diner", &"d".repeat(37)] {
        for object in cloudnativepg_objects(&example_app(name)) {
            let refused = webhook::refusals(&object);
            assert!(
                refused.is_empty(),
                "{name}: {}: {refused:#?}",
                object["kind"]
            );
            cnpg::check(&object).unwrap_or_else(|e| panic!("{name}: {}: {e:#?}", object["kind"]));
            // Applied again (an update, under the transition rules).
            cnpg::check_update(&object, Some(&object))
                .unwrap_or_else(|e| panic!("{name}: {} updated: {e:#?}", object["kind"]));
        }
    }
}

#[test]
fn each_cloudnativepg_code_rule_refuses_what_it_should() {
    let objects = cloudnativepg_objects(&example_app("diner"));
    let (cluster, schedule, recovered) = (&objects[0], &objects[1], &objects[3]);
    let mutated = |base: &serde_json::Value, pointer: &str, value: serde_json::Value| {
        let mut v = base.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let parent = v.pointer_mut(parent).unwrap_or_else(|| panic!("{pointer}"));
        match parent {
            serde_json::Value::Array(items) => items[key.parse::<usize>().unwrap()] = value,
            other => {
                other[key] = value;
            }
        }
        v
    };
    let cases = [
        mutated(cluster, "/metadata/name", "Diner_db".into()),
        mutated(cluster, "/metadata/name", "d".repeat(51).into()),
        mutated(
            recovered,
            "/metadata/name",
            format!("{}-db-abcdef", "d".repeat(38)).into(),
        ),
        mutated(
            cluster,
            "/spec/imageName",
            "ghcr.io/cloudnative-pg/postgresql:latest".into(),
        ),
        mutated(
            cluster,
            "/spec/imageName",
            "ghcr.io/cloudnative-pg/postgresql".into(),
        ),
        mutated(
            cluster,
            "/spec/imageName",
            "ghcr.io/cloudnative-pg/postgresql:bookworm".into(),
        ),
        mutated(
            recovered,
            "/spec/bootstrap/initdb",
            serde_json::json!({"database": "a", "owner": "a"}),
        ),
        mutated(
            cluster,
            "/spec/bootstrap/initdb/owner",
            serde_json::Value::Null,
        ),
        mutated(
            recovered,
            "/spec/bootstrap/recovery/source",
            "elsewhere".into(),
        ),
        mutated(
            recovered,
            "/spec/bootstrap/recovery/recoveryTarget/targetTime",
            "22/11/2026 09:30".into(),
        ),
        mutated(
            recovered,
            "/spec/externalClusters/0/plugin",
            serde_json::Value::Null,
        ),
        mutated(
            cluster,
            "/spec/backup",
            serde_json::json!({"barmanObjectStore": {"destinationPath": "s3://b"}}),
        ),
        mutated(cluster, "/spec/storage/size", "twenty".into()),
        mutated(cluster, "/spec/resources/requests/memory", "2Gi".into()),
        mutated(
            cluster,
            "/spec/affinity/podAntiAffinityType",
            "sometimes".into(),
        ),
        mutated(
            cluster,
            "/spec/plugins/0/parameters/barmanObjectName",
            "".into(),
        ),
        mutated(
            recovered,
            "/spec/externalClusters/0/plugin/parameters/serverName",
            "".into(),
        ),
        mutated(
            recovered,
            "/spec/externalClusters/0/plugin/parameters/serverName",
            recovered["spec"]["plugins"][0]["parameters"]["serverName"].clone(),
        ),
        mutated(schedule, "/spec/schedule", "0 3 * * *".into()),
        mutated(
            schedule,
            "/spec/pluginConfiguration",
            serde_json::Value::Null,
        ),
    ];
    let mut fired = std::collections::BTreeSet::new();
    for case in &cases {
        let refused = webhook::refusals(case);
        assert!(!refused.is_empty(), "accepted: {case:#}");
        fired.extend(
            refused
                .iter()
                .map(|r| r.split(" [").nth(1).unwrap_or_default().to_owned()),
        );
    }
    // Every rule was shown to refuse something.
    for rule in webhook::RULES {
        if rule.source.contains("getInTreeBarmanWarnings") {
            continue;
        }
        assert!(
            fired.iter().any(|f| f.starts_with(rule.source)),
            "no case for {}",
            rule.source
        );
    }
    // The previous release's in-tree Cluster draws CloudNativePG's deprecation warning.
    let in_tree = mutated(cluster, "/spec/plugins", serde_json::json!([]));
    let in_tree = mutated(
        &in_tree,
        "/spec/backup",
        serde_json::json!({"barmanObjectStore": {"destinationPath": "s3://b"}}),
    );
    assert!(
        webhook::refusals(&in_tree)
            .iter()
            .any(|r| r.contains("removed in CloudNativePG 1.31.0"))
    );
}

#[test]
fn a_cluster_of_the_previous_release_moves_to_the_plugin_in_an_update_the_crd_accepts() {
    use foodapp_operator::build::cnpg as builder;
    let app = example_app("diner");
    let mut model = foodapp_operator::controller::validate::job_model(&app, "agent:1").unwrap();
    model.db_server_name = "diner-db".into();
    let as_value =
        |m: &foodapp_operator::build::Model| serde_json::to_value(builder::cluster(m)).unwrap();
    model.cnpg_archive = builder::Archive::InTree;
    let in_tree = as_value(&model);
    cnpg::check(&in_tree).unwrap();
    model.cnpg_archive = builder::Archive::Plugin;
    let plugin = as_value(&model);
    cnpg::check_update(&plugin, Some(&in_tree)).unwrap();
    assert!(webhook::refusals(&plugin).is_empty());
    assert_eq!(
        plugin["spec"]["plugins"][0]["parameters"]["serverName"],
        in_tree["spec"]["backup"]["barmanObjectStore"]["serverName"],
        "the same folder"
    );
}

#[test]
fn the_objectstore_crd_forbids_a_server_name_of_its_own() {
    let objects = cloudnativepg_objects(&example_app("diner"));
    let mut store = objects[2].clone();
    cnpg::check(&store).unwrap();
    cnpg::check_update(&store, Some(&store)).unwrap();
    store["spec"]["configuration"]["serverName"] = "diner-db".into();
    let errors = cnpg::check(&store).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("use the 'serverName' plugin parameter")),
        "{errors:?}"
    );
}

#[test]
fn the_readmes_rbac_table_is_the_operators_rules() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let begin = readme
        .find("<!-- rbac:begin")
        .expect("the README's rbac:begin marker");
    let begin = begin + readme[begin..].find('\n').unwrap() + 1;
    let end = readme
        .find("<!-- rbac:end -->")
        .expect("the README's rbac:end marker");
    assert_eq!(
        &readme[begin..end],
        foodapp_operator::rbac::markdown(),
        "the README's RBAC table differs from operator/src/rbac.rs: run `make crds`"
    );
}
