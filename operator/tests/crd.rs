//! The CRDs: `crds/` equals what the code generates, and every CEL
//! admission rule accepts good specs and rejects bad ones with its message,
//! evaluated by a CEL interpreter with the Kubernetes libraries.

use foodapp_operator::crd;
use kube::core::cel::Validator;
use serde_json::{Value, json};

fn crd_file(
    c: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> String {
    format!(
        "{}/../crds/{}.yaml",
        env!("CARGO_MANIFEST_DIR"),
        c.metadata.name.as_deref().unwrap()
    )
}

#[test]
fn crds_on_disk_equal_the_generated_ones() {
    // UPDATE_CRDS=1 rewrites them (`make crds`).
    for c in crd::all() {
        let generated = crd::to_yaml(std::slice::from_ref(&c)).unwrap();
        let path = crd_file(&c);
        if std::env::var_os("UPDATE_CRDS").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(on_disk == generated, "{path} is stale: run `make crds`");
        // The Helm chart installs the same files.
        let chart = format!(
            "{}/../charts/foodapp-operator/crds/{}.yaml",
            env!("CARGO_MANIFEST_DIR"),
            c.metadata.name.as_deref().unwrap()
        );
        if std::env::var_os("UPDATE_CRDS").is_some() {
            std::fs::write(&chart, &generated).unwrap();
        }
        assert!(
            std::fs::read_to_string(&chart).unwrap_or_default() == generated,
            "{chart} is stale: run `make crds`"
        );
    }
}

fn schema(kind: &str) -> Value {
    let c = crd::all()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap();
    serde_json::to_value(
        c.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

fn check(kind: &str, object: &Value, old: Option<&Value>) -> Result<(), Vec<String>> {
    let mut schema = schema(kind);
    optional_old_self(&mut schema, old.is_some());
    Validator::new()
        .validate(&schema, object, old)
        .map_err(|e| e.into_vec().into_iter().map(|e| e.message).collect())
}

/// kube's validator knows no `optionalOldSelf` (it passes null where the
/// API server passes an optional): such a rule is checked as the API server
/// evaluates it, `oldSelf.hasValue()` being whether there is an old object.
fn optional_old_self(schema: &mut Value, has_old: bool) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Array(rules)) = map.get_mut("x-kubernetes-validations") {
                for rule in rules.iter_mut() {
                    if rule["optionalOldSelf"] == json!(true) {
                        let text = rule["rule"]
                            .as_str()
                            .unwrap_or_default()
                            .replace("oldSelf.hasValue()", if has_old { "true" } else { "false" });
                        assert!(
                            !text.contains("oldSelf"),
                            "only oldSelf.hasValue() is emulated: {text}"
                        );
                        rule["rule"] = text.into();
                        rule.as_object_mut().unwrap().remove("optionalOldSelf");
                    }
                }
            }
            for v in map.values_mut() {
                optional_old_self(v, has_old);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| optional_old_self(v, has_old)),
        _ => {}
    }
}

fn foodapp(spec: Value) -> Value {
    json!({"apiVersion": "foodapp.io/v1alpha1", "kind": "FoodApp", "metadata": {"name": "shop", "namespace": "food"}, "spec": spec})
}

/// A FoodApp using every field, with the defaults filled in as the API server would.
fn full_spec() -> Value {
    let parsed: crd::FoodApp =
        yaml_serde::from_str(include_str!("../../examples/foodapp-full.yaml")).unwrap();
    serde_json::to_value(parsed.spec).unwrap()
}

fn with(mut spec: Value, pointer: &str, value: Value) -> Value {
    *spec
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("{pointer} not in the spec")) = value;
    spec
}

#[test]
fn good_specs_pass_every_rule() {
    check("FoodApp", &foodapp(full_spec()), None).unwrap();
    let minimal: crd::FoodApp =
        yaml_serde::from_str(include_str!("../../examples/foodapp.yaml")).unwrap();
    check(
        "FoodApp",
        &foodapp(serde_json::to_value(minimal.spec).unwrap()),
        None,
    )
    .unwrap();
    let grown = with(full_spec(), "/database/storage/size", json!("50Gi"));
    check("FoodApp", &foodapp(grown), Some(&foodapp(full_spec()))).unwrap();
}

