/*
 * The probe guest's /init (PID 1 of a Linux kernel booted with only this in its initramfs).
 *
 * It runs real guest code for about a second, the kind that broke real guests under a nested KVM
 * whose instruction emulator failed (KVM internal error on a `lock cmpxchg16b`): many short-lived
 * processes (page tables built and torn down) that each touch fresh pages with 16-byte atomic
 * compare-and-swaps. Then it prints the marker the agent looks for and powers the guest off. If
 * anything goes wrong the marker never appears: the kernel panics (panic=-1 reboots, and the probe
 * domain is destroyed on reboot), the hypervisor stops the guest, or the agent's timeout fires.
 *
 * Built static (gcc -static -mcx16), so the initramfs holds this one file.
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WORK_SECONDS 1.0
#define PAGES_PER_CHILD 1024
#define PAGE 4096

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

/* A child's work: map fresh memory and compare-and-swap 16 bytes on every page. */
static int churn(void) {
  size_t len = (size_t)PAGES_PER_CHILD * PAGE;
  char *m = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return 1;
  for (size_t i = 0; i < len; i += PAGE) {
    volatile __int128 *p = (volatile __int128 *)(m + i);
    if (!__sync_bool_compare_and_swap(p, (__int128)0, (__int128)(i + 1))) return 1;
    if (*p != (__int128)(i + 1)) return 1;
  }
  return munmap(m, len) == 0 ? 0 : 1;
}

int main(void) {
  /* The initramfs has no /dev: the console comes from devtmpfs. */
  mkdir("/dev", 0755);
  mount("devtmpfs", "/dev", "devtmpfs", 0, 0);
  int fd = open("/dev/console", O_WRONLY);
  if (fd >= 0) {
    dup2(fd, 1);
    dup2(fd, 2);
  }
  printf("KAKTUS-PROBE start\n");
  fflush(stdout);

  long rounds = 0;
  double started = now();
  while (now() - started < WORK_SECONDS) {
    pid_t pid = fork();
    if (pid < 0) return 1;
    if (pid == 0) _exit(churn());
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      printf("KAKTUS-PROBE child failed (status %d)\n", status);
      fflush(stdout);
      return 1; /* init exits: the kernel panics and the guest ends without the marker */
    }
    rounds++;
  }
  printf("KAKTUS-PROBE-OK %ld rounds in %.2f s\n", rounds, now() - started);
  fflush(stdout);
  sync();
  reboot(RB_POWER_OFF);
  return 1;
}
