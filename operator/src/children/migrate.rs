//! The Job that runs `confab migrate` (topics and schema, idempotent)
//! before the gateways and dispatchers start, and again whenever what it
//! depends on changes (image, Kafka, CQL settings): its name carries a hash
//! of those, so a change is a new Job.

use k8s_openapi::api::batch::v1::Job;
use serde_json::json;

use super::workloads::{
    backend_env, backend_mounts, backend_volumes, container_security_context, image, pod_security_context,
};
use super::{child_name, labels, metadata, stable_hash, typed};
use crate::Result;
use crate::crd::ChatCluster;

pub const COMPONENT: &str = "migrate";

/// `<name>-migrate-<hash>`.
pub fn job_name(cc: &ChatCluster) -> String {
    let inputs = serde_json::to_string(&json!([image(cc), cc.spec.kafka, cc.spec.cql])).expect("spec serializes");
    child_name(cc, &format!("migrate-{}", &stable_hash(inputs.as_bytes())[..10]))
}

pub fn job(cc: &ChatCluster) -> Result<Job> {
    let (kafka, cql) = (&cc.spec.kafka, &cc.spec.cql);
    let mut env = backend_env(cc);
    env.extend([
        json!({"name": "CONFAB_PARTITIONS", "value": kafka.partitions.to_string()}),
        json!({"name": "CONFAB_KAFKA_REPLICATION", "value": kafka.replication_factor.to_string()}),
        json!({"name": "CONFAB_CQL_REPLICATION", "value": cql.replication.shorthand()}),
        json!({"name": "CONFAB_LOG_FORMAT", "value": "json"}),
    ]);
    let mut pod_spec = json!({
        "restartPolicy": "Never",
        "containers": [{
            "name": COMPONENT,
            "image": image(cc),
            "imagePullPolicy": cc.spec.image.pull_policy,
            "args": [COMPONENT],
            "env": env,
            "volumeMounts": backend_mounts(cc),
            "securityContext": container_security_context(),
        }],
        "volumes": backend_volumes(cc),
        "securityContext": pod_security_context(),
        "enableServiceLinks": false,
        "automountServiceAccountToken": false,
    });
    // Scheduling constraints of the dispatchers apply to the migration too.
    super::workloads::apply_overrides(&mut pod_spec, &cc.spec.dispatcher.pod);
    if !cc.spec.image.pull_secrets.is_empty() {
        pod_spec["imagePullSecrets"] = cc.spec.image.pull_secrets.iter().map(|n| json!({"name": n})).collect();
    }
    typed(
        "Job",
        json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": metadata(cc, job_name(cc), COMPONENT)?,
            "spec": {
                "backoffLimit": 6,
                "activeDeadlineSeconds": 900,
                "template": {"metadata": {"labels": labels(cc, COMPONENT)}, "spec": pod_spec},
            },
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::tests::minimal;

    #[test]
    fn the_job_runs_migrate_with_the_clusters_partitions_and_replication() {
        let job = job(&minimal()).unwrap();
        let c = &job.spec.unwrap().template.spec.unwrap().containers[0];
        assert_eq!(c.args.as_deref(), Some(&["migrate".to_owned()][..]));
        let env = c.env.as_ref().unwrap();
        let get = |n: &str| env.iter().find(|e| e.name == n).and_then(|e| e.value.clone()).unwrap();
        assert_eq!(get("CONFAB_PARTITIONS"), "16");
        assert_eq!(get("CONFAB_KAFKA_REPLICATION"), "1");
        assert_eq!(get("CONFAB_CQL_REPLICATION"), "SimpleStrategy:1");
    }

    #[test]
    fn the_replication_reaches_migrate_as_a_class_and_factors() {
        let replication = |spec: serde_json::Value| {
            let cc = crate::children::tests::cluster(json!({
                "kafka": {"bootstrapServers": "kafka:9092"},
                "cql": {"contactPoints": ["cql:9042"], "replication": spec},
            }));
            let job = job(&cc).unwrap();
            let c = job.spec.unwrap().template.spec.unwrap().containers.remove(0);
            c.env.unwrap().into_iter().find(|e| e.name == "CONFAB_CQL_REPLICATION").unwrap().value.unwrap()
        };
        assert_eq!(replication(json!({"factor": 3})), "SimpleStrategy:3");
        assert_eq!(
            replication(json!({"class": "NetworkTopologyStrategy", "datacenters": {"dc2": 2, "dc1": 3}})),
            "NetworkTopologyStrategy:dc1=3,dc2=2"
        );
        assert_eq!(
            replication(json!({"class": "NetworkTopologyStrategy", "factor": 3, "datacenters": {"dc9": 1}})),
            "NetworkTopologyStrategy:3,dc9=1"
        );
    }

    #[test]
    fn the_migration_reaches_the_database_with_the_clusters_cql_tls() {
        let cc = crate::children::tests::cluster(json!({
            "kafka": {"bootstrapServers": "kafka:9092"},
            "cql": {"contactPoints": ["cql:9142"], "tls": {"secretName": "cql-ca"}},
        }));
        let job = job(&cc).unwrap();
        let pod = job.spec.unwrap().template.spec.unwrap();
        let env = pod.containers[0].env.clone().unwrap();
        assert!(env.iter().any(|e| e.name == "CONFAB_CQL_TLS_CA"));
        let volumes = pod.volumes.unwrap();
        assert!(volumes.iter().any(|v| v.secret.as_ref().is_some_and(|s| s.secret_name.as_deref() == Some("cql-ca"))));
    }

    #[test]
    fn a_new_image_or_backend_is_a_new_job_but_a_replica_change_is_not() {
        let base = job_name(&minimal());
        assert!(base.starts_with("chat-migrate-") && base.len() <= 63, "{base}");
        let mut cc = minimal();
        cc.spec.gateway.replicas = Some(7);
        assert_eq!(job_name(&cc), base);
        cc.spec.image.tag = "9.9.9".into();
        assert_ne!(job_name(&cc), base);
        let mut cc = minimal();
        cc.spec.cql.replication.class = "NetworkTopologyStrategy".into();
        cc.spec.cql.replication.datacenters.insert("dc1".into(), 3);
        assert_ne!(job_name(&cc), base);
    }
}
