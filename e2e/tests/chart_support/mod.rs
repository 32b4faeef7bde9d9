//! What the chart tests share: paths, helm, manifests as JSON.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use confab_e2e::infra_env;
use serde_json::Value;

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The chart's directory, `charts/confab`.
pub fn chart() -> &'static str {
    static CHART: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CHART.get_or_init(|| repo().join("charts/confab").to_str().unwrap().to_owned())
}

/// Runs a program to completion (failing the test if it cannot start).
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("running {program}: {e}"))
}

/// A program's stdout and stderr, as text.
pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs helm and returns its stdout; fails the test if helm fails.
pub fn helm(args: &[&str]) -> String {
    let out = run(&infra_env("HELM", "helm"), args);
    assert!(out.status.success(), "helm {args:?} failed ({}):\n{}", out.status, text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// The YAML documents of a manifest stream, as JSON values.
pub fn documents(yaml: &str) -> Vec<Value> {
    yaml.split("\n---")
        .filter_map(|doc| {
            let v: Value = serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("{e}: {doc}"));
            (!v.is_null()).then_some(v)
        })
        .collect()
}

/// The first document of a kind.
pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind}"))
}