#[test]
fn each_bad_spec_is_rejected_with_its_message() {
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/api/replicas", json!(0), "api.replicas must be at least 1"),
        (
            "/gateway/replicas",
            json!(-1),
            "gateway.replicas must be at least 1",
        ),
        (
            "/api/image",
            json!(""),
            "api.image must name a container image",
        ),
        (
            "/api/autoRejectAfter",
            json!("5 minutes"),
            "api.autoRejectAfter must be",
        ),
        (
            "/database/storage/size",
            json!("ten gigs"),
            "must be a positive quantity",
        ),
        (
            "/database/storage/size",
            json!("0"),
            "must be a positive quantity",
        ),
        (
            "/backup/schedule",
            json!("every day"),
            "5-field cron expression",
        ),
        (
            "/backup/schedule",
            json!("0 3 * *"),
            "5-field cron expression",
        ),
        (
            "/backup/s3/bucket",
            json!("Bad_Bucket"),
            "valid bucket name",
        ),
        ("/backup/s3/bucket", json!("ab"), "valid bucket name"),
        ("/backup/s3/bucket", json!("a..b"), "valid bucket name"),
        (
            "/backup/s3/endpoint",
            json!("fra1.digitaloceanspaces.com"),
            "must be an http(s) URL",
        ),
        (
            "/backup/s3/prefix",
            json!("/prod/"),
            "must not start or end with '/'",
        ),
        (
            "/backup/s3/credentialsSecret",
            json!(""),
            "must name a Secret",
        ),
        (
            "/backup/retention/keepLast",
            json!(0),
            "keepLast must be between 1 and 1000",
        ),
        (
            "/gateway/rateLimit/burst",
            json!(5),
            "burst must be at least requestsPerSecond",
        ),
        (
            "/gateway/rateLimit/requestsPerSecond",
            json!(0),
            "requestsPerSecond must be between",
        ),
    ];
    for (pointer, value, message) in cases {
        let spec = with(full_spec(), pointer, value.clone());
        let errors = check("FoodApp", &foodapp(spec), None)
            .expect_err(&format!("{pointer}={value} accepted"));
        assert!(
            errors.iter().any(|e| e.contains(message)),
            "{pointer}={value}: {errors:?}"
        );
    }
    let mut long = foodapp(full_spec());
    long["metadata"]["name"] = json!("a".repeat(41));
    let errors = check("FoodApp", &long, None).unwrap_err();
    assert!(
        errors.iter().any(|e| e.contains("at most 40 characters")),
        "{errors:?}"
    );
}

#[test]
fn a_foodapp_name_must_be_a_dns_1035_label() {
    for bad in ["1shop", "my.shop", "Shop", "shop-", "sh_op"] {
        let mut app = foodapp(full_spec());
        app["metadata"]["name"] = json!(bad);
        let errors = check("FoodApp", &app, None).expect_err(bad);
        assert!(
            errors.iter().any(|e| e.contains("DNS-1035 label")),
            "{bad}: {errors:?}"
        );
    }
    for good in ["shop", "a", "my-shop-2"] {
        let mut app = foodapp(full_spec());
        app["metadata"]["name"] = json!(good);
        check("FoodApp", &app, None).unwrap();
    }
}

#[test]
fn api_env_is_a_map_list_keyed_by_name() {
    let s = schema("FoodApp");
    let env = &s["properties"]["spec"]["properties"]["api"]["properties"]["env"];
    assert_eq!(env["x-kubernetes-list-type"], "map", "{env}");
    assert_eq!(env["x-kubernetes-list-map-keys"], json!(["name"]));
}

#[test]
fn the_admin_secret_is_chosen_once() {
    let admin = |name: &str| {
        let mut spec = full_spec();
        spec["api"]["adminSecret"] = json!(name);
        foodapp(spec)
    };
    let old = admin("first");
    check("FoodApp", &old, None).unwrap();
    let changed = admin("second");
    let errors = check("FoodApp", &changed, Some(&old)).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("adminSecret cannot be changed")),
        "{errors:?}"
    );
}

#[test]
fn backup_and_restore_names_fit_their_jobs() {
    let obj = |kind: &str, name: &str| json!({"apiVersion": "foodapp.io/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": {"foodAppRef": "shop", "latest": true}});
    check(
        "FoodAppRestore",
        &obj("FoodAppRestore", &"r".repeat(55)),
        None,
    )
    .unwrap();
    let errors = check(
        "FoodAppRestore",
        &obj("FoodAppRestore", &"r".repeat(56)),
        None,
    )
    .unwrap_err();
    assert!(
        errors.iter().any(|e| e.contains("at most 55")),
        "{errors:?}"
    );
    check(
        "FoodAppBackup",
        &obj("FoodAppBackup", &"b".repeat(63)),
        None,
    )
    .unwrap();
    let errors = check(
        "FoodAppBackup",
        &obj("FoodAppBackup", &"b".repeat(64)),
        None,
    )
    .unwrap_err();
    assert!(
        errors.iter().any(|e| e.contains("at most 63")),
        "{errors:?}"
    );
    let errors = check("FoodAppBackup", &obj("FoodAppBackup", "b.1"), None).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("DNS label")), "{errors:?}");
    // A restore rejected at admission never reaches the controller; the
    // controller checks the same before stopping anything.
    assert!(
        foodapp_operator::controller::operations::restore::check_names(&"r".repeat(55)).is_ok()
    );
    assert!(
        foodapp_operator::controller::operations::restore::check_names(&"r".repeat(56)).is_err()
    );
}

#[test]
fn storage_never_shrinks_and_its_class_never_changes() {
    let old = foodapp(full_spec());
    let shrunk = foodapp(with(full_spec(), "/database/storage/size", json!("10Gi")));
    let errors = check("FoodApp", &shrunk, Some(&old)).unwrap_err();
    assert!(
        errors.iter().any(|e| e.contains("cannot shrink")),
        "{errors:?}"
    );
    let same_in_other_units = foodapp(with(
        full_spec(),
        "/database/storage/size",
        json!("20480Mi"),
    ));
    check("FoodApp", &same_in_other_units, Some(&old)).unwrap();
    let reclassed = foodapp(with(
        full_spec(),
        "/database/storage/storageClassName",
        json!("other"),
    ));
    let errors = check("FoodApp", &reclassed, Some(&old)).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("storageClassName cannot be changed")),
        "{errors:?}"
    );
}

#[test]
fn unknown_enum_values_are_not_in_the_schema() {
    let s = schema("FoodApp");
    let policy = &s["properties"]["spec"]["properties"]["deletionPolicy"]["enum"];
    assert_eq!(policy, &json!(["Retain", "Delete"]));
    let service =
        &s["properties"]["spec"]["properties"]["gateway"]["properties"]["serviceType"]["enum"];
    assert_eq!(service, &json!(["ClusterIP", "LoadBalancer", "NodePort"]));
}

#[test]
fn a_restore_names_exactly_one_source_and_never_changes() {
    let restore = |spec: Value| json!({"apiVersion": "foodapp.io/v1alpha1", "kind": "FoodAppRestore", "metadata": {"name": "r"}, "spec": spec});
    check(
        "FoodAppRestore",
        &restore(json!({"foodAppRef": "shop", "latest": true})),
        None,
    )
    .unwrap();
    check(
        "FoodAppRestore",
        &restore(json!({"foodAppRef": "shop", "backupRef": "b1"})),
        None,
    )
    .unwrap();
    check(
        "FoodAppRestore",
        &restore(json!({"foodAppRef": "shop", "objectKey": "k"})),
        None,
    )
    .unwrap();
    check(
        "FoodAppRestore",
        &restore(json!({"foodAppRef": "shop", "targetTime": "2026-11-22T09:30:00.5+01:00"})),
        None,
    )
    .unwrap();
    let errors = check(
        "FoodAppRestore",
        &restore(json!({"foodAppRef": "shop", "targetTime": "yesterday at nine"})),
        None,
    )
    .unwrap_err();
    assert!(errors.iter().any(|e| e.contains("RFC 3339")), "{errors:?}");
    for bad in [
        json!({"foodAppRef": "shop"}),
        json!({"foodAppRef": "shop", "latest": false}),
        json!({"foodAppRef": "shop", "latest": true, "backupRef": "b1"}),
        json!({"foodAppRef": "shop", "objectKey": "k", "backupRef": "b1"}),
        json!({"foodAppRef": "shop", "latest": true, "targetTime": "2026-11-22T09:30:00Z"}),
    ] {
        let errors =
            check("FoodAppRestore", &restore(bad.clone()), None).expect_err(&bad.to_string());
        assert!(
            errors.iter().any(|e| e.contains(
                "exactly one of backupRef, objectKey, latest: true, targetTime or revert"
            )),
            "{errors:?}"
        );
    }
    let old = restore(json!({"foodAppRef": "shop", "latest": true}));
    let changed = restore(json!({"foodAppRef": "other", "latest": true}));
    let errors = check("FoodAppRestore", &changed, Some(&old)).unwrap_err();
    assert!(
        errors.iter().any(|e| e.contains("cannot be changed")),
        "{errors:?}"
    );
}

