.text
.globl _start
_start:
data:
magic: .ascii "FLTSHIFT"
sec:   .quad 0
nsec:  .quad 0
usec:  .quad 0
mask:  .quad 0
.quad 0, 0, 0
clock_gettime:
    bti c
    mov w9, w0
    mov x8, #113
    svc #0
    cbnz x0, 1f
    cmp w9, #63
    b.hi 1f
    adr x10, data
    ldr x11, [x10, #32]
    lsr x11, x11, x9
    tbz x11, #0, 1f
    ldp x12, x13, [x1]
    ldp x14, x15, [x10, #8]
    add x12, x12, x14
    add x13, x13, x15
    movz x14, #0xca00
    movk x14, #0x3b9a, lsl #16
    cmp x13, x14
    b.lt 2f
    sub x13, x13, x14
    add x12, x12, #1
2:  stp x12, x13, [x1]
1:  ret
    .balign 16
gettimeofday:
    bti c
    mov x9, x0
    mov x8, #169
    svc #0
    cbnz x0, 1f
    cbz x9, 1f
    adr x10, data
    ldr x11, [x10, #32]
    tbz x11, #0, 1f
    ldp x12, x13, [x9]
    ldr x14, [x10, #8]
    ldr x15, [x10, #24]
    add x12, x12, x14
    add x13, x13, x15
    movz x14, #0x4240
    movk x14, #0xf, lsl #16
    cmp x13, x14
    b.lt 2f
    sub x13, x13, x14
    add x12, x12, #1
2:  stp x12, x13, [x9]
1:  ret
    .balign 16
end:
