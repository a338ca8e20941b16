/* Runs the replacement code directly, without any process patching: the test writes
 * stub.h (the page image, the jumps for entries at known addresses, the offset) and this maps
 * the page at its fixed address, writes the jumps at the entries, calls each entry, and
 * prints what it got next to what the system call says. Built for the host, or for aarch64 and
 * run under qemu-user. */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "stub.h"

typedef long (*clock_gettime_fn)(long, struct timespec *);
typedef long (*gettimeofday_fn)(struct timeval *, void *);
typedef long (*time_fn)(long *);

static long long ns(struct timespec t) { return (long long)t.tv_sec * 1000000000LL + t.tv_nsec; }

int main(void) {
    unsigned char *p = mmap((void *)PAGE_ADDR, 2 * 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (p != (void *)PAGE_ADDR) { perror("mmap"); return 1; }
    memcpy(p, page_image, sizeof page_image);
    memcpy((void *)CGT_ENTRY, cgt_jump, sizeof cgt_jump);
    memcpy((void *)GTOD_ENTRY, gtod_jump, sizeof gtod_jump);
#ifdef TIME_ENTRY
    memcpy((void *)TIME_ENTRY, time_jump, sizeof time_jump);
#endif
    __builtin___clear_cache((char *)p, (char *)p + 2 * 4096);
    clock_gettime_fn cgt = (clock_gettime_fn)CGT_ENTRY;
    gettimeofday_fn gtod = (gettimeofday_fn)GTOD_ENTRY;

    for (int clock = 0; clock < 2; clock++) {
        struct timespec real, shifted = {0, 0};
        syscall(SYS_clock_gettime, clock, &real);
        long rc = cgt(clock, &shifted);
        printf("clock%d rc=%ld real=%lld got=%lld nsec=%ld\n", clock, rc, ns(real), ns(shifted),
               (long)shifted.tv_nsec);
    }
    struct timespec ts;
    printf("badclock rc=%ld\n", cgt(1000, &ts));
    printf("negclock rc=%ld\n", cgt(-1, &ts));
    struct timespec real;
    struct timeval tv;
    syscall(SYS_clock_gettime, 0, &real);
    long rc = gtod(&tv, NULL);
    printf("gtod rc=%ld real=%lld got=%lld usec=%ld\n", rc, ns(real) / 1000,
           (long long)tv.tv_sec * 1000000LL + tv.tv_usec, (long)tv.tv_usec);
    printf("gtodnull rc=%ld\n", gtod(NULL, NULL));
#ifdef TIME_ENTRY
    time_fn tm = (time_fn)TIME_ENTRY;
    long out = 0;
    syscall(SYS_clock_gettime, 0, &real);
    long t = tm(&out);
    printf("time real=%lld got=%ld stored=%ld\n", (long long)real.tv_sec, t, out);
    printf("timenull got=%ld\n", tm(NULL));
#endif
    return 0;
}