#[test]
fn a_restore_chooses_its_mode_and_undo_goes_beside() {
    let restore = |spec: Value| json!({"apiVersion": "foodapp.io/v1alpha1", "kind": "FoodAppRestore", "metadata": {"name": "r"}, "spec": spec});
    for good in [
        json!({"foodAppRef": "shop", "latest": true, "mode": "InPlace"}),
        json!({"foodAppRef": "shop", "latest": true, "mode": "Beside", "requireNoDiscard": true, "keepPrevious": false}),
        json!({"foodAppRef": "shop", "revert": "r0"}),
        json!({"foodAppRef": "shop", "latest": true, "targetDatabase": "shop_restored"}),
    ] {
        if let Err(e) = check("FoodAppRestore", &restore(good.clone()), None) {
            panic!("{good}: {e:?}");
        }
    }
    for (bad, says) in [
        (
            json!({"foodAppRef": "shop", "revert": "r0", "latest": true}),
            "exactly one of",
        ),
        (
            json!({"foodAppRef": "shop", "revert": "r0", "mode": "InPlace"}),
            "mode InPlace cannot revert",
        ),
        (
            json!({"foodAppRef": "shop", "latest": true, "mode": "InPlace", "requireNoDiscard": true}),
            "requireNoDiscard needs mode Beside",
        ),
        (
            json!({"foodAppRef": "shop", "latest": true, "targetDatabase": "Shop; DROP"}),
            "targetDatabase must be",
        ),
    ] {
        let Err(errors) = check("FoodAppRestore", &restore(bad.clone()), None) else {
            panic!("{bad} was accepted");
        };
        assert!(errors.iter().any(|e| e.contains(says)), "{bad}: {errors:?}");
    }
    let mode = &schema("FoodAppRestore")["properties"]["spec"]["properties"]["mode"]["enum"];
    let modes: Vec<&Value> = mode
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| !m.is_null())
        .collect();
    assert_eq!(
        modes,
        [&json!("Beside"), &json!("InPlace")],
        "no other mode is accepted"
    );
    // The examples a user applies are valid.
    for file in ["restore.yaml", "restore-undo.yaml"] {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../examples/operations")
                .join(file),
        )
        .unwrap();
        let mut example: Value = yaml_serde::from_str(&text).unwrap();
        example["metadata"]["name"] = json!("r");
        if let Err(e) = check("FoodAppRestore", &example, None) {
            panic!("{file}: {e:?}");
        }
    }
}

#[test]
fn a_clone_names_another_foodapp_and_only_a_backup_to_restore() {
    let restore = |spec: Value| json!({"apiVersion": "foodapp.io/v1alpha1", "kind": "FoodAppRestore", "metadata": {"name": "r"}, "spec": spec});
    for good in [
        json!({"foodAppRef": "shop", "latest": true, "target": {"foodApp": "staging"}}),
        json!({"foodAppRef": "shop", "backupRef": "b1", "target": {"foodApp": "staging", "anonymize": true}}),
    ] {
        if let Err(e) = check("FoodAppRestore", &restore(good.clone()), None) {
            panic!("{good}: {e:?}");
        }
    }
    for (bad, says) in [
        (
            json!({"foodAppRef": "shop", "latest": true, "target": {"foodApp": "shop"}}),
            "a clone goes into another FoodApp",
        ),
        (
            json!({"foodAppRef": "shop", "targetTime": "2026-11-22T09:30:00Z", "target": {"foodApp": "staging"}}),
            "revert and targetTime are for the FoodApp itself",
        ),
        (
            json!({"foodAppRef": "shop", "latest": true, "mode": "Beside", "target": {"foodApp": "staging"}}),
            "mode, requireNoDiscard, keepPrevious and targetDatabase",
        ),
        (
            json!({"foodAppRef": "shop", "latest": true, "keepPrevious": false, "target": {"foodApp": "staging"}}),
            "mode, requireNoDiscard, keepPrevious and targetDatabase",
        ),
        (
            json!({"foodAppRef": "shop", "latest": true, "target": {"foodApp": "Staging_1"}}),
            "spec.target.foodApp must be a FoodApp name",
        ),
        (
            json!({"foodAppRef": "shop", "latest": true, "target": {"foodApp": "s".repeat(41)}}),
            "spec.target.foodApp must be a FoodApp name",
        ),
    ] {
        let Err(errors) = check("FoodAppRestore", &restore(bad.clone()), None) else {
            panic!("{bad} was accepted");
        };
        assert!(errors.iter().any(|e| e.contains(says)), "{bad}: {errors:?}");
    }
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/operations/clone.yaml"),
    )
    .unwrap();
    let example: Value = yaml_serde::from_str(&text).unwrap();
    if let Err(e) = check("FoodAppRestore", &example, None) {
        panic!("clone.yaml: {e:?}");
    }
}

