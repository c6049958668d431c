//! The controller against kube-fake-client's in-memory API: reconcile() is
//! called directly until stable; children's status is set by hand where a
//! real cluster's controllers would.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use foodapp_operator::build::names;
use foodapp_operator::controller::conditions::Reason;
use foodapp_operator::controller::{self, Context};
use foodapp_operator::crd::{FoodApp, FoodAppBackup, FoodAppRestore};
use foodapp_operator::metrics::Metrics;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use kube_fake_client::{ClientBuilder, interceptor};
use serde_json::{Value, json};

const NS: &str = "food";
const LEASE_NS: &str = "foodapp-system";
const AGENT: &str = "ghcr.io/foodapp/foodapp-operator:test";

struct Harness {
    client: Client,
    ctx: Arc<Context>,
    writes: Arc<AtomicUsize>,
}

/// Another controller's finalizer, already there: kube-fake-client's JSON
/// patch cannot `test` a missing path against null (the API server can),
/// which is how the finalizer helper adds the first one.
const OTHER_FINALIZER: &str = "example.com/other";

fn foodapp(spec: Value) -> FoodApp {
    serde_json::from_value(json!({
        "apiVersion": "foodapp.io/v1alpha1", "kind": "FoodApp",
        "metadata": {"name": "shop", "namespace": NS, "finalizers": [OTHER_FINALIZER]},
        "spec": spec,
    }))
    .unwrap()
}

impl Harness {
    async fn new(app: FoodApp, extra: Vec<Value>) -> Harness {
        Harness::refusing(app, extra, None).await
    }

    /// A harness whose API server refuses every write of one (kind, name),
    /// as a real one refuses an invalid object.
    async fn refusing(
        app: FoodApp,
        extra: Vec<Value>,
        refuse: Option<(&'static str, &'static str)>,
    ) -> Harness {
        Harness::build(app, extra, refuse, true).await
    }

    /// A harness whose API server does not serve the Barman Cloud Plugin's
    /// ObjectStores (CloudNativePG without the plugin).
    async fn without_plugin(app: FoodApp) -> Harness {
        Harness::build(app, vec![], None, false).await
    }

    async fn build(
        app: FoodApp,
        extra: Vec<Value>,
        refuse: Option<(&'static str, &'static str)>,
        plugin: bool,
    ) -> Harness {
        let writes = Arc::new(AtomicUsize::new(0));
        let count = |w: &Arc<AtomicUsize>| {
            let w = w.clone();
            move || {
                w.fetch_add(1, Ordering::SeqCst);
            }
        };
        let (c1, c2, c3, c4) = (
            count(&writes),
            count(&writes),
            count(&writes),
            count(&writes),
        );
        let funcs = interceptor::Funcs::new()
            .create(move |_| {
                c1();
                Ok(None)
            })
            .patch(move |p| {
                c2();
                if let Some((kind, name)) = refuse
                    && p.name == name
                    && p.patch["kind"] == kind
                {
                    return Err(kube_fake_client::Error::InvalidRequest(format!(
                        "{kind}.apps \"{name}\" is invalid: duplicate entries for key [name=\"RUST_LOG\"]"
                    )));
                }
                Ok(None)
            })
            .update(move |_| {
                c3();
                Ok(None)
            })
            .delete(move |_| {
                c4();
                Ok(None)
            });
        let mut builder = ClientBuilder::new();
        if plugin {
            builder = builder.with_resource::<foodapp_operator::crd::foreign::ObjectStore>();
        }
        let client = builder
            .with_resource::<FoodApp>()
            .with_status_subresource::<FoodApp>()
            .with_resource::<FoodAppBackup>()
            .with_status_subresource::<FoodAppBackup>()
            .with_resource::<FoodAppRestore>()
            .with_status_subresource::<FoodAppRestore>()
            .with_status_subresource::<StatefulSet>()
            .with_status_subresource::<Deployment>()
            .with_status_subresource::<Job>()
            .with_resource::<k8s_openapi::api::events::v1::Event>()
            .with_resource::<k8s_openapi::api::coordination::v1::Lease>()
            .with_resource::<foodapp_operator::crd::foreign::Cluster>()
            .with_resource::<foodapp_operator::crd::foreign::ScheduledBackup>()
            .with_resource::<foodapp_operator::crd::foreign::Backup>()
            .with_resource::<foodapp_operator::crd::foreign::Certificate>()
            .with_object(app)
            .with_runtime_objects(extra)
            .with_interceptor_funcs(funcs)
            .build()
            .await
            .unwrap();
        let ctx = Arc::new(Context::new(
            client.clone(),
            Arc::new(Metrics::default()),
            AGENT.to_owned(),
        ));
        Harness {
            client,
            ctx,
            writes,
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), NS)
    }

    /// Creates a custom resource (FoodAppRestore, FoodAppBackup) in the namespace.
    async fn create<K>(&self, name: &str, spec: Value)
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let obj: K = serde_json::from_value(
            json!({"apiVersion": "foodapp.io/v1alpha1", "kind": K::kind(&()),
            "metadata": {"name": name, "namespace": NS}, "spec": spec}),
        )
        .unwrap();
        self.api::<K>()
            .create(&PostParams::default(), &obj)
            .await
            .unwrap();
    }

    /// Whether an object of kind K named `name` exists.
    async fn exists<K>(&self, name: &str) -> bool
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        self.api::<K>().get_opt(name).await.unwrap().is_some()
    }

    async fn app(&self) -> FoodApp {
        self.api::<FoodApp>().get("shop").await.unwrap()
    }

    /// One reconcile of the current FoodApp; the number of writes it made.
    async fn reconcile(&self) -> usize {
        let before = self.writes.load(Ordering::SeqCst);
        controller::reconcile(Arc::new(self.app().await), self.ctx.clone())
            .await
            .unwrap();
        self.writes.load(Ordering::SeqCst) - before
    }

    /// Reconciles until a pass writes nothing (at most 5 passes).
    async fn settle(&self) {
        for _ in 0..5 {
            if self.reconcile().await == 0 {
                return;
            }
        }
        panic!("the reconcile never settled");
    }

    async fn set_status<K>(&self, name: &str, status: Value)
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        self.api::<K>()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": status })),
            )
            .await
            .unwrap();
    }

    async fn database_ready(&self) {
        self.set_status::<StatefulSet>("shop-db", json!({"replicas": 1, "readyReplicas": 1}))
            .await;
    }

    async fn job_done(&self, image: &str, outcome: &str, message: &str) {
        let status = json!({"conditions": [{"type": outcome, "status": "True", "reason": if outcome == "Failed" { "BackoffLimitExceeded" } else { "Completed" }, "message": message}]});
        self.set_status::<Job>(&names::migration_job("shop", image, None), status)
            .await;
    }

    async fn deployments_available(&self) {
        for d in ["shop-api", "shop-gateway"] {
            if self.api::<Deployment>().get_opt(d).await.unwrap().is_some() {
                self.set_status::<Deployment>(
                    d,
                    json!({"replicas": 2, "availableReplicas": 2, "readyReplicas": 2}),
                )
                .await;
            }
        }
    }

    /// The replicas the API Deployment asks for.
    async fn api_replicas(&self) -> Option<i32> {
        let d = self.api::<Deployment>().get("shop-api").await.unwrap();
        d.spec.unwrap().replicas
    }

    async fn api_image(&self) -> Option<String> {
        let d = self
            .api::<Deployment>()
            .get_opt("shop-api")
            .await
            .unwrap()?;
        d.spec?.template.spec?.containers[0].image.clone()
    }

    async fn condition(&self, type_: &str) -> (String, String, String) {
        let app = self.app().await;
        let c = app
            .status
            .unwrap()
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_)
            .unwrap();
        (c.status, c.reason, c.message)
    }

    async fn phase(&self) -> String {
        serde_json::to_value(self.app().await.status.unwrap().phase)
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn set_image(&self, image: &str) {
        self.api::<FoodApp>()
            .patch(
                "shop",
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"api": {"image": image}}})),
            )
            .await
            .unwrap();
    }

    /// A ready FoodApp running `image`.
    async fn ready(image: &str) -> Harness {
        let h = Harness::new(foodapp(json!({"api": {"image": image}})), vec![]).await;
        h.settle().await;
        h.database_ready().await;
        h.settle().await;
        h.job_done(image, "Complete", "").await;
        h.settle().await;
        h.deployments_available().await;
        h.settle().await;
        h
    }
}

#[tokio::test]
async fn children_are_created_with_owner_references_and_the_api_waits_for_its_migration() {
    let h = Harness::new(foodapp(json!({})), vec![]).await;
    h.settle().await;
    let uid = h.app().await.metadata.uid.unwrap();
    for name in ["shop-db", "shop-api", "shop-admin"] {
        let s = h.api::<Secret>().get(name).await.unwrap();
        assert!(
            s.metadata.owner_references.is_none(),
            "{name}: the generated Secrets live as long as the data"
        );
        assert_eq!(
            s.metadata.labels.unwrap()["app.kubernetes.io/instance"],
            "shop",
            "{name}: found again by label and watched"
        );
    }
    assert_eq!(
        h.app().await.status.unwrap().admin_secret.as_deref(),
        Some("shop-admin"),
        "the status (and `kubectl get fa`) says where the first admin's login is"
    );
    for name in ["shop-db", "shop-db-hl", "shop-api", "shop-gateway"] {
        let s = h.api::<Service>().get(name).await.unwrap();
        assert_eq!(s.metadata.owner_references.unwrap()[0].uid, uid, "{name}");
    }
    let sts = h.api::<StatefulSet>().get("shop-db").await.unwrap();
    assert_eq!(sts.metadata.owner_references.unwrap()[0].kind, "FoodApp");
    assert!(h.api::<ConfigMap>().get("shop-gateway").await.is_ok());
    assert!(h.api::<Deployment>().get("shop-gateway").await.is_ok());
    assert!(
        h.api::<Job>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "no migration before the database is ready"
    );
    assert_eq!(h.api_image().await, None);
    assert_eq!(h.phase().await, "Provisioning");
    assert_eq!(h.condition("DatabaseReady").await.0, "False");

    h.database_ready().await;
    h.settle().await;
    let jobs = h
        .api::<Job>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        jobs[0].metadata.owner_references.as_ref().unwrap()[0].uid,
        uid
    );
    assert_eq!(
        h.api_image().await,
        None,
        "no API Deployment while its migration runs"
    );
    assert_eq!(h.phase().await, "Migrating");

    h.job_done(foodapp_operator::crd::DEFAULT_API_IMAGE, "Complete", "")
        .await;
    h.settle().await;
    assert_eq!(
        h.api_image().await.as_deref(),
        Some(foodapp_operator::crd::DEFAULT_API_IMAGE)
    );
    assert_eq!(h.condition("MigrationsComplete").await.0, "True");
    assert_eq!(h.condition("ApiReady").await.0, "False");

    h.deployments_available().await;
    h.settle().await;
    assert_eq!(h.condition("Ready").await.0, "True");
    assert_eq!(h.phase().await, "Ready");
    let status = h.app().await.status.unwrap();
    assert_eq!(
        status.observed_generation,
        h.app().await.metadata.generation
    );
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.observed_generation == status.observed_generation)
    );
    assert_eq!(
        status.gateway_endpoint.as_deref(),
        Some("http://shop-gateway.food.svc:80")
    );
}

#[tokio::test]
async fn a_refused_object_fails_its_component_with_a_condition_and_a_warning_while_the_rest_converges()
 {
    let h = Harness::refusing(
        foodapp(json!({})),
        vec![],
        Some(("Deployment", "shop-gateway")),
    )
    .await;
    for _ in 0..3 {
        let result = controller::reconcile(Arc::new(h.app().await), h.ctx.clone()).await;
        if let Err(e) = result {
            assert!(e.to_string().contains("shop-gateway"), "{e}");
        }
    }
    let (status, reason, message) = h.condition("GatewayReady").await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "ApplyFailed"));
    assert!(
        message.contains("Deployment shop-gateway") && message.contains("duplicate entries"),
        "{message}"
    );
    assert_eq!(h.condition("Ready").await.0, "False");
    assert!(
        h.api::<StatefulSet>()
            .get_opt("shop-db")
            .await
            .unwrap()
            .is_some()
            && h.api::<ConfigMap>()
                .get_opt("shop-gateway")
                .await
                .unwrap()
                .is_some(),
        "the other components are still applied"
    );
    let events = h
        .api::<k8s_openapi::api::events::v1::Event>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("ApplyFailed")
                && e.type_.as_deref() == Some("Warning")
                && e.note
                    .as_deref()
                    .is_some_and(|n| n.contains("shop-gateway"))),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_deleted_database_secret_comes_back_and_restarts_the_pods_that_use_it() {
    let h = Harness::ready("registry.example/api:1").await;
    let password = |s: Secret| String::from_utf8(s.data.unwrap()["password"].0.clone()).unwrap();
    let templates = async || {
        let hash = |meta: Option<kube::api::ObjectMeta>| {
            meta.unwrap().annotations.unwrap()["foodapp.io/credentials-hash"].clone()
        };
        let db = h.api::<StatefulSet>().get("shop-db").await.unwrap();
        let api = h.api::<Deployment>().get("shop-api").await.unwrap();
        (
            hash(db.spec.unwrap().template.metadata),
            hash(api.spec.unwrap().template.metadata),
        )
    };
    let before = password(h.api::<Secret>().get("shop-db").await.unwrap());
    let (db_before, api_before) = templates().await;
    h.api::<Secret>()
        .delete("shop-db", &DeleteParams::default())
        .await
        .unwrap();
    h.settle().await;
    let after = password(h.api::<Secret>().get("shop-db").await.unwrap());
    assert_ne!(after, before, "a new Secret, with a new password");
    // The database sets the password from the Secret at every start (its
    // init container); a new hash on the templates restarts both.
    let (db_after, api_after) = templates().await;
    assert_ne!(db_after, db_before);
    assert_ne!(api_after, api_before);
}

#[tokio::test]
async fn a_failed_migration_runs_again_when_the_user_asks() {
    let h = Harness::ready("registry.example/api:1").await;
    h.set_image("registry.example/api:2").await;
    h.settle().await;
    h.job_done("registry.example/api:2", "Failed", "boom").await;
    h.settle().await;
    assert!(
        h.condition("MigrationsComplete")
            .await
            .2
            .contains("retry-migration")
    );
    h.api::<FoodApp>()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(
                &json!({"metadata": {"annotations": {"foodapp.io/retry-migration": "1"}}}),
            ),
        )
        .await
        .unwrap();
    h.settle().await;
    let retry = names::migration_job("shop", "registry.example/api:2", Some("1"));
    assert!(h.api::<Job>().get_opt(&retry).await.unwrap().is_some());
    assert_eq!(h.condition("MigrationsComplete").await.1, "Running");
}

#[tokio::test]
async fn a_second_reconcile_of_an_unchanged_foodapp_writes_nothing() {
    let h = Harness::ready("registry.example/api:1").await;
    assert_eq!(h.reconcile().await, 0);
    assert_eq!(h.reconcile().await, 0);
}

#[tokio::test]
async fn a_new_image_migrates_first_and_the_running_api_is_untouched_until_then() {
    let h = Harness::ready("registry.example/api:1").await;
    h.set_image("registry.example/api:2").await;
    h.settle().await;
    assert!(
        h.api::<Job>()
            .get(&names::migration_job(
                "shop",
                "registry.example/api:2",
                None
            ))
            .await
            .is_ok()
    );
    assert_eq!(
        h.api_image().await.as_deref(),
        Some("registry.example/api:1")
    );

    h.job_done(
        "registry.example/api:2",
        "Failed",
        "Job has reached the specified backoff limit",
    )
    .await;
    h.settle().await;
    let (status, reason, message) = h.condition("MigrationsComplete").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "MigrationFailed")
    );
    assert!(
        message.contains("BackoffLimitExceeded") && message.contains("backoff limit"),
        "{message}"
    );
    assert_eq!(
        h.api_image().await.as_deref(),
        Some("registry.example/api:1"),
        "a failed migration leaves the API alone"
    );
    assert_eq!(
        h.condition("ApiReady").await.0,
        "True",
        "the old API keeps serving"
    );
    assert_eq!(h.phase().await, "Degraded");

    h.set_image("registry.example/api:3").await;
    h.settle().await;
    h.job_done("registry.example/api:3", "Complete", "").await;
    h.settle().await;
    assert_eq!(
        h.api_image().await.as_deref(),
        Some("registry.example/api:3")
    );
    assert_eq!(
        h.app().await.status.unwrap().api_image.as_deref(),
        Some("registry.example/api:3")
    );
}

/// What survives deleting the FoodApp under `policy`: (claim, database
/// Secret, admin Secret). The fake API has no finalizers, so the test runs
/// what the finalizer runs at deletion, then deletes.
async fn delete_foodapp_and_see_what_survives(policy: &str) -> (bool, bool, bool) {
    let pvc: Value = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data-shop-db-0", "namespace": NS, "labels": {"app.kubernetes.io/instance": "shop"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}},
    });
    let h = Harness::new(foodapp(json!({"deletionPolicy": policy})), vec![pvc]).await;
    h.settle().await;
    let app = h.app().await;
    assert_eq!(
        app.metadata.finalizers.as_deref(),
        Some(&[OTHER_FINALIZER.to_owned(), controller::FINALIZER.to_owned()][..]),
        "deletion waits for the operator's decision"
    );
    controller::finalize::cleanup(&app, &h.ctx).await.unwrap();
    h.api::<FoodApp>()
        .delete("shop", &DeleteParams::background())
        .await
        .unwrap();
    assert!(
        h.api::<StatefulSet>()
            .get_opt("shop-db")
            .await
            .unwrap()
            .is_none(),
        "children go with the FoodApp"
    );
    let exists = async |name: &str| h.api::<Secret>().get_opt(name).await.unwrap().is_some();
    (
        h.api::<PersistentVolumeClaim>()
            .get_opt("data-shop-db-0")
            .await
            .unwrap()
            .is_some(),
        exists("shop-db").await,
        exists("shop-admin").await,
    )
}

#[tokio::test]
async fn deleting_a_foodapp_keeps_its_data_and_login_with_retain() {
    assert_eq!(
        delete_foodapp_and_see_what_survives("Retain").await,
        (true, true, true)
    );
}

#[tokio::test]
async fn deleting_a_foodapp_removes_its_data_and_login_with_delete() {
    assert_eq!(
        delete_foodapp_and_see_what_survives("Delete").await,
        (false, false, false)
    );
}

#[tokio::test]
async fn growing_storage_expands_the_claim_and_keeps_the_template() {
    let pvc: Value = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data-shop-db-0", "namespace": NS},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}},
    });
    let h = Harness::new(foodapp(json!({})), vec![pvc]).await;
    h.settle().await;
    h.api::<FoodApp>()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"database": {"storage": {"size": "30Gi"}}}})),
        )
        .await
        .unwrap();
    h.settle().await;
    let claim = h
        .api::<PersistentVolumeClaim>()
        .get("data-shop-db-0")
        .await
        .unwrap();
    assert_eq!(
        claim.spec.unwrap().resources.unwrap().requests.unwrap()["storage"].0,
        "30Gi"
    );
    let sts = h.api::<StatefulSet>().get("shop-db").await.unwrap();
    let template = &sts.spec.unwrap().volume_claim_templates.unwrap()[0];
    assert_eq!(
        template
            .spec
            .as_ref()
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"]
            .0,
        "10Gi"
    );
}

