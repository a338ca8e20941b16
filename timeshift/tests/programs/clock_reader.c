/* Reads the clocks the way programs do (libc's clock_gettime, gettimeofday and time, which
 * go through the vDSO) and, for reference, through the system call, which no vDSO patch
 * changes. Commands, one byte each on stdin:
 *   q  one line: rt=<ns> rt_sys=<ns> mono=<ns> mono_sys=<ns> tod=<us> time=<s> thread_rt=<ns>
 *      regs=<mask of callee-saved registers changed across the blocking read, x86-64>
 *   x  exit
 * Arguments "loop FILE": instead, every 100 ms, append one line to FILE:
 *   t=<CLOCK_MONOTONIC by system call, ns> pid=<pid> rt=<ns> rt_sys=<ns> mono=<ns> mono_sys=<ns>
 * Argument "seccomp": first installs a filter making the clock_gettime system call fail with
 * EPERM (the vDSO does not make it, so the program itself still runs).
 * A second thread samples CLOCK_REALTIME through the vDSO every millisecond (thread_rt). */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile long long thread_rt;

static long long ns(struct timespec t) { return (long long)t.tv_sec * 1000000000LL + t.tv_nsec; }

static void *sampler(void *arg) {
    (void)arg;
    for (;;) {
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        thread_rt = ns(t);
        usleep(1000);
    }
    return NULL;
}

#if defined(__x86_64__)
/* read(2) with rbx, rbp, r12-r15 set to patterns; returns a mask of what differs after. */
static unsigned long checked_read(int fd, void *buf, long n, long *result) {
    struct {
        long res;
        unsigned long bad;
    } ctx = {0, 0};
    void *ctxp = &ctx;
    __asm__ volatile(
        "push %%rbp\n\t"
        "push %%rcx\n\t"
#define SET(reg, v) "movabs $" #v ", %%rax\n\tmov %%rax, %%" #reg "\n\t"
        SET(rbx, 0x1111111111111111) SET(rbp, 0x2222222222222222)
        SET(r12, 0x3333333333333333) SET(r13, 0x4444444444444444)
        SET(r14, 0x5555555555555555) SET(r15, 0x6666666666666666)
        "mov $0, %%eax\n\t"
        "syscall\n\t"
        "mov %%rax, %%r8\n\t"
        "xor %%r9, %%r9\n\t"
#define CHECK(reg, v) "movabs $" #v ", %%rax\n\txor %%" #reg ", %%rax\n\tor %%rax, %%r9\n\t"
        CHECK(rbx, 0x1111111111111111) CHECK(rbp, 0x2222222222222222)
        CHECK(r12, 0x3333333333333333) CHECK(r13, 0x4444444444444444)
        CHECK(r14, 0x5555555555555555) CHECK(r15, 0x6666666666666666)
        "pop %%rcx\n\t"
        "mov %%r8, 0(%%rcx)\n\t"
        "mov %%r9, 8(%%rcx)\n\t"
        "pop %%rbp\n\t"
        : "+c"(ctxp)
        : "D"((long)fd), "S"(buf), "d"(n)
        : "rax", "rbx", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "memory", "cc");
    *result = ctx.res;
    return ctx.bad;
}
#else
static unsigned long checked_read(int fd, void *buf, long n, long *result) {
    *result = read(fd, buf, n);
    return 0;
}
#endif

static void deny_clock_gettime(void) {
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clock_gettime, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof(filter) / sizeof(filter[0]), filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        perror("seccomp");
        exit(1);
    }
}

static int loop(const char *path) {
    FILE *out = fopen(path, "a");
    if (!out) { perror(path); return 1; }
    setvbuf(out, NULL, _IOLBF, 0);
    for (;;) {
        struct timespec rt, mono, rt_sys = {0}, mono_sys = {0};
        clock_gettime(CLOCK_REALTIME, &rt);
        syscall(SYS_clock_gettime, CLOCK_REALTIME, &rt_sys);
        clock_gettime(CLOCK_MONOTONIC, &mono);
        syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &mono_sys);
        fprintf(out, "t=%lld pid=%d rt=%lld rt_sys=%lld mono=%lld mono_sys=%lld\n", ns(mono_sys),
                (int)getpid(), ns(rt), ns(rt_sys), ns(mono), ns(mono_sys));
        usleep(100000);
    }
}

int main(int argc, char **argv) {
    if (argc > 2 && strcmp(argv[1], "loop") == 0) return loop(argv[2]);
    if (argc > 1 && strcmp(argv[1], "seccomp") == 0) deny_clock_gettime();
    setvbuf(stdout, NULL, _IONBF, 0);
    pthread_t t;
    pthread_create(&t, NULL, sampler, NULL);
    printf("ready\n");
    for (;;) {
        char c;
        long n;
        unsigned long bad = checked_read(0, &c, 1, &n);
        if (n <= 0 || c == 'x') return 0;
        if (c != 'q') continue;
        struct timespec rt, mono, rt_sys = {0}, mono_sys = {0};
        struct timeval tv;
        clock_gettime(CLOCK_REALTIME, &rt);
        syscall(SYS_clock_gettime, CLOCK_REALTIME, &rt_sys);
        clock_gettime(CLOCK_MONOTONIC, &mono);
        syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &mono_sys);
        gettimeofday(&tv, NULL);
        time_t now = time(NULL);
        printf("rt=%lld rt_sys=%lld mono=%lld mono_sys=%lld tod=%lld time=%lld thread_rt=%lld "
               "regs=%lu\n",
               ns(rt), ns(rt_sys), ns(mono), ns(mono_sys),
               (long long)tv.tv_sec * 1000000LL + tv.tv_usec, (long long)now,
               (long long)thread_rt, bad);
    }
}
