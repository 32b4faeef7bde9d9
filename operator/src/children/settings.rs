//! The ConfigMap holding each role's TOML configuration file (the spec's
//! pass-through settings), and the generated JWT Secret.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use super::{child_name, metadata, stable_hash};
use crate::crd::ChatCluster;
use crate::{Error, Result};

/// Keys of the ConfigMap: one TOML file per role, mounted at [`CONFIG_DIR`].
pub const GATEWAY_TOML: &str = "gateway.toml";
pub const DISPATCHER_TOML: &str = "dispatcher.toml";
pub const CONFIG_DIR: &str = "/etc/confab/config";

/// `<name>-config`: the roles' configuration files.
pub fn config_map(cc: &ChatCluster) -> Result<ConfigMap> {
    let data = BTreeMap::from([
        (GATEWAY_TOML.to_owned(), toml_file(&cc.spec.config.gateway, "spec.config.gateway")?),
        (DISPATCHER_TOML.to_owned(), toml_file(&cc.spec.config.dispatcher, "spec.config.dispatcher")?),
    ]);
    Ok(ConfigMap {
        metadata: metadata(cc, child_name(cc, "config"), "config")?,
        data: Some(data),
        ..ConfigMap::default()
    })
}

/// A hash of the files, put on the pod templates so that a change of
/// settings rolls the pods (a mounted ConfigMap alone would not).
pub fn config_hash(config_map: &ConfigMap) -> String {
    let text = serde_json::to_string(&config_map.data).expect("strings serialize");
    stable_hash(text.as_bytes())
}

fn toml_file(settings: &BTreeMap<String, serde_json::Value>, what: &'static str) -> Result<String> {
    let table: toml::Table = settings
        .iter()
        .map(|(k, v)| {
            toml::Value::try_from(v)
                .map(|v| (k.clone(), v))
                .map_err(|e| Error::Build { what, reason: format!("`{k}`: {e}") })
        })
        .collect::<Result<_>>()?;
    let body = toml::to_string(&table).map_err(|e| Error::Build { what, reason: e.to_string() })?;
    Ok(format!("# From the ChatCluster's {what}; settings the operator manages win over these.\n{body}"))
}

/// The Secret and key holding the HS256 secret: the spec's, or the
/// generated `<name>-jwt` / `jwt-secret`.
pub fn jwt_secret_ref(cc: &ChatCluster) -> (String, String) {
    match &cc.spec.auth.jwt_secret {
        Some(r) => (r.name.clone(), r.key.clone()),
        None => (child_name(cc, "jwt"), "jwt-secret".to_owned()),
    }
}

/// The generated JWT Secret holding `value`. Created once by the
/// controller (never applied again, which would replace the secret and
/// sign every user out).
pub fn generated_jwt_secret(cc: &ChatCluster, value: &[u8]) -> Result<Secret> {
    let (name, key) = jwt_secret_ref(cc);
    Ok(Secret {
        metadata: metadata(cc, name, "auth")?,
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(key, ByteString(value.to_vec()))])),
        ..Secret::default()
    })
}

/// 32 random bytes, hex: a new cluster's HS256 secret.
pub fn random_secret() -> Vec<u8> {
    (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect::<String>().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::tests::{cluster, minimal};
    use serde_json::json;

    #[test]
    fn pass_through_settings_become_each_roles_toml_file() {
        let cc = cluster(json!({
            "kafka": {"bootstrapServers": "kafka:9092"},
            "cql": {"contactPoints": ["cql:9042"]},
            "config": {"gateway": {"heartbeat_ms": 20000, "server_id": "x"}, "dispatcher": {"max_batch": 64}},
        }));
        let cm = config_map(&cc).unwrap();
        let data = cm.data.unwrap();
        let gateway: toml::Table = toml::from_str(&data[GATEWAY_TOML]).unwrap();
        assert_eq!(gateway["heartbeat_ms"].as_integer(), Some(20000));
        assert_eq!(gateway["server_id"].as_str(), Some("x"));
        let dispatcher: toml::Table = toml::from_str(&data[DISPATCHER_TOML]).unwrap();
        assert_eq!(dispatcher["max_batch"].as_integer(), Some(64));
    }

    #[test]
    fn a_null_setting_is_a_build_error_naming_it() {
        let cc = cluster(json!({
            "kafka": {"bootstrapServers": "kafka:9092"},
            "cql": {"contactPoints": ["cql:9042"]},
            "config": {"gateway": {"heartbeat_ms": null}},
        }));
        let e = config_map(&cc).unwrap_err().to_string();
        assert!(e.contains("spec.config.gateway") && e.contains("heartbeat_ms"), "{e}");
    }

    #[test]
    fn the_config_hash_follows_the_settings() {
        let a = config_hash(&config_map(&minimal()).unwrap());
        let mut cc = minimal();
        cc.spec.config.gateway.insert("rate_burst".into(), json!(80));
        let b = config_hash(&config_map(&cc).unwrap());
        assert_ne!(a, b);
        assert_eq!(a, config_hash(&config_map(&minimal()).unwrap()));
    }

    #[test]
    fn the_jwt_secret_is_generated_unless_referenced() {
        assert_eq!(jwt_secret_ref(&minimal()), ("chat-jwt".to_owned(), "jwt-secret".to_owned()));
        let secret = generated_jwt_secret(&minimal(), b"s3cret").unwrap();
        assert_eq!(secret.data.unwrap()["jwt-secret"].0, b"s3cret");
        let cc = cluster(json!({
            "kafka": {"bootstrapServers": "kafka:9092"},
            "cql": {"contactPoints": ["cql:9042"]},
            "auth": {"jwtSecret": {"name": "mine"}},
        }));
        assert_eq!(jwt_secret_ref(&cc), ("mine".to_owned(), "jwt-secret".to_owned()));
        assert!(!desired_generates(&cc));
        assert_eq!(random_secret().len(), 64);
    }

    fn desired_generates(cc: &ChatCluster) -> bool {
        crate::children::desired(cc).unwrap().generate_jwt_secret
    }
}
