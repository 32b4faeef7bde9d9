//! The `ChatCluster` custom resource (`confab.dev/v1alpha1`): what a user
//! applies, and the status the operator reports. The doc comments are the
//! field descriptions `kubectl explain chatcluster.spec...` prints; the CEL
//! rules (`x-kubernetes-validations`) are checked by the API server.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, EnvVar, ResourceRequirements, Toleration, TopologySpreadConstraint};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Confab cluster: gateways that hold client WebSocket sessions and
/// dispatchers that persist and fan out messages, over an existing Kafka and
/// CQL database (ScyllaDB or Cassandra).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "confab.dev",
    version = "v1alpha1",
    kind = "ChatCluster",
    plural = "chatclusters",
    shortname = "cc",
    namespaced,
    status = "ChatClusterStatus",
    derive = "PartialEq",
    doc = "A Confab chat cluster: the operator runs its gateways and dispatchers over the Kafka and CQL database it names.",
    validation = Rule::new("size(self.metadata.name) <= 40").message("the name of a ChatCluster is at most 40 characters: its children's names add a suffix and must fit 63"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Available\")].status",
        description = "Whether clients can chat: at least one gateway and one dispatcher are ready and the schema is migrated"
    ),
    printcolumn(
        name = "Gateways",
        type_ = "string",
        json_path = ".status.gateways.summary",
        description = "Ready/desired gateway pods"
    ),
    printcolumn(
        name = "Dispatchers",
        type_ = "string",
        json_path = ".status.dispatchers.summary",
        description = "Ready/desired dispatcher pods"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("!has(self.dispatcher.autoscaling) || self.dispatcher.autoscaling.maxReplicas <= self.kafka.partitions").message("dispatcher.autoscaling.maxReplicas must not exceed kafka.partitions: a partition is consumed by one dispatcher at a time"))]
#[x_kube(validation = Rule::new("!has(self.dispatcher.replicas) || self.dispatcher.replicas <= self.kafka.partitions").message("dispatcher.replicas must not exceed kafka.partitions: a partition is consumed by one dispatcher at a time"))]
#[serde(rename_all = "camelCase")]
pub struct ChatClusterSpec {
    /// The container image of the `confab` binary, which serves every role
    /// (gateway, dispatcher, migrate).
    #[serde(default)]
    pub image: ImageSpec,

    /// Gateways: hold client WebSocket sessions, write to Kafka, read from
    /// the CQL database, take pushes from dispatchers on the internal port.
    #[serde(default)]
    pub gateway: GatewaySpec,

    /// Dispatchers: consume the ingress topic, persist, acknowledge and push
    /// events to the gateways.
    #[serde(default)]
    pub dispatcher: DispatcherSpec,

    /// The Kafka cluster Confab uses as its message bus.
    pub kafka: KafkaSpec,

    /// The CQL database (ScyllaDB or Cassandra) Confab stores accounts,
    /// rooms and history in.
    pub cql: CqlSpec,

    /// How client tokens are signed and verified.
    #[serde(default)]
    pub auth: AuthSpec,

    /// Which traffic may reach the pods: the NetworkPolicies the operator
    /// generates.
    #[serde(default)]
    pub network: NetworkSpec,

    /// Extra settings passed through to the processes as their TOML
    /// configuration file (keys as in `confab gateway --help`, with
    /// underscores). Settings the operator manages (listeners, backends,
    /// secrets) win over these. They are stored in a ConfigMap, so the keys
    /// that carry secrets (`jwt_secret`, `cql_password`, `kafka_properties`)
    /// are refused: use `auth.jwtSecret`, `cql.credentialsSecret`,
    /// `kafka.tls` and `kafka.sasl`, which read Secrets.
    #[serde(default)]
    pub config: ExtraConfig,

    /// A synthetic chat user (`confab canary`) that sends a message through
    /// every gateway every few seconds and checks every gateway delivers
    /// it; its metrics (`confab_canary_*`) feed the ConfabCanaryFailing
    /// alert. Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanarySpec>,

    /// How the operator gates rolling updates (a new image, configuration
    /// or pod template): gateways are replaced one at a time (a new one
    /// ready before an old one drains), and a rollout is paused
    /// (`spec.paused` of the Deployment) while the gateways see more
    /// reconnections than `maxReconnectsPerSecond` or the dispatchers lag
    /// more than `maxDispatcherLag` records.
    #[serde(default)]
    pub rollout: RolloutSpec,

    /// The server API (`/v1/server/*`, docs/server-api.md) an application
    /// calls with an API key. Off (every route 404) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_api: Option<ServerApiSpec>,

    /// Webhooks and the message filter, run by the dispatchers
    /// (docs/webhooks.md). Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<HooksSpec>,

    /// S3-compatible object storage (AWS S3, MinIO, SeaweedFS, Ceph RGW)
    /// for attachment bytes, shared by every gateway. Rendered into the
    /// gateways as `CONFAB_S3_*` settings, with the credentials from a
    /// Secret as `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (the
    /// operator never reads the Secret). Absent: none configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_store: Option<ObjectStoreSpec>,
}

