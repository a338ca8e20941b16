.intel_syntax noprefix
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
    endbr64
    mov eax, 228
    syscall
    test rax, rax
    jnz 1f
    mov ecx, edi
    cmp ecx, 63
    ja 1f
    mov rdx, [rip + mask]
    bt rdx, rcx
    jnc 1f
    mov rdx, [rsi]
    add rdx, [rip + sec]
    mov rcx, [rsi + 8]
    add rcx, [rip + nsec]
    cmp rcx, 1000000000
    jl 2f
    sub rcx, 1000000000
    inc rdx
2:  mov [rsi], rdx
    mov [rsi + 8], rcx
1:  ret
    .balign 16, 0xcc
gettimeofday:
    endbr64
    mov r8, rdi
    mov eax, 96
    syscall
    test rax, rax
    jnz 1f
    test r8, r8
    jz 1f
    test byte ptr [rip + mask], 1
    jz 1f
    mov rdx, [r8]
    add rdx, [rip + sec]
    mov rcx, [r8 + 8]
    add rcx, [rip + usec]
    cmp rcx, 1000000
    jl 2f
    sub rcx, 1000000
    inc rdx
2:  mov [r8], rdx
    mov [r8 + 8], rcx
1:  ret
    .balign 16, 0xcc
time:
    endbr64
    mov r8, rdi
    xor edi, edi
    lea rsi, [rsp - 16]
    mov eax, 228
    syscall
    mov rdi, r8
    test rax, rax
    jnz 1f
    mov rax, [rsp - 16]
    test byte ptr [rip + mask], 1
    jz 2f
    add rax, [rip + sec]
    mov rcx, [rsp - 8]
    add rcx, [rip + nsec]
    cmp rcx, 1000000000
    jl 2f
    inc rax
2:  test r8, r8
    jz 1f
    mov [r8], rax
1:  ret
    .balign 16, 0xcc
end:
