/* The physical floor of starting a container on this machine, for bench/scenarios/start.py:
 * 5 namespaces (mount, pid, uts, ipc, net) + an overlayfs root + /proc + pivot_root + 3 v1
 * cgroups (memory, pids, freezer) + exec, with nothing else: no config parsing, no logs, no
 * security setup. Prints the nanoseconds from its start until the payload was exec'd (the
 * same instant berth's Runtime::create returns at).
 *
 *   floor LOWERDIR SCRATCHDIR CGROUP-NAME
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
    fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
    _exit(1);
}

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static const char *CONTROLLERS[] = {"memory", "pids", "freezer"};

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: floor LOWERDIR SCRATCHDIR CGROUP-NAME\n");
        return 2;
    }
    long long t0 = now_ns();
    const char *lower = argv[1], *scratch = argv[2], *cg = argv[3];
    char upper[4096], work[4096], merged[4096], opts[8192], path[4096];
    snprintf(upper, sizeof upper, "%s/upper", scratch);
    snprintf(work, sizeof work, "%s/work", scratch);
    snprintf(merged, sizeof merged, "%s/merged", scratch);
    mkdir(scratch, 0755);
    mkdir(upper, 0755);
    mkdir(work, 0755);
    mkdir(merged, 0755);
    snprintf(opts, sizeof opts, "lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work);

    int go[2], ex[2];
    if (pipe2(go, O_CLOEXEC) || pipe2(ex, O_CLOEXEC)) die("pipe");
    long pid = syscall(SYS_clone, CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0);
    if (pid < 0) die("clone");
    if (pid == 0) {
        char b;
        close(go[1]);
        close(ex[0]);
        if (read(go[0], &b, 1) != 1) _exit(1);
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) die("private /");
        if (mount("overlay", merged, "overlay", 0, opts)) die("overlay");
        snprintf(path, sizeof path, "%s/proc", merged);
        mkdir(path, 0555);
        if (mount("proc", path, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL)) die("proc");
        if (chdir(merged)) die("chdir");
        if (syscall(SYS_pivot_root, ".", ".")) die("pivot_root");
        if (umount2(".", MNT_DETACH)) die("umount old root");
        if (chdir("/")) die("chdir /");
        sethostname("floor", 5);
        char *args[] = {"/bin/true", NULL};
        char *env[] = {"PATH=/bin", NULL};
        execve(args[0], args, env);
        die("execve");
    }
    close(go[0]);
    close(ex[1]);
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "/sys/fs/cgroup/%s/%s", CONTROLLERS[i], cg);
        if (mkdir(path, 0755) && errno != EEXIST) die("mkdir cgroup");
        snprintf(path, sizeof path, "/sys/fs/cgroup/%s/%s/cgroup.procs", CONTROLLERS[i], cg);
        FILE *f = fopen(path, "w");
        if (!f || fprintf(f, "%ld", pid) < 0 || fclose(f)) die("join cgroup");
    }
    if (write(go[1], "1", 1) != 1) die("start");
    char b;
    if (read(ex[0], &b, 1) != 0) {
        fprintf(stderr, "floor: the child failed before exec\n");
        return 1;
    }
    long long t1 = now_ns();
    printf("%lld\n", t1 - t0);
    int st;
    waitpid(pid, &st, 0);
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "/sys/fs/cgroup/%s/%s", CONTROLLERS[i], cg);
        rmdir(path);
    }
    return 0;
}
