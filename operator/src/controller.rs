//! The reconcile loop: for each `ChatCluster`, server-side apply the
//! children [`crate::children::desired`] builds (one field manager), run
//! the migration Job before the Deployments, patch the status from what the
//! children report, publish Events when conditions change, and requeue with
//! backoff on errors. No finalizer: every child carries an owner reference
//! and the garbage collector deletes it with the cluster; Kafka topics and
//! the keyspace are deliberately kept.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::children::Role;
use crate::children::{self, Children, FIELD_MANAGER, MANAGED_BY, migrate, settings};
use crate::crd::ChatCluster;
use crate::metrics::Metrics;
use crate::rollout::{self, Decision, Measure, Scraper};
use crate::status::{self, AVAILABLE, DEGRADED, Migration, Observed};
use crate::{Error, Result};

/// What the operator watches.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Watch only this namespace; every namespace when `None`.
    pub namespace: Option<String>,
    /// How the pods' `/metrics` are read for the rollout gates.
    pub scraper: Scraper,
}

/// Requeue after success, and the bounds of the backoff after errors.
const RESYNC: Duration = Duration::from_secs(300);
const WHILE_PROGRESSING: Duration = Duration::from_secs(30);
/// While a rollout runs, its gates are checked this often.
const WHILE_ROLLING: Duration = Duration::from_secs(3);
const BACKOFF_FIRST: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

struct Context {
    client: Client,
    recorder: Recorder,
    metrics: Metrics,
    /// Consecutive failures per cluster (namespace/name), for the backoff.
    failures: Mutex<HashMap<String, u32>>,
    scraper: Scraper,
    /// The gateways' session counters per cluster, for the reconnect rate.
    samples: Mutex<HashMap<String, rollout::Sample>>,
    /// When the operator started: the clock of the samples.
    started: std::time::Instant,
}

/// A checked connection to the API server, ready to run.
pub struct Operator {
    client: Client,
    config: Config,
    metrics: Metrics,
}

impl Operator {
    /// Fails with a clear message when the CRD is not installed or the
    /// credentials cannot list `ChatCluster`s.
    pub async fn new(client: Client, config: Config, metrics: Metrics) -> Result<Self> {
        let api = clusters(&client, &config);
        api.list(&ListParams::default().limit(1)).await.map_err(|e| match e {
            kube::Error::Api(ref s) if s.code == 404 => Error::CrdNotInstalled,
            e => Error::Kube(e),
        })?;
        Ok(Self { client, config, metrics })
    }

    /// Reconciles until `shutdown` resolves, then finishes the reconciles
    /// under way and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
        let Operator { client, config, metrics } = self;
        let reporter = Reporter { controller: MANAGED_BY.to_owned(), instance: std::env::var("POD_NAME").ok() };
        let ctx = Arc::new(Context {
            recorder: Recorder::new(client.clone(), reporter),
            client: client.clone(),
            metrics,
            failures: Mutex::default(),
            scraper: config.scraper.clone(),
            samples: Mutex::default(),
            started: std::time::Instant::now(),
        });
        let owned = watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));
        let ns = config.namespace.as_deref();
        Controller::new(clusters(&client, &config), watcher::Config::default())
            .owns(api::<Deployment>(&client, ns), owned.clone())
            .owns(api::<Service>(&client, ns), owned.clone())
            .owns(api::<ConfigMap>(&client, ns), owned.clone())
            // Not Secrets: the operator never reads them (see ensure_jwt_secret).
            .owns(api::<NetworkPolicy>(&client, ns), owned.clone())
            .owns(api::<Job>(&client, ns), owned.clone())
            .owns(api::<PodDisruptionBudget>(&client, ns), owned.clone())
            .owns(api::<HorizontalPodAutoscaler>(&client, ns), owned)
            .graceful_shutdown_on(shutdown)
            .run(reconcile, error_policy, ctx)
            .for_each(|result| async move {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "reconcile did not complete");
                }
            })
            .await;
    }
}

/// Runs the operator until `shutdown`: checks the CRD, then reconciles.
pub async fn run(
    client: Client,
    config: Config,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<()> {
    Operator::new(client, config, metrics).await?.run(shutdown).await;
    Ok(())
}

fn clusters(client: &Client, config: &Config) -> Api<ChatCluster> {
    api(client, config.namespace.as_deref())
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn key(cc: &ChatCluster) -> String {
    format!("{}/{}", cc.namespace().unwrap_or_default(), cc.name_any())
}

async fn reconcile(cc: Arc<ChatCluster>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    let ns = cc.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    tracing::debug!(cluster = %key(&cc), "reconciling");
    let result = match children::desired(&cc) {
        Ok(children) => apply(&cc, &ctx, &ns, &children).await,
        Err(e) => Err(e),
    };
    let gates = result.as_ref().ok().and_then(|(_, gates)| gates.clone());
    let result = result.map(|(job, _)| job);
    let error = result.as_ref().err().map(|e| e.to_string());
    // The status describes the migration as `apply` saw it: read again, a
    // Job that finished meanwhile would report Deployments not rolled yet
    // as up to date.
    let seen_job = result.as_ref().ok().cloned();
    if let Err(e) = &result {
        ctx.metrics.reconcile_failed(e.reason());
        publish(&ctx, &cc, EventType::Warning, "ReconcileFailed", e.to_string()).await;
    }
    let rolling = gates.as_ref().is_some_and(|g| g.iter().any(|d| d.reason != rollout::COMPLETE));
    if !rolling {
        ctx.samples.lock().expect("not poisoned").remove(&key(&cc));
    }
    let progressing = update_status(&cc, &ctx, &ns, error.as_deref(), seen_job, gates.as_ref()).await?;
    result?;
    ctx.failures.lock().expect("not poisoned").remove(&key(&cc));
    let requeue = if rolling {
        WHILE_ROLLING
    } else if progressing {
        WHILE_PROGRESSING
    } else {
        RESYNC
    };
    Ok(Action::requeue(requeue))
}

/// Exponential backoff per cluster: 2 s, 4 s, 8 s ... up to 5 minutes.
fn error_policy(cc: Arc<ChatCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    let mut failures = ctx.failures.lock().expect("not poisoned");
    let n = failures.entry(key(&cc)).or_insert(0);
    *n = n.saturating_add(1);
    let delay = backoff(*n);
    tracing::warn!(cluster = %key(&cc), error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    BACKOFF_FIRST.saturating_mul(1 << exp).min(BACKOFF_MAX)
}

/// The rollout decisions of a round: gateways, then dispatchers.
type Gates = [Decision; 2];

/// Applies every child; the Deployments only once the migration of the
/// current spec has succeeded, each paused or not by its rollout gate.
/// Returns the migration Job as it decided on, and the gates' decisions
/// when the Deployments were applied.
async fn apply(cc: &ChatCluster, ctx: &Context, ns: &str, children: &Children) -> Result<(Job, Option<Gates>)> {
    let client = &ctx.client;
    ssa(client, ns, &children.config_map).await?;
    if children.generate_jwt_secret {
        ensure_jwt_secret(cc, ctx, ns, &children.jwt_secret_name).await?;
    }
    ssa(client, ns, &children.public_service).await?;
    ssa(client, ns, &children.internal_service).await?;
    let policies = [(&children.gateway_policy, "gateway"), (&children.dispatcher_policy, "dispatcher")];
    for (policy, role) in policies {
        match policy {
            Some(policy) => drop(ssa(client, ns, policy).await?),
            None => delete_if_present::<NetworkPolicy>(client, ns, &children::child_name(cc, role)).await?,
        }
    }
    let pdbs = [(&children.gateway_pdb, "gateway"), (&children.dispatcher_pdb, "dispatcher")];
    for (pdb, role) in pdbs {
        match pdb {
            Some(pdb) => drop(ssa(client, ns, pdb).await?),
            None => delete_if_present::<PodDisruptionBudget>(client, ns, &children::child_name(cc, role)).await?,
        }
    }

    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let job_name = children.migrate_job.name_any();
    let job = match jobs.get_opt(&job_name).await? {
        Some(job) => job,
        None => {
            // The template of a Job is immutable: it is created once, and a
            // new spec gets a new name.
            let job = ssa(client, ns, &children.migrate_job).await?;
            publish(ctx, cc, EventType::Normal, "MigrationStarted", format!("Job {job_name} runs confab migrate"))
                .await;
            job
        }
    };
    remove_stale_jobs(cc, client, ns, &job_name).await?;
    if status::migration(Some(&job)) != Migration::Succeeded {
        return Ok((job, None));
    }

    let gateway = gated(cc, ctx, ns, Role::Gateway, &children.gateway).await?;
    let dispatcher = gated(cc, ctx, ns, Role::Dispatcher, &children.dispatcher).await?;
    let hpas = [(&children.gateway_hpa, "gateway"), (&children.dispatcher_hpa, "dispatcher")];
    for (hpa, role) in hpas {
        match hpa {
            Some(hpa) => drop(ssa(client, ns, hpa).await?),
            None => delete_if_present::<HorizontalPodAutoscaler>(client, ns, &children::child_name(cc, role)).await?,
        }
    }
    match &children.canary {
        Some(canary) => {
            ensure_canary_secret(cc, ctx, ns).await?;
            ssa(client, ns, canary).await?;
        }
        None => delete_if_present::<Deployment>(client, ns, &children::canary::name(cc)).await?,
    }
    Ok((job, Some([gateway, dispatcher])))
}

/// Applies a role's Deployment, paused while its rollout gate says so.
/// Whether a rollout is to come is what a dry run of the apply says: the
/// template the API server would store differs from the current one.
async fn gated(cc: &ChatCluster, ctx: &Context, ns: &str, role: Role, desired: &Deployment) -> Result<Decision> {
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let Some(current) = api.get_opt(&desired.name_any()).await? else {
        // A new Deployment has nothing to roll.
        ssa(&ctx.client, ns, desired).await?;
        return Ok(rollout::decide(role, false, Measure::Unavailable, 0.0));
    };
    let paused_now = current.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
    let mut probe = desired.clone();
    if let Some(spec) = probe.spec.as_mut() {
        spec.paused = Some(paused_now);
    }
    let params = PatchParams::apply(FIELD_MANAGER).force().dry_run();
    let would_be = api.patch(&desired.name_any(), &params, &Patch::Apply(&probe)).await?;
    let template = |d: &Deployment| d.spec.as_ref().map(|s| s.template.clone());
    let changed = template(&would_be) != template(&current);
    let rolling = rollout::rolling(&current, changed);
    let decision = if rolling {
        let (measure, bound, capacity) = measure(cc, ctx, ns, role).await?;
        rollout::capacity_gate(&capacity).unwrap_or_else(|| rollout::decide(role, true, measure, bound))
    } else {
        rollout::decide(role, false, Measure::Unavailable, 0.0)
    };
    if decision.paused != paused_now {
        let verb = if decision.paused { "paused" } else { "resumed" };
        let note = format!("{verb} the rollout of Deployment {}: {}", desired.name_any(), decision.message);
        let reason = if decision.paused { "RolloutPaused" } else { "RolloutResumed" };
        publish(ctx, cc, EventType::Normal, reason, note).await;
    }
    let mut deployment = desired.clone();
    if let Some(spec) = deployment.spec.as_mut() {
        spec.paused = Some(decision.paused);
    }
    ssa(&ctx.client, ns, &deployment).await?;
    Ok(decision)
}

/// A role's measure for its gate, read from its serving pods' `/metrics`,
/// and the spec's bound; for gateways also each one's (live sessions,
/// `max_connections`), for the capacity gate.
async fn measure(cc: &ChatCluster, ctx: &Context, ns: &str, role: Role) -> Result<(Measure, f64, Vec<(f64, f64)>)> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let selector = children::selector_labels(cc, role.as_str());
    let query: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let list = pods.list(&ListParams::default().labels(&query.join(","))).await?;
    let serving: Vec<String> = list.items.iter().filter(|p| rollout::serving(p)).map(|p| p.name_any()).collect();
    let scrapes = serving.iter().map(|pod| async move {
        let exposition = ctx.scraper.scrape(&ctx.client, ns, pod).await;
        (pod.clone(), exposition)
    });
    let scraped: Vec<(String, String)> =
        futures_util::future::join_all(scrapes).await.into_iter().filter_map(|(pod, e)| Some((pod, e?))).collect();
    let bounds = &cc.spec.rollout;
    Ok(match role {
        Role::Dispatcher => {
            let expositions: Vec<String> = scraped.into_iter().map(|(_, e)| e).collect();
            let lag = rollout::sum_over(&expositions, rollout::CONSUMER_LAG);
            (lag.map_or(Measure::Unavailable, Measure::Value), bounds.max_dispatcher_lag as f64, Vec::new())
        }
        Role::Gateway => {
            let opened: std::collections::BTreeMap<String, f64> = scraped
                .iter()
                .filter_map(|(pod, e)| Some((pod.clone(), crate::plugin::metric_sum(e, rollout::SESSIONS_OPENED)?)))
                .collect();
            let bound = f64::from(bounds.max_reconnects_per_second);
            let capacity: Vec<(f64, f64)> = scraped
                .iter()
                .filter_map(|(_, e)| {
                    let live = crate::plugin::metric_sum(e, rollout::CONNECTIONS)?;
                    Some((live, crate::plugin::metric_sum(e, rollout::MAX_CONNECTIONS)?))
                })
                .collect();
            if opened.is_empty() {
                return Ok((Measure::Unavailable, bound, capacity));
            }
            let now = rollout::Sample { at: ctx.started.elapsed().as_secs_f64(), opened };
            let mut samples = ctx.samples.lock().expect("not poisoned");
            let (rate, keep) = rollout::next_rate(samples.get(&key(cc)), now);
            samples.insert(key(cc), keep);
            (rate.map_or(Measure::FirstSample, Measure::Value), bound, capacity)
        }
    })
}

/// Creates the canary user's password Secret once, like the JWT secret:
/// never read, never overwritten.
async fn ensure_canary_secret(cc: &ChatCluster, ctx: &Context, ns: &str) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret = children::canary::generated_secret(cc, &settings::random_secret())?;
    match secrets.create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, &secret).await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Server-side apply with the operator's field manager, taking over fields
/// someone else changed (the spec is the truth).
async fn ssa<K>(client: &Client, ns: &str, object: &K) -> Result<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Ok(api.patch(&object.name_any(), &params, &Patch::Apply(object)).await?)
}

