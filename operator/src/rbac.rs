//! The permissions the operator needs, in one place: the Helm chart's
//! ClusterRole and its leader-election Role are generated from these lists
//! (`foodapp-operator rbac`, `foodapp-operator rbac --leader-election`), and
//! a test checks them against the API calls the controllers and the real
//! LeaseLock make.

use k8s_openapi::api::rbac::v1::PolicyRule;

/// A rule: (API group, resources, verbs, why).
pub type Rule = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
    &'static str,
);

/// The ClusterRole. Server-side apply that creates an object is authorized
/// as create as well as patch.
pub const RULES: &[Rule] = &[
    (
        "foodapp.io",
        &["foodapps", "foodappbackups", "foodapprestores"],
        &["get", "list", "watch"],
        "read and watch the custom resources",
    ),
    (
        "foodapp.io",
        &["foodapps"],
        &["create", "patch"],
        "add and remove the finalizer that applies deletionPolicy; a restore with spec.target creates the FoodApp it clones into",
    ),
    (
        "foodapp.io",
        &["foodapps/finalizers"],
        &["update"],
        "set ownerReferences with blockOwnerDeletion to FoodApps (OwnerReferencesPermissionEnforcement)",
    ),
    (
        "foodapp.io",
        &["foodapps/status", "foodapprestores/status"],
        &["patch"],
        "report status",
    ),
    (
        "foodapp.io",
        &["foodappbackups/status"],
        &["get", "patch"],
        "report status of on-demand backups; get is granted on to the backup agent",
    ),
    (
        "foodapp.io",
        &["foodappbackups"],
        &["create", "patch", "delete"],
        "create is granted on to the backup agent, which records each scheduled run; patch marks a backup's outcome as announced; delete applies retention to them",
    ),
    (
        "foodapp.io",
        &["foodapprestores"],
        &["create"],
        "a PostgreSQL major upgrade moves the data with a FoodAppRestore the operator creates (after its FoodAppBackup)",
    ),
    (
        "",
        &["secrets"],
        &["get", "list", "watch", "create", "patch", "delete"],
        "read the S3, admin and external-database Secrets; create the generated Secrets once, with their ownership record (patched onto those an earlier release made); watch them (a deleted one is re-created); apply the connection Secret of the CloudNativePG and External engines; delete them under deletionPolicy Delete; read, or create at the first start, the key that signs ownership records (foodapp-operator-key, in the operator's namespace)",
    ),
    (
        "",
        &["services", "configmaps"],
        &["get", "list", "watch", "create", "patch"],
        "own the database, API and gateway Services and the gateway config",
    ),
    (
        "",
        &["serviceaccounts"],
        &["get", "list", "create", "patch", "delete"],
        "the backup agent's ServiceAccount; removed when backups are turned off",
    ),
    (
        "",
        &["pods"],
        &["list"],
        "a restore waits until the API's pods (and an abandoned restore's Job pods) are gone, and reads what its agent reported (termination messages)",
    ),
    (
        "",
        &["resourcequotas"],
        &["list"],
        "a Beside restore checks that the namespace's quotas allow its second volume before making anything",
    ),
    (
        "",
        &["persistentvolumeclaims"],
        &["get", "patch", "delete"],
        "grow the data volume; delete it under deletionPolicy Delete",
    ),
    (
        "apps",
        &["statefulsets", "deployments"],
        &["get", "list", "watch", "create", "patch"],
        "own PostgreSQL, the API and the gateway",
    ),
    (
        "apps",
        &["statefulsets"],
        &["delete"],
        "a Beside restore with keepPrevious: false deletes the database it replaced",
    ),
    (
        "batch",
        &["jobs"],
        &["get", "list", "watch", "create", "patch"],
        "run migrations, on-demand backups and restores",
    ),
    (
        "batch",
        &["cronjobs"],
        &["get", "list", "watch", "create", "patch", "delete"],
        "schedule backups; remove the schedule when backups are turned off",
    ),
    (
        "rbac.authorization.k8s.io",
        &["roles", "rolebindings"],
        &["get", "list", "create", "patch", "delete"],
        "give the backup agent its Role (it may only record FoodAppBackups; the operator holds those rights itself, so no escalate or bind)",
    ),
    (
        "autoscaling",
        &["horizontalpodautoscalers"],
        &["get", "create", "patch", "delete"],
        "autoscale the API and the gateway when the spec asks; remove the autoscaler when it no longer does",
    ),
    (
        "policy",
        &["poddisruptionbudgets"],
        &["get", "create", "patch", "delete"],
        "keep API and gateway pods through node drains; removed when one pod runs",
    ),
    (
        "networking.k8s.io",
        &["networkpolicies"],
        &["get", "list", "create", "patch", "delete"],
        "limit who connects to the database and the API; removed when switched off",
    ),
    (
        "postgresql.cnpg.io",
        &["clusters"],
        &["get", "list", "create", "patch", "delete"],
        "engine CloudNativePG: the Cluster (list: whether CloudNativePG is installed, and the one labelled in use; the garbage collector deletes an owned one); a Beside restore with keepPrevious: false deletes the one it replaced, a failed point-in-time recovery the half-recovered one",
    ),
    (
        "postgresql.cnpg.io",
        &["backups"],
        &["list"],
        "engine CloudNativePG: a point-in-time recovery needs a base backup completed before its target",
    ),
    (
        "barmancloud.cnpg.io",
        &["objectstores"],
        &["get", "list", "create", "patch", "delete"],
        "engine CloudNativePG: the Barman Cloud Plugin's ObjectStore of the FoodApp's bucket (list: whether the plugin is installed); its status gives the recovery window",
    ),
    (
        "postgresql.cnpg.io",
        &["scheduledbackups"],
        &["get", "list", "create", "patch", "delete"],
        "engine CloudNativePG: the backup schedule, removed when backups are turned off",
    ),
    (
        "cert-manager.io",
        &["certificates"],
        &["get", "list", "create", "patch", "delete"],
        "the gateway's certificate when gateway.tls names an issuer",
    ),
    (
        "events.k8s.io",
        &["events"],
        &["create", "patch"],
        "record events for every step and failure (patch: a repeated event becomes a series)",
    ),
];

/// The Role in the operator's own namespace: the leader-election Lease only.
/// kube-leader-election reads it, creates it, and acquires and renews it
/// with PATCH.
pub const LEADER_ELECTION_RULES: &[Rule] = &[(
    "coordination.k8s.io",
    &["leases"],
    &["get", "create", "patch"],
    "leader election between operator replicas",
)];

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..Default::default()
    }
}

/// Whether `rules` allow `verb` on `group`/`resource`.
pub fn allows(rules: &[Rule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|(g, resources, verbs, _)| {
        *g == group && resources.contains(&resource) && verbs.contains(&verb)
    })
}

/// The README's RBAC table: the ClusterRole's rules, then the leader
/// election Role's, as `foodapp-operator rbac --markdown` prints it (a test
/// keeps the README's copy equal to it).
pub fn markdown() -> String {
    let mut out = String::from("| API group | resources | verbs | why |\n|---|---|---|---|\n");
    let row = |out: &mut String, (group, resources, verbs, why): &Rule, scope: &str| {
        let group = if group.is_empty() { "\"\"" } else { group };
        out.push_str(&format!(
            "| {group} | {} | {} | {why}{scope} |\n",
            resources.join(", "),
            verbs.join(", "),
        ));
    };
    for rule in RULES {
        row(&mut out, rule, "");
    }
    for rule in LEADER_ELECTION_RULES {
        row(
            &mut out,
            rule,
            " (a namespaced Role in the release namespace only)",
        );
    }
    out
}

/// The rules as YAML, for the chart's `files/rbac-rules.yaml` and
/// `files/leader-election-rules.yaml`.
pub fn yaml(rules: &[Rule], command: &str) -> Result<String, yaml_serde::Error> {
    let mut out = format!("# Generated by `{command}` from operator/src/rbac.rs; do not edit.\n");
    for (group, resources, verbs, why) in rules {
        out.push_str(&format!("# {why}\n"));
        out.push_str(&yaml_serde::to_string(&vec![rule(
            group, resources, verbs,
        )])?);
    }
    Ok(out)
}

/// What the controllers watch (list + watch): the runner's watches, which
/// reconcile() calls never show.
pub const WATCHED: &[(&str, &str)] = &[
    ("foodapp.io", "foodapps"),
    ("foodapp.io", "foodappbackups"),
    ("foodapp.io", "foodapprestores"),
    ("apps", "statefulsets"),
    ("apps", "deployments"),
    ("batch", "jobs"),
    ("batch", "cronjobs"),
    ("", "services"),
    ("", "configmaps"),
    ("", "secrets"),
];
