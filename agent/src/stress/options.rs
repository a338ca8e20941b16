//! The stressor option strings of `ExecStressRequest`, parsed once into specs that cannot be
//! invalid. Chaos Mesh sends stress-ng style options for CPU (`--cpu N --cpu-load P`) and, since
//! 2.x, memStress style options for memory (`--size SIZE --workers N`); stress-ng's own memory
//! options (`--vm N --vm-bytes SIZE`) are accepted too. Anything else is refused by name.

use std::time::Duration;

/// The most workers one stressor may run (Chaos Mesh's own bound).
pub const MAX_WORKERS: u32 = 8192;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error("{field}: unsupported option {option:?} (supported: {supported})")]
    Unsupported {
        field: &'static str,
        option: String,
        supported: &'static str,
    },
    #[error("{field}: {option} needs a value")]
    MissingValue {
        field: &'static str,
        option: &'static str,
    },
    #[error("{field}: {option} {value:?}: {reason}")]
    BadValue {
        field: &'static str,
        option: &'static str,
        value: String,
        reason: String,
    },
    #[error("{field}: {option} is given twice")]
    Repeated {
        field: &'static str,
        option: &'static str,
    },
    #[error("{field}: unexpected argument {argument:?} (every option starts with --)")]
    Unexpected {
        field: &'static str,
        argument: String,
    },
    #[error("{field}: {reason}")]
    Incomplete { field: &'static str, reason: String },
}

/// CPU workers, each loading one CPU to a percentage (a duty cycle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSpec {
    pub workers: u32,
    /// 0 (sleep) to 100 (full load).
    pub load: u8,
}

/// How much memory a memory stressor holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemorySize {
    Bytes(u64),
    /// Percent (1-100) of the memory limit of the cgroup the stressor runs in (or of the
    /// node's memory when no limit applies).
    Percent(u8),
}

/// Memory workers that allocate, touch and hold `total` between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemorySpec {
    pub workers: u32,
    pub total: MemorySize,
    /// How long to take to reach the size (memStress `--time`); zero = at once.
    pub growth: Duration,
}

impl MemorySpec {
    /// The number of bytes to hold, given the memory limit that applies.
    pub fn bytes(&self, limit: u64) -> u64 {
        match self.total {
            MemorySize::Bytes(bytes) => bytes,
            MemorySize::Percent(percent) => limit / 100 * u64::from(percent),
        }
    }
}

const CPU_FIELD: &str = "cpuStressors";
const MEMORY_FIELD: &str = "memoryStressors";
const CPU_SUPPORTED: &str = "--cpu N, --cpu-load P";
const MEMORY_SUPPORTED: &str = "--vm N, --vm-bytes SIZE|P%, --vm-keep, --vm-populate, --workers N, --size SIZE|P%, --time DURATION";

/// One `--name value` (or `--name=value`, or a flag) from an option string.
struct Arg<'a> {
    name: &'a str,
    value: Option<&'a str>,
}

/// Splits on whitespace into options; `takes_value` says which names take a value.
fn split<'a>(
    field: &'static str,
    text: &'a str,
    takes_value: impl Fn(&str) -> Option<bool>,
    supported: &'static str,
) -> Result<Vec<Arg<'a>>, OptionsError> {
    let mut words = text.split_whitespace();
    let mut args = Vec::new();
    while let Some(word) = words.next() {
        if !word.starts_with('-') || word == "-" || word == "--" {
            return Err(OptionsError::Unexpected {
                field,
                argument: word.to_owned(),
            });
        }
        let (name, inline) = match word.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (word, None),
        };
        match takes_value(name) {
            None => {
                return Err(OptionsError::Unsupported {
                    field,
                    option: name.to_owned(),
                    supported,
                });
            }
            Some(false) => {
                if inline.is_some() {
                    return Err(OptionsError::Unexpected {
                        field,
                        argument: word.to_owned(),
                    });
                }
                args.push(Arg { name, value: None });
            }
            Some(true) => {
                let value = inline.or_else(|| words.next());
                args.push(Arg { name, value });
            }
        }
    }
    Ok(args)
}