#[test]
fn a_backup_names_its_foodapp_and_never_changes() {
    let backup = |spec: Value| json!({"apiVersion": "foodapp.io/v1alpha1", "kind": "FoodAppBackup", "metadata": {"name": "b"}, "spec": spec});
    check(
        "FoodAppBackup",
        &backup(json!({"foodAppRef": "shop", "source": "OnDemand"})),
        None,
    )
    .unwrap();
    let errors = check(
        "FoodAppBackup",
        &backup(json!({"foodAppRef": "", "source": "OnDemand"})),
        None,
    )
    .unwrap_err();
    assert!(errors.iter().any(|e| e.contains("must name a FoodApp")));
    let errors = check(
        "FoodAppBackup",
        &backup(json!({"foodAppRef": "other", "source": "OnDemand"})),
        Some(&backup(json!({"foodAppRef": "shop", "source": "OnDemand"}))),
    )
    .unwrap_err();
    assert!(errors.iter().any(|e| e.contains("cannot be changed")));
}

#[test]
fn printer_columns_show_what_a_platform_team_looks_for() {
    let c = crd::all()
        .into_iter()
        .find(|c| c.spec.names.kind == "FoodApp")
        .unwrap();
    let names: Vec<String> = c.spec.versions[0]
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(
        names,
        [
            "Phase",
            "Ready",
            "API image",
            "PostgreSQL",
            "Gateway",
            "Last backup",
            "Admin secret",
            "Age"
        ]
    );
    assert_eq!(
        c.spec.names.short_names.as_deref(),
        Some(&["fa".to_owned()][..])
    );
    assert!(
        c.spec.versions[0]
            .subresources
            .as_ref()
            .unwrap()
            .status
            .is_some()
    );
}

#[test]
fn the_database_engine_is_chosen_once_with_its_own_settings() {
    let spec = |db: Value| foodapp(json!({"database": db}));
    let builtin =
        spec(json!({"engine": "BuiltIn", "image": "postgres:16", "storage": {"size": "10Gi"}}));
    let external = spec(
        json!({"engine": "External", "image": "postgres:16", "storage": {"size": "10Gi"},
        "external": {"secretName": "managed"}}),
    );
    let cnpg = spec(
        json!({"engine": "CloudNativePG", "image": "postgres:16", "storage": {"size": "10Gi"},
        "cloudNativePG": {"instances": 3, "retention": "30d"}}),
    );
    for ok in [&builtin, &external, &cnpg] {
        check("FoodApp", ok, None).unwrap();
        check("FoodApp", ok, Some(ok)).unwrap();
    }
    for (old, new) in [(&builtin, &cnpg), (&cnpg, &external), (&external, &builtin)] {
        let errors = check("FoodApp", new, Some(old)).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.contains("database.engine cannot change on a live FoodApp")),
            "{errors:?}"
        );
    }
    let errors = check(
        "FoodApp",
        &spec(json!({"engine": "External", "image": "postgres:16", "storage": {"size": "10Gi"}})),
        None,
    )
    .unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("database.external is required")),
        "{errors:?}"
    );
    let errors = check(
        "FoodApp",
        &spec(
            json!({"engine": "BuiltIn", "image": "postgres:16", "storage": {"size": "10Gi"},
            "cloudNativePG": {"instances": 3, "retention": "30d"}}),
        ),
        None,
    )
    .unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("only allowed with engine CloudNativePG")),
        "{errors:?}"
    );
    let errors = check(
        "FoodApp",
        &spec(
            json!({"engine": "CloudNativePG", "image": "postgres:16", "storage": {"size": "10Gi"},
            "cloudNativePG": {"instances": 0, "retention": "forever"}}),
        ),
        None,
    )
    .unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("instances must be between 1 and 10")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("retention must be")),
        "{errors:?}"
    );
}

#[test]
fn autoscaling_and_tls_settings_are_checked() {
    let full = full_spec();
    let no_cpu = with(
        full.clone(),
        "/api/resources",
        json!({"limits": {"memory": "256Mi"}}),
    );
    let errors = check("FoodApp", &foodapp(no_cpu), None).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("api.autoscaling needs api.resources.requests.cpu")),
        "{errors:?}"
    );
    let inverted = with(full.clone(), "/api/autoscaling/maxReplicas", json!(2));
    let errors = check("FoodApp", &foodapp(inverted), None).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("maxReplicas must be at least minReplicas")),
        "{errors:?}"
    );
    let both = with(
        full.clone(),
        "/gateway/tls",
        json!({"secretName": "x", "issuerRef": {"name": "le", "kind": "ClusterIssuer"},
            "dnsNames": ["a.example"], "redirectHttp": true, "hsts": {"maxAgeSeconds": 0, "includeSubdomains": false, "preload": false}}),
    );
    let errors = check("FoodApp", &foodapp(both), None).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("exactly one of secretName or issuerRef")),
        "{errors:?}"
    );
    let no_names = with(
        full.clone(),
        "/gateway/tls",
        json!({"issuerRef": {"name": "le", "kind": "ClusterIssuer"}, "redirectHttp": true,
            "hsts": {"maxAgeSeconds": 0, "includeSubdomains": false, "preload": false}}),
    );
    let errors = check("FoodApp", &foodapp(no_names), None).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("dnsNames must name the host")),
        "{errors:?}"
    );
    let cluster_ip = with(full, "/gateway/serviceType", json!("ClusterIP"));
    let errors = check("FoodApp", &foodapp(cluster_ip), None).unwrap_err();
    assert!(
        errors.iter().any(|e| e.contains("externalTrafficPolicy needs serviceType LoadBalancer or NodePort")),
        "{errors:?}"
    );
}