/// The bucket attachments go to (it must exist; a gateway checks it is
/// reachable with these credentials at start and fails its startup probe
/// otherwise).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStoreSpec {
    /// Base URL of the S3 API, `http://` or `https://` and a host (and
    /// port), no path: `https://s3.eu-west-1.amazonaws.com`,
    /// `http://minio.storage.svc:9000`.
    #[schemars(length(min = 8, max = 2048), regex(pattern = r"^https?://[^/?#@\s]+/?$"))]
    pub endpoint: String,

    /// The bucket (S3 naming: 3 to 63 of a-z, 0-9, `.`, `-`).
    #[schemars(length(min = 3, max = 63), regex(pattern = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$"))]
    pub bucket: String,

    /// The region requests are signed for.
    #[serde(default = "default_s3_region")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9-]+$"))]
    pub region: String,

    /// Path-style URLs (`ENDPOINT/BUCKET/KEY`: MinIO, SeaweedFS, Ceph);
    /// false for virtual-hosted ones (`BUCKET.ENDPOINT/KEY`: AWS).
    #[serde(default = "yes")]
    pub path_style: bool,

    /// The Secret in this namespace holding the access key id and the
    /// secret access key.
    pub credentials_secret: ObjectStoreCredentials,
}

fn default_s3_region() -> String {
    "us-east-1".into()
}

/// A Secret with the S3 credentials. The default keys are those of the
/// Secrets Rook's and other ObjectBucketClaims write.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStoreCredentials {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// Key of the access key id in the Secret.
    #[serde(default = "default_access_key_id_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub access_key_id_key: String,

    /// Key of the secret access key in the Secret.
    #[serde(default = "default_secret_access_key_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub secret_access_key_key: String,
}

fn default_access_key_id_key() -> String {
    "AWS_ACCESS_KEY_ID".into()
}
fn default_secret_access_key_key() -> String {
    "AWS_SECRET_ACCESS_KEY".into()
}

impl ObjectStoreSpec {
    /// What the schema says, checked again where the operator renders the
    /// gateways (a cluster stored before the schema had it, `confab crd
    /// --children`): the first problem, naming its field.
    pub fn problem(&self) -> Option<String> {
        let host = self
            .endpoint
            .trim_end_matches('/')
            .strip_prefix("https://")
            .or_else(|| self.endpoint.trim_end_matches('/').strip_prefix("http://"));
        if !host.is_some_and(|h| !h.is_empty() && !h.contains(['/', '?', '#', '@']) && !h.contains(char::is_whitespace))
        {
            return Some(format!(
                "objectStore.endpoint `{}` is not an http:// or https:// URL of a host (and port), without a path",
                self.endpoint
            ));
        }
        let b = &self.bucket;
        if !(3..=63).contains(&b.len())
            || !b.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
            || !b.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !b.ends_with(|c: char| c.is_ascii_alphanumeric())
        {
            return Some(format!("objectStore.bucket `{b}` is not a bucket name (3 to 63 of a-z, 0-9, '.', '-')"));
        }
        if self.region.is_empty() || !self.region.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') {
            return Some(format!("objectStore.region `{}` is not a region name", self.region));
        }
        let c = &self.credentials_secret;
        if c.name.is_empty() {
            return Some("objectStore.credentialsSecret.name is empty".into());
        }
        for (field, key) in [("accessKeyIdKey", &c.access_key_id_key), ("secretAccessKeyKey", &c.secret_access_key_key)]
        {
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
                return Some(format!("objectStore.credentialsSecret.{field} `{key}` is not a Secret key"));
            }
        }
        None
    }
}

/// The bounds of a health-gated rolling update, read from the pods'
/// `/metrics` (through the API server's pod proxy) while a rollout runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Gateways roll only while all gateways together open fewer new
    /// sessions per second than this (`confab_sessions_opened_total`):
    /// the clients of the last drained gateway have reconnected.
    #[serde(default = "default_max_reconnects")]
    #[schemars(range(min = 1))]
    pub max_reconnects_per_second: u32,

    /// Dispatchers roll only while their consumer lag
    /// (`confab_consumer_lag_records`, summed over the dispatchers) is at
    /// most this many records.
    #[serde(default = "default_max_lag")]
    #[schemars(range(min = 0))]
    pub max_dispatcher_lag: u64,
}

fn default_max_reconnects() -> u32 {
    200
}
fn default_max_lag() -> u64 {
    10_000
}

impl Default for RolloutSpec {
    fn default() -> Self {
        Self { max_reconnects_per_second: default_max_reconnects(), max_dispatcher_lag: default_max_lag() }
    }
}

/// The server API's keys: a Secret whose key `api-keys` holds the key
/// file, one `name:key` a line. The operator mounts it into the gateways
/// (never reads it); the gateways read it when they start, so new keys take
/// effect with the next rollout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerApiSpec {
    /// Name of the Secret in this namespace (key `api-keys`).
    #[schemars(length(min = 1, max = 253))]
    pub keys_secret: String,

    /// Calls one key may make per second, on average, on each gateway
    /// (`api_rate_per_second`); over it a call is `429` `rate_limited`.
    /// Absent: the gateways' default, 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub rate_per_second: Option<u32>,

    /// Calls one key may make at once before `ratePerSecond` applies
    /// (`api_rate_burst`). Absent: the gateways' default, 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub rate_burst: Option<u32>,
}

impl ServerApiSpec {
    /// What the schema says, checked again where the operator renders the
    /// gateways (a cluster stored before the schema had it): the first
    /// problem, naming its field.
    pub fn problem(&self) -> Option<String> {
        if self.keys_secret.is_empty() {
            return Some("serverApi.keysSecret is empty".into());
        }
        for (field, value) in [("ratePerSecond", self.rate_per_second), ("rateBurst", self.rate_burst)] {
            if value == Some(0) {
                return Some(format!("serverApi.{field} is 0: it must be at least 1 (absent: the gateways' default)"));
            }
        }
        None
    }
}

