/* The bench image's payload wrapper: tells the bench "the payload runs now", then becomes it.
 *
 *   marker FIFO TAG PROG [ARG...]
 *
 * Writes "TAG\n" to FIFO (one write, atomic below PIPE_BUF) and execs PROG. Static, so that
 * the moment it writes is within microseconds of the container's first instruction. Without a
 * reader on the FIFO (the bench is gone) it skips the write instead of blocking. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 4) {
        static const char usage[] = "usage: marker FIFO TAG PROG [ARG...]\n";
        (void)!write(2, usage, sizeof usage - 1);
        return 2;
    }
    int fd = open(argv[1], O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
        char buf[256];
        size_t n = strlen(argv[2]);
        if (n > sizeof buf - 1)
            n = sizeof buf - 1;
        memcpy(buf, argv[2], n);
        buf[n++] = '\n';
        (void)!write(fd, buf, n);
        close(fd);
    }
    execv(argv[3], argv + 3);
    return 127;
}
