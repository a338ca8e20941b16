/* A process that holds something under a volume and keeps using it, logging every use, so a
 * test can see which file its descriptor, working directory or mapping reaches (the bytes it
 * reads), that the descriptor number and offset stay, and that its registers survive.
 * Built static (busybox images have no libc): cc -O2 -static -mno-red-zone -o holder holder.c
 *
 *   holder fd PATH LOG        open PATH once; every 10 ms read 4 bytes from that descriptor
 *   holder cwd DIR LOG        chdir DIR once; every 10 ms open "f", read 4 bytes, close
 *   holder mmap PATH LOG      map PATH shared, close it; every 10 ms read 4 bytes of the map
 *   holder cow PATH LOG       like mmap, but a private writable mapping whose first byte it
 *                             writes ('X'): a page that exists only in this process
 *   holder seccomp PATH LOG   like fd, after installing a seccomp filter failing openat (EPERM)
 *   holder vfork PATH LOG     like fd, but each round a vfork child sleeps 2 s first (the
 *                             parent waits uninterruptibly meanwhile)
 *   holder stuck PATH LOG     like fd, while a second thread reads /slow/x over and over
 *                             (logging to LOG.slow): under a latency fault on /slow it sits
 *                             in a FUSE read that only the reply (or SIGKILL) ends
 *   holder regs PATH LOG      hold PATH open, mapped, and its directory as cwd; block in
 *                             read(2) on a pipe fed every 200 ms with
 *                             callee-saved, SSE registers and MXCSR set to known values, and
 *                             log whether they are intact after each read (x86-64 only)
 *
 * Log lines: "seq=N t=MONOTONIC_NS fd=FD r=OK|E<errno>|SIGBUS data=XXXX pos=P dev=MAJ:MIN".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

static FILE *logf;
static sigjmp_buf on_bus;

static unsigned long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void pause_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void logline(unsigned long seq, unsigned long long t, int fd, const char *r,
                    const char *data, long long pos, int dev_fd) {
    struct stat st;
    unsigned maj = 0, min = 0;
    if (dev_fd >= 0 && fstat(dev_fd, &st) == 0) {
        maj = major(st.st_dev);
        min = minor(st.st_dev);
    }
    fprintf(logf, "seq=%lu t=%llu fd=%d r=%s data=%s pos=%lld dev=%u:%u\n", seq, t, fd, r,
            data, pos, maj, min);
    fflush(logf);
}

static void printable(char *out, const char *in, long n) {
    long i;
    for (i = 0; i < n && i < 4; i++) out[i] = (in[i] >= 32 && in[i] < 127) ? in[i] : '.';
    out[i > 0 ? i : 0] = 0;
    if (i == 0) strcpy(out, "-");
}

static void read_round(unsigned long seq, int fd) {
    char buf[8], data[8], r[16];
    unsigned long long t = now_ns();
    long n = read(fd, buf, 4);
    if (n < 0) {
        snprintf(r, sizeof r, "E%d", errno);
        strcpy(data, "-");
    } else {
        strcpy(r, "OK");
        printable(data, buf, n);
    }
    logline(seq, t, fd, r, data, (long long)lseek(fd, 0, SEEK_CUR), fd);
}

static int open_or_die(const char *path, int flags) {
    int fd = open(path, flags);
    if (fd < 0) {
        fprintf(stderr, "holder: open %s: %s\n", path, strerror(errno));
        exit(1);
    }
    return fd;
}

static void forbid_openat(void) {
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof filter / sizeof filter[0], filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
        perror("holder: seccomp");
        exit(1);
    }
}

static const char *slow_log;

static void *slow_reader(void *arg) {
    (void)arg;
    FILE *out = fopen(slow_log, "a");
    if (!out) return NULL;
    setvbuf(out, NULL, _IOLBF, 0);
    for (unsigned long seq = 1;; seq++) {
        char buf[4];
        unsigned long long t = now_ns();
        int fd = open("/slow/x", O_RDONLY);
        long n = fd < 0 ? -1 : read(fd, buf, sizeof buf);
        int err = errno;
        if (fd >= 0) close(fd);
        fprintf(out, "seq=%lu t=%llu r=%s%d took_ms=%llu\n", seq, t, n < 0 ? "E" : "OK", n < 0 ? err : 0,
                (now_ns() - t) / 1000000ull);
        pause_ms(10);
    }
    return NULL;
}

static void on_sigbus(int sig) {
    (void)sig;
    siglongjmp(on_bus, 1);
}

#if defined(__x86_64__)
/* read(2) with rbx, rbp, r12-r15, xmm0-xmm15 (both halves) and MXCSR set to patterns; returns
 * a mask of what differs after the call (0: intact). */
