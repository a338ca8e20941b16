//! The work our stressors do, named as stress-ng names it (`--cpu-method`, `--vm-method`), so
//! the options Chaos Mesh users write keep a meaning: a CPU method is the computation a worker
//! runs during its busy time (the load percentage does not depend on it), a VM method is the
//! pattern a memory worker writes as it touches its pages.

use std::fmt;
use std::str::FromStr;

/// The computation of a CPU worker's busy time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuMethod {
    /// Each of the others in turn.
    All,
    Sqrt,
    Int32,
    Int64,
    Float,
    Double,
    Fibonacci,
    Prime,
    Matrixprod,
    Crc16,
}

const CPU_METHODS: [CpuMethod; 10] = [
    CpuMethod::All,
    CpuMethod::Sqrt,
    CpuMethod::Int32,
    CpuMethod::Int64,
    CpuMethod::Float,
    CpuMethod::Double,
    CpuMethod::Fibonacci,
    CpuMethod::Prime,
    CpuMethod::Matrixprod,
    CpuMethod::Crc16,
];

impl CpuMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            CpuMethod::All => "all",
            CpuMethod::Sqrt => "sqrt",
            CpuMethod::Int32 => "int32",
            CpuMethod::Int64 => "int64",
            CpuMethod::Float => "float",
            CpuMethod::Double => "double",
            CpuMethod::Fibonacci => "fibonacci",
            CpuMethod::Prime => "prime",
            CpuMethod::Matrixprod => "matrixprod",
            CpuMethod::Crc16 => "crc16",
        }
    }

    /// Every method, for error messages.
    pub fn names() -> String {
        CPU_METHODS.map(CpuMethod::as_str).join(", ")
    }

    /// One short unit of work (microseconds); `round` picks the method of `all`.
    pub fn unit(self, round: u64) -> u64 {
        let seed = std::hint::black_box(round);
        match self {
            CpuMethod::All => {
                let concrete = &CPU_METHODS[1..];
                concrete[(round % concrete.len() as u64) as usize].unit(round / 7)
            }
            CpuMethod::Sqrt => {
                let mut acc = 0.0f64;
                for i in 0..2048u64 {
                    acc += ((seed + i) as f64).sqrt();
                }
                acc as u64
            }
            CpuMethod::Int32 => {
                let mut x = seed as u32 | 1;
                for _ in 0..4096 {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223) ^ (x >> 7);
                }
                u64::from(x)
            }
            CpuMethod::Int64 => {
                let mut x = seed | 1;
                for _ in 0..4096 {
                    x = x
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407)
                        ^ (x >> 11);
                }
                x
            }
            CpuMethod::Float => {
                let mut a = seed as f32 * 0.001 + 1.0;
                for _ in 0..2048 {
                    a = a * 1.000_01 + 0.5 / a;
                }
                a as u64
            }
            CpuMethod::Double => {
                let mut a = seed as f64 * 0.001 + 1.0;
                for _ in 0..2048 {
                    a = a * 1.000_000_1 + 0.5 / a;
                }
                a as u64
            }
            CpuMethod::Fibonacci => {
                let (mut a, mut b, mut sum) = (0u64, 1u64, 0u64);
                for _ in 0..64 {
                    for _ in 0..90 {
                        (a, b) = (b, a.wrapping_add(b));
                    }
                    sum = sum.wrapping_add(a);
                    (a, b) = (seed & 1, 1);
                }
                sum
            }
            CpuMethod::Prime => {
                let start = 1_000_000 + (seed % 1_000_000);
                (start..start + 64)
                    .filter(|&n| (2..).take_while(|d| d * d <= n).all(|d| n % d != 0))
                    .count() as u64
            }
            CpuMethod::Matrixprod => {
                const N: usize = 24;
                let a: [[f64; N]; N] = std::array::from_fn(|i| {
                    std::array::from_fn(|j| (i * N + j) as f64 + seed as f64)
                });
                let b: [[f64; N]; N] =
                    std::array::from_fn(|i| std::array::from_fn(|j| (j * N + i) as f64));
                let mut c = [[0.0f64; N]; N];
                for i in 0..N {
                    for j in 0..N {
                        c[i][j] = (0..N).map(|k| a[i][k] * b[k][j]).sum();
                    }
                }
                std::hint::black_box(&c);
                c[N - 1][N - 1] as u64
            }
            CpuMethod::Crc16 => {
                let mut crc: u16 = 0xFFFF;
                for i in 0..2048u64 {
                    crc ^= ((seed.wrapping_add(i) & 0xFF) as u16) << 8;
                    for _ in 0..8 {
                        crc = if crc & 0x8000 != 0 {
                            (crc << 1) ^ 0x1021
                        } else {
                            crc << 1
                        };
                    }
                }
                u64::from(crc)
            }
        }
    }
}

