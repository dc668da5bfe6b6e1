//! Replays the fuzz corpus (`fuzz/corpus/<target>/*`, seeds plus every input libFuzzer kept and
//! every crash reproducer) through the fuzz targets' bodies, which are `include!`d from
//! `fuzz/src/targets.rs` so CI runs exactly what was fuzzed. Seconds, no fuzzing; see fuzz/README.md.

mod targets {
    include!("../../fuzz/src/targets.rs");
}

fn replay(target: &str, f: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        // A panic names the input: `cargo fuzz run <target> <path>` reproduces it.
        let result = std::panic::catch_unwind(|| f(&data));
        assert!(result.is_ok(), "fuzz target {target} panics on {}", path.display());
        n += 1;
    }
    assert!(n > 0, "empty corpus {}", dir.display());
}

#[test]
fn csr_corpus() {
    replay("csr", targets::csr);
}

#[test]
fn chain_corpus() {
    replay("chain", targets::chain);
}

#[test]
fn ejbca_response_corpus() {
    replay("ejbca_response", targets::ejbca_response);
}

#[test]
fn kube_sim_body_corpus() {
    replay("kube_sim_body", targets::kube_sim_body);
}

#[test]
fn adcs_page_corpus() {
    replay("adcs_page", targets::adcs_page);
}

#[test]
fn venafi_response_corpus() {
    replay("venafi_response", targets::venafi_response);
}
