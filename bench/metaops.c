// metaops DIR FILES ROUNDS [MARKER]: a single-threaded metadata loop, like an application's.
//   create  FILES empty files in DIR (open O_CREAT|O_EXCL + close)
//   stat    each of them ROUNDS times
//   miss    stat of a name that does not exist, FILES times: through FUSE one
//           LOOKUP round trip each (a failed lookup is not cached), the round-trip limit
//   unlink  all of them
// Prints operations per second per phase. With MARKER (a path, e.g.
// /sys/kernel/tracing/trace_marker), writes "metaops PHASE" there before each phase and
// "metaops end" after the last, so a trace can be cut into phases.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int marker = -1;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void mark(const char *phase) {
  char line[64];
  if (marker < 0) return;
  int n = snprintf(line, sizeof line, "metaops %s\n", phase);
  if (write(marker, line, n) != n) perror("marker");
}

int main(int argc, char **argv) {
  if (argc != 4 && argc != 5) {
    fprintf(stderr, "usage: %s DIR FILES ROUNDS [MARKER]\n", argv[0]);
    return 2;
  }
  int files = atoi(argv[2]), rounds = atoi(argv[3]);
  if (argc == 5 && (marker = open(argv[4], O_WRONLY | O_CLOEXEC)) < 0) {
    perror(argv[4]);
    return 1;
  }
  if (chdir(argv[1])) { perror(argv[1]); return 1; }
  char name[32];
  struct stat st;
  mark("create");
  double t0 = now();
  for (int i = 0; i < files; i++) {
    snprintf(name, sizeof name, "m%07d", i);
    int fd = open(name, O_CREAT | O_EXCL | O_WRONLY, 0644);
    if (fd < 0) { perror(name); return 1; }
    close(fd);
  }
  double t1 = now();
  mark("stat");
  for (int r = 0; r < rounds; r++)
    for (int i = 0; i < files; i++) {
      snprintf(name, sizeof name, "m%07d", i);
      if (stat(name, &st)) { perror(name); return 1; }
    }
  double t2 = now();
  mark("miss");
  for (int i = 0; i < files; i++)
    if (stat("no-such-file", &st) == 0) { fprintf(stderr, "no-such-file exists\n"); return 1; }
  double t3 = now();
  mark("unlink");
  for (int i = 0; i < files; i++) {
    snprintf(name, sizeof name, "m%07d", i);
    if (unlink(name)) { perror(name); return 1; }
  }
  double t4 = now();
  mark("end");
  printf("create %.0f\nstat %.0f\nmiss %.0f\nunlink %.0f\n", files / (t1 - t0),
         (double)files * rounds / (t2 - t1), files / (t3 - t2),
         files / (t4 - t3));
  return 0;
}
