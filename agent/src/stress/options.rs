//! The stressor option strings of `ExecStressRequest`, parsed once into specs that cannot be
//! invalid. Chaos Mesh's controller sends, for CPU, ` --cpu-load-slice 10 --cpu-method sqrt
//! --cpu N [--cpu-load P]` followed by the user's options (stress-ng's), and for memory
//! ` --workers N [--size SIZE]` followed by the user's options (memStress's, or stress-ng's
//! `--vm*` ones). Every option has a meaning in our built-in stressors (see each below); any
//! other is refused by name. As in stress-ng (getopt) and memStress, an option given twice
//! takes its last value: the user's `--cpu 2` after Normalize's `--cpu 1` means two workers.

use std::time::Duration;

use super::methods::{CpuMethod, VmMethod};

/// The most workers one stressor may run (Chaos Mesh's own bound).
pub const MAX_WORKERS: u32 = 8192;
/// The busy stretch of a partially loading CPU worker when `--cpu-load-slice` is not given.
pub const DEFAULT_SLICE_MS: u32 = 10;
/// The longest `--cpu-load-slice` (ms).
const MAX_SLICE_MS: i64 = 10_000;

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
    /// `--cpu-load-slice`: the longest uninterrupted busy stretch of a partially loading worker.
    pub slice_ms: u32,
    /// `--cpu-method`: the computation of the busy time.
    pub method: CpuMethod,
    /// `--timeout`: the stressor ends by itself after this long.
    pub timeout: Option<Duration>,
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
    /// `--vm-hang`: how long each worker holds its memory between passes; `None` (not given,
    /// or 0) holds it until the end, touching it every few seconds.
    pub hang: Option<Duration>,
    /// Without `--vm-keep`, a worker with a hang frees its memory after each hang and
    /// allocates it again (stress-ng's unmap and remap); with it, it keeps it and only writes.
    pub keep: bool,
    /// `--vm-method`: the pattern written when pages are touched.
    pub method: VmMethod,
    /// `--timeout`: the stressor ends by itself after this long.
    pub timeout: Option<Duration>,
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
const CPU_SUPPORTED: &str = "--cpu N, --cpu-load P, --cpu-load-slice MS, --cpu-method M, --timeout T, --metrics-brief, --quiet, --verbose";
const MEMORY_SUPPORTED: &str = "--workers N, --size SIZE|P%, --time DURATION, --vm N, --vm-bytes SIZE|P%, --vm-keep, --vm-hang T, --vm-method M, --vm-populate, --oomable, --timeout T, --metrics-brief, --quiet, --verbose";

/// stress-ng's reporting options: they change what stress-ng prints, not the load. faultline
/// reports through the agent's log, its metrics and ListExperiments, so they are accepted and
/// change nothing.
fn reporting_flag(name: &str) -> bool {
    matches!(
        name,
        "--metrics-brief" | "--metrics" | "--verbose" | "-v" | "--quiet" | "-q"
    )
}

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

/// stress-ng's time values (`--timeout`, `--vm-hang`): seconds, or a number with one of the
/// suffixes s, m, h, d, y. Zero is `None` (stress-ng: no timeout, hang forever).
fn stress_ng_time(
    value: &str,
    field: &'static str,
    option: &'static str,
) -> Result<Option<Duration>, OptionsError> {
    let bad = |reason: &str| OptionsError::BadValue {
        field,
        option,
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        bad("not a time: seconds, or a number with s, m, h, d or y, e.g. 600 or 10m")
    })?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "y" => 31_556_952,
        _ => return Err(bad("unknown unit: use s, m, h, d or y")),
    };
    let seconds = n.checked_mul(scale).ok_or_else(|| bad("too long"))?;
    Ok((seconds > 0).then(|| Duration::from_secs(seconds)))
}

fn cpu_method(value: &str) -> Result<CpuMethod, OptionsError> {
    value.parse().map_err(|reason| OptionsError::BadValue {
        field: CPU_FIELD,
        option: "--cpu-method",
        value: value.to_owned(),
        reason,
    })
}

