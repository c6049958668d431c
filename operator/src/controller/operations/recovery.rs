//! Point-in-time recovery (engine CloudNativePG): a new Cluster recovered
//! from the archive of the one in use up to the target time. InPlace stops
//! the API first and switches as soon as the Cluster is ready; Beside keeps
//! the shop on the old Cluster and switches through `beside`.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};

use super::super::conditions::Reason;
use super::super::{Error, apply, validate};
use super::{Next, Run};
use crate::build::{DATABASE_CLUSTER_ANNOTATION, cnpg, names};
use crate::crd::foreign::Cluster;
use crate::crd::{BackupSpec, FoodApp, RestorePhase};

/// Creates the recovered Cluster `new` unless it exists (under the
/// restore's own field manager, so that the FoodApp's applies, which carry
/// no bootstrap, never remove it), and waits until it is ready and its app
/// login exists. None when it is.
pub async fn ensure_recovered(
    run: &mut Run<'_>,
    app: &FoodApp,
    backup: &BackupSpec,
    target: &str,
    new: &str,
    current: &str,
) -> Result<Option<Next>, Error> {
    let ctx = run.ctx;
    let ns = run.ns();
    let clusters: Api<Cluster> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(cluster) = clusters.get_opt(new).await.map_err(Error::Dereference)? else {
        let model = validate::job_model(app, &ctx.agent_image)?;
        let mut desired = cnpg::recovered_cluster(&model, backup, new, current, target);
        if run.status.mode == Some(crate::crd::RestoreMode::Beside) {
            // Made beside the live Cluster: it goes with the restore until the switch.
            desired.metadata.owner_references = Some(vec![run.owner()]);
        }
        clusters
            .patch(
                new,
                &PatchParams::apply(cnpg::RESTORE_MANAGER).force(),
                &Patch::Apply(&desired),
            )
            .await
            .map_err(|e| Error::Apply(apply::failed("Cluster", new)(e)))?;
        return Ok(Some(run.waiting(
            "Restored",
            format!("recovering Cluster {new} from the archive of {current} up to {target}"),
            15,
        )));
    };
    let ready = cluster
        .status
        .as_ref()
        .and_then(|s| s.ready_instances)
        .unwrap_or(0);
    let login = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&names::cnpg_app_secret(new))
        .await
        .map_err(Error::Dereference)?;
    if ready < 1 || login.is_none() {
        let phase = cluster
            .status
            .and_then(|s| s.phase)
            .unwrap_or_else(|| "no phase yet".to_owned());
        return Ok(Some(run.waiting(
            "Restored",
            format!(
                "recovering Cluster {new} from the archive of {current} up to {target}: {phase}"
            ),
            15,
        )));
    }
    Ok(None)
}

/// InPlace, with the API stopped: recover, then switch the FoodApp to the
/// new Cluster (annotation `foodapp.io/database-cluster`); the Cluster used
/// before is kept.
pub async fn in_place(
    run: &mut Run<'_>,
    app: &FoodApp,
    backup: &BackupSpec,
    target: &str,
) -> Result<Next, Error> {
    let new = names::recovered_cluster(&app.name_any(), &run.id_key());
    let current = crate::build::db_cluster(app);
    if current != new {
        if let Some(next) = ensure_recovered(run, app, backup, target, &new, &current).await? {
            return Ok(next);
        }
        super::super::annotate(run.ctx, app, DATABASE_CLUSTER_ANNOTATION, Some(&new)).await?;
        run.ctx
            .event(
                run.restore,
                Reason::Succeeded,
                "Restore",
                format!("Cluster {new} recovered up to {target}; {current} is kept"),
            )
            .await;
    }
    run.set(
        "Restored",
        true,
        Reason::Succeeded,
        format!("Cluster {new} recovered up to {target}; the FoodApp uses it now, and keeps {current}: delete that one when you no longer need it"),
    );
    Ok(Next::Phase(RestorePhase::Migrating))
}

/// The migrations must reach the new Cluster: wait until the FoodApp's
/// reconcile rewrote the connection Secret. None once it did.
pub async fn await_connection(run: &mut Run<'_>, app: &FoodApp) -> Result<Option<Next>, Error> {
    let new = crate::build::db_cluster(app);
    let url = Api::<Secret>::namespaced(run.ctx.client.clone(), &run.ns())
        .get_opt(&names::db_connection(&app.name_any()))
        .await
        .map_err(Error::Dereference)?
        .and_then(|s| s.data)
        .and_then(|d| {
            d.get("DATABASE_URL")
                .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        })
        .unwrap_or_default();
    if url.contains(&format!("@{}.", names::cnpg_rw_service(&new))) {
        return Ok(None);
    }
    Ok(Some(Next::Wait(Duration::from_secs(3))).inspect(|_| {
        run.set(
            "Migrated",
            false,
            Reason::Running,
            format!("waiting for the connection Secret to name Cluster {new}"),
        )
    }))
}
