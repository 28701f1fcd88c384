// Kernel floor for fan-out sends on loopback: sender CPU per GB for send() vs
// sendfile() from a memfd, 1000 connections, one message each per 33 ms.
// gcc -O2 -o /tmp/send_floor bench/scripts/send_floor.c -lpthread && /tmp/send_floor 0 10240  (1 = sendfile)
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/sendfile.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <fcntl.h>
#include <errno.h>
#include <time.h>
#define N 1000
int cli[N], srv[N];
static void *reader(void *arg) {
  int ep = epoll_create1(0);
  for (int i = 0; i < N; i++) { struct epoll_event ev = {.events = EPOLLIN, .data.fd = cli[i]}; epoll_ctl(ep, EPOLL_CTL_ADD, cli[i], &ev); }
  char buf[65536]; struct epoll_event evs[256];
  for (;;) { int n = epoll_wait(ep, evs, 256, 1000); if (n <= 0) break; for (int i = 0; i < n; i++) while (read(evs[i].data.fd, buf, sizeof buf) > 0); }
  return 0;
}
static double cpu(void) { struct rusage r; getrusage(RUSAGE_THREAD, &r); return r.ru_utime.tv_sec + r.ru_stime.tv_sec + (r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6; }
int main(int argc, char **argv) {
  int mode = atoi(argv[1]); int msg = argc > 2 ? atoi(argv[2]) : 10240; int rounds = 300;
  int l = socket(AF_INET, SOCK_STREAM, 0); struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
  bind(l, (void *)&a, sizeof a); listen(l, 2048); socklen_t al = sizeof a; getsockname(l, (void *)&a, &al);
  for (int i = 0; i < N; i++) { cli[i] = socket(AF_INET, SOCK_STREAM, 0); connect(cli[i], (void *)&a, sizeof a); srv[i] = accept(l, 0, 0);
    int one = 1; setsockopt(srv[i], IPPROTO_TCP, TCP_NODELAY, &one, 4); fcntl(srv[i], F_SETFL, O_NONBLOCK); fcntl(cli[i], F_SETFL, O_NONBLOCK); }
  pthread_t t; pthread_create(&t, 0, reader, 0);
  int mfd = memfd_create("log", 0); char *data = malloc(msg * rounds); memset(data, 7, msg * rounds); write(mfd, data, msg * rounds);
  long sent = 0, again = 0; double c0 = cpu(); struct timespec ts = {0, 33000000};
  for (int r = 0; r < rounds; r++) {
    for (int i = 0; i < N; i++) {
      ssize_t k;
      if (mode == 0) k = send(srv[i], data + (long)r * msg, msg, MSG_DONTWAIT | MSG_NOSIGNAL);
      else { off_t off = (long)r * msg; k = sendfile(srv[i], mfd, &off, msg); }
      if (k > 0) sent += k; else again++;
    }
    nanosleep(&ts, 0);
  }
  double c1 = cpu();
  printf("mode %s msg %d: sender cpu %.3f s, %.3f GB, %.3f s/GB, again %ld\n", mode ? "sendfile" : "send", msg, c1 - c0, sent / 1e9, (c1 - c0) / (sent / 1e9), again);
  return 0;
}