/// What the dispatchers tell the application (webhooks) and ask it (the
/// message filter).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.webhooks) || size(self.webhooks) == 0 || has(self.secretName)").message("hooks.webhooks need hooks.secretName: every call is signed"))]
#[serde(rename_all = "camelCase")]
pub struct HooksSpec {
    /// Each stored message, membership change, edit, deletion and reaction
    /// is POSTed, signed, to every webhook that wants its kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookSpec>,

    /// Name of a Secret in this namespace whose key `secret` signs webhook
    /// and filter calls (`Confab-Signature`). Required with `webhooks`. The
    /// operator mounts it; it never reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,

    /// The message filter, asked before each message is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterSpec>,

    /// More root certificates (a PEM bundle) trusted for https:// webhooks
    /// and the filter, besides the system's: a key of a Secret or of a
    /// ConfigMap in this namespace, mounted into the dispatchers and passed
    /// as `webhook_ca_file`. The operator never reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<CaBundleRef>,
}

impl HooksSpec {
    /// What the schema says, checked again where the operator renders the
    /// dispatchers (a cluster stored before the schema had it): the first
    /// problem, naming its field.
    pub fn problem(&self) -> Option<String> {
        let url = |u: &str| {
            let rest = u.strip_prefix("https://").or_else(|| u.strip_prefix("http://"));
            rest.is_some_and(|r| !r.is_empty() && !r.contains(char::is_whitespace))
        };
        for (i, hook) in self.webhooks.iter().enumerate() {
            if !url(&hook.url) || hook.url.contains('#') {
                return Some(format!("hooks.webhooks[{i}].url `{}` is not an http:// or https:// URL", hook.url));
            }
        }
        if !self.webhooks.is_empty() && self.secret_name.is_none() {
            return Some("hooks.webhooks need hooks.secretName: every call is signed".into());
        }
        if let Some(filter) = &self.filter
            && !url(&filter.url)
        {
            return Some(format!("hooks.filter.url `{}` is not an http:// or https:// URL", filter.url));
        }
        self.ca_bundle.as_ref().and_then(CaBundleRef::problem)
    }
}

/// A PEM bundle of CA certificates: one key of a Secret or of a ConfigMap
/// in this namespace (exactly one of `secretName` and `configMapName`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.secretName) != has(self.configMapName)").message("hooks.caBundle takes exactly one of secretName and configMapName"))]
#[serde(rename_all = "camelCase")]
pub struct CaBundleRef {
    /// Name of a Secret holding the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,

    /// Name of a ConfigMap holding the bundle (as cert-manager's
    /// trust-manager writes them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub config_map_name: Option<String>,

    /// The key holding the PEM bundle.
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

fn default_ca_key() -> String {
    "ca.crt".into()
}

impl CaBundleRef {
    /// The first problem, naming its field.
    pub fn problem(&self) -> Option<String> {
        match (&self.secret_name, &self.config_map_name) {
            (Some(_), Some(_)) | (None, None) => {
                return Some("hooks.caBundle takes exactly one of secretName and configMapName".into());
            }
            (Some(n), None) | (None, Some(n)) if n.is_empty() => {
                return Some("hooks.caBundle names an empty Secret or ConfigMap".into());
            }
            _ => {}
        }
        let k = &self.key;
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
            return Some(format!("hooks.caBundle.key `{k}` is not a key of a Secret or ConfigMap"));
        }
        None
    }
}

/// One webhook.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// An http:// or https:// URL (a private CA: `hooks.caBundle`).
    #[schemars(length(min = 8), regex(pattern = r"^https?://[^#\s]+$"))]
    pub url: String,
    /// The kinds of event it gets (`message`, `member`, `edit`, `delete`,
    /// `reaction`); every kind when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<WebhookEvent>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookEvent {
    Message,
    Member,
    Edit,
    Delete,
    Reaction,
}

/// The message filter.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FilterSpec {
    /// An http:// or https:// URL (a private CA: `hooks.caBundle`).
    #[schemars(length(min = 8), regex(pattern = r"^https?://\S+$"))]
    pub url: String,
    /// Deadline of one call, in milliseconds (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60000))]
    pub timeout_ms: Option<u32>,
    /// What a message gets while the filter is down: `allow` (stored, the
    /// default) or `refuse` (`unavailable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_down: Option<FilterWhenDown>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FilterWhenDown {
    Allow,
    Refuse,
}

/// The canary: one pod, `<name>-canary`, whose user `confab-canary` has a
/// password the operator generates into the Secret `<name>-canary`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanarySpec {
    /// Whether to run the canary.
    #[serde(default)]
    pub enabled: bool,

    /// Seconds between two rounds of probes (one per gateway each).
    #[serde(default = "default_canary_interval")]
    #[schemars(range(min = 1, max = 3600))]
    pub interval_seconds: u32,
}

fn default_canary_interval() -> u32 {
    10
}

/// The NetworkPolicies of a cluster. With them, a gateway's public port
/// (8080) stays open to everyone, its internal push port (7070) admits
/// only this cluster's dispatcher pods, and the admin port (9090:
/// `/metrics`, `/healthz`, `/readyz`) of gateways and dispatchers admits
/// only `adminFrom`. Outbound traffic is not restricted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    /// Whether to create the NetworkPolicies. Turn off only where the
    /// network plugin does not enforce NetworkPolicies (they would protect
    /// nothing) or where you manage your own; existing ones are deleted.
    #[serde(default = "yes")]
    pub policies: bool,

    /// Who may reach the admin port of gateways and dispatchers, as
    /// NetworkPolicy peers. Default: every pod of this namespace. `[]`: no
    /// pod at all (the kubelet's probes are always allowed). A Prometheus in
    /// another namespace needs, for example, `{namespaceSelector:
    /// {matchLabels: {kubernetes.io/metadata.name: monitoring}}}`.
    #[serde(default = "same_namespace")]
    pub admin_from: Vec<NetworkPolicyPeer>,

    /// TLS on the push link from dispatchers to the gateways' internal port
    /// (7070). Without it the link is plain WebSocket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_tls: Option<InternalTls>,
}

/// TLS on the push link: a Secret (type `kubernetes.io/tls`, as
/// cert-manager writes it) with `tls.crt` and `tls.key`, the certificate
/// every gateway presents, which must name `<name>-gateway-internal.<namespace>.svc`,
/// and `ca.crt`, the CA dispatchers trust for it (keep that CA for this use
/// alone). The operator mounts the Secret; it never reads it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InternalTls {
    /// Name of the Secret in this namespace.
    #[schemars(length(min = 1))]
    pub secret_name: String,

    /// Mutual TLS: gateways also require each dispatcher to present a client
    /// certificate from `ca.crt`; dispatchers present the same `tls.crt` /
    /// `tls.key`, which then needs both the server and the client auth usage.
    #[serde(default)]
    pub mutual: bool,
}

/// Every pod of the policy's own namespace.
fn same_namespace() -> Vec<NetworkPolicyPeer> {
    vec![NetworkPolicyPeer { pod_selector: Some(Default::default()), ..Default::default() }]
}

impl Default for NetworkSpec {
    fn default() -> Self {
        Self { policies: true, admin_from: same_namespace(), internal_tls: None }
    }
}

/// Which image to run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    /// Image repository, without tag.
    #[serde(default = "default_repository")]
    pub repository: String,

    /// Image tag.
    #[serde(default = "default_tag")]
    pub tag: String,

    /// When the kubelet pulls the image: Always, IfNotPresent or Never.
    #[serde(default = "default_pull_policy")]
    #[schemars(extend("enum" = ["Always", "IfNotPresent", "Never"]))]
    pub pull_policy: String,

    /// Names of Secrets in this namespace used to pull the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_secrets: Vec<String>,
}

fn default_repository() -> String {
    "ghcr.io/confab-chat/confab".into()
}
fn default_tag() -> String {
    env!("CARGO_PKG_VERSION").into()
}
fn default_pull_policy() -> String {
    "IfNotPresent".into()
}

impl Default for ImageSpec {
    fn default() -> Self {
        Self {
            repository: default_repository(),
            tag: default_tag(),
            pull_policy: default_pull_policy(),
            pull_secrets: Vec::new(),
        }
    }
}

/// The gateways.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("!(has(self.replicas) && has(self.autoscaling))").message("gateway.replicas and gateway.autoscaling are mutually exclusive: with autoscaling the HorizontalPodAutoscaler sets the replicas"))]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// Number of gateway pods (default 2). Leave unset when `autoscaling` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,

    /// CPU and memory requests and limits of the gateway container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// The public Service clients connect to.
    #[serde(default)]
    pub service: ServiceSpec,

    /// How long a gateway's clients get to reconnect elsewhere on shutdown:
    /// on SIGTERM the gateway sends `bye server_restart`, closes sessions
    /// with 1012 and waits up to this long. The pod's termination grace
    /// period is this plus 15 seconds.
    #[serde(default = "default_drain_seconds")]
    #[schemars(range(min = 0, max = 3600))]
    pub drain_seconds: i32,

    /// Overrides of the gateway pods' template.
    #[serde(default)]
    pub pod: PodOverrides,

    /// The gateways' PodDisruptionBudget.
    #[serde(default)]
    pub pod_disruption_budget: PodDisruptionBudgetSpec,

    /// The raw TCP listener (`tcp_listen`: the v1 session as
    /// newline-delimited JSON over TCP, for clients without WebSocket): the
    /// gateways listen on container port 7000 (`tcp`) and the public
    /// Service exposes it. Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpListenerSpec>,

    /// Scale gateways with a HorizontalPodAutoscaler on the per-pod custom
    /// metric `confab_gateway_connections` (open client connections; needs a
    /// custom metrics adapter such as prometheus-adapter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<GatewayAutoscaling>,
}

fn default_drain_seconds() -> i32 {
    20
}

/// The gateways' raw TCP listener.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TcpListenerSpec {
    /// Port of the public Service for raw TCP clients.
    #[serde(default = "default_tcp_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`): the listener
    /// speaks TLS with it (`tcp_tls_cert`, `tcp_tls_key`). Plain TCP when
    /// absent: then tokens cross the network in clear unless something in
    /// front terminates TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret: Option<String>,
}

fn default_tcp_port() -> i32 {
    7000
}

/// The dispatchers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("!(has(self.replicas) && has(self.autoscaling))").message("dispatcher.replicas and dispatcher.autoscaling are mutually exclusive: with autoscaling the HorizontalPodAutoscaler sets the replicas"))]
#[serde(rename_all = "camelCase")]
pub struct DispatcherSpec {
    /// Number of dispatcher pods (default 2; at most `kafka.partitions`).
    /// Leave unset when `autoscaling` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,