async fn delete_if_present<K>(client: &Client, ns: &str, name: &str) -> Result<()>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates the generated JWT Secret once; never overwrites it. Only
/// creates: the operator may not read Secrets (a conflict says it exists),
/// so a compromised operator discloses none of them.
async fn ensure_jwt_secret(cc: &ChatCluster, ctx: &Context, ns: &str, name: &str) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret = settings::generated_jwt_secret(cc, &settings::random_secret())?;
    match secrets.create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, &secret).await
    {
        Ok(_) => {
            publish(ctx, cc, EventType::Normal, "SecretGenerated", format!("generated the JWT secret {name}")).await;
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Migration Jobs of earlier specs.
async fn remove_stale_jobs(cc: &ChatCluster, client: &Client, ns: &str, current: &str) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let selector = format!("{},app.kubernetes.io/component={}", children::owned_selector(cc), migrate::COMPONENT);
    for job in jobs.list(&ListParams::default().labels(&selector)).await? {
        let name = job.name_any();
        if name != current {
            delete_if_present::<Job>(client, ns, &name).await?;
        }
    }
    Ok(())
}

/// Reads the children back, patches the status, publishes Events for
/// changed conditions. Returns whether something is still in progress.
async fn update_status(
    cc: &ChatCluster,
    ctx: &Context,
    ns: &str,
    error: Option<&str>,
    seen_job: Option<Job>,
    gates: Option<&Gates>,
) -> Result<bool> {
    let client = &ctx.client;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let gateway = deployments.get_opt(&children::child_name(cc, "gateway")).await?;
    let dispatcher = deployments.get_opt(&children::child_name(cc, "dispatcher")).await?;
    let migration = match seen_job {
        Some(job) => Some(job),
        None => Api::<Job>::namespaced(client.clone(), ns).get_opt(&migrate::job_name(cc)).await?,
    };
    let service = Api::<Service>::namespaced(client.clone(), ns).get_opt(&children::child_name(cc, "gateway")).await?;
    let observed = Observed {
        gateway: gateway.as_ref(),
        dispatcher: dispatcher.as_ref(),
        migration: migration.as_ref(),
        public_service: service.as_ref(),
        error,
        gates,
    };
    let new = status::compute(cc, &observed, &Time(k8s_openapi::jiff::Timestamp::now()));
    let progressing = status::condition(Some(&new), status::PROGRESSING).is_some_and(|c| c.status == "True");
    if cc.status.as_ref() == Some(&new) {
        return Ok(progressing);
    }
    for type_ in [AVAILABLE, DEGRADED] {
        let before = status::condition(cc.status.as_ref(), type_);
        let Some(after) = status::condition(Some(&new), type_) else { continue };
        if before.map(|c| (&c.status, &c.reason)) == Some((&after.status, &after.reason)) {
            continue;
        }
        let bad = (type_ == AVAILABLE) == (after.status == "False");
        // A new cluster starts unavailable while it migrates (the
        // MigrationStarted Event says so); only news is published.
        if (before.is_none() && !bad) || after.reason == "MigrationPending" {
            continue;
        }
        let kind = if bad { EventType::Warning } else { EventType::Normal };
        let note = format!("{type_}={}: {}", after.status, after.message);
        publish(ctx, cc, kind, &after.reason, note).await;
    }
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), ns);
    let patch = serde_json::json!({"status": new});
    match api.patch_status(&cc.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        // Deleted while this reconcile ran: garbage collection removes the
        // children, and there is no status left to write.
        Err(kube::Error::Api(s)) if s.code == 404 => {
            tracing::debug!(cluster = %key(cc), "deleted during the reconcile; status not written");
            Ok(false)
        }
        Err(e) => Err(e.into()),
        Ok(_) => Ok(progressing),
    }
}

/// Publishes an Event on the cluster; a failure to do so is only logged.
async fn publish(ctx: &Context, cc: &ChatCluster, type_: EventType, reason: &str, note: String) {
    let event =
        Event { type_, reason: reason.to_owned(), note: Some(note), action: "Reconcile".into(), secondary: None };
    if let Err(e) = ctx.recorder.publish(&event, &cc.object_ref(&())).await {
        tracing::warn!(cluster = %key(cc), error = %e, "publishing an Event failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_two_seconds_up_to_five_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(5), Duration::from_secs(32));
        assert_eq!(backoff(9), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }
}
