// Kernel floor for a room's fan-out on loopback: SENDERS threads write one
// MSG-byte frame to each of N sockets per round, back to back (nothing else:
// no framing, no wake-ups, no locks); a second process (the clients) drains
// them with epoll, as the bench's listeners do. Prints the wall time of one
// round over all N sockets and the senders' CPU per send: one round is the
// least time in which every client of a room can get one write.
// gcc -O2 -o /tmp/room_floor bench/scripts/room_floor.c -lpthread && /tmp/room_floor 10000 1100 100 1
// NOREAD=1 leaves the data unread (no reader wake-ups; the receive buffers take 100 rounds of small frames).
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <fcntl.h>
#include <time.h>
#include <sys/wait.h>
static int N, MSG, ROUNDS, SENDERS;
static int *srv;
static char *data;
static pthread_barrier_t start, end;
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static double cpu(int who) { struct rusage r; getrusage(who, &r); return r.ru_utime.tv_sec + r.ru_stime.tv_sec + (r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6; }
static void *sender(void *arg) {
  long k = (long)arg;
  for (int r = 0; r < ROUNDS; r++) {
    pthread_barrier_wait(&start);
    for (int i = k; i < N; i += SENDERS) send(srv[i], data, MSG, MSG_DONTWAIT | MSG_NOSIGNAL);
    pthread_barrier_wait(&end);
  }
  return 0;
}
static int clients(struct sockaddr_in *a) {
  int *cli = calloc(N, sizeof(int));
  for (int i = 0; i < N; i++) { cli[i] = socket(AF_INET, SOCK_STREAM, 0); if (connect(cli[i], (void *)a, sizeof *a)) { perror("connect"); return 1; } fcntl(cli[i], F_SETFL, O_NONBLOCK); }
  if (getenv("NOREAD")) { char c; while (read(cli[0], &c, 1) != 0) usleep(1000); return 0; }
  int ep = epoll_create1(0);
  for (int i = 0; i < N; i++) { struct epoll_event ev = {.events = EPOLLIN, .data.fd = cli[i]}; epoll_ctl(ep, EPOLL_CTL_ADD, cli[i], &ev); }
  char buf[4096]; struct epoll_event evs[256]; int open_ = N;
  while (open_ > 0) {
    int n = epoll_wait(ep, evs, 256, 5000); if (n <= 0) break;
    for (int i = 0; i < n; i++) { ssize_t k; while ((k = read(evs[i].data.fd, buf, sizeof buf)) > 0); if (k == 0) { close(evs[i].data.fd); open_--; } }
  }
  fprintf(stderr, "reader cpu %.2f s\n", cpu(RUSAGE_SELF));
  return 0;
}
int main(int argc, char **argv) {
  if (argc < 5) { fprintf(stderr, "usage: room_floor N MSG ROUNDS SENDERS\n"); return 2; }
  N = atoi(argv[1]); MSG = atoi(argv[2]); ROUNDS = atoi(argv[3]); SENDERS = atoi(argv[4]);
  srv = calloc(N, sizeof(int)); data = malloc(MSG); memset(data, 'x', MSG);
  int l = socket(AF_INET, SOCK_STREAM, 0); struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
  bind(l, (void *)&a, sizeof a); listen(l, 4096); socklen_t al = sizeof a; getsockname(l, (void *)&a, &al);
  pid_t child = fork();
  if (child == 0) return clients(&a);
  for (int i = 0; i < N; i++) { srv[i] = accept(l, 0, 0); int one = 1; setsockopt(srv[i], IPPROTO_TCP, TCP_NODELAY, &one, 4); fcntl(srv[i], F_SETFL, O_NONBLOCK); }
  usleep(200000);
  pthread_barrier_init(&start, 0, SENDERS + 1); pthread_barrier_init(&end, 0, SENDERS + 1);
  pthread_t t[64];
  for (long k = 0; k < SENDERS && k < 64; k++) pthread_create(&t[k], 0, sender, (void *)k);
  double c0 = cpu(RUSAGE_SELF), total = 0, worst = 0;
  for (int r = 0; r < ROUNDS; r++) {
    double rs = now();
    pthread_barrier_wait(&start); pthread_barrier_wait(&end);
    double d = now() - rs; total += d; if (d > worst) worst = d;
  }
  double c1 = cpu(RUSAGE_SELF);
  for (int k = 0; k < SENDERS; k++) pthread_join(t[k], 0);
  for (int i = 0; i < N; i++) close(srv[i]);
  waitpid(child, 0, 0);
  printf("N %d msg %d senders %d: round %.1f ms (worst %.1f), sender cpu %.2f us/send\n", N, MSG, SENDERS, total / ROUNDS * 1e3, worst * 1e3, (c1 - c0) / ((double)N * ROUNDS) * 1e6);
  return 0;
}