    /// CPU and memory requests and limits of the dispatcher container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Overrides of the dispatcher pods' template.
    #[serde(default)]
    pub pod: PodOverrides,

    /// The dispatchers' PodDisruptionBudget.
    #[serde(default)]
    pub pod_disruption_budget: PodDisruptionBudgetSpec,

    /// Scale dispatchers with a HorizontalPodAutoscaler on the external
    /// metric `confab_consumer_lag_records` (ingress records not yet
    /// committed, selected by label `chatcluster=<name>`; needs an external
    /// metrics adapter such as prometheus-adapter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<DispatcherAutoscaling>,
}

/// The public Service of the gateways.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Service type: ClusterIP, NodePort or LoadBalancer.
    #[serde(default = "default_service_type", rename = "type")]
    #[schemars(extend("enum" = ["ClusterIP", "NodePort", "LoadBalancer"]))]
    pub type_: String,

    /// Port the Service listens on (HTTP API, WebSocket `/v1/ws`, web client).
    #[serde(default = "default_service_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Annotations of the Service (for example a cloud load balancer's settings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn default_service_type() -> String {
    "ClusterIP".into()
}
fn default_service_port() -> i32 {
    80
}

impl Default for ServiceSpec {
    fn default() -> Self {
        Self { type_: default_service_type(), port: default_service_port(), annotations: BTreeMap::new() }
    }
}

/// What may be changed in the pods' template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Extra labels of the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// Extra annotations of the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,

    /// Node labels the pods must be scheduled on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations of the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Affinity and anti-affinity of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// How the pods spread over zones and nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,

    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,

    /// ServiceAccount the pods run as (default: the namespace's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,

    /// Extra environment variables of the container (for example
    /// `RUST_LOG`); variables the operator sets win.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}

/// A PodDisruptionBudget: how many pods voluntary disruptions (drains,
/// upgrades of nodes) may take down at once.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!(has(self.minAvailable) && has(self.maxUnavailable))").message("minAvailable and maxUnavailable are mutually exclusive"))]
#[serde(rename_all = "camelCase")]
pub struct PodDisruptionBudgetSpec {
    /// Whether to create the PodDisruptionBudget.
    #[serde(default = "yes")]
    pub enabled: bool,

    /// Pods that must stay available (a number or a percentage). Without
    /// this or `maxUnavailable`, at most one pod may be unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrString>,

    /// Pods that may be unavailable at once (a number or a percentage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}

fn yes() -> bool {
    true
}

impl Default for PodDisruptionBudgetSpec {
    fn default() -> Self {
        Self { enabled: true, min_available: None, max_unavailable: None }
    }
}

/// Autoscaling of the gateways.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct GatewayAutoscaling {
    /// Fewest gateway pods.
    #[schemars(range(min = 1))]
    pub min_replicas: i32,

    /// Most gateway pods.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,

    /// Open client connections per gateway pod the autoscaler aims at
    /// (metric `confab_gateway_connections`, averaged over the pods).
    #[schemars(range(min = 1))]
    pub target_connections_per_pod: i64,
}

/// Autoscaling of the dispatchers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct DispatcherAutoscaling {
    /// Fewest dispatcher pods.
    #[schemars(range(min = 1))]
    pub min_replicas: i32,

    /// Most dispatcher pods; at most `kafka.partitions`, since each
    /// partition is consumed by one dispatcher at a time.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,

    /// Consumer lag (ingress records not yet committed) per dispatcher the
    /// autoscaler aims at (external metric `confab_consumer_lag_records`).
    #[schemars(range(min = 1))]
    pub target_lag_per_replica: i64,
}

/// The Kafka cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSpec {
    /// Bootstrap servers, `host:port,host:port`.
    #[schemars(length(min = 1))]
    pub bootstrap_servers: String,

    /// Prefix of Confab's topics (`<prefix>.ingress`, `<prefix>.gateways`)
    /// and consumer groups. Immutable: the data lives in those topics.
    #[serde(default = "default_topic_prefix")]
    #[schemars(length(min = 1, max = 200), regex(pattern = r"^[A-Za-z0-9._-]+$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("kafka.topicPrefix is immutable"))]
    pub topic_prefix: String,

    /// Ingress partitions, fixed when the topics are created: message
    /// sequence numbers come from partition offsets. Immutable.
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("kafka.partitions is immutable: sequence numbers come from partition offsets"))]
    pub partitions: i32,

    /// Replication factor of the topics when they are created.
    #[serde(default = "default_replication_factor")]
    #[schemars(range(min = 1))]
    pub replication_factor: i32,

    /// TLS to the brokers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<KafkaTls>,

    /// SASL authentication to the brokers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<KafkaSasl>,
}

fn default_topic_prefix() -> String {
    "confab".into()
}
fn default_partitions() -> i32 {
    16
}
fn default_replication_factor() -> i32 {
    1
}

/// TLS to Kafka: a Secret with the CA certificate (`ca.crt`) and, for
/// client authentication, `tls.crt` and `tls.key`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaTls {
    /// Name of the Secret in this namespace.
    #[schemars(length(min = 1))]
    pub secret_name: String,

    /// Whether to present the client certificate `tls.crt` / `tls.key`.
    #[serde(default)]
    pub client_certificate: bool,
}