#[test]
fn a_maintenance_window_is_checked_at_admission_as_the_operator_reads_it() {
    use foodapp_operator::maintenance::Window;
    let good = [
        "Sun 03:00-05:00",
        "Mon-Fri 22:00-23:30",
        "Sat,Sun 01:00-03:00",
        "Fri-Mon 23:00-01:00",
        "daily 00:00-24:00",
    ];
    let bad = [
        "Sunday 03:00-05:00",
        "sun 03:00-05:00",
        "Sun 3:00-5:00",
        "Sun 03:00",
        "Sun 24:00-01:00",
        "Sun 03:00-05:60",
        "03:00-05:00",
        "Sun  03:00-05:00",
        "",
    ];
    for w in good {
        let spec = json!({"maintenance": {"window": w, "timeZone": "Europe/Berlin"}});
        check("FoodApp", &foodapp(spec), None).unwrap_or_else(|e| panic!("{w}: {e:?}"));
        Window::parse(w, Some("Europe/Berlin")).unwrap_or_else(|e| panic!("{w}: {e}"));
    }
    for w in bad {
        let errors = check(
            "FoodApp",
            &foodapp(json!({"maintenance": {"window": w}})),
            None,
        )
        .expect_err(&format!("{w:?} accepted"));
        assert!(
            errors
                .iter()
                .any(|e| e.contains("maintenance.window must be")),
            "{w}: {errors:?}"
        );
        assert!(Window::parse(w, None).is_err(), "the operator reads {w:?}");
    }
}

/// Every object of the previous release's examples (commit 3ca4885,
/// `tests/fixtures/previous-release`), as it is stored: still read by this
/// operator's types, still valid under this release's CRDs as created and as
/// updated from itself (the transition rules), and what the previous release
/// wrote in a restore's status still read.
#[test]
fn the_previous_releases_objects_keep_working() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/previous-release");
    let mut files = vec![];
    for entry in std::fs::read_dir(&dir)
        .unwrap()
        .chain(std::fs::read_dir(dir.join("operations")).unwrap())
    {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            files.push(path);
        }
    }
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in yaml_serde::Deserializer::from_str(&text) {
            let mut obj: Value = serde::Deserialize::deserialize(doc).unwrap();
            let kind = obj["kind"].as_str().unwrap().to_owned();
            if !kind.starts_with("FoodApp") {
                continue;
            }
            // `kubectl create` fills generateName; the schema needs a name.
            if obj["metadata"]["name"].is_null() {
                obj["metadata"]["name"] = json!("from-previous");
            }
            let what = format!("{} {kind}", path.display());
            let read = match kind.as_str() {
                "FoodApp" => serde_json::from_value::<crd::FoodApp>(obj.clone()).map(|_| ()),
                "FoodAppBackup" => {
                    serde_json::from_value::<crd::FoodAppBackup>(obj.clone()).map(|_| ())
                }
                "FoodAppRestore" => {
                    serde_json::from_value::<crd::FoodAppRestore>(obj.clone()).map(|_| ())
                }
                other => panic!("{what}: unexpected kind {other}"),
            };
            read.unwrap_or_else(|e| panic!("{what}: not read by this release: {e}"));
            // The one deliberate break: the PROXY protocol without trusted
            // proxies is refused for new objects. A live one keeps working
            // (the API server ratchets rules over unchanged fields, which
            // kube's validator does not: the refusal is checked here by
            // its message) until its gateway is changed.
            let insecure = obj["spec"]["gateway"]["proxyProtocol"] == json!(true)
                && obj["spec"]["gateway"]["trustedProxies"].is_null();
            let only_the_break = |errors: Vec<String>| {
                if insecure
                    && errors
                        .iter()
                        .all(|e| e.contains("proxyProtocol needs gateway.trustedProxies"))
                {
                    Ok(())
                } else {
                    Err(errors)
                }
            };
            check(&kind, &obj, None)
                .or_else(only_the_break)
                .unwrap_or_else(|e| panic!("{what}: refused: {e:?}"));
            check(&kind, &obj, Some(&obj))
                .or_else(only_the_break)
                .unwrap_or_else(|e| panic!("{what}: update refused: {e:?}"));
            *seen.entry(kind).or_default() += 1;
        }
    }
    assert_eq!(
        seen,
        [
            ("FoodApp".into(), 4),
            ("FoodAppBackup".into(), 1),
            ("FoodAppRestore".into(), 2)
        ]
        .into()
    );
    let in_flight: crd::FoodAppRestore = serde_json::from_value(json!({
        "apiVersion": "foodapp.io/v1alpha1", "kind": "FoodAppRestore",
        "metadata": {"name": "r", "namespace": "food"},
        "spec": {"foodAppRef": "shop", "latest": true},
        "status": {"phase": "Running", "conditions": []}
    }))
    .expect("a restore the previous release was running is read");
    assert_eq!(
        in_flight.status.unwrap().phase,
        Some(crd::RestorePhase::Restoring)
    );
}