impl FromStr for CpuMethod {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        CPU_METHODS
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown method; faultline's CPU workers know {}",
                    CpuMethod::names()
                )
            })
    }
}

impl fmt::Display for CpuMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The pattern a memory worker writes when it touches its pages (one write per page a pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmMethod {
    /// Each of the others in turn, a pass each.
    All,
    /// Inverts the byte.
    Flip,
    /// 0x00 and 0xFF on alternate passes.
    ZeroOne,
    /// Increments the low nybble.
    IncNybble,
    /// A pseudo-random byte.
    RandSet,
    /// A 64-bit pass counter at the start of each page.
    Write64,
}

const VM_METHODS: [VmMethod; 6] = [
    VmMethod::All,
    VmMethod::Flip,
    VmMethod::ZeroOne,
    VmMethod::IncNybble,
    VmMethod::RandSet,
    VmMethod::Write64,
];

impl VmMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            VmMethod::All => "all",
            VmMethod::Flip => "flip",
            VmMethod::ZeroOne => "zero-one",
            VmMethod::IncNybble => "inc-nybble",
            VmMethod::RandSet => "rand-set",
            VmMethod::Write64 => "write64",
        }
    }

    pub fn names() -> String {
        VM_METHODS.map(VmMethod::as_str).join(", ")
    }

    /// Touches every page of `buffer` once, writing this method's pattern for pass `pass`.
    pub fn touch(self, buffer: &mut [u8], page: usize, pass: u64) {
        let method = match self {
            VmMethod::All => VM_METHODS[1 + (pass % (VM_METHODS.len() as u64 - 1)) as usize],
            other => other,
        };
        let mut random = pass.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for start in (0..buffer.len()).step_by(page.max(1)) {
            match method {
                VmMethod::Flip => buffer[start] = !buffer[start],
                VmMethod::ZeroOne => {
                    buffer[start] = if pass.is_multiple_of(2) { 0x00 } else { 0xFF }
                }
                VmMethod::IncNybble => {
                    let b = buffer[start];
                    buffer[start] = (b & 0xF0) | (b.wrapping_add(1) & 0x0F);
                }
                VmMethod::RandSet => {
                    random ^= random << 13;
                    random ^= random >> 7;
                    random ^= random << 17;
                    buffer[start] = random as u8;
                }
                VmMethod::Write64 | VmMethod::All => {
                    let end = (start + 8).min(buffer.len());
                    buffer[start..end].copy_from_slice(&pass.to_le_bytes()[..end - start]);
                }
            }
        }
        std::hint::black_box(&buffer);
    }
}

impl FromStr for VmMethod {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        VM_METHODS
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown method; faultline's memory workers know {}",
                    VmMethod::names()
                )
            })
    }
}

impl fmt::Display for VmMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_listed() {
        for m in CPU_METHODS {
            assert_eq!(m.as_str().parse::<CpuMethod>(), Ok(m));
            let _ = m.unit(3);
        }
        for m in VM_METHODS {
            assert_eq!(m.as_str().parse::<VmMethod>(), Ok(m));
        }
        let err = "hanoi".parse::<CpuMethod>().unwrap_err();
        assert!(err.contains("sqrt, int32"), "{err}");
        let err = "galpat-0".parse::<VmMethod>().unwrap_err();
        assert!(err.contains("flip, zero-one"), "{err}");
    }

    #[test]
    fn methods_compute_what_they_say() {
        // The CRC depends on the seed: real work, not a constant.
        assert_ne!(CpuMethod::Crc16.unit(1), CpuMethod::Crc16.unit(2));
        // Among 1_000_000..1_000_064 there are primes (1_000_003, 1_000_033, 1_000_037, ...).
        assert!(CpuMethod::Prime.unit(0) >= 3);
    }

    #[test]
    fn vm_methods_write_one_byte_per_page() {
        let mut buffer = vec![0u8; 3 * 4096];
        VmMethod::ZeroOne.touch(&mut buffer, 4096, 1);
        assert_eq!(
            (buffer[0], buffer[1], buffer[4096], buffer[8192]),
            (0xFF, 0, 0xFF, 0xFF)
        );
        VmMethod::Flip.touch(&mut buffer, 4096, 2);
        assert_eq!(buffer[4096], 0x00);
        VmMethod::IncNybble.touch(&mut buffer, 4096, 3);
        assert_eq!(buffer[0], 0x01);
        VmMethod::Write64.touch(&mut buffer, 4096, 0x0102);
        assert_eq!(&buffer[4096..4098], &[0x02, 0x01]);
    }
}
