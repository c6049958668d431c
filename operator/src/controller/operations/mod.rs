//! Long-running operations on a FoodApp's database — restores in place,
//! beside the live database, to a point in time, and their undo — as state
//! machines: the phase is kept in the FoodAppRestore's status, each
//! reconcile runs the step of the current phase, and every step is
//! idempotent (it looks at what exists before making anything), so an
//! operator killed anywhere picks up where it was. A step either waits,
//! moves on, or ends the operation; an ending that is not a success leaves
//! the shop serving from the database it used before.

pub mod beside;
pub mod clone;
pub mod lock;
pub mod recovery;
pub mod restore;
pub mod upgrade;

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::conditions::{self, Reason, wanted};
use super::validate::{JobState, job_state};
use super::{Context, Error, apply, requeue_normal};
use crate::crd::{FoodApp, FoodAppRestore, FoodAppRestoreStatus, RestorePhase};
use crate::metrics::RestoreLabels;

pub use restore::reconcile;

/// What a step decided.
#[derive(Debug)]
pub enum Next {
    /// Stay in this phase and look again (children's changes wake it sooner).
    Wait(Duration),
    /// Go on to this phase now.
    Phase(RestorePhase),
    /// The operation is over.
    End {
        ok: bool,
        reason: Reason,
        message: String,
    },
}

impl Next {
    pub fn fail(reason: Reason, message: impl Into<String>) -> Next {
        Next::End {
            ok: false,
            reason,
            message: message.into(),
        }
    }
}

/// One operation's status while a reconcile runs its steps: conditions
/// are set as they go, and written once when the reconcile ends.
pub struct Run<'a> {
    pub ctx: &'a Context,
    pub restore: &'a FoodAppRestore,
    pub status: FoodAppRestoreStatus,
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

pub fn now_rfc3339() -> String {
    now().0.to_string()
}

impl Run<'_> {
    pub fn ns(&self) -> String {
        self.restore.namespace().unwrap_or_default()
    }

    pub fn name(&self) -> String {
        self.restore.name_any()
    }

    /// The restore as the owner of what it makes.
    pub fn owner(&self) -> OwnerReference {
        crate::build::restore::owner(
            &self.name(),
            self.restore.metadata.uid.as_deref().unwrap_or_default(),
        )
    }

    /// Six hex digits naming what this restore makes (from its uid: a
    /// restore re-created under the same name makes new objects).
    pub fn id_key(&self) -> String {
        self.restore
            .metadata
            .uid
            .clone()
            .unwrap_or_else(|| self.name())
    }

    pub fn phase(&self) -> Option<RestorePhase> {
        self.status.phase
    }

    pub fn set(&mut self, type_: &'static str, ok: bool, reason: Reason, message: String) {
        conditions::set(
            &mut self.status.conditions,
            &wanted(type_, ok, reason, message),
            self.restore.metadata.generation,
            &now(),
        );
    }

    /// A condition saying what is awaited, and the wait.
    pub fn waiting(&mut self, type_: &'static str, message: String, seconds: u64) -> Next {
        self.set(type_, false, Reason::Running, message);
        Next::Wait(Duration::from_secs(seconds))
    }

    pub async fn save(&self) -> Result<(), Error> {
        if Some(&self.status) == self.restore.status.as_ref() {
            return Ok(());
        }
        let api: Api<FoodAppRestore> = Api::namespaced(self.ctx.client.clone(), &self.ns());
        api.patch_status(
            &self.name(),
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({ "status": self.status })),
        )
        .await
        .map_err(Error::Status)?;
        Ok(())
    }

    /// Ends the operation: final phase, Complete condition, the lock let
    /// go, a metric and Events on the restore and the FoodApp.
    pub async fn end(
        mut self,
        ok: bool,
        reason: Reason,
        message: String,
        app: Option<&FoodApp>,
    ) -> Result<Action, Error> {
        self.status.phase = Some(if ok {
            RestorePhase::Succeeded
        } else {
            RestorePhase::Failed
        });
        self.status.completed_at = Some(now_rfc3339());
        if !ok {
            self.status.error = Some(message.clone());
        }
        if let Some(app) = app {
            lock::release(self.ctx, app, &self.name()).await?;
        }
        self.set("Complete", ok, reason, message.clone());
        self.save().await?;
        let labels = |outcome: &str| RestoreLabels {
            namespace: self.ns(),
            foodapp: self.restore.spec.food_app_ref.clone(),
            outcome: outcome.to_owned(),
        };
        let metrics = &self.ctx.metrics;
        metrics
            .restores
            .get_or_create(&labels(if ok { "succeeded" } else { "failed" }))
            .inc();
        if ok {
            let app_labels = crate::metrics::AppLabels {
                namespace: self.ns(),
                foodapp: self.restore.spec.food_app_ref.clone(),
            };
            if let Some(pause) = self.status.write_pause_seconds {
                metrics
                    .restore_write_pause
                    .get_or_create(&app_labels)
                    .set(pause);
            }
            let orders = self.status.discarded.as_ref().map_or(0, |d| d.orders);
            metrics
                .restore_discarded_orders
                .get_or_create(&app_labels)
                .set(orders);
        }
        self.ctx
            .event(self.restore, reason, "Restore", message.clone())
            .await;
        if let Some(app) = app {
            self.ctx
                .event(
                    app,
                    reason,
                    "Restore",
                    format!("restore {}: {message}", self.name()),
                )
                .await;
        }
        Ok(requeue_normal())
    }
}

/// Starts the Job unless a Job of that name exists; the existing one's
/// state. A Job of that name that is not this restore's is refused: it
/// could report a restore that never ran.
pub async fn run_job(run: &Run<'_>, job: &Job) -> Result<Option<JobState>, Error> {
    let existing = apply::create_once(&run.ctx.client, &run.ns(), job).await?;
    match existing {
        None => Ok(None),
        Some(j) => {
            let ours = j
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| Some(&o.uid) == run.restore.metadata.uid.as_ref());
            if ours {
                Ok(Some(job_state(&j)))
            } else {
                Ok(Some(JobState::Failed {
                    reason: "Conflict".to_owned(),
                    message: format!(
                        "Job {} exists and is not this restore's; nothing was done with it",
                        j.name_any()
                    ),
                }))
            }
        }
    }
}

/// The Job's live object, if it exists.
pub async fn get_job(run: &Run<'_>, name: &str) -> Result<Option<Job>, Error> {
    Api::<Job>::namespaced(run.ctx.client.clone(), &run.ns())
        .get_opt(name)
        .await
        .map_err(Error::Dereference)
}

/// The termination messages the containers of a Job's pods left.
pub async fn termination_messages(run: &Run<'_>, job: &str) -> Result<Vec<String>, Error> {
    let pods = Api::<Pod>::namespaced(run.ctx.client.clone(), &run.ns())
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await
        .map_err(Error::Dereference)?;
    Ok(pods
        .items
        .iter()
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.message.clone())
        .collect())
}

/// The JSON a Job's agent left as its termination message, from the
/// newest of its pods that has one.
pub async fn job_result<T: serde::de::DeserializeOwned>(
    run: &Run<'_>,
    job: &str,
) -> Result<Option<T>, Error> {
    Ok(termination_messages(run, job)
        .await?
        .iter()
        .find_map(|m| serde_json::from_str(m).ok()))
}

/// Pods of these Jobs that still exist (running or terminating).
pub async fn pods_of(ctx: &Context, ns: &str, jobs: &[String]) -> Result<usize, Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let mut left = 0;
    for job in jobs {
        let selector = format!("batch.kubernetes.io/job-name={job}");
        left += pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(Error::Dereference)?
            .items
            .len();
    }
    Ok(left)
}

/// Whether the operation started longer than `limit` ago.
pub fn waited_longer_than(status: &FoodAppRestoreStatus, limit: Duration) -> bool {
    status
        .started_at
        .as_deref()
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .is_some_and(|t| {
            k8s_openapi::jiff::Timestamp::now()
                .duration_since(t)
                .as_secs() as u64
                > limit.as_secs()
        })
}

/// Sets an object's owners wholesale (a merge patch replaces the list):
/// how a database passes between a restore and its FoodApp.
pub async fn set_owner<K>(
    ctx: &Context,
    ns: &str,
    name: &str,
    owner: Option<&OwnerReference>,
) -> Result<bool, Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let Some(live) = api.get_opt(name).await.map_err(Error::Dereference)? else {
        return Ok(false);
    };
    let wanted: Vec<&OwnerReference> = owner.into_iter().collect();
    let current: Vec<&OwnerReference> = live.meta().owner_references.iter().flatten().collect();
    if current == wanted {
        return Ok(true);
    }
    let patch = serde_json::json!({"metadata": {"ownerReferences": wanted}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| Error::Apply(apply::failed(&K::kind(&()), name)(e)))?;
    Ok(true)
}