fn load_slice(value: &str) -> Result<u32, OptionsError> {
    let bad = |reason: &str| OptionsError::BadValue {
        field: CPU_FIELD,
        option: "--cpu-load-slice",
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let n: i64 = value.parse().map_err(|_| bad("not a whole number"))?;
    if n <= 0 {
        return Err(bad(
            "faultline's workers take a slice in milliseconds (stress-ng's 0, random slices, and negative, bogo-op slices, have no equivalent)",
        ));
    }
    if n > MAX_SLICE_MS {
        return Err(bad("at most 10000 ms"));
    }
    Ok(n as u32)
}

impl CpuSpec {
    /// Parses stress-ng's CPU options. Without `--cpu` one worker runs; without `--cpu-load`
    /// the load is 100%. `None` for an empty string.
    ///
    /// - `--cpu N` (`-c`): N workers, 0 = one per online CPU.
    /// - `--cpu-load P` (`-l`): each worker busy P% of the time (0-100).
    /// - `--cpu-load-slice MS`: a worker is busy at most MS milliseconds at a stretch.
    /// - `--cpu-method M`: the computation of the busy time ([`CpuMethod`]).
    /// - `--timeout T` (`-t`): the stressor ends by itself after T (0 = never).
    /// - reporting options: accepted, no effect.
    pub fn parse(text: &str, online_cpus: u32) -> Result<Option<CpuSpec>, OptionsError> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        let field = CPU_FIELD;
        let args = split(
            field,
            text,
            |name| match name {
                "--cpu" | "-c" | "--cpu-load" | "-l" | "--cpu-load-slice" | "--cpu-method"
                | "--timeout" | "-t" => Some(true),
                name if reporting_flag(name) => Some(false),
                _ => None,
            },
            CPU_SUPPORTED,
        )?;
        let mut spec = CpuSpec {
            workers: 1,
            load: 100,
            slice_ms: DEFAULT_SLICE_MS,
            method: CpuMethod::All,
            timeout: None,
        };
        for arg in &args {
            match arg.name {
                "--cpu" | "-c" => {
                    let value = required(arg, field, "--cpu")?;
                    spec.workers = workers(value, field, "--cpu", online_cpus)?;
                }
                "--cpu-load" | "-l" => {
                    spec.load = percent_load(required(arg, field, "--cpu-load")?)?;
                }
                "--cpu-load-slice" => {
                    spec.slice_ms = load_slice(required(arg, field, "--cpu-load-slice")?)?;
                }
                "--cpu-method" => {
                    spec.method = cpu_method(required(arg, field, "--cpu-method")?)?;
                }
                "--timeout" | "-t" => {
                    let value = required(arg, field, "--timeout")?;
                    spec.timeout = stress_ng_time(value, field, "--timeout")?;
                }
                _ => {}
            }
        }
        Ok(Some(spec))
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
    /// Parses memStress options (`--workers N --size SIZE|P% --time DURATION`, the size being
    /// the total) or stress-ng's (`--vm N --vm-bytes SIZE|P%`, an absolute size being per
    /// worker and a percentage the total), with stress-ng's:
    ///
    /// - `--vm-keep`: keep the memory between passes (see [`MemorySpec::keep`]).
    /// - `--vm-hang T`: hold the memory T between passes (0 = until the end).
    /// - `--vm-method M`: the pattern written as pages are touched ([`VmMethod`]).
    /// - `--vm-populate`: what our workers always do (every page is touched at once).
    /// - `--oomable`: a worker the OOM killer kills is not restarted; the stressor ends. This
    ///   is what faultline always does (stress-ng without it would restart the worker).
    /// - `--timeout T` (`-t`): the stressor ends by itself after T (0 = never).
    /// - reporting options: accepted, no effect.
    ///
    /// A size is required. `None` for an empty string.
    pub fn parse(text: &str, online_cpus: u32) -> Result<Option<MemorySpec>, OptionsError> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        let field = MEMORY_FIELD;
        let args = split(
            field,
            text,
            |name| match name {
                "--vm" | "-m" | "--vm-bytes" | "--workers" | "--size" | "--time" | "--vm-hang"
                | "--vm-method" | "--timeout" | "-t" => Some(true),
                "--vm-keep" | "--vm-populate" | "--oomable" => Some(false),
                name if reporting_flag(name) => Some(false),
                _ => None,
            },
            MEMORY_SUPPORTED,
        )?;
        let (mut vm, mut vm_bytes, mut mem_workers, mut size) = (None, None, None, None);
        let (mut growth, mut hang, mut keep, mut method, mut timeout) =
            (Duration::ZERO, None, false, VmMethod::All, None);
        for arg in &args {
            match arg.name {
                "--vm" | "-m" => {
                    let value = required(arg, field, "--vm")?;
                    vm = Some(workers(value, field, "--vm", online_cpus)?);
                }
                "--workers" => {
                    let value = required(arg, field, "--workers")?;
                    mem_workers = Some(workers(value, field, "--workers", online_cpus)?);
                }
                "--vm-bytes" => {
                    let value = required(arg, field, "--vm-bytes")?;
                    vm_bytes = Some(parse_size(value, "--vm-bytes")?);
                }
                "--size" => {
                    let value = required(arg, field, "--size")?;
                    size = Some(parse_size(value, "--size")?);
                }
                "--time" => {
                    let value = required(arg, field, "--time")?;
                    growth =
                        humantime::parse_duration(value).map_err(|e| OptionsError::BadValue {
                            field,
                            option: "--time",
                            value: value.to_owned(),
                            reason: format!("not a duration such as 10s or 2m ({e})"),
                        })?;
                }
                "--vm-hang" => {
                    let value = required(arg, field, "--vm-hang")?;
                    hang = stress_ng_time(value, field, "--vm-hang")?;
                }
                "--vm-method" => {
                    let value = required(arg, field, "--vm-method")?;
                    method = value.parse().map_err(|reason| OptionsError::BadValue {
                        field,
                        option: "--vm-method",
                        value: value.to_owned(),
                        reason,
                    })?;
                }
                "--timeout" | "-t" => {
                    let value = required(arg, field, "--timeout")?;
                    timeout = stress_ng_time(value, field, "--timeout")?;
                }
                "--vm-keep" => keep = true,
                // --vm-populate, --oomable, reporting: what our workers always do, or nothing.
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
            growth,
            hang,
            keep,
            method,
            timeout,
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

    fn cpu_spec(workers: u32, load: u8) -> CpuSpec {
        CpuSpec {
            workers,
            load,
            slice_ms: DEFAULT_SLICE_MS,
            method: CpuMethod::All,
            timeout: None,
        }
    }

    fn memory_spec(workers: u32, total: MemorySize) -> MemorySpec {
        MemorySpec {
            workers,
            total,
            growth: Duration::ZERO,
            hang: None,
            keep: false,
            method: VmMethod::All,
            timeout: None,
        }
    }

    /// Chaos Mesh's Stressors.Normalize: " --cpu-load-slice 10 --cpu-method sqrt" then
    /// " --cpu N", " --cpu-load P" when a load is set, then " OPTION " for each user option.
    #[test]
    fn cpu_as_chaos_mesh_normalize_sends_it() {
        let sqrt = |workers, load| CpuSpec {
            method: CpuMethod::Sqrt,
            ..cpu_spec(workers, load)
        };
        assert_eq!(
            cpu(" --cpu-load-slice 10 --cpu-method sqrt --cpu 1 --cpu-load 50").unwrap(),
            Some(sqrt(1, 50))
        );
        // No load in the StressChaos: stress-ng's default, full load.
        assert_eq!(
            cpu(" --cpu-load-slice 10 --cpu-method sqrt --cpu 3").unwrap(),
            Some(sqrt(3, 100))
        );
        // Chaos Mesh's examples: options ["--cpu 2", "--timeout 600"] after workers: 1.
        assert_eq!(
            cpu(" --cpu-load-slice 10 --cpu-method sqrt --cpu 1 --cpu-load 100 --cpu 2  --timeout 600 ")
                .unwrap(),
            Some(CpuSpec {
                timeout: Some(Duration::from_secs(600)),
                ..sqrt(2, 100)
            })
        );
        // A user's method and slice override Normalize's (the last value wins, as in stress-ng).
        assert_eq!(
            cpu(" --cpu-load-slice 10 --cpu-method sqrt --cpu 1 --cpu-load 30 --cpu-method matrixprod  --cpu-load-slice 50 ")
                .unwrap(),
            Some(CpuSpec {
                method: CpuMethod::Matrixprod,
                slice_ms: 50,
                ..cpu_spec(1, 30)
            })
        );
    }

    #[test]
    fn cpu_spellings() {
        assert_eq!(cpu("--cpu=1 --cpu-load=0").unwrap(), Some(cpu_spec(1, 0)));
        assert_eq!(cpu("-c 3 -l 100").unwrap(), Some(cpu_spec(3, 100)));
        assert_eq!(
            cpu("--cpu 1 -t 2m --metrics-brief --quiet")
                .unwrap()
                .unwrap()
                .timeout,
            Some(Duration::from_secs(120))
        );
        // --timeout 0: stress-ng's "no timeout".
        assert_eq!(cpu("--cpu 1 --timeout 0").unwrap().unwrap().timeout, None);
    }

    #[test]
    fn cpu_defaults() {
        assert_eq!(cpu("").unwrap(), None);
        assert_eq!(cpu("   ").unwrap(), None);
        // --cpu-load alone: one worker; --cpu alone: full load; --cpu 0: one per CPU.
        assert_eq!(cpu("--cpu-load 30").unwrap(), Some(cpu_spec(1, 30)));
        assert_eq!(cpu("--cpu 2").unwrap(), Some(cpu_spec(2, 100)));
        assert_eq!(cpu("--cpu 0").unwrap().unwrap().workers, 4);
    }

    #[test]
    fn cpu_values_out_of_range_are_refused() {
        for (text, says) in [
            ("--cpu 1 --cpu-load -5", "between 0 and 100"),
            ("--cpu 1 --cpu-load 101", "between 0 and 100"),
            ("--cpu 1 --cpu-load lots", "not a whole number"),
            ("--cpu -1", "must not be negative"),
            ("--cpu 9000", "at most 8192"),
            ("--cpu x", "not a whole number"),
            (
                "--cpu 1 --cpu-method hanoi",
                "unknown method; faultline's CPU workers know all, sqrt",
            ),
            ("--cpu 1 --cpu-load-slice 0", "in milliseconds"),
            ("--cpu 1 --cpu-load-slice -3", "in milliseconds"),
            ("--cpu 1 --cpu-load-slice 20000", "at most 10000"),
            ("--cpu 1 --timeout soon", "not a time"),
            ("--cpu 1 --timeout 10w", "unknown unit"),
        ] {
            let err = cpu(text).unwrap_err();
            assert!(
                matches!(err, OptionsError::BadValue { .. }),
                "{text}: {err}"
            );
            assert!(err.to_string().contains(says), "{text}: {err}");
            assert!(err.to_string().starts_with("cpuStressors: "), "{err}");
        }
        assert_eq!(
            cpu("--cpu 1 --cpu-method hanoi").unwrap_err().to_string(),
            format!(
                "cpuStressors: --cpu-method \"hanoi\": unknown method; faultline's CPU workers know {}",
                CpuMethod::names()
            )
        );
    }

    /// Options we cannot honour are refused by name, e.g. Chaos Mesh's burn-cpu example's
    /// "--hdd 1".
    #[test]
    fn unsupported_options_are_named() {
        let err = cpu(" --cpu-load-slice 10 --cpu-method sqrt --cpu 1 --cpu-load 100 --cpu 2  --timeout 600  --hdd 1 ").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cpuStressors: unsupported option \"--hdd\" (supported: {CPU_SUPPORTED})")
        );
        let err = memory("--vm 1 --vm-bytes 1G --vm-locked").unwrap_err();
        assert!(err.to_string().contains("\"--vm-locked\""), "{err}");
        let err = cpu("--cpu 1 --cpu-ops 1000").unwrap_err();
        assert!(err.to_string().contains("\"--cpu-ops\""), "{err}");
        // Memory options are not CPU options, nor the other way round.
        let err = cpu("--cpu 1 --vm-bytes 1G").unwrap_err();
        assert!(err.to_string().contains("\"--vm-bytes\""), "{err}");
        let err = memory("--size 1G --cpu-method sqrt").unwrap_err();
        assert!(err.to_string().contains("\"--cpu-method\""), "{err}");
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
            cpu("cpu 1").unwrap_err(),
            OptionsError::Unexpected { .. }
        ));
        assert!(matches!(
            memory("--vm-keep=yes --size 1G").unwrap_err(),
            OptionsError::Unexpected { .. }
        ));
    }

    #[test]
    fn the_last_value_of_an_option_wins() {
        assert_eq!(cpu("--cpu 1 --cpu 2").unwrap().unwrap().workers, 2);
        assert_eq!(
            memory("--size 1M --size 2M").unwrap().unwrap().total,
            MemorySize::Bytes(2 << 20)
        );
    }

    /// Chaos Mesh's Stressors.Normalize for memory: " --workers N", " --size S" when a size is
    /// set, then " OPTION " for each user option.
    #[test]
    fn memory_as_chaos_mesh_normalize_sends_it() {
        assert_eq!(
            memory(" --workers 1 --size 256MB").unwrap(),
            Some(memory_spec(1, MemorySize::Bytes(256 << 20)))
        );
        assert_eq!(
            memory(" --workers 2 --size 50% --time 10s ").unwrap(),
            Some(MemorySpec {
                growth: Duration::from_secs(10),
                ..memory_spec(2, MemorySize::Percent(50))
            })
        );
        assert_eq!(
            memory(" --workers 1 --size 64MiB --vm-keep  --vm-hang 5  --vm-method flip  --oomable  --timeout 1h ").unwrap(),
            Some(MemorySpec {
                hang: Some(Duration::from_secs(5)),
                keep: true,
                method: VmMethod::Flip,
                timeout: Some(Duration::from_secs(3600)),
                ..memory_spec(1, MemorySize::Bytes(64 << 20))
            })
        );
        // --vm-hang 0: hold until the end (stress-ng: hang forever).
        assert_eq!(memory("--size 1M --vm-hang 0").unwrap().unwrap().hang, None);
    }

    #[test]
    fn memory_as_stress_ng_sizes_each_worker() {
        assert_eq!(
            memory("--vm 2 --vm-bytes 64M --vm-keep --vm-populate").unwrap(),
            Some(MemorySpec {
                keep: true,
                ..memory_spec(2, MemorySize::Bytes(128 << 20))
            })
        );
        // A percentage is the total, whatever the number of workers.
        assert_eq!(
            memory("--vm 4 --vm-bytes 20%").unwrap().unwrap().total,
            MemorySize::Percent(20)
        );
        assert_eq!(
            memory("--vm-bytes 1g").unwrap().unwrap(),
            memory_spec(1, MemorySize::Bytes(1 << 30))
        );
    }

    #[test]
    fn memory_values_are_checked() {
        for (text, says) in [
            ("--vm 1", "no size"),
            ("--vm 1 --workers 1 --size 1M", "not both"),
            ("--vm-bytes 1M --size 1M", "not both"),
            (
                "--size 1M --vm-method galpat-0",
                "unknown method; faultline's memory workers know all, flip",
            ),
            ("--size 1M --vm-hang forever", "not a time"),
        ] {
            let err = memory(text).unwrap_err();
            assert!(err.to_string().contains(says), "{text}: {err}");
            assert!(err.to_string().starts_with("memoryStressors: "), "{err}");
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
        let spec = memory_spec(1, MemorySize::Percent(25));
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