static unsigned long checked_read(int fd, void *buf, long n, long *result) {
    /* Reached through rcx and the stack only: the compiler's own memory operands could be
     * addressed through rbp or rsp, which this changes. */
    struct {
        long res;          /* 0 */
        unsigned long bad; /* 8 */
        unsigned int mxin; /* 16 */
        unsigned int mxout; /* 20 */
    } ctx = {0, 0, 0x7fc0 /* round toward zero, all masked, DAZ */, 0};
    void *ctxp = &ctx;
    __asm__ volatile(
        "push %%rbp\n\t"
        "push %%rcx\n\t"
        "ldmxcsr 16(%%rcx)\n\t"
#define SET(reg, v) "movabs $" #v ", %%rax\n\tmov %%rax, %%" #reg "\n\t"
        SET(rbx, 0x1111111111111111) SET(rbp, 0x2222222222222222)
        SET(r12, 0x3333333333333333) SET(r13, 0x4444444444444444)
        SET(r14, 0x5555555555555555) SET(r15, 0x6666666666666666)
#define SETX(x, lo, hi) "movabs $" #lo ", %%rax\n\tmovq %%rax, %%" #x "\n\tmovabs $" #hi ", %%rax\n\tpinsrq $1, %%rax, %%" #x "\n\t"
        SETX(xmm0, 0x0a0a0a0a0a0a0a00, 0x0b0b0b0b0b0b0b00)
        SETX(xmm1, 0x0a0a0a0a0a0a0a01, 0x0b0b0b0b0b0b0b01)
        SETX(xmm2, 0x0a0a0a0a0a0a0a02, 0x0b0b0b0b0b0b0b02)
        SETX(xmm3, 0x0a0a0a0a0a0a0a03, 0x0b0b0b0b0b0b0b03)
        SETX(xmm4, 0x0a0a0a0a0a0a0a04, 0x0b0b0b0b0b0b0b04)
        SETX(xmm5, 0x0a0a0a0a0a0a0a05, 0x0b0b0b0b0b0b0b05)
        SETX(xmm6, 0x0a0a0a0a0a0a0a06, 0x0b0b0b0b0b0b0b06)
        SETX(xmm7, 0x0a0a0a0a0a0a0a07, 0x0b0b0b0b0b0b0b07)
        SETX(xmm8, 0x0a0a0a0a0a0a0a08, 0x0b0b0b0b0b0b0b08)
        SETX(xmm9, 0x0a0a0a0a0a0a0a09, 0x0b0b0b0b0b0b0b09)
        SETX(xmm10, 0x0a0a0a0a0a0a0a10, 0x0b0b0b0b0b0b0b10)
        SETX(xmm11, 0x0a0a0a0a0a0a0a11, 0x0b0b0b0b0b0b0b11)
        SETX(xmm12, 0x0a0a0a0a0a0a0a12, 0x0b0b0b0b0b0b0b12)
        SETX(xmm13, 0x0a0a0a0a0a0a0a13, 0x0b0b0b0b0b0b0b13)
        SETX(xmm14, 0x0a0a0a0a0a0a0a14, 0x0b0b0b0b0b0b0b14)
        SETX(xmm15, 0x0a0a0a0a0a0a0a15, 0x0b0b0b0b0b0b0b15)
        "mov $0, %%eax\n\t" /* SYS_read; rdi, rsi, rdx hold fd, buf, n */
        "syscall\n\t"
        "mov %%rax, %%r8\n\t"
        "xor %%r9, %%r9\n\t"
#define CHECK(reg, v) "movabs $" #v ", %%rax\n\txor %%" #reg ", %%rax\n\tor %%rax, %%r9\n\t"
        CHECK(rbx, 0x1111111111111111) CHECK(rbp, 0x2222222222222222)
        CHECK(r12, 0x3333333333333333) CHECK(r13, 0x4444444444444444)
        CHECK(r14, 0x5555555555555555) CHECK(r15, 0x6666666666666666)
#define CHECKX(x, lo, hi) "movq %%" #x ", %%rax\n\tmovabs $" #lo ", %%r10\n\txor %%r10, %%rax\n\tor %%rax, %%r9\n\tpextrq $1, %%" #x ", %%rax\n\tmovabs $" #hi ", %%r10\n\txor %%r10, %%rax\n\tor %%rax, %%r9\n\t"
        CHECKX(xmm0, 0x0a0a0a0a0a0a0a00, 0x0b0b0b0b0b0b0b00)
        CHECKX(xmm1, 0x0a0a0a0a0a0a0a01, 0x0b0b0b0b0b0b0b01)
        CHECKX(xmm2, 0x0a0a0a0a0a0a0a02, 0x0b0b0b0b0b0b0b02)
        CHECKX(xmm3, 0x0a0a0a0a0a0a0a03, 0x0b0b0b0b0b0b0b03)
        CHECKX(xmm4, 0x0a0a0a0a0a0a0a04, 0x0b0b0b0b0b0b0b04)
        CHECKX(xmm5, 0x0a0a0a0a0a0a0a05, 0x0b0b0b0b0b0b0b05)
        CHECKX(xmm6, 0x0a0a0a0a0a0a0a06, 0x0b0b0b0b0b0b0b06)
        CHECKX(xmm7, 0x0a0a0a0a0a0a0a07, 0x0b0b0b0b0b0b0b07)
        CHECKX(xmm8, 0x0a0a0a0a0a0a0a08, 0x0b0b0b0b0b0b0b08)
        CHECKX(xmm9, 0x0a0a0a0a0a0a0a09, 0x0b0b0b0b0b0b0b09)
        CHECKX(xmm10, 0x0a0a0a0a0a0a0a10, 0x0b0b0b0b0b0b0b10)
        CHECKX(xmm11, 0x0a0a0a0a0a0a0a11, 0x0b0b0b0b0b0b0b11)
        CHECKX(xmm12, 0x0a0a0a0a0a0a0a12, 0x0b0b0b0b0b0b0b12)
        CHECKX(xmm13, 0x0a0a0a0a0a0a0a13, 0x0b0b0b0b0b0b0b13)
        CHECKX(xmm14, 0x0a0a0a0a0a0a0a14, 0x0b0b0b0b0b0b0b14)
        CHECKX(xmm15, 0x0a0a0a0a0a0a0a15, 0x0b0b0b0b0b0b0b15)
        "pop %%rcx\n\t"
        "stmxcsr 20(%%rcx)\n\t"
        "mov %%r8, 0(%%rcx)\n\t"
        "mov %%r9, 8(%%rcx)\n\t"
        "pop %%rbp\n\t"
        : "+c"(ctxp)
        : "D"((long)fd), "S"(buf), "d"(n)
        : "rax", "rbx", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "xmm0",
          "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
          "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "memory", "cc");
    unsigned int restore = 0x1f80;
    __asm__ volatile("ldmxcsr %0" ::"m"(restore));
    *result = ctx.res;
    if (ctx.mxout != ctx.mxin) ctx.bad |= 1;
    return ctx.bad;
}

static void regs_loop(const char *path) {
    int p[2];
    if (pipe(p) != 0) exit(1);
    pid_t feeder = fork();
    if (feeder == 0) {
        close(p[0]);
        for (;;) {
            pause_ms(200);
            if (write(p[1], "x", 1) != 1) _exit(0);
        }
    }
    close(p[1]);
    int fd = open_or_die(path, O_RDONLY);
    /* Also a shared mapping of it and a working directory beside it: every kind of handover
     * happens while this thread is blocked in the read below. */
    if (mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0) == MAP_FAILED) {
        perror("holder: mmap");
        exit(1);
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) *slash = 0;
    if (chdir(dir) != 0) {
        perror("holder: chdir");
        exit(1);
    }
    for (unsigned long seq = 1;; seq++) {
        char c;
        long res;
        unsigned long long t = now_ns();
        unsigned long bad = checked_read(p[0], &c, 1, &res);
        char r[48];
        if (bad)
            snprintf(r, sizeof r, "CORRUPT:%lx", bad);
        else if (res < 0)
            snprintf(r, sizeof r, "E%ld", -res);
        else
            strcpy(r, "REGS_OK");
        logline(seq, t, fd, r, "-", (long long)lseek(fd, 0, SEEK_CUR), fd);
        if (res == 0) exit(0);
    }
}
#else
static void regs_loop(const char *path) {
    (void)path;
    fprintf(stderr, "holder: regs mode is x86-64 only\n");
    exit(2);
}
#endif

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: holder fd|cwd|mmap|seccomp|vfork|regs PATH LOG\n");
        return 2;
    }
    const char *mode = argv[1], *path = argv[2];
    logf = fopen(argv[3], "a");
    if (!logf) {
        perror("holder: log");
        return 1;
    }
    setvbuf(logf, NULL, _IOLBF, 0);
    if (strcmp(mode, "regs") == 0) regs_loop(path);
    if (strcmp(mode, "cwd") == 0) {
        if (chdir(path) != 0) {
            perror("holder: chdir");
            return 1;
        }
        for (unsigned long seq = 1;; seq++) {
            unsigned long long t = now_ns();
            int fd = open("f", O_RDONLY);
            if (fd < 0) {
                char r[16];
                snprintf(r, sizeof r, "E%d", errno);
                logline(seq, t, -1, r, "-", 0, -1);
            } else {
                read_round(seq, fd);
                close(fd);
            }
            pause_ms(10);
        }
    }
    int cow = strcmp(mode, "cow") == 0;
    if (strcmp(mode, "mmap") == 0 || cow) {
        int fd = open_or_die(path, O_RDONLY);
        volatile char *map = mmap(NULL, 4096, cow ? PROT_READ | PROT_WRITE : PROT_READ,
                                  cow ? MAP_PRIVATE : MAP_SHARED, fd, 0);
        if (map == MAP_FAILED) {
            perror("holder: mmap");
            return 1;
        }
        if (cow) map[0] = 'X';
        close(fd);
        signal(SIGBUS, on_sigbus);
        for (unsigned long seq = 1;; seq++) {
            unsigned long long t = now_ns();
            char buf[4], data[8];
            if (sigsetjmp(on_bus, 1) == 0) {
                for (int i = 0; i < 4; i++) buf[i] = map[i];
                printable(data, buf, 4);
                logline(seq, t, -1, "OK", data, (long long)(unsigned long)map, -1);
            } else {
                logline(seq, t, -1, "SIGBUS", "-", (long long)(unsigned long)map, -1);
            }
            pause_ms(10);
        }
    }
    int fd = open_or_die(path, O_RDONLY);
    if (strcmp(mode, "seccomp") == 0) forbid_openat();
    if (strcmp(mode, "stuck") == 0) {
        static char name[4096];
        snprintf(name, sizeof name, "%s.slow", argv[3]);
        slow_log = name;
        pthread_t thread;
        pthread_create(&thread, NULL, slow_reader, NULL);
    }
    int vforking = strcmp(mode, "vfork") == 0;
    for (unsigned long seq = 1;; seq++) {
        if (vforking) {
            pid_t child = vfork();
            if (child == 0) {
                struct timespec ts = {2, 0};
                syscall(SYS_close, fd);
                syscall(SYS_nanosleep, &ts, NULL);
                _exit(0);
            }
            if (child > 0) waitpid(child, NULL, 0);
        }
        read_round(seq, fd);
        pause_ms(10);
    }
}