fn with_backup(secret: &str) -> Value {
    json!({"backup": {"s3": {"bucket": "shop-backups", "credentialsSecret": secret, "endpoint": "https://fra1.digitaloceanspaces.com", "region": "fra1"}}})
}

#[tokio::test]
async fn a_missing_credentials_secret_is_a_condition_not_a_crash_loop() {
    let h = Harness::new(foodapp(with_backup("spaces-credentials")), vec![]).await;
    h.settle().await;
    let (status, reason, message) = h.condition("BackupScheduled").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "CredentialsSecretMissing")
    );
    assert!(message.contains("spaces-credentials"), "{message}");
    assert!(
        h.api::<CronJob>()
            .get_opt("shop-backup")
            .await
            .unwrap()
            .is_none()
    );

    h.api::<Secret>()
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "spaces-credentials", "namespace": NS},
                "stringData": {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}}))
            .unwrap(),
        )
        .await
        .unwrap();
    h.settle().await;
    assert_eq!(h.condition("BackupScheduled").await.0, "True");
    let cron = h.api::<CronJob>().get("shop-backup").await.unwrap();
    assert_eq!(
        cron.spec.unwrap().concurrency_policy.as_deref(),
        Some("Forbid")
    );

    // Backups turned off: the CronJob and its RBAC go.
    h.api::<FoodApp>()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"backup": null}})),
        )
        .await
        .unwrap();
    h.settle().await;
    assert!(
        h.api::<CronJob>()
            .get_opt("shop-backup")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(h.condition("BackupScheduled").await.1, "NotConfigured");
}

#[tokio::test]
async fn generated_secrets_are_never_regenerated() {
    let h = Harness::new(foodapp(json!({})), vec![]).await;
    h.settle().await;
    let before = h
        .api::<Secret>()
        .get("shop-db")
        .await
        .unwrap()
        .data
        .unwrap();
    h.set_image("registry.example/api:9").await;
    h.settle().await;
    let after = h
        .api::<Secret>()
        .get("shop-db")
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(before, after);
}

async fn credentials(h: &Harness) {
    h.api::<Secret>()
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "spaces", "namespace": NS},
                "stringData": {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}}))
            .unwrap(),
        )
        .await
        .unwrap();
}

async fn ready_with_backup() -> Harness {
    let mut spec = with_backup("spaces");
    spec["api"] = json!({"image": "registry.example/api:1"});
    let h = Harness::new(foodapp(spec), vec![]).await;
    credentials(&h).await;
    h.settle().await;
    h.database_ready().await;
    h.settle().await;
    h.job_done("registry.example/api:1", "Complete", "").await;
    h.settle().await;
    h.deployments_available().await;
    h.settle().await;
    assert_eq!(h.condition("Ready").await.0, "True");
    h
}

/// A pod of the API, as its ReplicaSet would make it.
async fn api_pod(h: &Harness, name: &str) {
    labelled_pod(
        h,
        name,
        json!({"app.kubernetes.io/instance": "shop", "app.kubernetes.io/component": "api"}),
    )
    .await;
}

async fn labelled_pod(h: &Harness, name: &str, labels: Value) {
    let pod: Pod = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "x"}]}}))
    .unwrap();
    h.api::<Pod>()
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
}

async fn restore_step(h: &Harness, name: &str) {
    let r = h.api::<FoodAppRestore>().get(name).await.unwrap();
    foodapp_operator::controller::operations::reconcile(Arc::new(r), h.ctx.clone())
        .await
        .unwrap();
}

async fn restore_phase(h: &Harness, name: &str) -> String {
    let r = h.api::<FoodAppRestore>().get(name).await.unwrap();
    serde_json::to_value(r.status.unwrap().phase)
        .unwrap()
        .as_str()
        .unwrap_or("")
        .to_owned()
}

fn job_done_json(outcome: &str) -> Value {
    json!({"conditions": [{"type": outcome, "status": "True", "reason": "Done", "message": "done"}]})
}

#[tokio::test]
async fn a_restore_stops_the_api_restores_migrates_and_brings_it_back() {
    let h = ready_with_backup().await;
    let restores = h.api::<FoodAppRestore>();
    h.create::<FoodAppRestore>(
        "r1",
        json!({"foodAppRef": "shop", "latest": true, "mode": "InPlace"}),
    )
    .await;
    // An API pod is there (the FoodApp reconcile has not stopped it yet).
    api_pod(&h, "shop-api-abc").await;
    restore_step(&h, "r1").await;
    assert_eq!(restore_phase(&h, "r1").await, "Restoring");

    // The FoodApp reconcile stops the API and pauses scheduled backups.
    h.settle().await;
    let api = h.api::<Deployment>().get("shop-api").await.unwrap();
    assert_eq!(api.spec.unwrap().replicas, Some(0));
    assert_eq!(
        h.api::<CronJob>()
            .get("shop-backup")
            .await
            .unwrap()
            .spec
            .unwrap()
            .suspend,
        Some(true)
    );
    assert_eq!(h.phase().await, "Restoring");

    // A second restore of the same FoodApp waits.
    h.create::<FoodAppRestore>(
        "r2",
        json!({"foodAppRef": "shop", "latest": true, "mode": "InPlace"}),
    )
    .await;
    restore_step(&h, "r2").await;
    assert_eq!(restore_phase(&h, "r2").await, "Pending");

    // No restore Job while an API pod is still there (even terminating).
    restore_step(&h, "r1").await;
    assert!(
        h.api::<Job>()
            .get_opt("r1-restore")
            .await
            .unwrap()
            .is_none()
    );
    h.api::<Pod>()
        .delete("shop-api-abc", &DeleteParams::default())
        .await
        .unwrap();
    restore_step(&h, "r1").await;
    let job = h.api::<Job>().get("r1-restore").await.unwrap();
    let c = &job.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(
        c.args.as_deref(),
        Some(&["restore".to_owned(), "--latest".to_owned()][..])
    );
    assert_eq!(c.image.as_deref(), Some(AGENT));
    assert_eq!(
        job.metadata.owner_references.unwrap()[0].kind,
        "FoodAppRestore",
        "deleting the restore stops its Jobs"
    );
    // A new API image does not migrate while the restore runs.
    h.set_image("registry.example/api:2").await;
    h.settle().await;
    assert!(
        h.api::<Job>()
            .get_opt(&names::migration_job(
                "shop",
                "registry.example/api:2",
                None
            ))
            .await
            .unwrap()
            .is_none(),
        "no migration during a restore"
    );

    h.set_status::<Job>("r1-restore", job_done_json("Complete"))
        .await;
    restore_step(&h, "r1").await;
    let migrate = h.api::<Job>().get("r1-migrate").await.unwrap();
    let mc = &migrate.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(
        (mc.image.as_deref(), mc.args.as_deref()),
        (
            Some("registry.example/api:1"),
            Some(&["migrate".to_owned()][..])
        )
    );
    assert_eq!(restore_phase(&h, "r1").await, "Migrating");

    h.set_status::<Job>("r1-migrate", job_done_json("Complete"))
        .await;
    restore_step(&h, "r1").await;
    assert_eq!(restore_phase(&h, "r1").await, "Succeeded");
    let r1 = restores.get("r1").await.unwrap().status.unwrap();
    for c in ["Started", "ApiStopped", "Restored", "Migrated", "Complete"] {
        assert_eq!(
            r1.conditions
                .iter()
                .find(|x| x.type_ == c)
                .map(|x| x.status.as_str()),
            Some("True"),
            "{c}"
        );
    }

    // The API comes back; the waiting restore may start now.
    h.settle().await;
    assert_eq!(h.api_replicas().await, Some(2));
    restore_step(&h, "r2").await;
    assert_eq!(restore_phase(&h, "r2").await, "Restoring");
}

#[tokio::test]
async fn a_restore_deleted_mid_way_keeps_the_api_stopped_until_its_pods_are_gone() {
    let h = ready_with_backup().await;
    h.create::<FoodAppRestore>(
        "r1",
        json!({"foodAppRef": "shop", "latest": true, "mode": "InPlace"}),
    )
    .await;
    restore_step(&h, "r1").await;
    h.settle().await;
    restore_step(&h, "r1").await;
    assert!(
        h.api::<Job>()
            .get_opt("r1-restore")
            .await
            .unwrap()
            .is_some()
    );
    // The agent's pod is still running when the FoodAppRestore goes.
    labelled_pod(
        &h,
        "r1-restore-xyz",
        json!({"batch.kubernetes.io/job-name": "r1-restore"}),
    )
    .await;
    h.api::<FoodAppRestore>()
        .delete("r1", &DeleteParams::default())
        .await
        .unwrap();
    h.settle().await;
    let replicas = async || {
        h.api::<Deployment>()
            .get("shop-api")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas
    };
    assert_eq!(
        replicas().await,
        Some(0),
        "the restore may still be writing"
    );
    h.api::<Pod>()
        .delete("r1-restore-xyz", &DeleteParams::default())
        .await
        .unwrap();
    h.settle().await;
    assert_eq!(
        replicas().await,
        Some(2),
        "its pod is gone: the API comes back"
    );
    assert!(
        h.app()
            .await
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("foodapp.io/restore")
            .eq(&false),
        "the lock is released"
    );
}

#[tokio::test]
async fn a_restore_only_takes_this_foodapps_own_backups() {
    let h = ready_with_backup().await;
    h.create::<FoodAppBackup>("theirs", json!({"foodAppRef": "other"}))
        .await;
    h.set_status::<FoodAppBackup>(
        "theirs",
        json!({"phase": "Succeeded", "objectKey": "foodapp/food/other/20261121T030000000Z.dump"}),
    )
    .await;
    for (name, source) in [
        ("by-ref", json!({"backupRef": "theirs"})),
        (
            "by-key",
            json!({"objectKey": "foodapp/food/other/20261121T030000000Z.dump"}),
        ),
        (
            "nested",
            json!({"objectKey": "foodapp/food/shop/x/food/shop/20261121T030000000Z.dump"}),
        ),
    ] {
        let mut spec = source;
        spec["foodAppRef"] = json!("shop");
        h.create::<FoodAppRestore>(name, spec).await;
        restore_step(&h, name).await;
        assert_eq!(restore_phase(&h, name).await, "Failed", "{name}");
        let error = h
            .api::<FoodAppRestore>()
            .get(name)
            .await
            .unwrap()
            .status
            .unwrap()
            .error
            .unwrap();
        assert!(error.contains("nothing was changed"), "{name}: {error}");
    }
    assert_eq!(h.api_replicas().await, Some(2));
}

