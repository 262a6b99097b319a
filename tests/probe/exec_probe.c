/* What a process started by `berth exec` can reach of its caller and of the host, for
 * tests/tests/runtime_cli.rs. Runs inside a container, never as pid 1.
 *
 *   exec_probe stdio          one line per fact: "fd<N> pipe|null|other:<mode>:<rdev>",
 *                             "session own|inherited", "tty_nr <n>", and "tiocsti_<fd> <rc>"
 *                             (rc 0 when the injection worked, else the errno)
 *   exec_probe race D I ...   forever: scans /proc/<pid>/exe of every other process and
 *                             prints "HIT <pid> <D>:<I>" when one is the file D:I (st_dev,
 *                             st_ino), and "seen <n>" now and then (processes whose exe it
 *                             could stat), so the test knows the scan ran */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <termios.h>
#include <unistd.h>

/* Never printed by this probe: the test looks for it on its terminal. */
static const char MARK[] = "Zq9";

static int inject(int fd) {
    for (const char *c = MARK; *c; c++)
        if (ioctl(fd, TIOCSTI, c) < 0) return errno;
    return 0;
}

static void stdio_facts(void) {
    for (int fd = 0; fd < 3; fd++) {
        struct stat st;
        if (fstat(fd, &st) < 0) printf("fd%d closed\n", fd);
        else if (S_ISFIFO(st.st_mode)) printf("fd%d pipe\n", fd);
        else if (S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 && minor(st.st_rdev) == 3)
            printf("fd%d null\n", fd);
        else printf("fd%d other:%o:%u:%u\n", fd, st.st_mode, major(st.st_rdev), minor(st.st_rdev));
    }
    printf("session %s\n", getsid(0) == getpid() ? "own" : "inherited");
    FILE *f = fopen("/proc/self/stat", "r");
    char buf[1024] = {0};
    if (f) { fread(buf, 1, sizeof buf - 1, f); fclose(f); }
    char *p = strrchr(buf, ')');
    int tty = -1;
    if (p) sscanf(p + 2, "%*c %*d %*d %*d %d", &tty);
    printf("tty_nr %d\n", tty);
    for (int fd = 0; fd < 3; fd++) printf("tiocsti_fd%d %d\n", fd, inject(fd));
    int t = open("/dev/tty", O_RDWR | O_NOCTTY);
    printf("tiocsti_devtty %d\n", t < 0 ? errno : inject(t));
    fflush(stdout);
}

static void race(int n, char **pairs) {
    unsigned long long want[16][2];
    int k = 0;
    for (int i = 0; i + 1 < n && k < 16; i += 2, k++) {
        want[k][0] = strtoull(pairs[i], NULL, 10);
        want[k][1] = strtoull(pairs[i + 1], NULL, 10);
    }
    static char hit[1 << 22];
    static char seen_pid[1 << 22];
    long seen = 0, loops = 0;
    pid_t me = getpid();
    for (;;) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        while (d && (e = readdir(d))) {
            int pid = atoi(e->d_name);
            if (pid <= 0 || pid == me || pid >= (int)sizeof hit) continue;
            char path[64];
            snprintf(path, sizeof path, "/proc/%d/exe", pid);
            struct stat st;
            if (stat(path, &st) < 0) continue;
            if (!seen_pid[pid]) { seen_pid[pid] = 1; seen++; }
            for (int i = 0; i < k; i++)
                if (st.st_dev == want[i][0] && st.st_ino == want[i][1] && !hit[pid]) {
                    hit[pid] = 1;
                    printf("HIT %d %llu:%llu\n", pid, want[i][0], want[i][1]);
                    fflush(stdout);
                }
        }
        if (d) closedir(d);
        if (++loops % 500 == 0) { printf("seen %ld\n", seen); fflush(stdout); }
    }
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1 && !strcmp(argv[1], "stdio")) stdio_facts();
    else if (argc > 1 && !strcmp(argv[1], "race")) race(argc - 2, argv + 2);
    else { fprintf(stderr, "usage: exec_probe stdio | race DEV INO...\n"); return 2; }
    return 0;
}
