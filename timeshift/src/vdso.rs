//! Finding the functions to replace in a process's vDSO: the image is a small ELF shared
//! object mapped whole (headers, dynamic symbols and section headers included), read from
//! `/proc/PID/mem` at the `[vdso]` mapping.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VdsoError {
    #[error("the vDSO image is not a 64-bit little-endian ELF ({0})")]
    NotElf(&'static str),
    #[error("the vDSO is for ELF machine {found}, not {expected} (a 32-bit process?)")]
    Machine { found: u16, expected: u16 },
    #[error("the vDSO image is truncated ({0})")]
    Truncated(&'static str),
}

/// One defined function symbol: its name, its offset from the start of the mapping, its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    pub name: String,
    pub offset: u64,
    pub size: u64,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

const SHT_DYNSYM: u32 = 11;
const PT_LOAD: u32 = 1;
const STT_FUNC: u8 = 2;

/// The function symbols of a vDSO image built for `machine`.
pub fn symbols(image: &[u8], machine: u16) -> Result<Vec<Symbol>, VdsoError> {
    if image.get(..4) != Some(b"\x7fELF") {
        return Err(VdsoError::NotElf("no ELF magic"));
    }
    if image.get(4) != Some(&2) || image.get(5) != Some(&1) {
        return Err(VdsoError::NotElf("not ELFCLASS64/ELFDATA2LSB"));
    }
    let found = u16_at(image, 0x12).ok_or(VdsoError::Truncated("header"))?;
    if found != machine {
        return Err(VdsoError::Machine {
            found,
            expected: machine,
        });
    }
    let t = VdsoError::Truncated;
    // The mapping starts where the first PT_LOAD's file offset 0 is, at its p_vaddr.
    let phoff = u64_at(image, 0x20).ok_or(t("header"))? as usize;
    let phentsize = u16_at(image, 0x36).ok_or(t("header"))? as usize;
    let phnum = u16_at(image, 0x38).ok_or(t("header"))? as usize;
    let mut load_vaddr = None;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(image, ph).ok_or(t("program headers"))? == PT_LOAD {
            let offset = u64_at(image, ph + 8).ok_or(t("program headers"))?;
            let vaddr = u64_at(image, ph + 16).ok_or(t("program headers"))?;
            load_vaddr = Some(vaddr - offset);
            break;
        }
    }
    let load_vaddr = load_vaddr.ok_or(t("no PT_LOAD"))?;
    let shoff = u64_at(image, 0x28).ok_or(t("header"))? as usize;
    let shentsize = u16_at(image, 0x3a).ok_or(t("header"))? as usize;
    let shnum = u16_at(image, 0x3c).ok_or(t("header"))? as usize;
    let section = |i: usize| -> Option<(u32, usize, usize, u32, usize)> {
        let sh = shoff + i * shentsize;
        Some((
            u32_at(image, sh + 4)?,
            u64_at(image, sh + 24)? as usize,
            u64_at(image, sh + 32)? as usize,
            u32_at(image, sh + 40)?,
            u64_at(image, sh + 56)? as usize,
        ))
    };
    let mut out = Vec::new();
    for i in 0..shnum {
        let (kind, offset, size, link, entsize) = section(i).ok_or(t("section headers"))?;
        if kind != SHT_DYNSYM || entsize < 24 {
            continue;
        }
        let (_, str_off, str_size, _, _) = section(link as usize).ok_or(t("string table"))?;
        let strtab = image
            .get(str_off..str_off + str_size)
            .ok_or(t("string table"))?;
        let syms = image.get(offset..offset + size).ok_or(t("symbols"))?;
        for sym in syms.chunks_exact(entsize) {
            let name_at = u32_at(sym, 0).ok_or(t("symbol"))? as usize;
            let info = sym[4];
            let shndx = u16_at(sym, 6).ok_or(t("symbol"))?;
            let value = u64_at(sym, 8).ok_or(t("symbol"))?;
            let size = u64_at(sym, 16).ok_or(t("symbol"))?;
            if info & 0xf != STT_FUNC || shndx == 0 || value < load_vaddr {
                continue;
            }
            let name = strtab
                .get(name_at..)
                .and_then(|s| s.split(|b| *b == 0).next())
                .ok_or(t("symbol name"))?;
            out.push(Symbol {
                name: String::from_utf8_lossy(name).into_owned(),
                offset: value - load_vaddr,
                size,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{Native, ShiftArch};
    use std::os::unix::fs::FileExt;

    /// Our own vDSO, read like any process's.
    fn own_vdso() -> Vec<u8> {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let line = maps
            .lines()
            .find(|l| l.ends_with("[vdso]"))
            .expect("a vDSO");
        let (start, end) = line
            .split_whitespace()
            .next()
            .unwrap()
            .split_once('-')
            .unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let mut image = vec![0; (end - start) as usize];
        let mem = std::fs::File::open("/proc/self/mem").unwrap();
        mem.read_exact_at(&mut image, start).unwrap();
        image
    }

    #[test]
    fn finds_every_target_function_in_this_kernels_vdso() {
        let syms = symbols(&own_vdso(), Native::ELF_MACHINE).unwrap();
        for target in Native::TARGETS {
            let found: Vec<&Symbol> = syms
                .iter()
                .filter(|s| target.symbols.contains(&s.name.as_str()))
                .collect();
            assert!(!found.is_empty(), "{:?} in {syms:?}", target.symbols);
            // Aliases name one function.
            assert!(found.iter().all(|s| s.offset == found[0].offset));
            assert!(found[0].size as usize >= Native::jump_len(found[0].offset));
        }
    }

    #[test]
    fn refuses_other_images() {
        let image = own_vdso();
        assert!(matches!(
            symbols(&image, 3),
            Err(VdsoError::Machine { expected: 3, .. })
        ));
        assert_eq!(
            symbols(b"\x7fELF", 62),
            Err(VdsoError::NotElf("not ELFCLASS64/ELFDATA2LSB"))
        );
        assert_eq!(symbols(b"MZ", 62), Err(VdsoError::NotElf("no ELF magic")));
        // Cut short anywhere: an error, never a panic.
        for len in (0..image.len()).step_by(97) {
            let _ = symbols(&image[..len], Native::ELF_MACHINE);
        }
    }
}