#[tokio::test]
async fn a_failed_restore_job_fails_the_restore_and_the_api_returns() {
    let h = ready_with_backup().await;
    h.create::<FoodAppRestore>(
        "bad",
        json!({"foodAppRef": "shop", "objectKey": "foodapp/food/shop/20261121T030000000Z.dump", "mode": "InPlace"}),
    )
    .await;
    restore_step(&h, "bad").await;
    h.settle().await;
    h.set_status::<Deployment>("shop-api", json!({"replicas": 0}))
        .await;
    restore_step(&h, "bad").await;
    h.set_status::<Job>("bad-restore", json!({"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "checksum mismatch"}]})).await;
    restore_step(&h, "bad").await;
    let status = h
        .api::<FoodAppRestore>()
        .get("bad")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(serde_json::to_value(status.phase).unwrap(), "Failed");
    assert!(status.error.unwrap().contains("checksum mismatch"));
    h.settle().await;
    assert_eq!(h.api_replicas().await, Some(2));
}

#[tokio::test]
async fn an_on_demand_backup_runs_as_a_job_and_a_silent_failure_is_recorded() {
    let h = ready_with_backup().await;
    h.create::<FoodAppBackup>("now", json!({"foodAppRef": "shop"}))
        .await;
    let backups = h.api::<FoodAppBackup>();
    let step = || async {
        let b = backups.get("now").await.unwrap();
        foodapp_operator::controller::backups::reconcile(Arc::new(b), h.ctx.clone())
            .await
            .unwrap();
    };
    step().await;
    let job = h.api::<Job>().get("now").await.unwrap();
    let c = &job.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(c.args.as_deref(), Some(&["backup".to_owned()][..]));
    assert!(
        c.env
            .as_ref()
            .unwrap()
            .iter()
            .any(|e| e.name == "BACKUP_NAME" && e.value.as_deref() == Some("now"))
    );
    assert_eq!(
        serde_json::to_value(backups.get("now").await.unwrap().status.unwrap().phase).unwrap(),
        "Pending"
    );

    h.set_status::<Job>("now", json!({"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "killed"}]})).await;
    step().await;
    let status = backups.get("now").await.unwrap().status.unwrap();
    assert_eq!(serde_json::to_value(status.phase).unwrap(), "Failed");
    assert!(status.error.unwrap().contains("DeadlineExceeded"));
    step().await;
    let metrics = h.ctx.metrics.encode();
    assert!(
        metrics.contains("foodapp_backup_failures_total{namespace=\"food\",foodapp=\"shop\",reason=\"JobFailed\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_operator_restart_does_not_announce_past_backups_again() {
    let h = ready_with_backup().await;
    h.create::<FoodAppBackup>("old", json!({"foodAppRef": "shop", "source": "Scheduled"}))
        .await;
    h.set_status::<FoodAppBackup>(
        "old",
        json!({"phase": "Failed", "error": "the bucket refused the upload", "reason": "Storage",
               "completedAt": "2026-11-20T03:00:05Z"}),
    )
    .await;
    let announcements = async || {
        h.api::<k8s_openapi::api::events::v1::Event>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some("BackupFailed"))
            .count()
    };
    let reconcile_with = async |ctx: Arc<Context>| {
        let b = h.api::<FoodAppBackup>().get("old").await.unwrap();
        foodapp_operator::controller::backups::reconcile(Arc::new(b), ctx)
            .await
            .unwrap();
    };
    reconcile_with(h.ctx.clone()).await;
    reconcile_with(h.ctx.clone()).await;
    assert_eq!(announcements().await, 1);
    assert!(
        h.ctx.metrics.encode().contains("reason=\"Storage\""),
        "the failure is counted by its reason field"
    );
    // A new process: nothing in memory about what was announced.
    let restarted = Arc::new(Context::new(
        h.client.clone(),
        Arc::new(Metrics::default()),
        AGENT.to_owned(),
    ));
    reconcile_with(restarted).await;
    assert_eq!(announcements().await, 1, "no second BackupFailed event");
}

#[tokio::test]
async fn a_restore_that_cannot_work_fails_before_the_api_is_stopped() {
    let h = ready_with_backup().await;
    let replicas = async || {
        h.api::<Deployment>()
            .get("shop-api")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas
    };
    let before = replicas().await;
    h.create::<FoodAppRestore>(
        "r1",
        json!({"foodAppRef": "shop", "backupRef": "no-such-backup"}),
    )
    .await;
    restore_step(&h, "r1").await;
    h.settle().await;
    assert_eq!(restore_phase(&h, "r1").await, "Failed");
    let r = h
        .api::<FoodAppRestore>()
        .get("r1")
        .await
        .unwrap()
        .status
        .unwrap();
    assert!(r.error.unwrap().contains("nothing was changed"));
    assert_eq!(replicas().await, before, "the API never stopped");

    h.api::<Secret>()
        .delete("spaces", &DeleteParams::default())
        .await
        .unwrap();
    h.create::<FoodAppRestore>("r2", json!({"foodAppRef": "shop", "latest": true}))
        .await;
    restore_step(&h, "r2").await;
    assert_eq!(restore_phase(&h, "r2").await, "Failed");
    let c = h
        .api::<FoodAppRestore>()
        .get("r2")
        .await
        .unwrap()
        .status
        .unwrap()
        .conditions;
    assert_eq!(
        c.iter().find(|c| c.type_ == "Complete").unwrap().reason,
        "CredentialsSecretMissing"
    );
    assert_eq!(replicas().await, before);
}

#[tokio::test]
async fn a_recorded_backup_becomes_last_backup_and_a_metric() {
    let h = ready_with_backup().await;
    h.create::<FoodAppBackup>(
        "shop-20261121t030000000z",
        json!({"foodAppRef": "shop", "source": "Scheduled"}),
    )
    .await;
    let backups = h.api::<FoodAppBackup>();
    backups
        .patch_status("shop-20261121t030000000z", &PatchParams::default(), &Patch::Merge(&json!({"status": {
            "phase": "Succeeded", "objectKey": "foodapp/food/shop/20261121T030000000Z.dump", "sizeBytes": 12345,
            "sha256": "ab", "startedAt": "2026-11-21T03:00:00Z", "completedAt": "2026-11-21T03:00:42Z", "verified": true}})))
        .await
        .unwrap();
    let b = backups.get("shop-20261121t030000000z").await.unwrap();
    foodapp_operator::controller::backups::reconcile(Arc::new(b), h.ctx.clone())
        .await
        .unwrap();
    h.settle().await;
    let last = h.app().await.status.unwrap().last_backup.unwrap();
    assert_eq!(
        (last.name.as_str(), last.size_bytes),
        ("shop-20261121t030000000z", 12345)
    );
    let metrics = h.ctx.metrics.encode();
    assert!(metrics.contains("foodapp_backup_last_success_timestamp_seconds{namespace=\"food\",foodapp=\"shop\"} 1795230042"), "{metrics}");
    assert!(
        metrics.contains("foodapp_backup_duration_seconds{namespace=\"food\",foodapp=\"shop\"} 42"),
        "{metrics}"
    );
}

/// The (group, resource, verb) of a request to the API server.
fn permission(method: &str, path: &str) -> (String, String, String) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.first() {
        Some(&"api") => ("", &parts[2..]),
        _ => (parts[1], &parts[3..]),
    };
    let rest = if rest.first() == Some(&"namespaces") && rest.len() > 2 {
        &rest[2..]
    } else {
        rest
    };
    let resource = match rest {
        [res, _name, sub] => format!("{res}/{sub}"),
        [res, ..] => res.to_string(),
        [] => String::new(),
    };
    let named = rest.len() >= 2;
    let verb = match (method, named) {
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    };
    (group.to_owned(), resource, verb.to_owned())
}

#[tokio::test]
async fn the_rbac_rules_cover_every_call_the_controllers_make_and_nothing_more() {
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    let calls: Arc<Mutex<BTreeSet<(String, String, String)>>> = Arc::default();

    // Every scenario that exercises a different API call, on a recording client.
    let mut spec = with_backup("spaces");
    spec["api"] = json!({"image": "registry.example/api:1"});
    let h = Harness::new(foodapp(spec), vec![]).await;
    credentials(&h).await;
    let recorder = calls.clone();
    let inner = h.client.clone();
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let (group, resource, verb) = permission(req.method().as_str(), req.uri().path());
        let mut seen = recorder.lock().unwrap();
        seen.insert((group.clone(), resource.clone(), verb.clone()));
        if verb == "patch"
            && !resource.contains('/')
            && req
                .headers()
                .get("content-type")
                .is_some_and(|c| c.to_str().unwrap_or("").contains("apply-patch"))
        {
            // Server-side apply may create the object (not a subresource).
            seen.insert((group, resource, "create".to_owned()));
        }
        drop(seen);
        let inner = inner.clone();
        async move { inner.send(req).await }
    });
    let client = kube::Client::new(service, NS);
    let ctx = Arc::new(Context::new(
        client.clone(),
        Arc::new(Metrics::default()),
        AGENT.to_owned(),
    ));
    let recorded = Harness {
        client,
        ctx,
        writes: h.writes.clone(),
    };
    recorded.settle().await;
    recorded.database_ready().await;
    recorded.settle().await;
    recorded
        .job_done("registry.example/api:1", "Complete", "")
        .await;
    recorded.settle().await;
    recorded.deployments_available().await;
    recorded.settle().await;
    recorded.set_image("registry.example/api:2").await;
    recorded.settle().await;
    recorded
        .create::<FoodAppRestore>(
            "r",
            json!({"foodAppRef": "shop", "latest": true, "mode": "InPlace"}),
        )
        .await;
    for _ in 0..2 {
        restore_step(&recorded, "r").await;
        recorded.settle().await;
    }
    recorded
        .set_status::<Deployment>("shop-api", json!({"replicas": 0}))
        .await;
    restore_step(&recorded, "r").await;
    recorded
        .set_status::<Job>("r-restore", job_done_json("Complete"))
        .await;
    restore_step(&recorded, "r").await;
    recorded
        .set_status::<Job>("r-migrate", job_done_json("Complete"))
        .await;
    restore_step(&recorded, "r").await;
    // A Beside restore, through the switch, that deletes what it replaced.
    recorded
        .create::<FoodAppRestore>(
            "b",
            json!({"foodAppRef": "shop", "latest": true, "keepPrevious": false}),
        )
        .await;
    beside_until_switch(&recorded, "b").await;
    recorded
        .set_status::<Job>("b-switch", json!({"ready": 1}))
        .await;
    restore_step(&recorded, "b").await;
    recorded
        .set_status::<Job>("b-switch", job_done_json("Complete"))
        .await;
    restore_step(&recorded, "b").await;
    assert_eq!(restore_phase(&recorded, "b").await, "Succeeded");
    recorded.settle().await;
    // A clone into a FoodApp the restore makes.
    recorded
        .create::<FoodAppRestore>(
            "c",
            json!({"foodAppRef": "shop", "latest": true, "target": {"foodApp": "staging", "anonymize": true}}),
        )
        .await;
    restore_step(&recorded, "c").await;
    h.api::<FoodApp>()
        .patch(
            "staging",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"finalizers": [OTHER_FINALIZER]}})),
        )
        .await
        .unwrap();
    restore_step(&recorded, "c").await;
    settle_app(&recorded, "staging").await;
    recorded
        .set_status::<StatefulSet>("staging-db", json!({"replicas": 1, "readyReplicas": 1}))
        .await;
    settle_app(&recorded, "staging").await;
    restore_step(&recorded, "c").await;
    for job in ["c-restore", "c-migrate"] {
        recorded
            .set_status::<Job>(job, job_done_json("Complete"))
            .await;
        restore_step(&recorded, "c").await;
    }
    assert_eq!(restore_phase(&recorded, "c").await, "Succeeded");
    recorded
        .create::<FoodAppBackup>("now", json!({"foodAppRef": "shop"}))
        .await;
    for _ in 0..2 {
        let b = recorded.api::<FoodAppBackup>().get("now").await.unwrap();
        foodapp_operator::controller::backups::reconcile(Arc::new(b), recorded.ctx.clone())
            .await
            .unwrap();
        recorded
            .set_status::<FoodAppBackup>(
                "now",
                json!({"phase": "Succeeded", "objectKey": "k", "completedAt": "2026-11-20T03:00:00Z"}),
            )
            .await;
    }
    // A PostgreSQL major upgrade, InPlace: the operator makes its restore,
    // which stops the shop and runs pg_upgrade.
    let upgrade_made = Box::pin(in_place_upgrade_until_its_job(&recorded, &h)).await;
    // An autoscaler, budgets, network policies and a certificate come and go.
    let patch_shop = |spec: Value| {
        let api = recorded.api::<FoodApp>();
        async move {
            api.patch(
                "shop",
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": spec})),
            )
            .await
            .unwrap();
        }
    };
    patch_shop(json!({
        "api": {"autoscaling": {"minReplicas": 2, "maxReplicas": 4}, "resources": {"requests": {"cpu": "100m"}}},
        "gateway": {"tls": {"issuerRef": {"name": "letsencrypt"}, "dnsNames": ["shop.example"]}},
    }))
    .await;
    recorded.settle().await;
    patch_shop(json!({
        "api": {"autoscaling": null, "replicas": 1},
        "gateway": {"tls": null},
        "networkPolicy": {"enabled": false},
    }))
    .await;
    recorded.settle().await;
    // The CloudNativePG engine, with backups, then without.
    let mut diner = foodapp(json!({"database": {"engine": "CloudNativePG"},
        "backup": {"s3": {"bucket": "backups", "credentialsSecret": "spaces"}}}));
    diner.metadata.name = Some("diner".into());
    diner.metadata.uid = None;
    diner.metadata.resource_version = None;
    // Made by the test, not recorded (only a clone's FoodApp is the operator's).
    h.api::<FoodApp>()
        .create(&PostParams::default(), &diner)
        .await
        .unwrap();
    let reconcile_diner = || async {
        let app = recorded.api::<FoodApp>().get("diner").await.unwrap();
        controller::reconcile(Arc::new(app), recorded.ctx.clone())
            .await
            .unwrap();
    };
    for _ in 0..2 {
        reconcile_diner().await;
    }
    assert!(
        recorded
            .api::<foodapp_operator::crd::foreign::ScheduledBackup>()
            .get_opt("diner-db-backup")
            .await
            .unwrap()
            .is_some()
    );
    // A point-in-time restore beside diner's Cluster that deletes the one it replaced.
    cnpg_ready(&recorded, "diner-db", "old").await;
    reconcile_diner().await;
    archived(&recorded, "diner", "diner-db", FIRST_POINT, BASE_BACKUP).await;
    recorded
        .create::<FoodAppRestore>(
            "p",
            json!({"foodAppRef": "diner", "targetTime": "2026-11-22T09:30:00Z", "keepPrevious": false}),
        )
        .await;
    restore_step(&recorded, "p").await;
    let new = restore_status(&recorded, "p").await.database.unwrap();
    cnpg_ready(&recorded, &new, "new").await;
    restore_step(&recorded, "p").await;
    recorded
        .set_status::<Job>("p-migrate", job_done_json("Complete"))
        .await;
    restore_step(&recorded, "p").await;
    recorded
        .set_status::<Job>("p-switch", json!({"ready": 1}))
        .await;
    restore_step(&recorded, "p").await;
    recorded
        .set_status::<Job>("p-switch", job_done_json("Complete"))
        .await;
    reconcile_diner().await;
    if recorded.exists::<Deployment>("diner-api").await {
        let generation = recorded
            .api::<Deployment>()
            .get("diner-api")
            .await
            .unwrap()
            .metadata
            .generation;
        recorded
            .set_status::<Deployment>(
                "diner-api",
                json!({"replicas": 2, "updatedReplicas": 2, "availableReplicas": 2, "observedGeneration": generation}),
            )
            .await;
    }
    restore_step(&recorded, "p").await;
    assert_eq!(restore_phase(&recorded, "p").await, "Succeeded");
    recorded
        .api::<FoodApp>()
        .patch(
            "diner",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"backup": null}})),
        )
        .await
        .unwrap();
    reconcile_diner().await;

    // The External engine: the connection Secret is applied.
    h.api::<Secret>()
        .create(
            &PostParams::default(),
            &secret_with(
                "managed",
                &[
                    ("host", "db.example.com"),
                    ("database", "d"),
                    ("user", "u"),
                    ("password", "pw"),
                ],
            ),
        )
        .await
        .unwrap();
    let mut cafe =
        foodapp(json!({"database": {"engine": "External", "external": {"secretName": "managed"}}}));
    cafe.metadata.name = Some("cafe".into());
    cafe.metadata.uid = None;
    cafe.metadata.resource_version = None;
    // Made by the test, not recorded (only a clone's FoodApp is the operator's).
    h.api::<FoodApp>()
        .create(&PostParams::default(), &cafe)
        .await
        .unwrap();
    for _ in 0..2 {
        let app = recorded.api::<FoodApp>().get("cafe").await.unwrap();
        controller::reconcile(Arc::new(app), recorded.ctx.clone())
            .await
            .unwrap();
    }
    assert!(
        recorded
            .api::<Secret>()
            .get_opt("cafe-db-connection")
            .await
            .unwrap()
            .is_some()
    );

    // Retention of FoodAppBackups: keep one, an older one goes.
    recorded
        .create::<FoodAppBackup>(
            "older",
            json!({"foodAppRef": "shop", "source": "Scheduled"}),
        )
        .await;
    recorded
        .set_status::<FoodAppBackup>(
            "older",
            json!({"phase": "Succeeded", "objectKey": "k0", "completedAt": "2026-11-19T03:00:00Z"}),
        )
        .await;
    recorded
        .api::<FoodApp>()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"backup": {"retention": {"keepLast": 1}}}})),
        )
        .await
        .unwrap();
    recorded.settle().await;
    assert!(
        recorded
            .api::<FoodAppBackup>()
            .get_opt("older")
            .await
            .unwrap()
            .is_none(),
        "retention deleted the older FoodAppBackup"
    );
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data-shop-db-0", "namespace": NS},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}}}))
    .unwrap();
    recorded
        .api::<PersistentVolumeClaim>()
        .create(&PostParams::default(), &pvc)
        .await
        .unwrap();
    recorded
        .api::<FoodApp>()
        .patch("shop", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"deletionPolicy": "Delete", "backup": null, "database": {"storage": {"size": "20Gi"}}}})))
        .await
        .unwrap();
    recorded.settle().await;
    // Deleted under deletionPolicy Delete: what the finalizer does.
    foodapp_operator::controller::finalize::cleanup(&recorded.app().await, &recorded.ctx)
        .await
        .unwrap();
    // A repeated event becomes a series: the recorder patches it.
    let app = recorded.app().await;
    for _ in 0..2 {
        recorded
            .ctx
            .event(
                &app,
                Reason::ApplyFailed,
                "Apply",
                "the same failure again".to_owned(),
            )
            .await;
    }
    // The real leader election, on the same recording client: create the
    // Lease, then renew it (a PATCH) as the leader does every few seconds.
    let lease =
        foodapp_operator::runner::lease_lock(recorded.client.clone(), LEASE_NS, "replica-a");
    for _ in 0..2 {
        assert!(matches!(
            lease.try_acquire_or_renew().await.unwrap(),
            kube_leader_election::LeaseLockResult::Acquired(_)
        ));
    }
    let other =
        foodapp_operator::runner::lease_lock(recorded.client.clone(), LEASE_NS, "replica-b");
    assert!(matches!(
        other.try_acquire_or_renew().await.unwrap(),
        kube_leader_election::LeaseLockResult::NotAcquired(_)
    ));

    // The test's own set-up calls went through the same client: only keep
    // what the controllers made, by dropping what the test itself did
    // (patching a FoodApp is both: the controller adds its finalizer).
    let made: BTreeSet<(String, String, String)> = calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(g, r, v)| {
            let test_only = matches!(
                (g.as_str(), r.as_str(), v.as_str()),
                (_, "persistentvolumeclaims" | "pods", "create")
                    | ("", "pods/status", "patch")
                    | ("postgresql.cnpg.io", "clusters/status", "patch")
                    | ("postgresql.cnpg.io", "backups", "create")
                    | ("postgresql.cnpg.io", "backups/status", "patch")
                    | ("barmancloud.cnpg.io", "objectstores/status", "patch")
                    | ("foodapp.io", "foodapprestores" | "foodappbackups", "create")
                    | (
                        "apps",
                        "deployments/status" | "statefulsets/status",
                        "patch"
                    )
                    | ("batch", "jobs/status", "patch")
            );
            !test_only
        })
        .cloned()
        .chain(upgrade_made)
        .collect();
    let lease_calls: BTreeSet<(String, String, String)> = made
        .iter()
        .filter(|(_, r, _)| r == "leases")
        .cloned()
        .collect();
    assert_eq!(
        lease_calls
            .iter()
            .map(|(_, _, v)| v.as_str())
            .collect::<Vec<_>>(),
        ["create", "get", "patch"],
        "the LeaseLock reads, creates and renews"
    );
    for (g, r, v) in &made {
        let (rules, which) = if r == "leases" {
            (
                foodapp_operator::rbac::LEADER_ELECTION_RULES,
                "leader-election Role",
            )
        } else {
            (foodapp_operator::rbac::RULES, "ClusterRole")
        };
        assert!(
            foodapp_operator::rbac::allows(rules, g, r, v),
            "the operator calls {v} {g}/{r}, which the {which} lacks"
        );
    }

    // Nothing more: each rule is a call made, a watch, or a right the
    // operator grants on to the backup agent, or runtime plumbing.
    let model = foodapp_operator::controller::validate::job_model(&h.app().await, AGENT).unwrap();
    let mut granted: Vec<(String, String, String)> = Vec::new();
    for rule in foodapp_operator::build::backup::role(&model).rules.unwrap() {
        for g in rule.api_groups.unwrap() {
            for r in rule.resources.clone().unwrap() {
                for v in &rule.verbs {
                    granted.push((g.clone(), r.clone(), v.clone()));
                }
            }
        }
    }
    // foodapps/finalizers update is checked by the API server when an
    // ownerReference with blockOwnerDeletion names a FoodApp (every child):
    // no request of ours shows it.
    let admission = [("foodapp.io", "foodapps/finalizers", "update")];
    let all = foodapp_operator::rbac::RULES
        .iter()
        .chain(foodapp_operator::rbac::LEADER_ELECTION_RULES);
    for (group, resources, verbs, _) in all {
        for r in *resources {
            for v in *verbs {
                let key = ((*group).to_owned(), (*r).to_owned(), (*v).to_owned());
                let watched = matches!(*v, "list" | "watch")
                    && foodapp_operator::rbac::WATCHED.contains(&(*group, *r));
                assert!(
                    made.contains(&key)
                        || watched
                        || granted.contains(&key)
                        || admission.contains(&(*group, *r, *v)),
                    "the rules grant {v} {group}/{r}, which nothing uses"
                );
            }
        }
    }
}

/// A Secret with these keys under `data`, as the API server stores it (the
/// fake one does not turn `stringData` into `data`).
fn secret_with(name: &str, values: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(NS.to_owned()),
            ..Default::default()
        },
        data: Some(
            values
                .iter()
                .map(|(k, v)| {
                    (
                        (*k).to_owned(),
                        k8s_openapi::ByteString(v.as_bytes().to_vec()),
                    )
                })
                .collect(),
        ),
        ..Default::default()
    }
}

/// CloudNativePG's part, done by hand: its Cluster `name` ready, with the
/// app login Secret it makes.
async fn cnpg_ready(h: &Harness, name: &str, password: &str) {
    h.set_status::<foodapp_operator::crd::foreign::Cluster>(
        name,
        json!({"instances": 3, "readyInstances": 3, "phase": "Cluster in healthy state"}),
    )
    .await;
    let secret = secret_with(
        &format!("{name}-app"),
        &[
            ("username", "foodapp"),
            ("password", password),
            ("dbname", "foodapp"),
        ],
    );
    h.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// The archive's recovery window in the tests: from FIRST_POINT, with a
/// base backup completed at BASE_BACKUP (both before the targets used).
const FIRST_POINT: &str = "2026-11-20T00:00:00Z";
const BASE_BACKUP: &str = "2026-11-20T01:00:00Z";

/// What the Barman Cloud Plugin and CloudNativePG report once Cluster
/// `cluster` archived and took a base backup: the recovery window of its
/// `serverName` in the ObjectStore's status (from `first`), and a completed
/// Backup (stopped at `stopped`).
async fn archived(h: &Harness, app: &str, cluster: &str, first: &str, stopped: &str) {
    let live = h
        .api::<foodapp_operator::crd::foreign::Cluster>()
        .get(cluster)
        .await
        .unwrap();
    let server = foodapp_operator::build::cnpg::live_server_name(&live);
    h.set_status::<foodapp_operator::crd::foreign::ObjectStore>(
        &format!("{app}-archive"),
        json!({"serverRecoveryWindow": {server: {"firstRecoverabilityPoint": first, "lastSuccessfulBackupTime": stopped}}}),
    )
    .await;
    let backup: foodapp_operator::crd::foreign::Backup = serde_json::from_value(json!({
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Backup",
        "metadata": {"name": format!("{cluster}-backup-1"), "namespace": NS},
        "spec": {"cluster": {"name": cluster}, "method": "plugin"},
    }))
    .unwrap();
    h.api::<foodapp_operator::crd::foreign::Backup>()
        .create(&PostParams::default(), &backup)
        .await
        .unwrap();
    h.set_status::<foodapp_operator::crd::foreign::Backup>(
        &format!("{cluster}-backup-1"),
        json!({"phase": "completed", "startedAt": first, "stoppedAt": stopped}),
    )
    .await;
}

/// A FoodApp on CloudNativePG with backups, reconciled once its
/// credentials exist; CloudNativePG itself has done nothing yet.
async fn cloudnativepg_with_backup() -> Harness {
    let mut spec = with_backup("spaces");
    spec["api"] = json!({"image": "registry.example/api:1"});
    spec["database"] = json!({"engine": "CloudNativePG"});
    let h = Harness::new(foodapp(spec), vec![]).await;
    credentials(&h).await;
    h.settle().await;
    h
}

fn database_url(secret: &Secret) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()["DATABASE_URL"].0.clone()).unwrap()
}

#[tokio::test]
async fn a_cloudnativepg_foodapp_waits_for_its_cluster_then_uses_its_app_login() {
    let h = cloudnativepg_with_backup().await;
    let (status, reason, message) = h.condition("DatabaseReady").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "Starting"),
        "{message}"
    );
    assert!(message.contains("shop-db"), "{message}");
    assert!(!h.exists::<StatefulSet>("shop-db").await);
    assert!(!h.exists::<CronJob>("shop-backup").await);
    assert!(
        !h.exists::<Job>(&names::migration_job(
            "shop",
            "registry.example/api:1",
            None
        ))
        .await,
        "no migration before the database is ready"
    );
    cnpg_ready(&h, "shop-db", "p@ss").await;
    h.settle().await;
    assert_eq!(h.condition("DatabaseReady").await.0, "True");
    let secret = h.api::<Secret>().get("shop-db-connection").await.unwrap();
    assert_eq!(
        database_url(&secret),
        "postgres://foodapp:p%40ss@shop-db-rw.food.svc:5432/foodapp?sslmode=require"
    );
    let job = h
        .api::<Job>()
        .get(&names::migration_job(
            "shop",
            "registry.example/api:1",
            None,
        ))
        .await
        .unwrap();
    let env = job.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    let url = env.iter().find(|e| e.name == "DATABASE_URL").unwrap();
    assert_eq!(
        url.value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap()
            .name,
        "shop-db-connection"
    );
}

#[tokio::test]
async fn an_external_foodapp_says_what_is_wrong_with_its_secret() {
    let mut spec = json!({"api": {"image": "registry.example/api:1"}});
    spec["database"] = json!({"engine": "External", "external": {"secretName": "managed"}});
    let h = Harness::new(foodapp(spec), vec![]).await;
    h.settle().await;
    let (status, reason, message) = h.condition("DatabaseReady").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "SecretInvalid")
    );
    assert!(
        message.contains("Secret managed") && message.contains("does not exist"),
        "{message}"
    );
    let secret = secret_with(
        "managed",
        &[
            ("host", "db.example.com"),
            ("port", "25060x"),
            ("database", "d"),
            ("user", "u"),
        ],
    );
    h.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    h.settle().await;
    let (_, reason, message) = h.condition("DatabaseReady").await;
    assert_eq!(reason, "SecretInvalid");
    assert!(message.contains("has no password"), "{message}");
    let put = |values: &'static [(&'static str, &'static str)]| {
        let api = h.api::<Secret>();
        async move {
            api.delete("managed", &DeleteParams::default())
                .await
                .unwrap();
            api.create(&PostParams::default(), &secret_with("managed", values))
                .await
                .unwrap();
        }
    };
    put(&[
        ("host", "db.example.com"),
        ("port", "25060x"),
        ("database", "d"),
        ("user", "u"),
        ("password", "pw"),
    ])
    .await;
    h.settle().await;
    let (_, _, message) = h.condition("DatabaseReady").await;
    assert!(
        message.contains("port \"25060x\" is not a TCP port"),
        "{message}"
    );
    put(&[
        ("host", "db.example.com"),
        ("port", "25060"),
        ("database", "d"),
        ("user", "u"),
        ("password", "pw"),
    ])
    .await;
    h.settle().await;
    assert_eq!(h.condition("DatabaseReady").await.0, "True");
    let url = database_url(&h.api::<Secret>().get("shop-db-connection").await.unwrap());
    assert_eq!(
        url,
        "postgres://u:pw@db.example.com:25060/d?sslmode=require"
    );
    assert!(!h.exists::<StatefulSet>("shop-db").await);
    assert!(
        !h.exists::<Secret>("shop-db").await,
        "no generated database password for a server the operator does not run"
    );
}

#[tokio::test]
async fn a_point_in_time_restore_recovers_a_new_cluster_and_switches_the_api_to_it() {
    let h = cloudnativepg_with_backup().await;
    cnpg_ready(&h, "shop-db", "old").await;
    h.settle().await;
    h.job_done("registry.example/api:1", "Complete", "").await;
    h.settle().await;
    h.deployments_available().await;
    h.settle().await;
    assert_eq!(h.condition("Ready").await.0, "True");
    archived(&h, "shop", "shop-db", FIRST_POINT, BASE_BACKUP).await;

    h.create::<FoodAppRestore>(
        "pitr",
        json!({"foodAppRef": "shop", "targetTime": "2026-11-22T09:30:00Z", "mode": "InPlace"}),
    )
    .await;
    restore_step(&h, "pitr").await;
    assert_eq!(restore_phase(&h, "pitr").await, "Restoring");
    h.settle().await;
    assert_eq!(h.api_replicas().await, Some(0), "the API is stopped first");
    restore_step(&h, "pitr").await;
    let uid = h
        .api::<FoodAppRestore>()
        .get("pitr")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let new = names::recovered_cluster("shop", &uid);
    let cluster = h
        .api::<foodapp_operator::crd::foreign::Cluster>()
        .get(&new)
        .await
        .expect("a new Cluster is recovered");
    let recovery = cluster.spec.bootstrap.clone().unwrap().recovery.unwrap();
    assert_eq!(
        recovery.recovery_target.unwrap().target_time.as_deref(),
        Some("2026-11-22T09:30:00Z")
    );
    let origin = cluster.spec.external_clusters[0].plugin.clone().unwrap();
    assert_eq!(
        origin.parameters["serverName"],
        foodapp_operator::build::cnpg::live_server_name(
            &h.api::<foodapp_operator::crd::foreign::Cluster>()
                .get("shop-db")
                .await
                .unwrap()
        ),
        "recovered from the archive of the Cluster in use"
    );
    // Not ready yet: nothing switches.
    restore_step(&h, "pitr").await;
    h.settle().await;
    assert!(
        database_url(&h.api::<Secret>().get("shop-db-connection").await.unwrap())
            .contains("@shop-db-rw.")
    );
    cnpg_ready(&h, &new, "new").await;
    restore_step(&h, "pitr").await;
    h.settle().await;
    let url = database_url(&h.api::<Secret>().get("shop-db-connection").await.unwrap());
    assert!(url.contains(&format!("@{new}-rw.")), "{url}");
    // The FoodApp's apply left the recovered Cluster's bootstrap alone.
    let cluster = h
        .api::<foodapp_operator::crd::foreign::Cluster>()
        .get(&new)
        .await
        .unwrap();
    assert!(cluster.spec.bootstrap.unwrap().recovery.is_some());
    // Base backups follow the Cluster in use: a ScheduledBackup of its own
    // (spec.cluster is immutable), the old Cluster's gone.
    let schedules = h.api::<foodapp_operator::crd::foreign::ScheduledBackup>();
    let sb = schedules.get(&format!("{new}-backup")).await.unwrap();
    assert_eq!(sb.spec.cluster.name, new);
    assert_eq!(sb.spec.immediate, Some(true), "a base backup at once");
    assert!(
        schedules.get_opt("shop-db-backup").await.unwrap().is_none(),
        "the replaced Cluster's schedule is gone"
    );
    // The migrations run on the recovered Cluster, then the API comes back.
    restore_step(&h, "pitr").await;
    h.set_status::<Job>("pitr-migrate", job_done_json("Complete"))
        .await;
    restore_step(&h, "pitr").await;
    assert_eq!(restore_phase(&h, "pitr").await, "Succeeded");
    h.settle().await;
    assert_eq!(h.api_replicas().await, Some(2));
    assert!(
        h.api::<foodapp_operator::crd::foreign::Cluster>()
            .get_opt("shop-db")
            .await
            .unwrap()
            .is_some(),
        "the Cluster used before is kept"
    );
}

#[tokio::test]
async fn a_point_in_time_restore_needs_cloudnativepg() {
    let h = ready_with_backup().await;
    h.create::<FoodAppRestore>(
        "pitr",
        json!({"foodAppRef": "shop", "targetTime": "2026-11-22T09:30:00Z"}),
    )
    .await;
    restore_step(&h, "pitr").await;
    assert_eq!(restore_phase(&h, "pitr").await, "Failed");
    let r = h.api::<FoodAppRestore>().get("pitr").await.unwrap();
    assert!(
        r.status
            .unwrap()
            .error
            .unwrap()
            .contains("needs database.engine CloudNativePG")
    );
    assert_eq!(h.api_replicas().await, Some(2), "nothing was stopped");
}

/// A pod of a restore's Job that ended with `message` as its termination
/// message (what the agent reports).
async fn finished_agent_pod(h: &Harness, job: &str, message: Value) {
    labelled_pod(
        h,
        &format!("{job}-pod"),
        json!({"batch.kubernetes.io/job-name": job}),
    )
    .await;
    h.set_status::<Pod>(
        &format!("{job}-pod"),
        json!({"containerStatuses": [{"name": "agent", "image": AGENT, "imageID": "", "ready": false,
            "restartCount": 0, "state": {"terminated": {"exitCode": 0, "message": message.to_string()}}}]}),
    )
    .await;
}

fn owner_kind(meta: &kube::api::ObjectMeta) -> String {
    meta.owner_references
        .as_ref()
        .and_then(|o| o.first())
        .map(|o| o.kind.clone())
        .unwrap_or_default()
}

async fn restore_status(h: &Harness, name: &str) -> foodapp_operator::crd::FoodAppRestoreStatus {
    h.api::<FoodAppRestore>()
        .get(name)
        .await
        .unwrap()
        .status
        .unwrap_or_default()
}

/// Drives a Beside restore `name` of the built-in database from its
/// second database's start to the switch; returns that database's name.
async fn beside_until_switch(h: &Harness, name: &str) -> String {
    restore_step(h, name).await;
    assert_eq!(restore_phase(h, name).await, "Restoring");
    let db = restore_status(h, name).await.database.unwrap();
    let sts = h
        .api::<StatefulSet>()
        .get(&db)
        .await
        .expect("a second StatefulSet");
    assert_eq!(owner_kind(&sts.metadata), "FoodAppRestore");
    // Its server starts; its claim goes with the restore.
    h.api::<PersistentVolumeClaim>()
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": format!("data-{db}-0"), "namespace": NS},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}}}))
            .unwrap(),
        )
        .await
        .unwrap();
    h.set_status::<StatefulSet>(&db, json!({"replicas": 1, "readyReplicas": 1}))
        .await;
    restore_step(h, name).await;
    let claim = h
        .api::<PersistentVolumeClaim>()
        .get(&format!("data-{db}-0"))
        .await
        .unwrap();
    assert_eq!(owner_kind(&claim.metadata), "FoodAppRestore");
    let job = h
        .api::<Job>()
        .get(&format!("{name}-restore"))
        .await
        .unwrap();
    let env = job.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    let url = env.iter().find(|e| e.name == "DATABASE_URL").unwrap();
    assert_eq!(
        url.value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap()
            .key,
        "TARGET_DATABASE_URL",
        "the restore goes into the second database"
    );
    let targets = h
        .api::<Secret>()
        .get(&format!("{name}-restore-db"))
        .await
        .unwrap();
    // The fake API server keeps stringData as it was sent.
    let target_url = targets.string_data.unwrap()["TARGET_DATABASE_URL"].clone();
    assert!(
        target_url.contains(&format!("@{db}-0.shop-db-hl.")),
        "{target_url}"
    );
    h.set_status::<Job>(&format!("{name}-restore"), job_done_json("Complete"))
        .await;
    finished_agent_pod(
        h,
        &format!("{name}-restore"),
        json!({"objectKey": "backups/food/shop/20261201T030000000Z.dump", "sizeBytes": 1, "sha256": "x", "restored": true, "verified": true}),
    )
    .await;
    restore_step(h, name).await;
    assert_eq!(restore_phase(h, name).await, "Migrating");
    h.set_status::<Job>(&format!("{name}-migrate"), job_done_json("Complete"))
        .await;
    restore_step(h, name).await;
    assert_eq!(restore_phase(h, name).await, "Switching");
    db
}

#[tokio::test]
async fn a_beside_restore_keeps_the_shop_serving_and_switches_in_one_step() {
    let h = ready_with_backup().await;
    h.create::<FoodAppRestore>("r1", json!({"foodAppRef": "shop", "latest": true}))
        .await;
    let db = beside_until_switch(&h, "r1").await;
    h.settle().await;
    assert_eq!(h.api_replicas().await, Some(2), "the API never stops");
    assert_eq!(h.phase().await, "Ready", "the shop serves throughout");
    let switch = h.api::<Job>().get("r1-switch").await.unwrap();
    let c = &switch.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(c.args.as_deref(), Some(&["switch".to_owned()][..]));
    let discard = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "DISCARD_KEY")
        .unwrap();
    assert_eq!(
        discard.value.as_deref(),
        Some("backups/food/shop/20261201T030000000Z.dump.discarded.jsonl"),
        "the export goes next to the dump"
    );

    // Until the agent paused writes, nothing switches.
    restore_step(&h, "r1").await;
    assert!(
        !h.app()
            .await
            .annotations()
            .contains_key("foodapp.io/database-cluster")
    );
    h.set_status::<Job>("r1-switch", json!({"ready": 1})).await;
    restore_step(&h, "r1").await;
    assert_eq!(
        h.app().await.annotations()["foodapp.io/database-cluster"],
        db,
        "the FoodApp uses the restored database"
    );
    let service = h.api::<Service>().get("shop-db").await.unwrap();
    assert_eq!(
        service.spec.unwrap().selector.unwrap()["statefulset.kubernetes.io/pod-name"],
        format!("{db}-0"),
        "the database Service reaches the restored server at once"
    );
    let sts = h.api::<StatefulSet>().get(&db).await.unwrap();
    assert_eq!(
        owner_kind(&sts.metadata),
        "FoodApp",
        "the database in use is the FoodApp's"
    );
    let secret = h.api::<Secret>().get("shop-api").await.unwrap();
    assert_eq!(
        secret.annotations()["foodapp.io/database-cluster"],
        db,
        "recorded where it survives the FoodApp (Retain)"
    );

    // The agent reports the pause and what was discarded.
    h.set_status::<Job>("r1-switch", job_done_json("Complete"))
        .await;
    finished_agent_pod(
        &h,
        "r1-switch",
        json!({"discarded": {"orders": 3, "orderEvents": 1, "refunds": 0, "users": 1,
               "objectKey": "backups/food/shop/20261201T030000000Z.dump.discarded.jsonl"},
               "refused": false, "pausedAt": "2026-12-02T05:00:00.000Z",
               "resumedAt": "2026-12-02T05:00:01.200Z", "writePauseSeconds": 1.2}),
    )
    .await;
    restore_step(&h, "r1").await;
    assert_eq!(restore_phase(&h, "r1").await, "Succeeded");
    let s = restore_status(&h, "r1").await;
    assert_eq!(s.discarded.as_ref().unwrap().orders, 3);
    assert_eq!(s.write_pause_seconds, Some(1.2));
    let previous = s.previous.unwrap();
    assert_eq!(previous.name, "shop-db");
    let old = h.api::<StatefulSet>().get("shop-db").await.unwrap();
    assert_eq!(
        old.spec.as_ref().unwrap().replicas,
        Some(0),
        "kept, scaled to zero"
    );
    assert_eq!(
        owner_kind(&old.metadata),
        "FoodAppRestore",
        "gone with the restore"
    );
    assert!(
        !h.app()
            .await
            .annotations()
            .contains_key("foodapp.io/restore")
    );

    // The FoodApp now runs on the restored database, and rolls its API onto it.
    h.settle().await;
    let api = h.api::<Deployment>().get("shop-api").await.unwrap();
    let template = api.spec.unwrap().template.metadata.unwrap();
    assert_eq!(template.annotations.unwrap()["foodapp.io/database"], db);
    assert!(
        h.api::<StatefulSet>()
            .get("shop-db")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas
            == Some(0),
        "the FoodApp leaves the kept database alone"
    );

    // Undo: switch back the same way.
    h.create::<FoodAppRestore>("undo", json!({"foodAppRef": "shop", "revert": "r1"}))
        .await;
    restore_step(&h, "undo").await;
    assert_eq!(
        restore_status(&h, "undo").await.database.as_deref(),
        Some("shop-db")
    );
    let old = h.api::<StatefulSet>().get("shop-db").await.unwrap();
    assert_eq!(old.spec.as_ref().unwrap().replicas, Some(1), "woken up");
    h.set_status::<StatefulSet>("shop-db", json!({"replicas": 1, "readyReplicas": 1}))
        .await;
    restore_step(&h, "undo").await;
    // The switch left it read-only: it takes writes again first.
    let writable = h.api::<Job>().get("undo-restore").await.unwrap();
    assert_eq!(
        writable.spec.unwrap().template.spec.unwrap().containers[0].args,
        Some(vec!["switch".to_owned(), "--writable".to_owned()])
    );
    h.set_status::<Job>("undo-restore", job_done_json("Complete"))
        .await;
    restore_step(&h, "undo").await;
    assert_eq!(restore_phase(&h, "undo").await, "Migrating");
    h.set_status::<Job>("undo-migrate", job_done_json("Complete"))
        .await;
    restore_step(&h, "undo").await;
    h.set_status::<Job>("undo-switch", json!({"ready": 1}))
        .await;
    restore_step(&h, "undo").await;
    assert!(
        !h.app()
            .await
            .annotations()
            .contains_key("foodapp.io/database-cluster"),
        "back on shop-db"
    );
    h.set_status::<Job>("undo-switch", job_done_json("Complete"))
        .await;
    restore_step(&h, "undo").await;
    assert_eq!(restore_phase(&h, "undo").await, "Succeeded");
    assert_eq!(restore_phase(&h, "r1").await, "Reverted");
    let restored = h.api::<StatefulSet>().get(&db).await.unwrap();
    assert_eq!(restored.spec.unwrap().replicas, Some(0));
    assert_eq!(owner_kind(&restored.metadata), "FoodAppRestore");
    h.settle().await;
    let service = h.api::<Service>().get("shop-db").await.unwrap();
    assert_eq!(
        service.spec.unwrap().selector.unwrap()["statefulset.kubernetes.io/pod-name"],
        "shop-db-0"
    );
}

#[tokio::test]
async fn require_no_discard_stops_before_the_switch_until_the_discard_is_accepted() {
    let h = ready_with_backup().await;
    h.create::<FoodAppRestore>(
        "r1",
        json!({"foodAppRef": "shop", "latest": true, "requireNoDiscard": true}),
    )
    .await;
    let db = beside_until_switch(&h, "r1").await;
    h.set_status::<Job>("r1-switch", job_done_json("Complete"))
        .await;
    finished_agent_pod(
        &h,
        "r1-switch",
        json!({"discarded": {"orders": 2, "orderEvents": 0, "refunds": 0, "users": 0}, "refused": true}),
    )
    .await;
    restore_step(&h, "r1").await;
    assert_eq!(
        restore_phase(&h, "r1").await,
        "Switching",
        "waiting for a decision"
    );
    let s = restore_status(&h, "r1").await;
    let c = s.conditions.iter().find(|c| c.type_ == "Switched").unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "WouldDiscard")
    );
    assert!(c.message.contains("2 orders"), "{}", c.message);
    assert!(
        !h.app()
            .await
            .annotations()
            .contains_key("foodapp.io/database-cluster")
    );
    assert!(
        h.exists::<StatefulSet>(&db).await,
        "the prepared database stays"
    );

    // Accepted: a switch without the condition runs.
    h.api::<FoodAppRestore>()
        .patch(
            "r1",
            &PatchParams::default(),
            &Patch::Merge(
                &json!({"metadata": {"annotations": {"foodapp.io/accept-discard": "true"}}}),
            ),
        )
        .await
        .unwrap();
    restore_step(&h, "r1").await;
    let accept = h.api::<Job>().get("r1-accept").await.unwrap();
    let env = accept.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    assert!(
        env.iter()
            .any(|e| e.name == "REQUIRE_NO_DISCARD" && e.value.as_deref() == Some("false"))
    );
}

#[tokio::test]
async fn a_failed_switch_gives_the_writes_back_and_the_shop_stays_on_its_database() {
    let h = ready_with_backup().await;
    h.create::<FoodAppRestore>("r1", json!({"foodAppRef": "shop", "latest": true}))
        .await;
    beside_until_switch(&h, "r1").await;
    h.set_status::<Job>("r1-switch", job_done_json("Failed"))
        .await;
    restore_step(&h, "r1").await;
    let resume = h.api::<Job>().get("r1-resume").await.expect("a resume Job");
    let args = resume.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone();
    assert_eq!(args, Some(vec!["switch".to_owned(), "--resume".to_owned()]));
    assert_eq!(restore_phase(&h, "r1").await, "Switching");
    h.set_status::<Job>("r1-resume", job_done_json("Complete"))
        .await;
    restore_step(&h, "r1").await;
    assert_eq!(restore_phase(&h, "r1").await, "Failed");
    assert!(
        !h.app()
            .await
            .annotations()
            .contains_key("foodapp.io/database-cluster")
    );
    assert!(
        !h.app()
            .await
            .annotations()
            .contains_key("foodapp.io/restore")
    );
    h.settle().await;
    let service = h.api::<Service>().get("shop-db").await.unwrap();
    assert_eq!(
        service.spec.unwrap().selector.unwrap()["statefulset.kubernetes.io/pod-name"],
        "shop-db-0"
    );
}