/// SASL to Kafka: a Secret with keys `username` and `password`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSasl {
    /// Name of the Secret in this namespace.
    #[schemars(length(min = 1))]
    pub secret_name: String,

    /// SASL mechanism.
    #[serde(default = "default_sasl_mechanism")]
    #[schemars(extend("enum" = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]))]
    pub mechanism: String,
}

fn default_sasl_mechanism() -> String {
    "SCRAM-SHA-512".into()
}

/// The CQL database.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CqlSpec {
    /// Contact points, `host:port`.
    #[schemars(length(min = 1))]
    pub contact_points: Vec<String>,

    /// Keyspace. Immutable: the data lives there.
    #[serde(default = "default_keyspace")]
    #[schemars(length(min = 1, max = 48), regex(pattern = r"^[A-Za-z][A-Za-z0-9_]*$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("cql.keyspace is immutable"))]
    pub keyspace: String,

    /// Replication of the keyspace when the migration creates it (an
    /// existing keyspace is left as it is).
    #[serde(default)]
    pub replication: CqlReplication,

    /// Name of a Secret in this namespace with keys `username` and
    /// `password`, when the database requires authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,

    /// TLS to the database. The nodes' certificates are always verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<CqlTls>,
}

fn default_keyspace() -> String {
    "confab".into()
}

/// The keyspace's replication class and factors: `{class: SimpleStrategy,
/// factor: 3}` or `{class: NetworkTopologyStrategy, datacenters: {dc1: 3,
/// dc2: 3}}`. Passed to `confab migrate` as `--cql-replication`, which
/// checks the data center names (letters, digits, `_`, `-`, `.`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.class == 'NetworkTopologyStrategy' || !has(self.datacenters)").message("cql.replication.datacenters is for NetworkTopologyStrategy; SimpleStrategy takes factor alone"))]
#[x_kube(validation = Rule::new("self.class == 'SimpleStrategy' || has(self.factor) || (has(self.datacenters) && size(self.datacenters) > 0)").message("cql.replication: NetworkTopologyStrategy needs datacenters (or a factor for every data center)"))]
#[serde(rename_all = "camelCase")]
pub struct CqlReplication {
    /// `SimpleStrategy` (a single data center) or `NetworkTopologyStrategy`.
    #[serde(default = "default_replication_class")]
    #[schemars(extend("enum" = ["SimpleStrategy", "NetworkTopologyStrategy"]))]
    pub class: String,

    /// SimpleStrategy: the copies of each row (default 1).
    /// NetworkTopologyStrategy: the copies in every data center that
    /// `datacenters` does not name (Cassandra 4 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub factor: Option<i32>,

    /// NetworkTopologyStrategy: the copies in each data center, e.g.
    /// `{dc1: 3, dc2: 3}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "datacenter_factors")]
    pub datacenters: BTreeMap<String, i32>,
}

fn default_replication_class() -> String {
    "SimpleStrategy".into()
}

impl Default for CqlReplication {
    fn default() -> Self {
        Self { class: default_replication_class(), factor: None, datacenters: BTreeMap::new() }
    }
}

impl CqlReplication {
    /// As `confab migrate --cql-replication` takes it.
    pub fn shorthand(&self) -> String {
        if self.class == "SimpleStrategy" {
            return format!("SimpleStrategy:{}", self.factor.unwrap_or(1));
        }
        let mut parts: Vec<String> = self.factor.iter().map(i32::to_string).collect();
        parts.extend(self.datacenters.iter().map(|(dc, n)| format!("{dc}={n}")));
        format!("{}:{}", self.class, parts.join(","))
    }
}

/// Data center name to replication factor, 1 to 64, at most 16 data centers.
fn datacenter_factors(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 16,
        "additionalProperties": { "type": "integer", "format": "int32", "minimum": 1, "maximum": 64 },
    })
}

/// TLS to the CQL database: a Secret with the CA certificate (`ca.crt`)
/// and, for client authentication, `tls.crt` and `tls.key`. Mounted into
/// the pods as files; the operator does not read it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CqlTls {
    /// Name of the Secret in this namespace.
    #[schemars(length(min = 1))]
    pub secret_name: String,

    /// Whether to present the client certificate `tls.crt` / `tls.key`.
    #[serde(default)]
    pub client_certificate: bool,

    /// The DNS name every node's certificate must carry; by default each
    /// node's certificate must name its IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub server_name: Option<String>,
}

/// Token signing and verification.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// The HS256 secret (at least 32 bytes) shared by every process. Without
    /// it the operator generates one into the Secret `<name>-jwt`, once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_secret: Option<SecretKeyRef>,

    /// PEM public keys (RSA for RS256, EC P-256 for ES256) that also verify
    /// tokens, so an application can mint tokens for its own users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_keys: Option<PublicKeys>,
}

/// A key of a Secret in this namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub name: String,

    /// Key in the Secret.
    #[serde(default = "default_jwt_key")]
    pub key: String,
}

fn default_jwt_key() -> String {
    "jwt-secret".into()
}

/// Public keys in a ConfigMap.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublicKeys {
    /// Name of the ConfigMap in this namespace.
    #[schemars(length(min = 1))]
    pub config_map: String,

    /// Keys of the ConfigMap, each one PEM public key.
    #[schemars(length(min = 1))]
    pub keys: Vec<String>,

    /// The `iss` every token these keys sign must carry (recommended:
    /// without it, and `audience`, the gateways warn at start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), regex(pattern = r"^[^,;#]+$"))]
    pub issuer: Option<String>,

    /// The `aud` every token these keys sign must carry, so a token the
    /// application minted for another service does not open Confab.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), regex(pattern = r"^[^,;#]+$"))]
    pub audience: Option<String>,
}

