/*
 * The floor for the shm medium: the plainest shared-memory ping-pong in C, two
 * threads handing a message back and forth through one buffer and a sequence
 * word with acquire/release atomics and spinning. No framing, no checks, no
 * flow control: what rdma-nio's shm stream adds shows as the distance to this.
 *   shm_floor [round-trips [bytes]]    prints "p50_us p99_us"
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static _Alignas(64) _Atomic unsigned long ping, pong;
static _Alignas(64) unsigned char to_far[65536], to_near[65536];
static long rounds, bytes;

static void *echo(void *unused) {
    (void)unused;
    unsigned char buf[65536];
    for (long i = 1; i <= rounds; i++) {
        while (atomic_load_explicit(&ping, memory_order_acquire) != (unsigned long)i) {}
        memcpy(buf, to_far, bytes);
        memcpy(to_near, buf, bytes);
        atomic_store_explicit(&pong, i, memory_order_release);
    }
    return NULL;
}

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    rounds = argc > 1 ? atol(argv[1]) : 20000;
    bytes = argc > 2 ? atol(argv[2]) : 64;
    if (rounds < 1 || bytes < 1 || bytes > (long)sizeof to_far) {
        fprintf(stderr, "usage: shm_floor [round-trips [bytes (1..65536)]]\n");
        return 2;
    }
    double *samples = malloc(sizeof *samples * rounds);
    unsigned char message[65536], reply[65536];
    memset(message, 0xa5, bytes);
    pthread_t far;
    pthread_create(&far, NULL, echo, NULL);
    for (long i = 1; i <= rounds; i++) {
        double start = now_us();
        memcpy(to_far, message, bytes);
        atomic_store_explicit(&ping, i, memory_order_release);
        while (atomic_load_explicit(&pong, memory_order_acquire) != (unsigned long)i) {}
        memcpy(reply, to_near, bytes);
        samples[i - 1] = now_us() - start;
    }
    pthread_join(far, NULL);
    if (memcmp(message, reply, bytes) != 0) {
        fprintf(stderr, "shm_floor: the echo differs\n");
        return 1;
    }
    qsort(samples, rounds, sizeof *samples, compare);
    printf("%.2f %.2f\n", samples[rounds / 2], samples[rounds * 99 / 100]);
    free(samples);
    return 0;
}
