/* LD_PRELOAD shim: TCP_NODELAY on every accepted socket.
 *
 * s3s-fs 0.14 leaves Nagle on. Its responses with a body go out as two writes (head,
 * then body), so the body waits for the ACK of the head, which the client delays by
 * up to 40 ms (Linux's minimum delayed-ACK time): every GET of a small object then
 * takes 40 ms on loopback. Production S3 servers set TCP_NODELAY; this makes the test
 * server do the same, so benchmarks and tests measure s3dock, not that stall.
 * Built and used by scripts/s3-servers.sh and benches/bench.py (s3s-fs only). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static int nodelay(int fd) {
  int one = 1;
  if (fd >= 0)
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

int accept(int s, struct sockaddr *addr, socklen_t *len) {
  static int (*real)(int, struct sockaddr *, socklen_t *);
  if (!real)
    real = (int (*)(int, struct sockaddr *, socklen_t *))dlsym(RTLD_NEXT, "accept");
  return nodelay(real(s, addr, len));
}

int accept4(int s, struct sockaddr *addr, socklen_t *len, int flags) {
  static int (*real)(int, struct sockaddr *, socklen_t *, int);
  if (!real)
    real = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
  return nodelay(real(s, addr, len, flags));
}
