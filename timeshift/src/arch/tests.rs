use super::aarch64::Aarch64;
use super::x86_64::X86_64;
use super::*;

#[test]
fn x86_64_jump_is_endbr_movabs_jmp_and_decodes() {
    let jump = X86_64::jump(0x7fff_0000_1000, 0x1122_3344_5566_7788);
    assert_eq!(
        jump,
        [
            0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,
            0xff, 0xe0
        ]
    );
    assert_eq!(X86_64::jump_len(0), jump.len());
    assert_eq!(X86_64::jump_target(&jump, 0), Some(0x1122_3344_5566_7788));
    // The original entry (endbr64; push rbp; ...) is not our jump.
    let original = [
        0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(X86_64::jump_target(&original, 0), None);
    assert_eq!(X86_64::jump_target(&jump[..15], 0), None);
}

#[test]
fn aarch64_jump_keeps_its_literal_8_byte_aligned() {
    // entry + 12 aligned: bti c; ldr x16, #8; br x16; .quad target (20 bytes).
    let jump = Aarch64::jump(0x1004, 0xaabb_ccdd_0011_2233);
    let words: Vec<u32> = jump[..12]
        .chunks(4)
        .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
        .collect();
    // Encodings as binutils assembles them: bti c, ldr x16, 8 (from the ldr), br x16.
    assert_eq!(words, [0xd503_245f, 0x5800_0050, 0xd61f_0200]);
    assert_eq!(Aarch64::jump_len(0x1004), 20);
    assert_eq!((0x1004 + 12) % 8, 0);
    assert_eq!(
        Aarch64::jump_target(&jump, 0x1004),
        Some(0xaabb_ccdd_0011_2233)
    );

    // entry + 12 not aligned: a nop, and the ldr reaches 12 bytes ahead.
    let jump = Aarch64::jump(0x1000, 0xaabb_ccdd_0011_2233);
    let words: Vec<u32> = jump[..16]
        .chunks(4)
        .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
        .collect();
    assert_eq!(words, [0xd503_245f, 0x5800_0070, 0xd61f_0200, 0xd503_201f]);
    assert_eq!(Aarch64::jump_len(0x1000), 24);
    assert_eq!(
        Aarch64::jump_target(&jump, 0x1000),
        Some(0xaabb_ccdd_0011_2233)
    );
    // Decoding with the other alignment does not take it for ours.
    assert_eq!(Aarch64::jump_target(&jump, 0x1004), None);
}

#[test]
fn page_image_layout() {
    for (code, targets) in [
        (X86_64::CODE, X86_64::TARGETS),
        (Aarch64::CODE, Aarch64::TARGETS),
    ] {
        assert!(CODE_AT as usize + code.len() <= 4096);
        for t in targets {
            assert!(t.stub_offset >= CODE_AT);
            assert!(t.stub_offset < CODE_AT + code.len() as u64);
        }
    }
    let page = page_image::<X86_64>(-2, 500_000_000, 3);
    assert_eq!(&page[..8], MAGIC);
    let word = |at: u64| u64::from_le_bytes(page[at as usize..at as usize + 8].try_into().unwrap());
    assert_eq!(word(data::SEC) as i64, -2);
    assert_eq!(word(data::NSEC), 500_000_000);
    assert_eq!(word(data::USEC), 500_000);
    assert_eq!(word(data::MASK), 3);
    // Every replacement starts with its landing pad (endbr64 / bti c).
    for t in X86_64::TARGETS {
        assert_eq!(
            &page[t.stub_offset as usize..][..4],
            &[0xf3, 0x0f, 0x1e, 0xfa]
        );
    }
    let page = page_image::<Aarch64>(0, 0, 1);
    for t in Aarch64::TARGETS {
        assert_eq!(
            &page[t.stub_offset as usize..][..4],
            &0xd503_245fu32.to_le_bytes()
        );
    }
}
