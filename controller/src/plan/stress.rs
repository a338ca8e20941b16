//! StressChaos spec -> the agent's option strings: `stressors` normalized as Chaos Mesh does
//! (`--cpu N --cpu-load P`, `--workers N --size S`), or `stressngStressors` split into its CPU
//! and memory options (the ones the agent's stressors implement).

use super::{Action, InvalidSpec, Plan, Scope, Selection};
use crate::crd::StressChaosSpec;

const CPU_OPTIONS: [&str; 4] = ["--cpu", "-c", "--cpu-load", "-l"];
const MEMORY_OPTIONS: [&str; 5] = ["--vm", "-m", "--vm-bytes", "--vm-keep", "--vm-populate"];
/// Options that take no value.
const FLAGS: [&str; 2] = ["--vm-keep", "--vm-populate"];

pub(super) fn plan(spec: &StressChaosSpec, namespace: &str) -> Result<Plan, InvalidSpec> {
    let mut problems = InvalidSpec::default();
    super::remote_cluster(&mut problems, spec.remote_cluster.as_deref());
    let selection = super::container_selection(&mut problems, &spec.container_selector, namespace);
    let duration = super::duration(&mut problems, spec.duration.as_deref());
    // Problems of the stressors themselves (the selector's are reported beside "no stressor").
    let before = problems.problems.len();

    let mut oom_score_adj = 0;
    let (cpu, memory) = match spec
        .stressng_stressors
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    {
        Some(raw) => split_stress_ng(&mut problems, raw),
        None => {
            let mut cpu = String::new();
            let mut memory = String::new();
            if let Some(stressors) = &spec.stressors {
                if let Some(c) = stressors.cpu.as_ref().filter(|c| c.workers != 0) {
                    check_range(&mut problems, "stressors.cpu.workers", c.workers, 1, 8192);
                    cpu = format!("--cpu {}", c.workers);
                    if let Some(load) = c.load {
                        check_range(&mut problems, "stressors.cpu.load", load, 0, 100);
                        cpu.push_str(&format!(" --cpu-load {load}"));
                    }
                    for o in &c.options {
                        cpu.push(' ');
                        cpu.push_str(o.trim());
                    }
                }
                if let Some(m) = stressors.memory.as_ref().filter(|m| m.workers != 0) {
                    check_range(
                        &mut problems,
                        "stressors.memory.workers",
                        m.workers,
                        1,
                        8192,
                    );
                    memory = format!("--workers {}", m.workers);
                    if let Some(size) = m.size.as_deref().filter(|s| !s.is_empty())
                        && let Err(p) = bytes(size)
                    {
                        problems.invalid("stressors.memory.size", p);
                    }
                    if let Some(size) = m.size.as_deref().filter(|s| !s.is_empty()) {
                        memory.push_str(&format!(" --size {size}"));
                    }
                    for o in &m.options {
                        memory.push(' ');
                        memory.push_str(o.trim());
                    }
                    oom_score_adj = m.oom_score_adj.unwrap_or(0);
                    check_range(
                        &mut problems,
                        "stressors.memory.oomScoreAdj",
                        i64::from(oom_score_adj),
                        -1000,
                        1000,
                    );
                }
            }
            (cpu, memory)
        }
    };
    if cpu.is_empty() && memory.is_empty() && problems.problems.len() == before {
        problems.invalid(
            "stressors",
            "no stressor: give stressors.cpu or stressors.memory with workers > 0, or stressngStressors",
        );
    }
    let plan = selection.map(|(selector, mode)| Plan {
        selection: Selection {
            selector,
            mode,
            scope: Scope::Containers(spec.container_selector.container_names.clone()),
        },
        duration,
        action: Action::Stress {
            cpu,
            memory,
            oom_score_adj,
        },
    });
    problems.finish(plan)
}

/// Chaos Mesh's `Bytes`: a percentage 0-100 (`50%`) or a human size as go-units reads it
/// (`256MB`, `1.5GiB`, `1024`).
fn bytes(size: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("incorrect bytes format: {size:?}: {why}"));
    if let Some(percent) = size.strip_suffix('%') {
        return match percent.parse::<i64>() {
            Ok(p) if (0..=100).contains(&p) => Ok(()),
            Ok(_) => bad("illegal proportion"),
            Err(_) => bad("not a whole percentage"),
        };
    }
    let number_end = size
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(size.len());
    let (number, unit) = size.split_at(number_end);
    if number.is_empty() || number.parse::<f64>().is_err() {
        return bad("a number, optionally with a unit (KB, MB, GiB...)");
    }
    let unit = unit.trim_start().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    if unit.is_empty() || (unit.len() == 1 && "kmgtpez".contains(unit)) {
        Ok(())
    } else {
        bad("unknown unit")
    }
}

fn check_range(problems: &mut InvalidSpec, field: &str, value: i64, low: i64, high: i64) {
    if !(low..=high).contains(&value) {
        problems.invalid(field, format!("{value} is out of range {low}..={high}"));
    }
}

/// Splits stress-ng options into the CPU and the memory stressor's.
fn split_stress_ng(problems: &mut InvalidSpec, raw: &str) -> (String, String) {
    let mut cpu = Vec::new();
    let mut memory = Vec::new();
    let mut words = raw.split_whitespace();
    while let Some(word) = words.next() {
        let (name, inline_value) = match word.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (word, None),
        };
        let group = if CPU_OPTIONS.contains(&name) {
            &mut cpu
        } else if MEMORY_OPTIONS.contains(&name) {
            &mut memory
        } else {
            problems.unsupported(
                "stressngStressors",
                format!(
                    "unsupported option {name:?} (supported: {}, {})",
                    CPU_OPTIONS.join(", "),
                    MEMORY_OPTIONS.join(", ")
                ),
            );
            continue;
        };
        group.push(name.to_owned());
        if FLAGS.contains(&name) {
            continue;
        }
        match inline_value
            .map(str::to_owned)
            .or_else(|| words.next().map(str::to_owned))
        {
            Some(value) => group.push(value),
            None => problems.invalid("stressngStressors", format!("{name} needs a value")),
        }
    }
    (cpu.join(" "), memory.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stress_ng_options_are_split() {
        let mut problems = InvalidSpec::default();
        let (cpu, memory) = split_stress_ng(
            &mut problems,
            "--cpu 2 --cpu-load=50 --vm 1 --vm-bytes 64M --vm-keep",
        );
        assert!(problems.is_empty(), "{problems}");
        assert_eq!(cpu, "--cpu 2 --cpu-load 50");
        assert_eq!(memory, "--vm 1 --vm-bytes 64M --vm-keep");
    }

    /// Chaos Mesh (Bytes.Validate): memory size is `N%` with N in 0..=100 or a go-units size.
    #[test]
    fn memory_size_is_checked_as_chaos_mesh_checks_it() {
        for ok in ["50%", "0%", "256MB", "1.5GiB", "1024", "100 MB", "10k"] {
            assert!(bytes(ok).is_ok(), "{ok}");
        }
        for bad in ["101%", "x%", "lots", "10 parsecs", ""] {
            assert!(bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_stress_ng_options_are_named() {
        let mut problems = InvalidSpec::default();
        split_stress_ng(&mut problems, "--cpu 1 --hdd 2");
        assert_eq!(problems.reason(), "Unsupported");
        assert!(problems.to_string().contains("\"--hdd\""), "{problems}");
    }
}