#[tokio::test]
async fn a_foreign_job_under_a_restores_name_is_never_taken_for_its_own() {
    let h = ready_with_backup().await;
    // Someone made the restore's Job first.
    let job: Job = serde_json::from_value(json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "r1-restore", "namespace": NS},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}}))
    .unwrap();
    h.api::<Job>()
        .create(&PostParams::default(), &job)
        .await
        .unwrap();
    h.set_status::<Job>("r1-restore", job_done_json("Complete"))
        .await;
    h.create::<FoodAppRestore>("r1", json!({"foodAppRef": "shop", "latest": true}))
        .await;
    restore_step(&h, "r1").await;
    let db = restore_status(&h, "r1").await.database.unwrap();
    h.set_status::<StatefulSet>(&db, json!({"replicas": 1, "readyReplicas": 1}))
        .await;
    restore_step(&h, "r1").await;
    assert_eq!(restore_phase(&h, "r1").await, "Failed");
    let error = restore_status(&h, "r1").await.error.unwrap();
    assert!(error.contains("not this restore's"), "{error}");
}

#[tokio::test]
async fn a_second_database_beyond_the_quota_is_refused_before_anything_changes() {
    let h = ready_with_backup().await;
    let quota: k8s_openapi::api::core::v1::ResourceQuota = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "storage", "namespace": NS},
        "spec": {"hard": {"requests.storage": "15Gi"}}}))
    .unwrap();
    h.api::<k8s_openapi::api::core::v1::ResourceQuota>()
        .create(&PostParams::default(), &quota)
        .await
        .unwrap();
    h.set_status::<k8s_openapi::api::core::v1::ResourceQuota>(
        "storage",
        json!({"hard": {"requests.storage": "15Gi"}, "used": {"requests.storage": "10Gi"}}),
    )
    .await;
    h.create::<FoodAppRestore>("r1", json!({"foodAppRef": "shop", "latest": true}))
        .await;
    restore_step(&h, "r1").await;
    assert_eq!(restore_phase(&h, "r1").await, "Failed");
    let s = restore_status(&h, "r1").await;
    let c = s.conditions.iter().find(|c| c.type_ == "Complete").unwrap();
    assert_eq!(c.reason, "InsufficientQuota");
    assert!(c.message.contains("mode InPlace"), "{}", c.message);
    let sets = h
        .api::<StatefulSet>()
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(sets.items.len(), 1, "no second database");
}

#[tokio::test]
async fn a_foodapp_recreated_under_retain_finds_the_database_a_restore_switched_to() {
    let h = ready_with_backup().await;
    let secret = h.api::<Secret>().get("shop-api").await.unwrap();
    h.api::<Secret>()
        .patch(
            &secret.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {"foodapp.io/database-cluster": "shop-db-abc123"}}})),
        )
        .await
        .unwrap();
    h.settle().await;
    assert_eq!(
        h.app().await.annotations()["foodapp.io/database-cluster"],
        "shop-db-abc123"
    );
    assert!(
        h.exists::<StatefulSet>("shop-db-abc123").await,
        "the data's StatefulSet is the one applied"
    );
}

#[tokio::test]
async fn the_switch_leaves_the_restored_database_running_as_it_is() {
    let h = ready_with_backup().await;
    h.create::<FoodAppRestore>("r1", json!({"foodAppRef": "shop", "latest": true}))
        .await;
    let db = beside_until_switch(&h, "r1").await;
    let template = |s: StatefulSet| s.spec.unwrap().template;
    let before = template(h.api::<StatefulSet>().get(&db).await.unwrap());
    h.set_status::<Job>("r1-switch", json!({"ready": 1})).await;
    restore_step(&h, "r1").await;
    h.settle().await;
    let after = template(h.api::<StatefulSet>().get(&db).await.unwrap());
    assert_eq!(
        before, after,
        "the FoodApp's apply changes nothing in the pods of the database it switched to (a change restarts it)"
    );
}

#[tokio::test]
async fn a_point_in_time_restore_beside_keeps_the_api_on_the_old_cluster_until_the_switch() {
    let h = cloudnativepg_with_backup().await;
    cnpg_ready(&h, "shop-db", "old").await;
    h.settle().await;
    h.job_done("registry.example/api:1", "Complete", "").await;
    h.settle().await;
    h.deployments_available().await;
    h.settle().await;
    archived(&h, "shop", "shop-db", FIRST_POINT, BASE_BACKUP).await;
    h.create::<FoodAppRestore>(
        "pitr",
        json!({"foodAppRef": "shop", "targetTime": "2026-11-22T09:30:00Z", "keepPrevious": false}),
    )
    .await;
    restore_step(&h, "pitr").await;
    assert_eq!(restore_phase(&h, "pitr").await, "Restoring");
    let new = restore_status(&h, "pitr").await.database.unwrap();
    let cluster = h
        .api::<foodapp_operator::crd::foreign::Cluster>()
        .get(&new)
        .await
        .expect("a recovered Cluster beside the old one");
    assert_eq!(owner_kind(&cluster.metadata), "FoodAppRestore");
    h.settle().await;
    assert_eq!(
        h.api_replicas().await,
        Some(2),
        "the API keeps serving from the old Cluster"
    );
    cnpg_ready(&h, &new, "new").await;
    restore_step(&h, "pitr").await;
    assert_eq!(restore_phase(&h, "pitr").await, "Migrating");
    let targets = h.api::<Secret>().get("pitr-restore-db").await.unwrap();
    let urls = targets.string_data.unwrap();
    assert!(urls["TARGET_DATABASE_URL"].contains(&format!("@{new}-rw.")));
    assert!(urls["LIVE_DATABASE_URL"].contains("@shop-db-rw."));
    h.set_status::<Job>("pitr-migrate", job_done_json("Complete"))
        .await;
    restore_step(&h, "pitr").await;
    assert_eq!(restore_phase(&h, "pitr").await, "Switching");
    h.set_status::<Job>("pitr-switch", json!({"ready": 1}))
        .await;
    restore_step(&h, "pitr").await;
    assert_eq!(
        h.app().await.annotations()["foodapp.io/database-cluster"],
        new
    );
    let cluster = h
        .api::<foodapp_operator::crd::foreign::Cluster>()
        .get(&new)
        .await
        .unwrap();
    assert_eq!(
        owner_kind(&cluster.metadata),
        "",
        "the Cluster in use holds the data: under Retain owned by nothing (not the restore)"
    );
    h.set_status::<Job>("pitr-switch", job_done_json("Complete"))
        .await;
    // Writes resume once the API has rolled onto the new connection.
    h.settle().await;
    restore_step(&h, "pitr").await;
    assert_eq!(
        restore_phase(&h, "pitr").await,
        "Switching",
        "the API is still rolling"
    );
    api_rolled(&h).await;
    restore_step(&h, "pitr").await;
    assert_eq!(
        restore_phase(&h, "pitr").await,
        "Succeeded",
        "{:?}",
        restore_status(&h, "pitr").await
    );
    assert!(
        !h.exists::<foodapp_operator::crd::foreign::Cluster>("shop-db")
            .await,
        "keepPrevious: false deletes the Cluster replaced"
    );
    let url = database_url(&h.api::<Secret>().get("shop-db-connection").await.unwrap());
    assert!(url.contains(&format!("@{new}-rw.")), "{url}");
}

/// One reconcile of FoodApp `name` until it writes nothing.
async fn settle_app(h: &Harness, name: &str) {
    for _ in 0..5 {
        let before = h.writes.load(Ordering::SeqCst);
        let app = h.api::<FoodApp>().get(name).await.unwrap();
        controller::reconcile(Arc::new(app), h.ctx.clone())
            .await
            .unwrap();
        if h.writes.load(Ordering::SeqCst) == before {
            return;
        }
    }
    panic!("FoodApp {name} never settled");
}

fn env_of(job: &Job) -> Vec<k8s_openapi::api::core::v1::EnvVar> {
    job.spec.clone().unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap()
}

fn env_value(job: &Job, name: &str) -> String {
    let e = env_of(job).into_iter().find(|e| e.name == name);
    let e = e.unwrap_or_else(|| panic!("{name} is not set"));
    match (e.value, e.value_from) {
        (Some(v), _) => v,
        (None, Some(from)) => {
            let k = from.secret_key_ref.unwrap();
            format!("secret:{}/{}", k.name, k.key)
        }
        _ => String::new(),
    }
}

/// Everything of the source a clone must leave alone.
async fn source_state(h: &Harness) -> Value {
    let app = h.app().await;
    let api = h.api::<Deployment>().get("shop-api").await.unwrap();
    json!({
        "annotations": app.metadata.annotations,
        "spec": app.spec,
        "api": api.spec,
        "cronjob": h.api::<CronJob>().get("shop-backup").await.unwrap().spec,
    })
}

#[tokio::test]
async fn a_clone_goes_into_a_new_foodapp_made_from_the_source_and_leaves_the_source_untouched() {
    let h = ready_with_backup().await;
    let before = source_state(&h).await;
    h.create::<FoodAppRestore>(
        "c1",
        json!({"foodAppRef": "shop", "latest": true,
               "target": {"foodApp": "staging", "anonymize": true}}),
    )
    .await;
    restore_step(&h, "c1").await;
    // Made from the source's spec, without its backups, marked.
    let staging = h.api::<FoodApp>().get("staging").await.unwrap();
    let source = h.app().await;
    assert!(staging.spec.backup.is_none());
    assert_eq!(staging.spec.api, source.spec.api);
    assert_eq!(staging.spec.database, source.spec.database);
    let a = staging.annotations();
    assert_eq!(a["foodapp.io/cloned-from"], "food/shop");
    assert_eq!(a["foodapp.io/cloned-by"], "c1");
    assert_eq!(
        (
            a["foodapp.io/restore"].as_str(),
            a["foodapp.io/api-stopped"].as_str()
        ),
        ("c1", "true"),
        "held from its creation: nothing runs on the empty database first"
    );
    assert_eq!(
        staging.owner_references()[0].name,
        "c1",
        "a restore deleted mid-way removes the clone it made"
    );
    // The fake API server cannot add a first finalizer (see OTHER_FINALIZER).
    h.api::<FoodApp>()
        .patch(
            "staging",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"finalizers": [OTHER_FINALIZER]}})),
        )
        .await
        .unwrap();
    restore_step(&h, "c1").await;
    assert_eq!(restore_phase(&h, "c1").await, "Restoring");
    let staging = h.api::<FoodApp>().get("staging").await.unwrap();
    assert_eq!(staging.annotations()["foodapp.io/restore"], "c1");
    assert_eq!(staging.annotations()["foodapp.io/api-stopped"], "true");

    // Its database is not up yet: the restore waits for it.
    settle_app(&h, "staging").await;
    restore_step(&h, "c1").await;
    assert!(!h.exists::<Job>("c1-restore").await);
    let status = restore_status(&h, "c1").await;
    let waiting = status
        .conditions
        .iter()
        .find(|c| c.type_ == "DatabaseReady")
        .unwrap();
    assert!(waiting.message.contains("staging"), "{}", waiting.message);
    h.set_status::<StatefulSet>("staging-db", json!({"replicas": 1, "readyReplicas": 1}))
        .await;
    settle_app(&h, "staging").await;
    restore_step(&h, "c1").await;

    // The restore reads the source's backups and writes the clone's database.
    let job = h.api::<Job>().get("c1-restore").await.unwrap();
    assert_eq!(env_value(&job, "FOODAPP_NAME"), "shop");
    assert_eq!(
        env_value(&job, "DATABASE_URL"),
        "secret:staging-db/DATABASE_URL"
    );
    assert_eq!(env_value(&job, "S3_BUCKET"), "shop-backups");
    assert_eq!(env_value(&job, "CLONE"), "true");
    assert_eq!(env_value(&job, "ANONYMIZE"), "true");
    assert_eq!(env_value(&job, "CHECK_COUNTS"), "true");
    assert_eq!(
        env_value(&job, "CLONE_ADMIN_EMAIL"),
        "secret:staging-admin/email"
    );
    assert_eq!(
        env_value(&job, "CLONE_ADMIN_PASSWORD"),
        "secret:staging-admin/password"
    );
    let pod = job.spec.clone().unwrap().template.spec.unwrap();
    assert_eq!(
        (
            pod.service_account_name,
            pod.automount_service_account_token
        ),
        (None, Some(false)),
        "a clone without backups has no backup ServiceAccount; the restore needs no token"
    );
    let labels = job
        .spec
        .clone()
        .unwrap()
        .template
        .metadata
        .unwrap()
        .labels
        .unwrap();
    assert_eq!(
        labels["app.kubernetes.io/instance"], "staging",
        "the clone's database admits it"
    );
    h.set_status::<Job>("c1-restore", job_done_json("Complete"))
        .await;
    restore_step(&h, "c1").await;
    assert_eq!(restore_phase(&h, "c1").await, "Migrating");
    let migrate = h.api::<Job>().get("c1-migrate").await.unwrap();
    assert_eq!(
        env_value(&migrate, "DATABASE_URL"),
        "secret:staging-db/DATABASE_URL"
    );
    h.set_status::<Job>("c1-migrate", job_done_json("Complete"))
        .await;
    restore_step(&h, "c1").await;
    assert_eq!(restore_phase(&h, "c1").await, "Succeeded");
    let staging = h.api::<FoodApp>().get("staging").await.unwrap();
    assert!(!staging.annotations().contains_key("foodapp.io/restore"));
    assert!(!staging.annotations().contains_key("foodapp.io/api-stopped"));
    assert!(
        staging.owner_references().is_empty(),
        "a finished clone outlives its restore"
    );

    // Nothing of the source changed, before, during or after.
    h.settle().await;
    assert_eq!(source_state(&h).await, before);
}

#[tokio::test]
async fn a_clone_moves_a_builtin_backup_into_an_existing_cloudnativepg_foodapp() {
    let h = ready_with_backup().await;
    let staging: FoodApp = serde_json::from_value(json!({
        "apiVersion": "foodapp.io/v1alpha1", "kind": "FoodApp",
        "metadata": {"name": "staging", "namespace": NS, "finalizers": [OTHER_FINALIZER]},
        "spec": {"api": {"image": "registry.example/api:1"},
                 "database": {"engine": "CloudNativePG"}},
    }))
    .unwrap();
    h.api::<FoodApp>()
        .create(&PostParams::default(), &staging)
        .await
        .unwrap();
    settle_app(&h, "staging").await;
    h.create::<FoodAppRestore>(
        "c2",
        json!({"foodAppRef": "shop", "latest": true, "target": {"foodApp": "staging"}}),
    )
    .await;
    restore_step(&h, "c2").await;
    assert_eq!(restore_phase(&h, "c2").await, "Restoring");
    let staging = h.api::<FoodApp>().get("staging").await.unwrap();
    assert_eq!(
        staging.spec.database.engine,
        foodapp_operator::crd::Engine::CloudNativePG,
        "an existing FoodApp is used as it is"
    );
    cnpg_ready(&h, "staging-db", "cnpg-pw").await;
    settle_app(&h, "staging").await;
    restore_step(&h, "c2").await;
    let job = h.api::<Job>().get("c2-restore").await.unwrap();
    assert_eq!(
        env_value(&job, "DATABASE_URL"),
        "secret:staging-db-connection/DATABASE_URL"
    );
    assert_eq!(env_value(&job, "ANONYMIZE"), "false");
    // The agent refuses a database with orders; the restore says so and
    // gives the clone its API back.
    h.set_status::<Job>("c2-restore", job_done_json("Failed"))
        .await;
    restore_step(&h, "c2").await;
    assert_eq!(restore_phase(&h, "c2").await, "Failed");
    let staging = h.api::<FoodApp>().get("staging").await.unwrap();
    assert!(!staging.annotations().contains_key("foodapp.io/restore"));
    assert!(
        h.app()
            .await
            .annotations()
            .get("foodapp.io/restore")
            .is_none(),
        "the source was never held"
    );
}

#[tokio::test]
async fn a_clone_into_a_foodapp_on_the_sources_external_database_is_refused() {
    let mut spec = with_backup("spaces");
    spec["api"] = json!({"image": "registry.example/api:1"});
    spec["database"] = json!({"engine": "External", "external": {"secretName": "managed"}});
    let managed = |name: &str, host: &str| {
        serde_json::to_value(secret_with(
            name,
            &[
                ("host", host),
                ("database", "shop"),
                ("user", "u"),
                ("password", "pw"),
            ],
        ))
        .unwrap()
    };
    let twin: Value = json!({
        "apiVersion": "foodapp.io/v1alpha1", "kind": "FoodApp",
        "metadata": {"name": "staging", "namespace": NS, "finalizers": [OTHER_FINALIZER]},
        "spec": {"api": {"image": "registry.example/api:1"},
                 "database": {"engine": "External", "external": {"secretName": "managed-copy"}}},
    });
    let h = Harness::new(
        foodapp(spec),
        vec![
            managed("managed", "db.example.com"),
            managed("managed-copy", "DB.example.com"),
            twin,
        ],
    )
    .await;
    credentials(&h).await;
    h.create::<FoodAppRestore>(
        "c3",
        json!({"foodAppRef": "shop", "latest": true, "target": {"foodApp": "staging"}}),
    )
    .await;
    restore_step(&h, "c3").await;
    assert_eq!(restore_phase(&h, "c3").await, "Failed");
    let error = restore_status(&h, "c3").await.error.unwrap();
    assert!(
        error.contains("uses the database of FoodApp shop"),
        "{error}"
    );
    // And a copy of an External FoodApp is never made.
    h.create::<FoodAppRestore>(
        "c4",
        json!({"foodAppRef": "shop", "latest": true, "target": {"foodApp": "other"}}),
    )
    .await;
    restore_step(&h, "c4").await;
    assert_eq!(restore_phase(&h, "c4").await, "Failed");
    assert!(!h.exists::<FoodApp>("other").await);
}

/// Makes a live workload look built by an older operator from the same
/// inputs: another image in its first container, another applied hash.
/// With `unrecorded`, as a release that wrote no inputs annotation.
async fn as_built_by_an_older_operator<K>(h: &Harness, name: &str, unrecorded: bool)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let mut live = serde_json::to_value(h.api::<K>().get(name).await.unwrap()).unwrap();
    live["spec"]["template"]["spec"]["containers"][0]["image"] = json!("older:1");
    let annotations = live["metadata"]["annotations"].as_object_mut().unwrap();
    annotations.insert("foodapp.io/applied-hash".into(), json!("older"));
    if unrecorded {
        annotations.remove("foodapp.io/inputs");
    }
    let obj: K = serde_json::from_value(live).unwrap();
    h.api::<K>()
        .replace(name, &PostParams::default(), &obj)
        .await
        .unwrap();
}

async fn first_image<K>(h: &Harness, name: &str) -> String
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let live = serde_json::to_value(h.api::<K>().get(name).await.unwrap()).unwrap();
    live["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn set_spec(h: &Harness, patch: Value) {
    h.api::<FoodApp>()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": patch })),
        )
        .await
        .unwrap();
}

/// A `daily` window that is open now (`open`) or opens in two hours.
fn window_now(open: bool) -> String {
    let now = chrono::Utc::now();
    let hm = |t: chrono::DateTime<chrono::Utc>| t.format("%H:%M").to_string();
    let (from, to) = if open {
        (
            now - chrono::Duration::hours(1),
            now + chrono::Duration::hours(1),
        )
    } else {
        (
            now + chrono::Duration::hours(2),
            now + chrono::Duration::hours(3),
        )
    };
    format!("daily {}-{}", hm(from), hm(to))
}

#[tokio::test]
async fn a_new_operators_pod_template_changes_wait_for_the_maintenance_window() {
    let h = Harness::ready("registry.example/api:1").await;
    as_built_by_an_older_operator::<StatefulSet>(&h, "shop-db", false).await;
    as_built_by_an_older_operator::<Deployment>(&h, "shop-api", false).await;
    as_built_by_an_older_operator::<Deployment>(&h, "shop-gateway", true).await;
    h.settle().await;
    assert_eq!(h.reconcile().await, 0, "held, and settled");
    for name in ["shop-api", "shop-gateway"] {
        assert_eq!(
            first_image::<Deployment>(&h, name).await,
            "older:1",
            "{name}"
        );
    }
    assert_eq!(first_image::<StatefulSet>(&h, "shop-db").await, "older:1");
    let (status, reason, message) = h.condition("RolloutPending").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "NoMaintenanceWindow")
    );
    assert!(message.contains("spec.maintenance.window"), "{message}");
    let pending = h.app().await.status.unwrap().pending_rollouts;
    let names: Vec<&str> = pending.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["shop-db", "shop-api", "shop-gateway"]);
    assert!(
        pending[0].changes[0].starts_with("spec.template.spec.containers[postgres].image"),
        "{:?}",
        pending[0].changes
    );
    assert_eq!(h.condition("Ready").await.0, "True", "held is not unready");

    // A user's change to the API rolls the API now, with whatever the new
    // operator changed in its template; the database stays held.
    set_spec(&h, json!({"api": {"image": "registry.example/api:1", "env": [{"name": "TZ", "value": "UTC"}]}})).await;
    h.settle().await;
    assert_eq!(
        first_image::<Deployment>(&h, "shop-api").await,
        "registry.example/api:1"
    );
    assert_eq!(first_image::<StatefulSet>(&h, "shop-db").await, "older:1");

    // Someone else's edit of a template the operator applied is drift,
    // corrected at once.
    let mut api = h.api::<Deployment>().get("shop-api").await.unwrap();
    api.spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0]
        .image = Some("edited:1".into());
    h.api::<Deployment>()
        .replace("shop-api", &PostParams::default(), &api)
        .await
        .unwrap();
    h.settle().await;
    assert_eq!(
        first_image::<Deployment>(&h, "shop-api").await,
        "registry.example/api:1"
    );

    // A window that is closed: still held, and the condition says when.
    set_spec(&h, json!({"maintenance": {"window": window_now(false)}})).await;
    h.settle().await;
    let (status, reason, message) = h.condition("RolloutPending").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "MaintenanceWindow")
    );
    assert!(message.contains("next at"), "{message}");
    assert_eq!(first_image::<StatefulSet>(&h, "shop-db").await, "older:1");

    // A time zone the operator does not know: the window never opens.
    set_spec(
        &h,
        json!({"maintenance": {"window": window_now(true), "timeZone": "Mars/Olympus"}}),
    )
    .await;
    h.settle().await;
    let (_, reason, message) = h.condition("RolloutPending").await;
    assert_eq!(reason, "InvalidMaintenanceWindow");
    assert!(message.contains("Mars/Olympus"), "{message}");
    assert_eq!(first_image::<StatefulSet>(&h, "shop-db").await, "older:1");

    // The window opens: everything rolls.
    set_spec(
        &h,
        json!({"maintenance": {"window": window_now(true), "timeZone": "UTC"}}),
    )
    .await;
    h.settle().await;
    assert_eq!(
        first_image::<StatefulSet>(&h, "shop-db").await,
        "postgres:16"
    );
    assert_ne!(
        first_image::<Deployment>(&h, "shop-gateway").await,
        "older:1"
    );
    let (status, reason, _) = h.condition("RolloutPending").await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "UpToDate"));
    // status.pendingRollouts is left out of the status apply now; the fake
    // API merges applies instead of pruning, so only make e2e sees it go.
    assert_eq!(h.reconcile().await, 0);
}

#[tokio::test]
async fn apply_immediately_rolls_a_new_operators_changes_at_once() {
    let h = Harness::ready("registry.example/api:1").await;
    as_built_by_an_older_operator::<Deployment>(&h, "shop-gateway", false).await;
    h.settle().await;
    assert_eq!(
        first_image::<Deployment>(&h, "shop-gateway").await,
        "older:1"
    );
    set_spec(&h, json!({"maintenance": {"applyImmediately": true}})).await;
    h.settle().await;
    assert_eq!(
        first_image::<Deployment>(&h, "shop-gateway").await,
        "nginx:1.27"
    );
    assert_eq!(h.condition("RolloutPending").await.1, "UpToDate");
}

/// The FoodAppRestores in the namespace.
async fn restores(h: &Harness) -> usize {
    h.api::<FoodAppRestore>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .len()
}

/// The Jobs a PostgreSQL upgrade ran itself (pausing, giving back writes).
async fn upgrade_jobs(h: &Harness) -> Vec<Job> {
    h.api::<Job>()
        .list(&ListParams::default().labels("foodapp.io/upgrade"))
        .await
        .unwrap()
        .items
}

fn args(job: &Job) -> Vec<String> {
    job.spec.clone().unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap()
}

/// The database pod, its `prepare` step having reported the data's major.
async fn database_pod(h: &Harness, statefulset: &str, major: u32) {
    let name = format!("{statefulset}-0");
    labelled_pod(
        h,
        &name,
        json!({"app.kubernetes.io/instance": "shop", "app.kubernetes.io/component": "database",
               "statefulset.kubernetes.io/pod-name": name}),
    )
    .await;
    h.set_status::<Pod>(
        &name,
        json!({"initContainerStatuses": [{"name": "prepare", "image": "postgres", "imageID": "", "ready": true,
            "restartCount": 0, "state": {"terminated": {"exitCode": 0, "message": format!("PG_VERSION={major}\n")}}}]}),
    )
    .await;
}

async fn database_image(h: &Harness, statefulset: &str) -> (String, Option<i32>) {
    let s = h.api::<StatefulSet>().get(statefulset).await.unwrap();
    let spec = s.spec.unwrap();
    (
        spec.template.spec.unwrap().containers[0]
            .image
            .clone()
            .unwrap(),
        spec.replicas,
    )
}

async fn set_database(h: &Harness, database: Value) {
    set_spec(h, json!({ "database": database })).await;
    h.settle().await;
}

async fn warned(h: &Harness, reason: &str) -> bool {
    h.api::<k8s_openapi::api::events::v1::Event>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .any(|e| e.reason.as_deref() == Some(reason) && e.type_.as_deref() == Some("Warning"))
}

fn upgrade_status(app: &FoodApp) -> foodapp_operator::crd::DatabaseUpgradeStatus {
    app.status.clone().unwrap().database_upgrade.unwrap()
}

#[tokio::test]
async fn a_new_major_never_starts_on_old_data_and_an_older_or_unknown_one_is_refused() {
    let h = ready_with_backup().await;
    database_pod(&h, "shop-db", 16).await;
    h.settle().await;
    let status = h.app().await.status.unwrap();
    assert_eq!(status.database_major, Some(16));
    assert_eq!(status.database_image.as_deref(), Some("postgres:16"));
    let (ok, reason, _) = h.condition("DatabaseUpgrade").await;
    assert_eq!((ok.as_str(), reason.as_str()), ("True", "UpToDate"));

    // Older: refused, the database untouched, the shop still Ready.
    set_database(&h, json!({"image": "postgres:15"})).await;
    assert_eq!(database_image(&h, "shop-db").await.0, "postgres:16");
    let (ok, reason, message) = h.condition("DatabaseUpgrade").await;
    assert_eq!(
        (ok.as_str(), reason.as_str()),
        ("False", "DowngradeRefused")
    );
    assert!(
        message.contains("PostgreSQL 15 and the data is PostgreSQL 16"),
        "{message}"
    );
    assert!(warned(&h, "DowngradeRefused").await);
    assert_eq!(h.condition("Ready").await.0, "True");
    assert_eq!(
        h.app().await.status.unwrap().database_image.as_deref(),
        Some("postgres:16")
    );

    // A tag that does not tell the major: refused the same way.
    set_database(&h, json!({"image": "postgres:latest"})).await;
    assert_eq!(database_image(&h, "shop-db").await.0, "postgres:16");
    assert_eq!(h.condition("DatabaseUpgrade").await.1, "UnknownImageMajor");
    assert!(warned(&h, "UnknownImageMajor").await);

    // A minor release of the data's major rolls at once.
    set_database(&h, json!({"image": "postgres:16.4-bookworm"})).await;
    assert_eq!(
        database_image(&h, "shop-db").await.0,
        "postgres:16.4-bookworm"
    );
    assert_eq!(h.condition("DatabaseUpgrade").await.1, "UpToDate");

    // A newer major: a verified backup first, the database kept meanwhile.
    set_database(&h, json!({"image": "postgres:18"})).await;
    assert_eq!(
        database_image(&h, "shop-db").await.0,
        "postgres:16.4-bookworm"
    );
    assert_eq!(h.phase().await, "Upgrading");
    let up = upgrade_status(&h.app().await);
    assert_eq!(
        (up.from, up.to, up.phase),
        (16, 18, foodapp_operator::crd::UpgradePhase::PausingWrites)
    );
    // The live database's writes pause first (reads go on): its backup
    // then holds every order.
    let pause = upgrade_jobs(&h).await;
    assert_eq!(pause.len(), 1);
    let pause_name = pause[0].name_any();
    assert_eq!(args(&pause[0]), ["switch", "--read-only"]);
    assert!(
        h.api::<FoodAppBackup>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "no backup before the writes pause"
    );
    h.set_status::<Job>(&pause_name, job_done_json("Complete"))
        .await;
    h.settle().await;
    let up = upgrade_status(&h.app().await);
    assert_eq!(up.phase, foodapp_operator::crd::UpgradePhase::BackingUp);
    let backup = up.backup.clone().unwrap();
    assert!(h.exists::<FoodAppBackup>(&backup).await);
    assert_eq!(restores(&h).await, 0);
    assert_eq!(
        h.condition("Ready").await.0,
        "True",
        "Beside: the shop serves"
    );

    // The backup succeeds: a Beside restore of it moves the data.
    h.set_status::<FoodAppBackup>(
        &backup,
        json!({"phase": "Succeeded", "objectKey": "backups/food/shop/up.dump", "verified": true,
               "completedAt": "2026-12-03T08:00:00Z", "sizeBytes": 10}),
    )
    .await;
    h.settle().await;
    let up = upgrade_status(&h.app().await);
    let restore = up.restore.clone().unwrap();
    let r = h.api::<FoodAppRestore>().get(&restore).await.unwrap();
    assert_eq!(r.spec.backup_ref.as_deref(), Some(backup.as_str()));
    assert_eq!(
        r.spec.mode,
        Some(foodapp_operator::crd::RestoreMode::Beside)
    );
    assert_eq!(
        r.spec.require_no_discard,
        Some(true),
        "nothing written may be left behind"
    );
    restore_step(&h, &restore).await;
    let second = restore_status(&h, &restore).await.database.unwrap();
    assert_eq!(
        database_image(&h, &second).await.0,
        "postgres:18",
        "the second database runs the new major"
    );
    h.settle().await;
    assert_eq!(
        database_image(&h, "shop-db").await.0,
        "postgres:16.4-bookworm",
        "the live one keeps its own"
    );

    // Switched: the database in use runs the new image; the upgrade is done.
    let fa = h.api::<FoodApp>();
    fa.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(
            &json!({"metadata": {"annotations": {"foodapp.io/database-cluster": second}}}),
        ),
    )
    .await
    .unwrap();
    h.set_status::<FoodAppRestore>(
        &restore,
        json!({"phase": "Succeeded", "mode": "Beside", "database": second}),
    )
    .await;
    database_pod(&h, &second, 18).await;
    h.settle().await;
    let status = h.app().await.status.unwrap();
    assert_eq!(status.database_major, Some(18));
    let up = status.database_upgrade.unwrap();
    assert_eq!(up.phase, foodapp_operator::crd::UpgradePhase::Succeeded);
    assert!(
        up.message
            .unwrap()
            .contains(&format!("spec.revert is {restore}"))
    );
    assert_eq!(h.condition("DatabaseUpgrade").await.1, "UpToDate");
    assert_ne!(h.phase().await, "Upgrading");

    // Reverted (the undo switched back to shop-db): not tried again.
    fa.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(
            &json!({"metadata": {"annotations": {"foodapp.io/database-cluster": "shop-db"}}}),
        ),
    )
    .await
    .unwrap();
    h.settle().await;
    assert_eq!(
        database_image(&h, "shop-db").await.0,
        "postgres:16.4-bookworm"
    );
    let (_, reason, message) = h.condition("DatabaseUpgrade").await;
    assert_eq!(reason, "Reverted");
    assert!(message.contains("reverted"), "{message}");
    assert_eq!(restores(&h).await, 1, "no second attempt");
}

#[tokio::test]
async fn an_upgrade_without_a_backup_store_needs_in_place_and_without_backup() {
    let h = Harness::ready("registry.example/api:1").await;
    database_pod(&h, "shop-db", 15).await;
    set_database(&h, json!({"image": "postgres:18"})).await;
    let (ok, reason, message) = h.condition("DatabaseUpgrade").await;
    assert_eq!((ok.as_str(), reason.as_str()), ("False", "BackupRequired"));
    assert!(
        message.contains("method: InPlace with withoutBackup: true"),
        "{message}"
    );
    assert!(warned(&h, "BackupRequired").await);
    set_database(
        &h,
        json!({"image": "postgres:18", "upgrade": {"method": "InPlace"}}),
    )
    .await;
    assert_eq!(h.condition("DatabaseUpgrade").await.1, "BackupRequired");
    assert_eq!(database_image(&h, "shop-db").await.0, "postgres:16");
    assert_eq!(restores(&h).await, 0);
}

#[tokio::test]
async fn an_in_place_upgrade_stops_the_shop_runs_pg_upgrade_and_comes_back_on_the_new_image() {
    let h = Harness::ready("registry.example/api:1").await;
    database_pod(&h, "shop-db", 15).await;
    set_database(
        &h,
        json!({"image": "postgres:18", "upgrade": {"method": "InPlace", "withoutBackup": true}}),
    )
    .await;
    let up = upgrade_status(&h.app().await);
    assert_eq!(up.backup, None);
    let name = up.restore.unwrap();
    let r = h.api::<FoodAppRestore>().get(&name).await.unwrap();
    assert_eq!(r.spec.upgrade_to, Some(18));
    assert_eq!(
        r.annotations()["foodapp.io/upgrade-from-image"],
        "postgres:16"
    );

    // The API stops, then the database.
    restore_step(&h, &name).await;
    assert_eq!(restore_phase(&h, &name).await, "Restoring");
    h.settle().await;
    assert_eq!(h.api_replicas().await, Some(0));
    restore_step(&h, &name).await;
    h.settle().await;
    assert_eq!(
        database_image(&h, "shop-db").await,
        ("postgres:16".to_owned(), Some(0))
    );
    let job = format!("{name}-upgrade");
    restore_step(&h, &name).await;
    assert!(
        !h.exists::<Job>(&job).await,
        "not while the database pod is there"
    );
    h.api::<Pod>()
        .delete("shop-db-0", &DeleteParams::default())
        .await
        .unwrap();
    restore_step(&h, &name).await;
    let j = h.api::<Job>().get(&job).await.unwrap();
    let pod = j.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.init_containers.unwrap()[0].image.as_deref(),
        Some("postgres:16")
    );
    assert_eq!(pod.containers[0].image.as_deref(), Some("postgres:18"));
    assert_eq!(
        pod.volumes.unwrap()[0]
            .persistent_volume_claim
            .as_ref()
            .unwrap()
            .claim_name,
        "data-shop-db-0"
    );
    h.settle().await;
    assert_eq!(
        database_image(&h, "shop-db").await.1,
        Some(0),
        "stopped while it runs"
    );
    assert_eq!(h.phase().await, "Upgrading");

    // pg_upgrade done: the database starts on the new image, the
    // migrations run, and the API comes back.
    h.set_status::<Job>(&job, job_done_json("Complete")).await;
    restore_step(&h, &name).await;
    h.settle().await;
    assert_eq!(
        database_image(&h, "shop-db").await,
        ("postgres:18".to_owned(), Some(1))
    );
    database_pod(&h, "shop-db", 18).await;
    restore_step(&h, &name).await;
    assert_eq!(restore_phase(&h, &name).await, "Migrating");
    h.set_status::<Job>(&format!("{name}-migrate"), job_done_json("Complete"))
        .await;
    restore_step(&h, &name).await;
    assert_eq!(restore_phase(&h, &name).await, "Succeeded");
    h.settle().await;
    assert_eq!(h.api_replicas().await, Some(2));
    let status = h.app().await.status.unwrap();
    assert_eq!(status.database_major, Some(18));
    assert_eq!(
        status.database_upgrade.unwrap().phase,
        foodapp_operator::crd::UpgradePhase::Succeeded
    );
    assert_eq!(h.condition("DatabaseUpgrade").await.1, "UpToDate");
}

#[tokio::test]
async fn a_failed_in_place_upgrade_brings_the_database_back_on_its_old_image() {
    let h = Harness::ready("registry.example/api:1").await;
    database_pod(&h, "shop-db", 15).await;
    set_database(
        &h,
        json!({"image": "postgres:18", "upgrade": {"method": "InPlace", "withoutBackup": true}}),
    )
    .await;
    let name = upgrade_status(&h.app().await).restore.unwrap();
    restore_step(&h, &name).await;
    h.settle().await;
    restore_step(&h, &name).await;
    h.settle().await;
    h.api::<Pod>()
        .delete("shop-db-0", &DeleteParams::default())
        .await
        .unwrap();
    restore_step(&h, &name).await;
    let job = format!("{name}-upgrade");
    h.set_status::<Job>(
        &job,
        json!({"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "failed"}]}),
    )
    .await;
    labelled_pod(
        &h,
        &format!("{job}-pod"),
        json!({"batch.kubernetes.io/job-name": job}),
    )
    .await;
    h.set_status::<Pod>(
        &format!("{job}-pod"),
        json!({"containerStatuses": [{"name": "pg-upgrade", "image": "postgres:18", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"terminated": {"exitCode": 5,
            "message": "PG_VERSION=15\npg_upgrade --check refused the upgrade from 15 to 18 (nothing was changed): reg* data types"}}}]}),
    )
    .await;
    restore_step(&h, &name).await;
    assert_eq!(restore_phase(&h, &name).await, "Failed");
    let error = restore_status(&h, &name).await.error.unwrap();
    assert!(error.contains("reg* data types"), "{error}");
    h.api::<Pod>()
        .delete(&format!("{job}-pod"), &DeleteParams::default())
        .await
        .unwrap();
    h.settle().await;
    assert_eq!(
        database_image(&h, "shop-db").await,
        ("postgres:16".to_owned(), Some(1))
    );
    let (_, reason, message) = h.condition("DatabaseUpgrade").await;
    assert_eq!(reason, "Failed");
    assert!(message.contains("reg* data types"), "{message}");
    assert_eq!(h.api_replicas().await, Some(2), "the shop opens again");
    h.settle().await;
    assert_eq!(restores(&h).await, 1, "not retried on its own");
}

/// The RBAC recording's InPlace upgrade, up to its Job; then the image
/// back. Returns the call only the operator made (the test creates
/// FoodAppRestores too, so the recording alone cannot tell).
async fn in_place_upgrade_until_its_job(
    recorded: &Harness,
    h: &Harness,
) -> Vec<(String, String, String)> {
    set_spec(
        recorded,
        json!({"database": {"image": "postgres:18", "upgrade": {"method": "InPlace", "withoutBackup": true}}}),
    )
    .await;
    recorded.settle().await;
    let upgrade = upgrade_status(&recorded.app().await).restore.unwrap();
    for _ in 0..3 {
        restore_step(recorded, &upgrade).await;
        recorded.settle().await;
    }
    let db = foodapp_operator::build::db_cluster(&recorded.app().await);
    if h.exists::<Pod>(&format!("{db}-0")).await {
        h.api::<Pod>()
            .delete(&format!("{db}-0"), &DeleteParams::default())
            .await
            .unwrap();
    }
    restore_step(recorded, &upgrade).await;
    assert!(recorded.exists::<Job>(&format!("{upgrade}-upgrade")).await);
    set_spec(
        recorded,
        json!({"database": {"image": "postgres:16", "upgrade": null}}),
    )
    .await;
    // Created by the settle above: the test never created it.
    vec![(
        "foodapp.io".to_owned(),
        "foodapprestores".to_owned(),
        "create".to_owned(),
    )]
}

#[tokio::test]
async fn a_beside_upgrade_whose_backup_fails_gives_the_writes_back() {
    let h = ready_with_backup().await;
    database_pod(&h, "shop-db", 16).await;
    set_database(&h, json!({"image": "postgres:18"})).await;
    let pause = upgrade_jobs(&h).await[0].name_any();
    h.set_status::<Job>(&pause, job_done_json("Complete")).await;
    h.settle().await;
    let backup = upgrade_status(&h.app().await).backup.unwrap();
    h.set_status::<FoodAppBackup>(
        &backup,
        json!({"phase": "Failed", "error": "the bucket is gone"}),
    )
    .await;
    h.settle().await;
    let (_, reason, message) = h.condition("DatabaseUpgrade").await;
    assert_eq!(reason, "Failed");
    assert!(message.contains("the bucket is gone"), "{message}");
    let resume: Vec<Job> = upgrade_jobs(&h)
        .await
        .into_iter()
        .filter(|j| j.name_any().ends_with("-resume"))
        .collect();
    assert_eq!(resume.len(), 1, "the writes come back");
    assert_eq!(args(&resume[0]), ["switch", "--writable"]);
    assert_eq!(database_image(&h, "shop-db").await.0, "postgres:16");
    assert_eq!(restores(&h).await, 0);
}

#[tokio::test]
async fn a_beside_upgrade_cancelled_before_its_restore_gives_the_writes_back() {
    let h = ready_with_backup().await;
    database_pod(&h, "shop-db", 16).await;
    set_database(&h, json!({"image": "postgres:18"})).await;
    let pause = upgrade_jobs(&h).await[0].name_any();
    h.set_status::<Job>(&pause, job_done_json("Complete")).await;
    h.settle().await;
    // Back to the image it runs, while the backup runs.
    set_database(&h, json!({"image": "postgres:16"})).await;
    let up = upgrade_status(&h.app().await);
    assert_eq!(up.phase, foodapp_operator::crd::UpgradePhase::Failed);
    assert!(up.message.unwrap().contains("cancelled"));
    assert!(
        h.exists::<Job>(&pause.replace("-pause", "-resume")).await,
        "the writes come back"
    );
    assert_eq!(database_image(&h, "shop-db").await.0, "postgres:16");
    assert_eq!(h.condition("DatabaseUpgrade").await.1, "UpToDate");
}

/// A CloudNativePG FoodApp serving from `shop-db`, archived from
/// FIRST_POINT with a base backup at BASE_BACKUP.
async fn cloudnativepg_serving() -> Harness {
    let h = cloudnativepg_with_backup().await;
    cnpg_ready(&h, "shop-db", "old").await;
    h.settle().await;
    h.job_done("registry.example/api:1", "Complete", "").await;
    h.settle().await;
    h.deployments_available().await;
    h.settle().await;
    archived(&h, "shop", "shop-db", FIRST_POINT, BASE_BACKUP).await;
    h.settle().await;
    h
}

/// An RFC 3339 time `seconds` before now.
fn ago(seconds: i64) -> String {
    (k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(seconds))
        .round(k8s_openapi::jiff::Unit::Second)
        .unwrap()
        .to_string()
}

fn cluster_names(list: Vec<foodapp_operator::crd::foreign::Cluster>) -> Vec<String> {
    list.into_iter().filter_map(|c| c.metadata.name).collect()
}

async fn clusters(h: &Harness) -> Vec<String> {
    cluster_names(
        h.api::<foodapp_operator::crd::foreign::Cluster>()
            .list(&Default::default())
            .await
            .unwrap()
            .items,
    )
}

#[tokio::test]
async fn a_point_in_time_restore_outside_the_archive_is_refused_before_anything_stops() {
    let h = cloudnativepg_serving().await;
    let recent = ago(60);
    let cases = [
        (
            "recent",
            recent.clone(),
            format!("targetTime {recent} is less than 5 minutes ago"),
        ),
        (
            "future",
            "2099-01-01T00:00:00Z".to_owned(),
            "less than 5 minutes ago (or in the future)".to_owned(),
        ),
        (
            "before",
            "2026-11-19T12:00:00Z".to_owned(),
            format!("is before the first recoverability point of Cluster shop-db, {FIRST_POINT}"),
        ),
        (
            "between",
            "2026-11-20T00:30:00Z".to_owned(),
            "no base backup of Cluster shop-db completed before 2026-11-20T00:30:00Z".to_owned(),
        ),
    ];
    for (name, target, expected) in cases {
        h.create::<FoodAppRestore>(
            name,
            json!({"foodAppRef": "shop", "targetTime": target, "mode": "InPlace"}),
        )
        .await;
        restore_step(&h, name).await;
        let status = restore_status(&h, name).await;
        assert_eq!(
            restore_phase(&h, name).await,
            "Failed",
            "{name}: {status:?}"
        );
        let error = status.error.unwrap();
        assert!(error.contains(&expected), "{name}: {error}");
        assert!(error.ends_with("nothing was changed"), "{name}: {error}");
        let complete = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Complete")
            .unwrap();
        assert_eq!(complete.reason, "TargetNotRecoverable", "{name}");
        h.settle().await;
        assert_eq!(
            h.api_replicas().await,
            Some(2),
            "{name}: the API was never stopped"
        );
        assert_eq!(
            clusters(&h).await,
            ["shop-db"],
            "{name}: no Cluster was made"
        );
    }
}

#[tokio::test]
async fn a_point_in_time_restore_without_a_recoverability_point_is_refused() {
    let h = cloudnativepg_with_backup().await;
    cnpg_ready(&h, "shop-db", "old").await;
    h.settle().await;
    h.create::<FoodAppRestore>(
        "pitr",
        json!({"foodAppRef": "shop", "targetTime": "2026-11-22T09:30:00Z"}),
    )
    .await;
    restore_step(&h, "pitr").await;
    let error = restore_status(&h, "pitr").await.error.unwrap();
    assert!(
        error.contains("Cluster shop-db has no recoverability point yet"),
        "{error}"
    );
    assert_eq!(clusters(&h).await, ["shop-db"]);
}

/// Starts an InPlace recovery of `shop` to a time in its archive; returns
/// the Cluster being recovered, once it exists (not ready yet).
async fn recovering(h: &Harness) -> String {
    h.create::<FoodAppRestore>(
        "pitr",
        json!({"foodAppRef": "shop", "targetTime": "2026-11-22T09:30:00Z", "mode": "InPlace", "deadlineMinutes": 30}),
    )
    .await;
    for _ in 0..3 {
        restore_step(h, "pitr").await;
        h.settle().await;
    }
    assert_eq!(h.api_replicas().await, Some(0), "the API is stopped");
    let new = clusters(h)
        .await
        .into_iter()
        .find(|c| c != "shop-db")
        .expect("a Cluster is being recovered");
    restore_step(h, "pitr").await;
    assert_eq!(restore_phase(h, "pitr").await, "Restoring");
    new
}

/// `recovering`, then CloudNativePG's part and the migrations: the restore
/// succeeds; returns the Cluster the FoodApp uses now.
async fn recovered_in_place(h: &Harness) -> String {
    let new = recovering(h).await;
    cnpg_ready(h, &new, "new").await;
    for _ in 0..3 {
        restore_step(h, "pitr").await;
        h.settle().await;
    }
    h.set_status::<Job>("pitr-migrate", job_done_json("Complete"))
        .await;
    restore_step(h, "pitr").await;
    assert_eq!(restore_phase(h, "pitr").await, "Succeeded");
    new
}

/// After a failed recovery: the shop serves from shop-db again and the
/// half-recovered Cluster is gone.
async fn back_on_the_old_cluster(h: &Harness, new: &str, reason: &str, expected: &str) {
    assert_eq!(restore_phase(h, "pitr").await, "Failed");
    let status = restore_status(h, "pitr").await;
    let complete = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Complete")
        .unwrap();
    assert_eq!(complete.reason, reason);
    assert!(complete.message.contains(expected), "{}", complete.message);
    assert_eq!(clusters(h).await, ["shop-db"], "{new} is deleted");
    h.settle().await;
    assert_eq!(h.api_replicas().await, Some(2), "the API is back");
    let url = database_url(&h.api::<Secret>().get("shop-db-connection").await.unwrap());
    assert!(url.contains("@shop-db-rw."), "{url}");
    assert!(
        !h.app()
            .await
            .annotations()
            .contains_key("foodapp.io/database-cluster")
    );
}

#[tokio::test]
async fn a_failed_recovery_job_ends_the_restore_and_brings_the_shop_back_on_the_old_cluster() {
    let h = cloudnativepg_serving().await;
    let new = recovering(&h).await;
    let job: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": format!("{new}-1-full-recovery"), "namespace": NS},
        "spec": {"template": {"spec": {"containers": [], "restartPolicy": "Never"}}},
    }))
    .unwrap();
    h.api::<Job>()
        .create(&PostParams::default(), &job)
        .await
        .unwrap();
    h.set_status::<Job>(
        &format!("{new}-1-full-recovery"),
        json!({"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}),
    )
    .await;
    restore_step(&h, "pitr").await;
    back_on_the_old_cluster(
        &h,
        &new,
        "Failed",
        &format!("recovery Job {new}-1-full-recovery failed (BackoffLimitExceeded"),
    )
    .await;
}

#[tokio::test]
async fn a_recovery_past_its_deadline_ends_the_restore_and_brings_the_shop_back() {
    let h = cloudnativepg_serving().await;
    let new = recovering(&h).await;
    h.set_status::<FoodAppRestore>("pitr", json!({"startedAt": ago(31 * 60)}))
        .await;
    restore_step(&h, "pitr").await;
    back_on_the_old_cluster(&h, &new, "Timeout", "not recovered within 30 minutes").await;
}

#[tokio::test]
async fn a_recovered_cluster_is_the_foodapps_to_change_once_switched() {
    let h = cloudnativepg_serving().await;
    let new = recovered_in_place(&h).await;
    let live = h
        .api::<foodapp_operator::crd::foreign::Cluster>()
        .get(&new)
        .await
        .unwrap();
    let restore_manager = live
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|m| m.manager.as_deref() == Some("foodapp-operator-restore"))
        .and_then(|m| m.fields_v1.clone())
        .expect("the restore's manager keeps the bootstrap")
        .0;
    let spec = restore_manager["f:spec"].as_object().unwrap();
    let mut owned: Vec<&str> = spec.keys().map(String::as_str).collect();
    owned.sort();
    assert_eq!(
        owned,
        ["f:bootstrap", "f:externalClusters"],
        "{restore_manager}"
    );
    // A field the FoodApp sets and then drops: the resources.
    let mut app = h.app().await;
    app.spec.database.resources =
        Some(serde_json::from_value(json!({"requests": {"cpu": "1"}})).unwrap());
    h.api::<FoodApp>()
        .replace("shop", &Default::default(), &app)
        .await
        .unwrap();
    h.settle().await;
    let mut app = h.app().await;
    app.spec.database.resources = None;
    h.api::<FoodApp>()
        .replace("shop", &Default::default(), &app)
        .await
        .unwrap();
    h.settle().await;
    let live = h
        .api::<foodapp_operator::crd::foreign::Cluster>()
        .get(&new)
        .await
        .unwrap();
    // (That the dropped field then leaves the Cluster is server-side
    // apply's pruning, which the fake API server does not do: make e2e.)
    assert!(live.spec.bootstrap.unwrap().recovery.is_some());
    assert_eq!(live.metadata.labels.unwrap()["foodapp.io/in-use"], "true");
    let old = h
        .api::<foodapp_operator::crd::foreign::Cluster>()
        .get("shop-db")
        .await
        .unwrap();
    assert!(
        !old.metadata
            .labels
            .unwrap()
            .contains_key("foodapp.io/in-use"),
        "the Cluster switched from is no longer labelled in use"
    );
}

#[tokio::test]
async fn cloudnativepg_without_the_plugin_says_what_to_install_and_archives_nothing() {
    let mut spec = with_backup("spaces");
    spec["database"] = json!({"engine": "CloudNativePG"});
    let h = Harness::without_plugin(foodapp(spec)).await;
    credentials(&h).await;
    h.settle().await;
    let (status, reason, message) = h.condition("BackupScheduled").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "BarmanCloudPluginMissing")
    );
    assert!(
        message.contains("install plugin-barman-cloud v0.14")
            && message.contains("CloudNativePG 1.26 or later and cert-manager")
            && message.contains("archives no WAL"),
        "{message}"
    );
    let cluster = h
        .api::<foodapp_operator::crd::foreign::Cluster>()
        .get("shop-db")
        .await
        .unwrap();
    assert!(cluster.spec.plugins.is_empty() && cluster.spec.backup.is_none());
    assert!(
        !h.exists::<foodapp_operator::crd::foreign::ScheduledBackup>("shop-db-backup")
            .await,
        "no schedule that could only fail"
    );
}

#[tokio::test]
async fn a_cluster_of_the_previous_release_keeps_archiving_in_tree_until_the_plugin_is_there() {
    let mut spec = with_backup("spaces");
    spec["database"] = json!({"engine": "CloudNativePG"});
    // What the previous release applied: the in-tree archive, no serverName.
    let previous = json!({
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
        "metadata": {"name": "shop-db", "namespace": NS},
        "spec": {"instances": 3, "backup": {"barmanObjectStore": {
            "destinationPath": "s3://shop-backups/food/shop/cloudnative-pg",
            "s3Credentials": {"accessKeyId": {"name": "spaces", "key": "AWS_ACCESS_KEY_ID"},
                              "secretAccessKey": {"name": "spaces", "key": "AWS_SECRET_ACCESS_KEY"}}}}},
    });
    let h = Harness::build(
        reconciled_before(foodapp(spec.clone())),
        vec![previous.clone()],
        None,
        false,
    )
    .await;
    credentials(&h).await;
    h.settle().await;
    let cluster = h
        .api::<foodapp_operator::crd::foreign::Cluster>()
        .get("shop-db")
        .await
        .unwrap();
    let store = cluster
        .spec
        .backup
        .expect("archiving never stops")
        .barman_object_store;
    assert_eq!(
        store.server_name.as_deref(),
        Some("shop-db"),
        "the same folder"
    );
    assert!(cluster.spec.plugins.is_empty());
    assert_eq!(
        h.condition("BackupScheduled").await.1,
        "BarmanCloudPluginMissing"
    );
    assert!(
        h.condition("BackupScheduled")
            .await
            .2
            .contains("keeps archiving through the deprecated in-tree")
    );
    // With the plugin: the same folder, through the plugin.
    let h = Harness::new(reconciled_before(foodapp(spec)), vec![previous]).await;
    credentials(&h).await;
    h.settle().await;
    let cluster = h
        .api::<foodapp_operator::crd::foreign::Cluster>()
        .get("shop-db")
        .await
        .unwrap();
    assert_eq!(cluster.spec.plugins[0].parameters["serverName"], "shop-db");
    assert!(
        h.exists::<foodapp_operator::crd::foreign::ObjectStore>("shop-archive")
            .await
    );
    let sb = h
        .api::<foodapp_operator::crd::foreign::ScheduledBackup>()
        .get("shop-db-backup")
        .await
        .unwrap();
    assert_eq!(sb.spec.method.as_deref(), Some("plugin"));
}

#[tokio::test]
async fn a_missing_credentials_secret_keeps_cloudnativepg_archiving_configured() {
    let mut spec = with_backup("spaces");
    spec["database"] = json!({"engine": "CloudNativePG"});
    let h = Harness::new(foodapp(spec), vec![]).await;
    h.settle().await;
    assert_eq!(
        h.condition("BackupScheduled").await.1,
        "CredentialsSecretMissing"
    );
    let cluster = h
        .api::<foodapp_operator::crd::foreign::Cluster>()
        .get("shop-db")
        .await
        .unwrap();
    assert!(cluster.spec.plugins[0].is_wal_archiver == Some(true));
    assert!(
        h.exists::<foodapp_operator::crd::foreign::ObjectStore>("shop-archive")
            .await
    );
}

#[tokio::test]
async fn archiving_and_base_backup_failures_of_the_cluster_reach_the_foodapp() {
    let h = cloudnativepg_serving().await;
    assert_eq!(h.condition("BackupScheduled").await.0, "True");
    let message = h.condition("BackupScheduled").await.2;
    assert!(
        message.contains(&format!("recoverable from: {FIRST_POINT}")),
        "{message}"
    );
    let conditions = |archiving: &str, backup: &str| {
        json!({"instances": 3, "readyInstances": 3, "phase": "Cluster in healthy state", "conditions": [
            {"type": "ContinuousArchiving", "status": archiving, "reason": "ContinuousArchivingFailing",
             "message": "unexpected failure invoking barman-cloud-wal-archive: exit status 4", "lastTransitionTime": "2026-12-01T00:00:00Z"},
            {"type": "LastBackupSucceeded", "status": backup, "reason": "LastBackupFailed",
             "message": "no space left", "lastTransitionTime": "2026-12-01T00:00:00Z"}]})
    };
    h.set_status::<foodapp_operator::crd::foreign::Cluster>("shop-db", conditions("False", "True"))
        .await;
    h.settle().await;
    let (status, reason, message) = h.condition("BackupScheduled").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ArchivingFailed")
    );
    assert!(message.contains("exit status 4"), "{message}");
    assert_eq!(h.condition("Ready").await.0, "False");
    h.set_status::<foodapp_operator::crd::foreign::Cluster>("shop-db", conditions("True", "False"))
        .await;
    h.settle().await;
    let (_, reason, message) = h.condition("BackupScheduled").await;
    assert_eq!(reason, "BackupFailed");
    assert!(message.contains("no space left"), "{message}");
    // The backup metrics say the same.
    let metrics = h.ctx.metrics.encode();
    let line = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains("foodapp=\"shop\""))
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(line("foodapp_wal_archiving{"), "1");
    let first = k8s_openapi::jiff::Timestamp::from_str(FIRST_POINT)
        .unwrap()
        .as_second();
    assert_eq!(
        line("foodapp_recovery_window_start_timestamp_seconds{"),
        first.to_string()
    );
    let last = k8s_openapi::jiff::Timestamp::from_str(BASE_BACKUP)
        .unwrap()
        .as_second();
    assert_eq!(
        line("foodapp_backup_last_success_timestamp_seconds{"),
        last.to_string()
    );
    h.set_status::<foodapp_operator::crd::foreign::Cluster>("shop-db", conditions("False", "True"))
        .await;
    h.settle().await;
    let metrics = h.ctx.metrics.encode();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("foodapp_wal_archiving{") && l.ends_with(" 0")),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_foodapp_made_again_finds_the_cluster_in_use_by_its_label() {
    let h = cloudnativepg_serving().await;
    let new = recovered_in_place(&h).await;
    // Made again with the annotation gone, and the API Secret's record too
    // (someone deleted the Secret): the label still says which Cluster.
    let mut app = h.app().await;
    app.metadata
        .annotations
        .as_mut()
        .unwrap()
        .remove("foodapp.io/database-cluster");
    h.api::<FoodApp>()
        .replace("shop", &Default::default(), &app)
        .await
        .unwrap();
    h.api::<Secret>()
        .delete("shop-api", &Default::default())
        .await
        .unwrap();
    h.settle().await;
    assert_eq!(
        h.app().await.annotations()["foodapp.io/database-cluster"],
        new
    );
    let url = database_url(&h.api::<Secret>().get("shop-db-connection").await.unwrap());
    assert!(url.contains(&format!("@{new}-rw.")), "{url}");
}