#[test]
fn an_in_place_upgrade_restore_names_only_its_major() {
    let restore = |spec: Value| json!({"apiVersion": "foodapp.io/v1alpha1", "kind": "FoodAppRestore", "metadata": {"name": "shop-pg18-abcdef"}, "spec": spec});
    check(
        "FoodAppRestore",
        &restore(json!({"foodAppRef": "shop", "mode": "InPlace", "upgradeTo": 18})),
        None,
    )
    .unwrap();
    for (bad, says) in [
        (
            json!({"foodAppRef": "shop", "mode": "InPlace", "upgradeTo": 18, "backupRef": "b"}),
            "exactly one of",
        ),
        (
            json!({"foodAppRef": "shop", "upgradeTo": 18}),
            "upgradeTo is the operator's InPlace PostgreSQL upgrade",
        ),
        (
            json!({"foodAppRef": "shop", "mode": "Beside", "upgradeTo": 18}),
            "upgradeTo is the operator's InPlace PostgreSQL upgrade",
        ),
        (
            json!({"foodAppRef": "shop", "mode": "InPlace", "upgradeTo": 9}),
            "spec.upgradeTo must be a PostgreSQL major",
        ),
    ] {
        let errors =
            check("FoodAppRestore", &restore(bad.clone()), None).expect_err(&bad.to_string());
        assert!(errors.iter().any(|e| e.contains(says)), "{bad}: {errors:?}");
    }
}

#[test]
fn the_upgrade_method_is_beside_or_in_place() {
    let app = |upgrade: Value| {
        json!({"apiVersion": "foodapp.io/v1alpha1", "kind": "FoodApp", "metadata": {"name": "shop"},
        "spec": {"database": {"image": "postgres:18", "upgrade": upgrade}}})
    };
    check("FoodApp", &app(json!({"method": "Beside"})), None).unwrap();
    check(
        "FoodApp",
        &app(json!({"method": "InPlace", "withoutBackup": true})),
        None,
    )
    .unwrap();
    let schema = serde_json::to_value(schema("FoodApp")).unwrap();
    let method = &schema["properties"]["spec"]["properties"]["database"]["properties"]["upgrade"]["properties"]
        ["method"];
    assert_eq!(method["enum"], json!(["Beside", "InPlace"]), "{method}");
}

