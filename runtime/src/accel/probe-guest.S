# The accelerator probe's guest: a 512-byte boot sector. SeaBIOS loads it at 0x7c00 in
# real mode; it goes straight to 64-bit long mode (PAE paging, EFER.LME), uses CPUID and
# SSE there as a kernel does at once, and writes a line to COM1 at each step. The probe
# says `kvm` only when the second line arrives.
#
# Built (the bytes are committed as probe-guest.bin; a test checks they match):
#   as --64 -o g.o probe-guest.S
#   ld -m elf_x86_64 -Ttext 0x7c00 --oformat binary -e _start -o probe-guest.bin g.o
    .intel_syntax noprefix
    .code16
    .globl _start
_start:
    cli
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, 0x7c00
    mov si, offset real_msg
    call print16
    in al, 0x92                      # A20 through the fast gate
    or al, 2
    out 0x92, al
    mov di, 0x1000                   # page tables at 0x1000-0x3fff, zeroed
    xor eax, eax
    mov cx, 3072
    rep stosd
    mov dword ptr [0x1000], 0x2003   # PML4[0] -> PDPT
    mov dword ptr [0x2000], 0x3003   # PDPT[0] -> PD
    mov dword ptr [0x3000], 0x83     # PD[0]: 2 MiB page at 0, identity
    lgdt [gdt_ptr]
    mov eax, cr4
    or eax, 0x20                     # PAE
    mov cr4, eax
    mov eax, 0x1000
    mov cr3, eax
    mov ecx, 0xc0000080              # EFER
    rdmsr
    or eax, 0x100                    # LME
    wrmsr
    mov eax, cr0
    or eax, 0x80000001               # PG | PE: real mode straight to long mode
    mov cr0, eax
    .byte 0xea                       # ljmp 0x08:long_mode
    .word long_mode
    .word 0x08

print16:
    mov dx, 0x3f8
1:  lodsb
    test al, al
    jz 2f
    out dx, al
    jmp 1b
2:  ret

    .code64
long_mode:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov eax, 1
    cpuid
    mov rax, cr0
    and ax, 0xfffb                   # no x87 emulation
    or ax, 2
    mov cr0, rax
    mov rax, cr4
    or ax, 0x600                     # OSFXSR | OSXMMEXCPT: SSE on
    mov cr4, rax
    xorps xmm0, xmm0
    lea rsi, [rip + long_msg]
    mov dx, 0x3f8
3:  lodsb
    test al, al
    jz 4f
    out dx, al
    jmp 3b
4:  cli
    hlt
    jmp 4b

    .p2align 3
gdt:
    .quad 0
    .quad 0x00209a0000000000         # 64-bit code
    .quad 0x0000920000000000         # data
gdt_ptr:
    .word gdt_ptr - gdt - 1
    .long gdt
real_msg:
    .asciz "VMFORM-ACCEL-PROBE REAL-MODE\r\n"
long_msg:
    .asciz "VMFORM-ACCEL-PROBE LONG-MODE\r\n"
    .org 510
    .byte 0x55, 0xaa