/// The API Deployment has rolled onto its current template.
async fn api_rolled(h: &Harness) {
    let generation = h
        .api::<Deployment>()
        .get("shop-api")
        .await
        .unwrap()
        .metadata
        .generation;
    h.set_status::<Deployment>(
        "shop-api",
        json!({"replicas": 2, "updatedReplicas": 2, "availableReplicas": 2, "readyReplicas": 2,
               "observedGeneration": generation}),
    )
    .await;
}

/// A Beside point-in-time restore `pitr` of `shop` run to its end (the old
/// Cluster kept); returns the Cluster it switched to.
async fn beside_recovery_done(h: &Harness) -> String {
    h.create::<FoodAppRestore>(
        "pitr",
        json!({"foodAppRef": "shop", "targetTime": "2026-11-22T09:30:00Z"}),
    )
    .await;
    restore_step(h, "pitr").await;
    let new = restore_status(h, "pitr").await.database.unwrap();
    cnpg_ready(h, &new, "new").await;
    restore_step(h, "pitr").await;
    h.set_status::<Job>("pitr-migrate", job_done_json("Complete"))
        .await;
    restore_step(h, "pitr").await;
    h.set_status::<Job>("pitr-switch", json!({"ready": 1}))
        .await;
    restore_step(h, "pitr").await;
    h.set_status::<Job>("pitr-switch", job_done_json("Complete"))
        .await;
    h.settle().await;
    api_rolled(h).await;
    restore_step(h, "pitr").await;
    assert_eq!(
        restore_phase(h, "pitr").await,
        "Succeeded",
        "{:?}",
        restore_status(h, "pitr").await
    );
    new
}

fn in_use_label(c: &foodapp_operator::crd::foreign::Cluster) -> Option<String> {
    c.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("foodapp.io/in-use").cloned())
}

#[tokio::test]
async fn a_revert_to_the_first_cluster_moves_the_in_use_label_back_and_stays() {
    let h = cloudnativepg_serving().await;
    let new = beside_recovery_done(&h).await;
    let clusters = h.api::<foodapp_operator::crd::foreign::Cluster>();
    assert_eq!(
        in_use_label(&clusters.get(&new).await.unwrap()).as_deref(),
        Some("true")
    );
    assert_eq!(in_use_label(&clusters.get("shop-db").await.unwrap()), None);
    assert_eq!(
        owner_kind(&clusters.get(&new).await.unwrap().metadata),
        "",
        "under Retain the Cluster in use is owned by nothing: it holds the data"
    );
    // Undo: back to shop-db, whose name needs no annotation.
    h.create::<FoodAppRestore>("undo", json!({"foodAppRef": "shop", "revert": "pitr"}))
        .await;
    restore_step(&h, "undo").await;
    restore_step(&h, "undo").await;
    h.set_status::<Job>("undo-restore", job_done_json("Complete"))
        .await;
    restore_step(&h, "undo").await;
    h.set_status::<Job>("undo-migrate", job_done_json("Complete"))
        .await;
    restore_step(&h, "undo").await;
    h.set_status::<Job>("undo-switch", json!({"ready": 1}))
        .await;
    restore_step(&h, "undo").await;
    h.set_status::<Job>("undo-switch", job_done_json("Complete"))
        .await;
    h.settle().await;
    // Back on shop-db the API's template no longer names a database: a real
    // API server prunes the annotation the operator stopped applying (the
    // fake one merges), which is what rolls the API.
    h.api::<Deployment>()
        .patch(
            "shop-api",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"template": {"metadata": {"annotations": {"foodapp.io/database": null}}}}})),
        )
        .await
        .unwrap();
    api_rolled(&h).await;
    restore_step(&h, "undo").await;
    assert_eq!(
        restore_phase(&h, "undo").await,
        "Succeeded",
        "{:?}",
        restore_status(&h, "undo").await
    );
    // Several passes later the FoodApp is still on shop-db: the label moved
    // with the switch, so nothing points it back at the Cluster it left.
    for _ in 0..3 {
        h.settle().await;
    }
    assert!(
        !h.app()
            .await
            .annotations()
            .contains_key("foodapp.io/database-cluster"),
        "back on shop-db, and staying"
    );
    assert_eq!(
        in_use_label(&clusters.get("shop-db").await.unwrap()).as_deref(),
        Some("true")
    );
    assert_eq!(in_use_label(&clusters.get(&new).await.unwrap()), None);
    let url = database_url(&h.api::<Secret>().get("shop-db-connection").await.unwrap());
    assert!(url.contains("@shop-db-rw."), "{url}");
}

#[tokio::test]
async fn a_point_in_time_restore_without_the_plugin_is_refused() {
    let mut spec = with_backup("spaces");
    spec["database"] = json!({"engine": "CloudNativePG"});
    let h = Harness::without_plugin(foodapp(spec)).await;
    credentials(&h).await;
    h.settle().await;
    cnpg_ready(&h, "shop-db", "old").await;
    h.settle().await;
    h.create::<FoodAppRestore>(
        "pitr",
        json!({"foodAppRef": "shop", "targetTime": "2026-11-22T09:30:00Z", "mode": "InPlace"}),
    )
    .await;
    restore_step(&h, "pitr").await;
    let status = restore_status(&h, "pitr").await;
    assert_eq!(restore_phase(&h, "pitr").await, "Failed");
    let complete = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Complete")
        .unwrap();
    assert_eq!(complete.reason, "BarmanCloudPluginMissing");
    assert!(
        complete
            .message
            .contains("through the Barman Cloud Plugin, which is not installed")
            && complete.message.ends_with("nothing was changed"),
        "{}",
        complete.message
    );
    assert_eq!(clusters(&h).await, ["shop-db"]);
}

#[tokio::test]
async fn a_plugin_crd_gone_for_a_while_never_turns_archiving_off() {
    // A Cluster that archives through the plugin, on an API server that
    // (now) does not serve the plugin's CRD.
    let mut spec = with_backup("spaces");
    spec["database"] = json!({"engine": "CloudNativePG"});
    let archiving = json!({
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
        "metadata": {"name": "shop-db", "namespace": NS, "annotations": {"foodapp.io/server-name": "shop-db-0a1b2c3d"}},
        "spec": {"instances": 3, "plugins": [{"name": "barman-cloud.cloudnative-pg.io", "isWALArchiver": true,
            "parameters": {"barmanObjectName": "shop-archive", "serverName": "shop-db-0a1b2c3d"}}]},
    });
    let h = Harness::build(
        reconciled_before(foodapp(spec)),
        vec![archiving],
        None,
        false,
    )
    .await;
    credentials(&h).await;
    h.settle().await;
    let cluster = h
        .api::<foodapp_operator::crd::foreign::Cluster>()
        .get("shop-db")
        .await
        .unwrap();
    assert_eq!(cluster.spec.plugins.len(), 1, "the plugin stays");
    assert_eq!(
        cluster.spec.plugins[0].parameters["serverName"],
        "shop-db-0a1b2c3d"
    );
    let (status, reason, message) = h.condition("BackupScheduled").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "BarmanCloudPluginMissing")
    );
    assert!(
        message.contains("keeps its plugin configuration"),
        "{message}"
    );
    assert!(
        h.exists::<foodapp_operator::crd::foreign::ScheduledBackup>("shop-db-backup")
            .await,
        "the schedule (and the Backups it owns) stays"
    );
}

#[tokio::test]
async fn a_point_in_time_restore_whose_recovery_job_name_cannot_fit_is_refused() {
    // A FoodApp named before the 37-character cap (the fake API server
    // checks no CEL).
    let name = "a".repeat(40);
    let mut spec = with_backup("spaces");
    spec["database"] = json!({"engine": "CloudNativePG"});
    let mut app = foodapp(spec);
    app.metadata.name = Some(name.clone());
    let h = Harness::new(app, vec![]).await;
    credentials(&h).await;
    settle_app(&h, &name).await;
    let cluster = format!("{name}-db");
    cnpg_ready(&h, &cluster, "old").await;
    settle_app(&h, &name).await;
    archived(&h, &name, &cluster, FIRST_POINT, BASE_BACKUP).await;
    h.create::<FoodAppRestore>(
        "pitr",
        json!({"foodAppRef": name, "targetTime": "2026-11-22T09:30:00Z", "mode": "InPlace"}),
    )
    .await;
    restore_step(&h, "pitr").await;
    assert_eq!(restore_phase(&h, "pitr").await, "Failed");
    let error = restore_status(&h, "pitr").await.error.unwrap();
    assert!(
        error.contains("longer than 63 characters") && error.ends_with("nothing was changed"),
        "{error}"
    );
    assert_eq!(clusters(&h).await, [cluster]);
}

// ---- Hostile tenants (issue 21 point 2): nothing is taken over by name. ----

impl Harness {
    /// Reconciles until nothing changes or 5 passes, whatever each returns
    /// (a conflict is an error: the controller retries with backoff).
    async fn settle_failing(&self) -> Option<String> {
        let mut last = None;
        for _ in 0..5 {
            let before = self.writes.load(Ordering::SeqCst);
            last = controller::reconcile(Arc::new(self.app().await), self.ctx.clone())
                .await
                .err()
                .map(|e| e.to_string());
            if self.writes.load(Ordering::SeqCst) == before {
                break;
            }
        }
        last
    }
}

/// `app` as a release that wrote no ownership records left it: reconciled,
/// with no Conflict condition.
fn reconciled_before(mut app: FoodApp) -> FoodApp {
    app.status = Some(
        serde_json::from_value(json!({"observedGeneration": 1, "conditions": [
            {"type": "Ready", "status": "False", "reason": "NotReady", "message": "",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}]}))
        .unwrap(),
    );
    app
}

fn planted(kind: &str, api_version: &str, name: &str, rest: Value) -> Value {
    let mut obj = json!({"apiVersion": api_version, "kind": kind,
        "metadata": {"name": name, "namespace": NS, "labels": {"app.kubernetes.io/instance": "shop",
            "app.kubernetes.io/managed-by": "foodapp-operator"}}});
    obj.as_object_mut()
        .unwrap()
        .extend(rest.as_object().unwrap().clone());
    obj
}

#[tokio::test]
async fn a_service_of_the_derived_name_is_neither_applied_over_nor_deleted_and_conflict_names_it() {
    let service = planted(
        "Service",
        "v1",
        "shop-gateway",
        json!({"spec": {"ports": [{"port": 80}], "selector": {"app": "attacker"}}}),
    );
    let h = Harness::new(foodapp(json!({})), vec![service]).await;
    let error = h.settle_failing().await.expect("a conflict is an error");
    assert!(error.contains("Service shop-gateway"), "{error}");
    let (status, reason, message) = h.condition("Conflict").await;
    assert_eq!((status.as_str(), reason.as_str()), ("True", "NotOwned"));
    assert!(message.contains("Service shop-gateway"), "{message}");
    let live = h.api::<Service>().get("shop-gateway").await.unwrap();
    assert_eq!(
        live.spec.unwrap().selector.unwrap()["app"],
        "attacker",
        "not applied over"
    );
    assert!(live.metadata.owner_references.is_none());
    let (_, reason, _) = h.condition("GatewayReady").await;
    assert_eq!(reason, "ApplyFailed");
    // The rest converges: the database and the API are this FoodApp's.
    assert!(h.exists::<StatefulSet>("shop-db").await);
    // Once the object is gone, the operator makes its own and the conflict clears.
    h.api::<Service>()
        .delete("shop-gateway", &DeleteParams::default())
        .await
        .unwrap();
    h.settle().await;
    assert_eq!(h.condition("Conflict").await.0, "False");
    let own = h.api::<Service>().get("shop-gateway").await.unwrap();
    assert_eq!(
        own.metadata.owner_references.unwrap()[0].uid,
        h.app().await.metadata.uid.unwrap()
    );
}

#[tokio::test]
async fn a_database_service_of_the_derived_name_keeps_everything_that_would_connect_to_it_away() {
    let service = planted(
        "Service",
        "v1",
        "shop-db",
        json!({"spec": {"ports": [{"port": 5432}], "selector": {"app": "attacker"}}}),
    );
    let h = Harness::new(foodapp(json!({})), vec![service]).await;
    h.settle_failing().await;
    assert_eq!(h.condition("Conflict").await.0, "True");
    for (kind, name) in [("Deployment", "shop-api"), ("Deployment", "shop-gateway")] {
        assert!(
            !h.exists::<Deployment>(name).await,
            "{kind} {name}: nothing that would send the password to that Service"
        );
    }
    let jobs = h.api::<Job>().list(&ListParams::default()).await.unwrap();
    assert!(jobs.items.is_empty(), "no migration Job either");
    let (_, reason, message) = h.condition("ApiReady").await;
    assert_eq!(reason, "ApplyFailed");
    assert!(
        message.contains("not applied while the database"),
        "{message}"
    );
}

#[tokio::test]
async fn a_backup_service_account_of_the_derived_name_gives_no_pod_its_token() {
    let credentials = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "spaces", "namespace": NS},
        "stringData": {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}});
    let account = planted("ServiceAccount", "v1", "shop-backup", json!({}));
    let h = Harness::new(foodapp(with_backup("spaces")), vec![credentials, account]).await;
    h.settle_failing().await;
    let (status, _, message) = h.condition("Conflict").await;
    assert_eq!(status, "True");
    assert!(message.contains("ServiceAccount shop-backup"), "{message}");
    assert!(
        !h.exists::<CronJob>("shop-backup").await,
        "no backup pod runs as a ServiceAccount that is not the FoodApp's"
    );
    assert_eq!(h.condition("BackupScheduled").await.1, "ApplyFailed");
}

#[tokio::test]
async fn a_migration_job_made_in_advance_never_lets_an_image_roll_out_unmigrated() {
    let h = Harness::ready("ghcr.io/foodapp/foodapp-api:1.0.0").await;
    let next = "ghcr.io/foodapp/foodapp-api:2.0.0";
    let name = names::migration_job("shop", next, None);
    let job: Job = serde_json::from_value(planted(
        "Job",
        "batch/v1",
        &name,
        json!({"spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "m", "image": "busybox"}]}}}}),
    ))
    .unwrap();
    h.api::<Job>()
        .create(&PostParams::default(), &job)
        .await
        .unwrap();
    h.job_done(next, "Complete", "").await;
    h.set_image(next).await;
    h.settle_failing().await;
    assert_eq!(
        h.api_image().await.as_deref(),
        Some("ghcr.io/foodapp/foodapp-api:1.0.0"),
        "the API keeps its migrated image"
    );
    let (status, _, message) = h.condition("Conflict").await;
    assert_eq!(status, "True");
    assert!(message.contains(&format!("Job {name}")), "{message}");
    assert_ne!(h.condition("MigrationsComplete").await.0, "True");
}

#[tokio::test]
async fn a_planted_api_secret_is_never_used_and_nothing_is_applied() {
    let secret = planted(
        "Secret",
        "v1",
        "shop-api",
        json!({"stringData": {"JWT_SECRET": "known-to-the-attacker"}}),
    );
    let h = Harness::new(foodapp(json!({})), vec![secret]).await;
    let error = h.settle_failing().await.unwrap();
    assert!(error.contains("Secret shop-api"), "{error}");
    let (status, reason, message) = h.condition("Conflict").await;
    assert_eq!((status.as_str(), reason.as_str()), ("True", "NotOwned"));
    assert!(
        message.contains(&format!(
            "foodapp.io/owner-uid={}",
            h.app().await.metadata.uid.unwrap()
        )),
        "says how to adopt it on purpose: {message}"
    );
    assert_eq!(h.condition("Ready").await.1, "NotOwned");
    assert!(!h.exists::<Deployment>("shop-api").await);
    assert!(!h.exists::<StatefulSet>("shop-db").await);
}

#[tokio::test]
async fn generated_secrets_carry_a_record_a_re_created_foodapp_finds_them_by() {
    let h = Harness::new(foodapp(json!({})), vec![]).await;
    h.settle().await;
    let uid = h.app().await.metadata.uid.unwrap();
    let api = h.api::<Secret>().get("shop-api").await.unwrap();
    let annotations = api.metadata.annotations.clone().unwrap();
    assert_eq!(annotations["foodapp.io/owner-uid"], uid);
    assert_eq!(annotations["foodapp.io/owner-signature"].len(), 64);
    let jwt = api.data.clone().unwrap()["JWT_SECRET"].clone();
    // Deleted under Retain and made again: another UID, the same Secrets.
    let app = h.app().await;
    controller::finalize::cleanup(&app, &h.ctx).await.unwrap();
    h.api::<FoodApp>()
        .delete("shop", &DeleteParams::background())
        .await
        .unwrap();
    h.api::<FoodApp>()
        .create(&PostParams::default(), &foodapp(json!({})))
        .await
        .unwrap();
    h.settle().await;
    let again = h.app().await;
    assert_ne!(again.metadata.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(h.condition("Conflict").await.0, "False");
    let api = h.api::<Secret>().get("shop-api").await.unwrap();
    assert_eq!(api.data.unwrap()["JWT_SECRET"], jwt, "the same signing key");
    assert_eq!(
        api.metadata.annotations.unwrap()["foodapp.io/owner-uid"],
        again.metadata.uid.unwrap(),
        "recorded for the new FoodApp"
    );
}

#[tokio::test]
async fn secrets_of_a_release_without_records_are_adopted_once_when_the_foodapp_was_reconciled() {
    let secret = planted(
        "Secret",
        "v1",
        "shop-api",
        json!({"data": {"JWT_SECRET": "ZnJvbS10aGUtcHJldmlvdXMtcmVsZWFzZQ=="}}),
    );
    let mut app = foodapp(json!({}));
    // What the previous release left: a status without a Conflict condition.
    app.status = Some(
        serde_json::from_value(json!({"observedGeneration": 1, "conditions": [
            {"type": "Ready", "status": "False", "reason": "NotReady", "message": "",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}]}))
        .unwrap(),
    );
    let h = Harness::new(app, vec![secret]).await;
    h.settle().await;
    assert_eq!(h.condition("Conflict").await.0, "False");
    let api = h.api::<Secret>().get("shop-api").await.unwrap();
    assert_eq!(
        api.metadata.annotations.unwrap()["foodapp.io/owner-uid"],
        h.app().await.metadata.uid.unwrap()
    );
}