/// Settings passed through to the processes' TOML configuration files.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExtraConfig {
    /// Settings of the gateways, e.g. `{heartbeat_ms: 20000, rate_burst: 80}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "settings_map")]
    pub gateway: BTreeMap<String, serde_json::Value>,

    /// Settings of the dispatchers, e.g. `{max_batch: 256}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "settings_map")]
    pub dispatcher: BTreeMap<String, serde_json::Value>,
}

/// Keys of pass-through settings that carry secrets: they would be stored
/// in a ConfigMap. `kafka_properties` is there for TLS and SASL, whose
/// passwords it would hold.
pub const SECRET_SETTINGS: [&str; 3] = ["jwt_secret", "cql_password", "kafka_properties"];

/// A map of settings the API server keeps as they are, without the keys
/// that carry secrets. Those are declared (with their types) only so that
/// the rule can see them: the API server's CEL cannot read the keys of a
/// map of untyped values.
fn settings_map(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let rule = SECRET_SETTINGS.iter().map(|k| format!("!has(self.{k})")).collect::<Vec<_>>().join(" && ");
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "properties": {
            "jwt_secret": { "type": "string", "description": "Refused: use auth.jwtSecret." },
            "cql_password": { "type": "string", "description": "Refused: use cql.credentialsSecret." },
            "kafka_properties": {
                "type": "array",
                "items": { "type": "string" },
                "description": "Refused: use kafka.tls and kafka.sasl.",
            },
        },
        "x-kubernetes-validations": [{
            "rule": rule,
            "message": "spec.config must not hold secrets (jwt_secret, cql_password, kafka_properties with its SASL and TLS passwords): it is stored in a ConfigMap; use auth.jwtSecret, cql.credentialsSecret, kafka.tls and kafka.sasl, which read Secrets",
        }],
    })
}

/// What the operator observed, as of `observedGeneration`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatClusterStatus {
    /// The `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Gateway pods.
    #[serde(default)]
    pub gateways: RoleStatus,

    /// Dispatcher pods.
    #[serde(default)]
    pub dispatchers: RoleStatus,

    /// `Available` (clients can chat), `Progressing` (a rollout or the
    /// schema migration is under way) and `Degraded` (something needs a
    /// person), each with a reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// Where clients connect: the public Service's URL (its load balancer's
    /// address when it has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// The progress of a rolling update, role by role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
}

/// Where a rolling update stands.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    pub gateways: RoleRollout,
    pub dispatchers: RoleRollout,
}

/// One role's rolling update.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleRollout {
    /// Pods running the current template.
    pub updated: i32,

    /// Pods wanted.
    pub total: i32,

    /// Whether the operator holds the rollout (its Deployment's `spec.paused`).
    pub paused: bool,

    /// Why: `RolloutComplete`, `Rolling`, `Measuring` (paused until a
    /// second sample of the reconnect rate), `ReconnectsAboveBound`,
    /// `LagAboveBound` (both paused) or `MetricsUnavailable` (rolling
    /// without the gate).
    pub reason: String,

    /// The measure behind the reason, for a person.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Replicas of one role.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleStatus {
    /// Pods wanted (set by the spec, or by the autoscaler).
    pub desired: i32,

    /// Pods ready for traffic.
    pub ready: i32,

    /// Pods running the current template.
    pub updated: i32,

    /// `ready/desired`, for `kubectl get`.
    pub summary: String,
}

impl ChatClusterSpec {
    /// Gateway pods the spec asks for, when it does (not autoscaled).
    pub fn gateway_replicas(&self) -> Option<i32> {
        match self.gateway.autoscaling {
            Some(_) => None,
            None => Some(self.gateway.replicas.unwrap_or(2)),
        }
    }

    /// Dispatcher pods the spec asks for, when it does (not autoscaled);
    /// never more than the partitions.
    pub fn dispatcher_replicas(&self) -> Option<i32> {
        match self.dispatcher.autoscaling {
            Some(_) => None,
            None => Some(self.dispatcher.replicas.unwrap_or(2).min(self.kafka.partitions)),
        }
    }
}

