// metaops DIR FILES ROUNDS: create FILES empty files in DIR (open O_CREAT|O_EXCL + close),
// stat each of them ROUNDS times, unlink them all; print operations per second per phase.
// Single-threaded, like an application's metadata loop.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s DIR FILES ROUNDS\n", argv[0]);
    return 2;
  }
  int files = atoi(argv[2]), rounds = atoi(argv[3]);
  if (chdir(argv[1])) { perror(argv[1]); return 1; }
  char name[32];
  struct stat st;
  double t0 = now();
  for (int i = 0; i < files; i++) {
    snprintf(name, sizeof name, "m%07d", i);
    int fd = open(name, O_CREAT | O_EXCL | O_WRONLY, 0644);
    if (fd < 0) { perror(name); return 1; }
    close(fd);
  }
  double t1 = now();
  for (int r = 0; r < rounds; r++)
    for (int i = 0; i < files; i++) {
      snprintf(name, sizeof name, "m%07d", i);
      if (stat(name, &st)) { perror(name); return 1; }
    }
  double t2 = now();
  for (int i = 0; i < files; i++) {
    snprintf(name, sizeof name, "m%07d", i);
    if (unlink(name)) { perror(name); return 1; }
  }
  double t3 = now();
  printf("create %.0f\nstat %.0f\nunlink %.0f\n", files / (t1 - t0),
         (double)files * rounds / (t2 - t1), files / (t3 - t2));
  return 0;
}