/// Stores `value` once; a second one is an error.
fn once<T>(
    slot: &mut Option<T>,
    value: T,
    field: &'static str,
    option: &'static str,
) -> Result<(), OptionsError> {
    if slot.is_some() {
        return Err(OptionsError::Repeated { field, option });
    }
    *slot = Some(value);
    Ok(())
}

fn required<'a>(
    arg: &Arg<'a>,
    field: &'static str,
    option: &'static str,
) -> Result<&'a str, OptionsError> {
    arg.value
        .filter(|v| !v.is_empty())
        .ok_or(OptionsError::MissingValue { field, option })
}

/// A worker count: 0 means one per online CPU (as stress-ng).
fn workers(
    value: &str,
    field: &'static str,
    option: &'static str,
    online_cpus: u32,
) -> Result<u32, OptionsError> {
    let bad = |reason: String| OptionsError::BadValue {
        field,
        option,
        value: value.to_owned(),
        reason,
    };
    let n: i64 = value
        .parse()
        .map_err(|_| bad("not a whole number".into()))?;
    if n < 0 {
        return Err(bad("must not be negative (0 = one per CPU)".into()));
    }
    if n > i64::from(MAX_WORKERS) {
        return Err(bad(format!("at most {MAX_WORKERS} workers")));
    }
    Ok(if n == 0 { online_cpus.max(1) } else { n as u32 })
}

impl CpuSpec {
    /// Parses `--cpu N --cpu-load P` (also `-c N`, `--name=value`). Without `--cpu` one worker
    /// runs; without `--cpu-load` the load is 100%. `None` for an empty string.
    pub fn parse(text: &str, online_cpus: u32) -> Result<Option<CpuSpec>, OptionsError> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        let field = CPU_FIELD;
        let args = split(
            field,
            text,
            |name| match name {
                "--cpu" | "-c" | "--cpu-load" | "-l" => Some(true),
                _ => None,
            },
            CPU_SUPPORTED,
        )?;
        let (mut count, mut load) = (None, None);
        for arg in &args {
            match arg.name {
                "--cpu" | "-c" => {
                    let value = required(arg, field, "--cpu")?;
                    once(
                        &mut count,
                        workers(value, field, "--cpu", online_cpus)?,
                        field,
                        "--cpu",
                    )?;
                }
                _ => {
                    let value = required(arg, field, "--cpu-load")?;
                    once(&mut load, percent_load(value)?, field, "--cpu-load")?;
                }
            }
        }
        Ok(Some(CpuSpec {
            workers: count.unwrap_or(1),
            load: load.unwrap_or(100),
        }))
    }
}

