//! Recording a backup run as a FoodAppBackup, so `kubectl get fab` lists
//! every backup. Only inside a cluster; standalone runs just print.

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

use crate::crd::{BackupSource, FoodAppBackup, FoodAppBackupSpec, FoodAppBackupStatus, JobPhase};

/// The FoodAppBackup a scheduled run creates: `<foodapp>-<timestamp>`.
pub fn scheduled_name(foodapp: &str, timestamp: &str) -> String {
    format!("{foodapp}-{}", timestamp.to_lowercase())
}

pub fn in_cluster() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
}

/// Creates the FoodAppBackup when asked (scheduled runs) and writes its status.
pub async fn report(
    client: &Client,
    namespace: &str,
    name: &str,
    create_for: Option<&str>,
    status: &FoodAppBackupStatus,
) -> Result<(), kube::Error> {
    let api: Api<FoodAppBackup> = Api::namespaced(client.clone(), namespace);
    if let Some(foodapp) = create_for
        && api.get_opt(name).await?.is_none()
    {
        let mut backup = FoodAppBackup::new(
            name,
            FoodAppBackupSpec {
                food_app_ref: foodapp.to_owned(),
                source: BackupSource::Scheduled,
            },
        );
        backup.metadata.labels =
            Some([("foodapp.io/foodapp".to_owned(), foodapp.to_owned())].into());
        api.create(&PostParams::default(), &backup).await?;
    }
    let patch = serde_json::json!({ "status": status });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

pub fn running(started: Timestamp) -> FoodAppBackupStatus {
    FoodAppBackupStatus {
        phase: Some(JobPhase::Running),
        started_at: Some(started.to_string()),
        ..Default::default()
    }
}
