//! Every committed seed (`seeds/<target>/`) and every file of a local corpus
//! (`corpus/<target>/`, git-ignored, left by `cargo fuzz run`) through its
//! target's checks: a plain `cargo test`, no libFuzzer, no nightly flags.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["seeds", "corpus"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            assert_ne!(dir, "seeds", "no seeds for {target}");
            continue;
        };
        files.extend(entries.map(|e| e.unwrap().path()));
    }
    assert!(!files.is_empty(), "no seeds for {target}");
    for file in &files {
        let data = std::fs::read(file).unwrap();
        if let Err(panic) = std::panic::catch_unwind(|| run(&data)) {
            let message = panic.downcast_ref::<String>().map(String::as_str).or(panic.downcast_ref::<&str>().copied());
            panic!("{target} fails on {}: {}", file.display(), message.unwrap_or("(no message)"));
        }
    }
}

#[test]
fn client_frame_seeds() {
    replay("client_frame", confab_fuzz::client_frame::run);
}

#[test]
fn ingress_record_seeds() {
    replay("ingress_record", confab_fuzz::ingress_record::run);
}

#[test]
fn validators_seeds() {
    replay("validators", confab_fuzz::validators::run);
}