fn percent_load(value: &str) -> Result<u8, OptionsError> {
    let bad = |reason: &str| OptionsError::BadValue {
        field: CPU_FIELD,
        option: "--cpu-load",
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let n: i64 = value
        .trim_end_matches('%')
        .parse()
        .map_err(|_| bad("not a whole number of percent"))?;
    if !(0..=100).contains(&n) {
        return Err(bad("must be between 0 and 100 (percent of one CPU)"));
    }
    Ok(n as u8)
}

impl MemorySpec {
    /// Parses memStress options (`--size SIZE|P% --workers N --time DURATION`, the size being
    /// the total) or stress-ng's (`--vm N --vm-bytes SIZE|P%`, an absolute size being per
    /// worker and a percentage the total). A size is required. `None` for an empty string.
    pub fn parse(text: &str, online_cpus: u32) -> Result<Option<MemorySpec>, OptionsError> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        let field = MEMORY_FIELD;
        let args = split(
            field,
            text,
            |name| match name {
                "--vm" | "-m" | "--vm-bytes" | "--workers" | "--size" | "--time" => Some(true),
                "--vm-keep" | "--vm-populate" => Some(false),
                _ => None,
            },
            MEMORY_SUPPORTED,
        )?;
        let (mut vm, mut vm_bytes, mut mem_workers, mut size, mut time) =
            (None, None, None, None, None);
        for arg in &args {
            match arg.name {
                "--vm" | "-m" => {
                    let value = required(arg, field, "--vm")?;
                    once(
                        &mut vm,
                        workers(value, field, "--vm", online_cpus)?,
                        field,
                        "--vm",
                    )?;
                }
                "--workers" => {
                    let value = required(arg, field, "--workers")?;
                    once(
                        &mut mem_workers,
                        workers(value, field, "--workers", online_cpus)?,
                        field,
                        "--workers",
                    )?;
                }
                "--vm-bytes" => {
                    let value = required(arg, field, "--vm-bytes")?;
                    once(
                        &mut vm_bytes,
                        parse_size(value, "--vm-bytes")?,
                        field,
                        "--vm-bytes",
                    )?;
                }
                "--size" => {
                    let value = required(arg, field, "--size")?;
                    once(&mut size, parse_size(value, "--size")?, field, "--size")?;
                }
                "--time" => {
                    let value = required(arg, field, "--time")?;
                    let growth =
                        humantime::parse_duration(value).map_err(|e| OptionsError::BadValue {
                            field,
                            option: "--time",
                            value: value.to_owned(),
                            reason: format!("not a duration such as 10s or 2m ({e})"),
                        })?;
                    once(&mut time, growth, field, "--time")?;
                }
                // --vm-keep, --vm-populate: what our workers always do.
                _ => {}
            }
        }
        if vm.is_some() && mem_workers.is_some() {
            return Err(OptionsError::Incomplete {
                field,
                reason: "give --vm (stress-ng) or --workers (memStress), not both".into(),
            });
        }
        let workers = vm.or(mem_workers).unwrap_or(1);
        let total = match (vm_bytes, size) {
            (Some(_), Some(_)) => {
                return Err(OptionsError::Incomplete {
                    field,
                    reason: "give --vm-bytes (stress-ng) or --size (memStress), not both".into(),
                });
            }
            (None, None) => {
                return Err(OptionsError::Incomplete {
                    field,
                    reason: "no size: give --size SIZE (or --vm-bytes SIZE), e.g. 256MiB or 50%"
                        .into(),
                });
            }
            (Some(MemorySize::Bytes(per_worker)), None) => {
                let total = per_worker.checked_mul(u64::from(workers)).ok_or_else(|| {
                    OptionsError::BadValue {
                        field,
                        option: "--vm-bytes",
                        value: per_worker.to_string(),
                        reason: format!("{workers} workers of this size overflow"),
                    }
                })?;
                MemorySize::Bytes(total)
            }
            (Some(percent), None) | (None, Some(percent)) => percent,
        };
        Ok(Some(MemorySpec {
            workers,
            total,
            growth: time.unwrap_or_default(),
        }))
    }
}