/// The CEL rules, evaluated client-side by kube's `cel` feature on the
/// schema the CRD carries (the e2e suite checks the API server agrees).
#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::cel::{validate_cel, validate_cel_update};
    use serde_json::json;

    fn cluster(spec: serde_json::Value) -> ChatCluster {
        let mut base = json!({
            "kafka": {"bootstrapServers": "kafka:9092", "partitions": 8},
            "cql": {"contactPoints": ["cql:9042"]},
        });
        merge(&mut base, spec);
        ChatCluster::new("chat", serde_json::from_value(base).expect("spec"))
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn rejected(cc: &ChatCluster) -> String {
        validate_cel(cc).expect_err("the rules should reject this").to_string()
    }

    #[test]
    fn a_plain_cluster_passes_every_rule() {
        validate_cel(&cluster(json!({}))).unwrap();
        let autoscaled = cluster(json!({
            "gateway": {"autoscaling": {"minReplicas": 2, "maxReplicas": 2, "targetConnectionsPerPod": 1}},
            "dispatcher": {"autoscaling": {"minReplicas": 1, "maxReplicas": 8, "targetLagPerReplica": 100}},
        }));
        validate_cel(&autoscaled).unwrap();
    }

    #[test]
    fn min_replicas_above_max_is_rejected() {
        let e = rejected(&cluster(
            json!({"gateway": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2, "targetConnectionsPerPod": 1}}}),
        ));
        assert!(e.contains("minReplicas must not exceed maxReplicas"), "{e}");
        let e = rejected(&cluster(
            json!({"dispatcher": {"autoscaling": {"minReplicas": 3, "maxReplicas": 2, "targetLagPerReplica": 1}}}),
        ));
        assert!(e.contains("minReplicas must not exceed maxReplicas"), "{e}");
    }

    #[test]
    fn replicas_and_autoscaling_together_are_rejected() {
        let e = rejected(&cluster(json!({"gateway": {
            "replicas": 3,
            "autoscaling": {"minReplicas": 1, "maxReplicas": 4, "targetConnectionsPerPod": 1},
        }})));
        assert!(e.contains("mutually exclusive"), "{e}");
    }

    #[test]
    fn min_available_and_max_unavailable_together_are_rejected() {
        let e =
            rejected(&cluster(json!({"gateway": {"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}}})));
        assert!(e.contains("minAvailable and maxUnavailable are mutually exclusive"), "{e}");
    }

    #[test]
    fn more_dispatchers_than_partitions_are_rejected() {
        let e = rejected(&cluster(json!({"dispatcher": {"replicas": 9}})));
        assert!(e.contains("must not exceed kafka.partitions"), "{e}");
        let e = rejected(&cluster(
            json!({"dispatcher": {"autoscaling": {"minReplicas": 1, "maxReplicas": 9, "targetLagPerReplica": 1}}}),
        ));
        assert!(e.contains("must not exceed kafka.partitions"), "{e}");
    }

    #[test]
    fn replication_fields_must_fit_the_class() {
        let with = |replication: serde_json::Value| cluster(json!({"cql": {"replication": replication}}));
        validate_cel(&with(json!({"factor": 3}))).unwrap();
        validate_cel(&with(json!({"class": "NetworkTopologyStrategy", "datacenters": {"dc1": 3}}))).unwrap();
        validate_cel(&with(json!({"class": "NetworkTopologyStrategy", "factor": 3}))).unwrap();
        let e = rejected(&with(json!({"class": "SimpleStrategy", "datacenters": {"dc1": 3}})));
        assert!(e.contains("datacenters is for NetworkTopologyStrategy"), "{e}");
        let e = rejected(&with(json!({"class": "NetworkTopologyStrategy"})));
        assert!(e.contains("NetworkTopologyStrategy needs datacenters"), "{e}");
    }

    /// The rule itself is checked against the real API server (e2e
    /// `the_api_server_rejects_a_bad_spec`): kube-cel escapes `_` in field
    /// names where the API server does not, so `has(self.jwt_secret)` never
    /// fires client-side. Here: the rule guards both maps and every key.
    #[test]
    fn settings_that_carry_secrets_are_refused_by_a_rule_on_both_maps() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(ChatCluster::crd()).unwrap();
        let config =
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["config"];
        for role in ["gateway", "dispatcher"] {
            let rules = config["properties"][role]["x-kubernetes-validations"].as_array().expect("a rule");
            let rule = rules[0]["rule"].as_str().unwrap();
            for key in SECRET_SETTINGS {
                assert!(rule.contains(&format!("!has(self.{key})")), "{role}: {rule}");
                assert!(
                    config["properties"][role]["properties"][key]["type"].is_string(),
                    "{key} is typed, so CEL sees it"
                );
            }
            assert!(rules[0]["message"].as_str().unwrap().starts_with("spec.config must not hold secrets"));
        }
        let tuning = cluster(
            json!({"config": {"gateway": {"rate_burst": 80, "token_ttl_secs": 600}, "dispatcher": {"max_batch": 256}}}),
        );
        validate_cel(&tuning).unwrap();
    }

    #[test]
    fn network_policies_are_on_and_admit_the_same_namespace_by_default() {
        let network = cluster(json!({})).spec.network;
        assert!(network.policies);
        assert_eq!(serde_json::to_value(&network.admin_from).unwrap(), json!([{"podSelector": {}}]));
        let none = cluster(json!({"network": {"adminFrom": []}})).spec.network;
        assert!(none.admin_from.is_empty(), "an explicit empty list admits no one");
    }

    #[test]
    fn a_long_name_is_rejected() {
        let mut cc = cluster(json!({}));
        cc.metadata.name = Some("c".repeat(41));
        assert!(rejected(&cc).contains("at most 40 characters"));
    }

    #[test]
    fn keyspace_topic_prefix_and_partitions_are_immutable() {
        let old = cluster(json!({}));
        for (change, message) in [
            (json!({"cql": {"keyspace": "other"}}), "cql.keyspace is immutable"),
            (json!({"kafka": {"topicPrefix": "other"}}), "kafka.topicPrefix is immutable"),
            (json!({"kafka": {"partitions": 16}}), "kafka.partitions is immutable"),
        ] {
            let new = cluster(change);
            let e = validate_cel_update(&new, &old).expect_err(message).to_string();
            assert!(e.contains(message), "{e}");
        }
        let scaled = cluster(json!({"gateway": {"replicas": 5}, "image": {"tag": "2.0.0"}}));
        validate_cel_update(&scaled, &old).unwrap();
    }
}