#[test]
fn cloudnativepg_names_and_images_are_ones_cloudnativepg_can_run() {
    let named = |name: &str, db: Value| {
        json!({"apiVersion": "foodapp.io/v1alpha1", "kind": "FoodApp",
            "metadata": {"name": name, "namespace": "food"}, "spec": {"database": db}})
    };
    let cnpg = json!({"engine": "CloudNativePG", "image": "postgres:16", "storage": {"size": "10Gi"},
        "cloudNativePG": {"instances": 3, "retention": "30d", "operatorNamespace": "cnpg-system"}});
    let builtin = json!({"engine": "BuiltIn", "image": "postgres:16", "storage": {"size": "10Gi"}});
    // <name>-db-<6 hex>-1-full-recovery fits in 63 up to 37 characters.
    let longest = "a".repeat(37);
    assert_eq!(
        format!("{longest}-db-abcdef-1-full-recovery").len(),
        63,
        "the recovery Job CloudNativePG names"
    );
    check("FoodApp", &named(&longest, cnpg.clone()), None).unwrap();
    let errors = check("FoodApp", &named(&"a".repeat(38), cnpg.clone()), None).unwrap_err();
    assert!(
        errors.iter().any(|e| e.contains("at most 37 characters")),
        "{errors:?}"
    );
    check("FoodApp", &named(&"a".repeat(40), builtin), None).unwrap();
    // A FoodApp made before the cap (the previous release) stays editable:
    // the rule holds for new FoodApps only.
    let existing = named(&"a".repeat(40), cnpg.clone());
    let mut edited = existing.clone();
    edited["spec"]["database"]["cloudNativePG"]["instances"] = 2.into();
    check("FoodApp", &edited, Some(&existing)).unwrap();
    for good in [
        "ghcr.io/cloudnative-pg/postgresql:17.5",
        "registry.local:5000/pg/postgresql:16-standard-bookworm",
        "ghcr.io/cloudnative-pg/postgresql:17@sha256:0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let mut db = cnpg.clone();
        db["cloudNativePG"]["imageName"] = good.into();
        check("FoodApp", &named("shop", db), None).unwrap_or_else(|e| panic!("{good}: {e:?}"));
    }
    for bad in [
        "ghcr.io/cloudnative-pg/postgresql",
        "ghcr.io/cloudnative-pg/postgresql:latest",
        "registry.local:5000/postgresql",
        "ghcr.io/cloudnative-pg/postgresql@sha256:0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let mut db = cnpg.clone();
        db["cloudNativePG"]["imageName"] = bad.into();
        let errors = check("FoodApp", &named("shop", db), None).unwrap_err();
        assert!(
            errors.iter().any(|e| e.contains("imageName needs a tag")),
            "{bad}: {errors:?}"
        );
    }
    let mut db = cnpg.clone();
    db["cloudNativePG"]["operatorNamespace"] = "Not A Namespace".into();
    let errors = check("FoodApp", &named("shop", db), None).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("operatorNamespace must be")),
        "{errors:?}"
    );
}

#[test]
fn a_recovery_deadline_bounds_only_a_point_in_time_recovery() {
    let restore = |spec: Value| {
        json!({"apiVersion": "foodapp.io/v1alpha1", "kind": "FoodAppRestore",
            "metadata": {"name": "r", "namespace": "food"}, "spec": spec})
    };
    check(
        "FoodAppRestore",
        &restore(json!({"foodAppRef": "shop", "targetTime": "2026-11-22T09:30:00Z", "deadlineMinutes": 30})),
        None,
    )
    .unwrap();
    let errors = check(
        "FoodAppRestore",
        &restore(json!({"foodAppRef": "shop", "latest": true, "deadlineMinutes": 30})),
        None,
    )
    .unwrap_err();
    assert!(
        errors.iter().any(|e| e.contains("it needs targetTime")),
        "{errors:?}"
    );
    let errors = check(
        "FoodAppRestore",
        &restore(json!({"foodAppRef": "shop", "targetTime": "2026-11-22T09:30:00Z", "deadlineMinutes": 1})),
        None,
    )
    .unwrap_err();
    assert!(
        errors.iter().any(|e| e.contains("between 5 and 10080")),
        "{errors:?}"
    );
}

#[test]
fn the_proxy_protocol_needs_trusted_proxies_that_are_addresses() {
    let gateway = |g: Value| foodapp(json!({"gateway": g}));
    check(
        "FoodApp",
        &gateway(json!({"proxyProtocol": true, "trustedProxies": ["10.110.0.0/20", "192.0.2.7", "fd00::/8", "2001:db8::1"]})),
        None,
    )
    .unwrap();
    check(
        "FoodApp",
        &gateway(json!({"trustedProxies": ["10.0.0.0/8"]})),
        None,
    )
    .unwrap();
    let errors = check("FoodApp", &gateway(json!({"proxyProtocol": true})), None).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("proxyProtocol needs gateway.trustedProxies")),
        "{errors:?}"
    );
    for bad in [
        "10.0.0.0/33",
        "0.0.0.0/0; return 200",
        "lb.example.com",
        "10.0.0.0/8\nallow all",
    ] {
        let errors = check(
            "FoodApp",
            &gateway(json!({"proxyProtocol": true, "trustedProxies": [bad]})),
            None,
        )
        .unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.contains("must be IP addresses or CIDR blocks")),
            "{bad}: {errors:?}"
        );
    }
}

#[test]
fn metrics_scrapers_are_named_by_at_least_one_label() {
    let errors = check(
        "FoodApp",
        &foodapp(json!({"networkPolicy": {"metricsNamespaceLabels": {}}})),
        None,
    )
    .unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("must name at least one label")),
        "{errors:?}"
    );
    check(
        "FoodApp",
        &foodapp(json!({"networkPolicy": {"metricsNamespaceLabels": {"team": "observability"}}})),
        None,
    )
    .unwrap();
}
