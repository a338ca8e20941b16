//! Every input the fuzzers keep (fuzz/corpus: what reached new code; fuzz/regressions: what once
//! crashed a target, kept after the fix) replayed through the fuzz targets' own bodies, on the
//! stable toolchain, in every test run. The fuzzers themselves run by scripts/fuzz.sh.

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod bodies;

use std::path::Path;

#[test]
fn every_kept_fuzz_input_is_handled_without_a_panic() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    let mut failures = Vec::new();
    for (name, body) in bodies::TARGETS {
        assert!(
            fuzz.join("fuzz_targets")
                .join(format!("{name}.rs"))
                .is_file(),
            "fuzz target {name} has no fuzz_targets/{name}.rs"
        );
        for kind in ["corpus", "regressions"] {
            let Ok(dir) = std::fs::read_dir(fuzz.join(kind).join(name)) else {
                continue;
            };
            for entry in dir.flatten() {
                let data = std::fs::read(entry.path()).expect("a kept input");
                replayed += 1;
                if std::panic::catch_unwind(|| body(&data)).is_err() {
                    failures.push(entry.path().display().to_string());
                }
            }
        }
    }
    assert!(failures.is_empty(), "inputs that panic: {failures:#?}");
    eprintln!("replayed {replayed} kept fuzz inputs");
}