/// `N`, `N` with a unit (B, K/KB/KiB, M/MB/MiB, G/GB/GiB, T/TB/TiB, any case; every unit is a
/// power of 1024, as in stress-ng and memStress) or `P%` (1-100).
pub fn parse_size(value: &str, option: &'static str) -> Result<MemorySize, OptionsError> {
    let bad = |reason: &str| OptionsError::BadValue {
        field: MEMORY_FIELD,
        option,
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    if let Some(percent) = value.strip_suffix('%') {
        let n: i64 = percent
            .parse()
            .map_err(|_| bad("not a whole number of percent"))?;
        if !(1..=100).contains(&n) {
            return Err(bad("a percentage must be between 1 and 100"));
        }
        return Ok(MemorySize::Percent(n as u8));
    }
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    if digits.is_empty() {
        return Err(bad(
            "not a size: expected a number with an optional unit, e.g. 64MiB, 512M or 25%",
        ));
    }
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(bad(
                "unknown unit: use B, K, M, G or T (KB/KiB and so on also work; all are powers of 1024)",
            ));
        }
    };
    let n: u64 = digits.parse().map_err(|_| bad("the number is too large"))?;
    let bytes = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| bad("the size is too large"))?;
    if bytes == 0 {
        return Err(bad("the size must be more than 0"));
    }
    Ok(MemorySize::Bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(text: &str) -> Result<Option<CpuSpec>, OptionsError> {
        CpuSpec::parse(text, 4)
    }

    fn memory(text: &str) -> Result<Option<MemorySpec>, OptionsError> {
        MemorySpec::parse(text, 4)
    }

    #[test]
    fn cpu_as_chaos_mesh_sends_it() {
        assert_eq!(
            cpu(" --cpu 2 --cpu-load 50").unwrap(),
            Some(CpuSpec {
                workers: 2,
                load: 50
            })
        );
        assert_eq!(
            cpu("--cpu=1 --cpu-load=0").unwrap(),
            Some(CpuSpec {
                workers: 1,
                load: 0
            })
        );
        assert_eq!(
            cpu("-c 3 -l 100").unwrap(),
            Some(CpuSpec {
                workers: 3,
                load: 100
            })
        );
    }

    #[test]
    fn cpu_defaults() {
        assert_eq!(cpu("").unwrap(), None);
        assert_eq!(cpu("   ").unwrap(), None);
        // --cpu-load alone: one worker; --cpu alone: full load; --cpu 0: one per CPU.
        assert_eq!(
            cpu("--cpu-load 30").unwrap(),
            Some(CpuSpec {
                workers: 1,
                load: 30
            })
        );
        assert_eq!(
            cpu("--cpu 2").unwrap(),
            Some(CpuSpec {
                workers: 2,
                load: 100
            })
        );
        assert_eq!(cpu("--cpu 0").unwrap().unwrap().workers, 4);
    }

    #[test]
    fn cpu_load_out_of_range_is_refused() {
        for (text, says) in [
            ("--cpu 1 --cpu-load -5", "between 0 and 100"),
            ("--cpu 1 --cpu-load 101", "between 0 and 100"),
            ("--cpu 1 --cpu-load lots", "not a whole number"),
            ("--cpu -1", "must not be negative"),
            ("--cpu 9000", "at most 8192"),
            ("--cpu x", "not a whole number"),
        ] {
            let err = cpu(text).unwrap_err();
            assert!(
                matches!(err, OptionsError::BadValue { .. }),
                "{text}: {err}"
            );
            assert!(err.to_string().contains(says), "{text}: {err}");
            assert!(err.to_string().starts_with("cpuStressors: "), "{err}");
        }
    }

    #[test]
    fn unsupported_options_are_named() {
        let err = cpu("--cpu 1 --cpu-method matrixprod").unwrap_err();
        assert_eq!(
            err.to_string(),
            "cpuStressors: unsupported option \"--cpu-method\" (supported: --cpu N, --cpu-load P)"
        );
        let err = memory("--vm 1 --vm-bytes 1G --vm-hang 3").unwrap_err();
        assert!(err.to_string().contains("\"--vm-hang\""), "{err}");
        let err = cpu("--timeout 10s").unwrap_err();
        assert!(err.to_string().contains("\"--timeout\""), "{err}");
    }

    #[test]
    fn malformed_command_lines_are_refused() {
        assert!(matches!(
            cpu("--cpu").unwrap_err(),
            OptionsError::MissingValue {
                option: "--cpu",
                ..
            }
        ));
        assert!(matches!(
            cpu("--cpu 1 --cpu 2").unwrap_err(),
            OptionsError::Repeated {
                option: "--cpu",
                ..
            }
        ));
        assert!(matches!(
            cpu("cpu 1").unwrap_err(),
            OptionsError::Unexpected { .. }
        ));
        assert!(matches!(
            memory("--vm-keep=yes --size 1G").unwrap_err(),
            OptionsError::Unexpected { .. }
        ));
    }

    #[test]
    fn memory_as_memstress_takes_a_total() {
        assert_eq!(
            memory(" --size 256MB").unwrap(),
            Some(MemorySpec {
                workers: 1,
                total: MemorySize::Bytes(256 << 20),
                growth: Duration::ZERO
            })
        );
        assert_eq!(
            memory("--workers 2 --size 50% --time 10s").unwrap(),
            Some(MemorySpec {
                workers: 2,
                total: MemorySize::Percent(50),
                growth: Duration::from_secs(10)
            })
        );
    }

    #[test]
    fn memory_as_stress_ng_sizes_each_worker() {
        assert_eq!(
            memory("--vm 2 --vm-bytes 64M --vm-keep").unwrap(),
            Some(MemorySpec {
                workers: 2,
                total: MemorySize::Bytes(128 << 20),
                growth: Duration::ZERO
            })
        );
        // A percentage is the total, whatever the number of workers.
        assert_eq!(
            memory("--vm 4 --vm-bytes 20%").unwrap().unwrap().total,
            MemorySize::Percent(20)
        );
        assert_eq!(
            memory("--vm-bytes 1g").unwrap().unwrap(),
            MemorySpec {
                workers: 1,
                total: MemorySize::Bytes(1 << 30),
                growth: Duration::ZERO
            }
        );
    }

    #[test]
    fn memory_needs_one_size_and_one_worker_count() {
        for (text, says) in [
            ("--vm 1", "no size"),
            ("--vm 1 --workers 1 --size 1M", "not both"),
            ("--vm-bytes 1M --size 1M", "not both"),
            ("--size 1M --size 2M", "given twice"),
        ] {
            let err = memory(text).unwrap_err();
            assert!(err.to_string().contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn sizes() {
        let size = |s| parse_size(s, "--size");
        assert_eq!(size("4096"), Ok(MemorySize::Bytes(4096)));
        assert_eq!(size("10b"), Ok(MemorySize::Bytes(10)));
        assert_eq!(size("2k"), Ok(MemorySize::Bytes(2048)));
        assert_eq!(size("2KB"), Ok(MemorySize::Bytes(2048)));
        assert_eq!(size("64MiB"), Ok(MemorySize::Bytes(64 << 20)));
        assert_eq!(size("3G"), Ok(MemorySize::Bytes(3 << 30)));
        assert_eq!(size("1TiB"), Ok(MemorySize::Bytes(1 << 40)));
        assert_eq!(size("100%"), Ok(MemorySize::Percent(100)));
        for (bad, says) in [
            ("", "not a size"),
            ("MB", "not a size"),
            ("-1G", "not a size"),
            ("1.5G", "unknown unit"),
            ("12 parsecs", "unknown unit"),
            ("0", "more than 0"),
            ("0%", "between 1 and 100"),
            ("101%", "between 1 and 100"),
            ("x%", "whole number"),
            ("99999999999999999999", "too large"),
            ("999999999T", "too large"),
        ] {
            let err = size(bad).unwrap_err();
            assert!(err.to_string().contains(says), "{bad:?}: {err}");
            assert!(err.to_string().contains("memoryStressors: --size"), "{err}");
        }
    }

    #[test]
    fn percent_of_a_limit() {
        let spec = MemorySpec {
            workers: 1,
            total: MemorySize::Percent(25),
            growth: Duration::ZERO,
        };
        assert_eq!(spec.bytes(400 << 20), 100 << 20);
        let absolute = MemorySpec {
            total: MemorySize::Bytes(7),
            ..spec
        };
        assert_eq!(absolute.bytes(400 << 20), 7);
    }

    #[test]
    fn growth_must_be_a_duration() {
        let err = memory("--size 1M --time soon").unwrap_err();
        assert!(err.to_string().contains("--time \"soon\""), "{err}");
    }
}
