//! What the Kubernetes suites share.

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams};

/// Deletes a test's namespace (and so everything in it) from a `Drop`: on a
/// runtime of its own, since Drop cannot await and may run during a panic.
pub fn delete_namespace(name: &str) {
    let name = name.to_owned();
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            confab_e2e::use_ring_crypto();
            if let Ok(client) = Client::try_default().await {
                let _ = Api::<Namespace>::all(client).delete(&name, &DeleteParams::background()).await;
            }
        })
    })
    .join();
}
