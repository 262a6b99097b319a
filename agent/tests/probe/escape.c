/* Escape attempts run from inside a container by runtime_escape.rs. One line per attempt:
 * "<name> <rc>", rc 0 when the attempt succeeded, else the errno it failed with (1000: the read
 * returned no data). The test decides what counts as blocked. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/keyctl.h>
#include <linux/reboot.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

static void line(const char *name, long r) { printf("%s %ld\n", name, r < 0 ? (long)errno : 0L); }

static void read_probe(const char *name, const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) { printf("%s %d\n", name, errno); return; }
    char buf[512];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0) printf("%s %d\n", name, errno);
    else if (n == 0) printf("%s 1000\n", name);
    else printf("%s 0\n", name);
    close(fd);
}

int main(int argc, char **argv) {
    /* argv[1]: host block device "major:minor"; argv[2]: a host pid */
    unsigned maj = 0, min = 0;
    /* Every attempt here would act on the host if run outside a container. */
    if (getpid() != 1) {
        fprintf(stderr, "escape probe: refusing to run outside a container (not pid 1)\n");
        return 2;
    }
    if (argc > 1) sscanf(argv[1], "%u:%u", &maj, &min);
    pid_t host_pid = argc > 2 ? atoi(argv[2]) : 1;

    mkdir("/tmp/m", 0755);
    line("mount", mount("none", "/tmp/m", "tmpfs", 0, NULL));
    {
        /* In a child: a successful unshare would leave the probe without privileges. */
        int p[2];
        pipe(p);
        pid_t c = fork();
        if (c == 0) {
            int r = unshare(CLONE_NEWUSER) < 0 ? errno : 0;
            write(p[1], &r, sizeof r);
            _exit(0);
        }
        int r = -1;
        read(p[0], &r, sizeof r);
        waitpid(c, NULL, 0);
        printf("unshare_user %d\n", r);
    }
    read_probe("kcore", "/proc/kcore");
    {
        int fd = open("/proc/sysrq-trigger", O_WRONLY);
        printf("sysrq %d\n", fd < 0 ? errno : 0);
        if (fd >= 0) close(fd);
    }
    {
        int fd = open("/proc/sys/kernel/hostname", O_WRONLY);
        printf("proc_sys_write %d\n", fd < 0 ? errno : 0);
        if (fd >= 0) close(fd);
    }
    if (mknod("/tmp/blk", S_IFBLK | 0600, makedev(maj, min)) < 0)
        printf("mknod_blockdev %d\n", errno);
    else
        read_probe("mknod_blockdev", "/tmp/blk");
    read_probe("host_dev_bind", "/hostdev");
    line("init_module", syscall(SYS_init_module, NULL, 0, ""));
    line("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
    line("reboot", syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_CAD_OFF, NULL));
    line("sethostname", sethostname("escaped", 7));
    line("ptrace_host", ptrace(PTRACE_ATTACH, host_pid, 0, 0));
    {
        pid_t c = fork();
        if (c == 0) { pause(); _exit(0); }
        long r = ptrace(PTRACE_ATTACH, c, 0, 0);
        line("ptrace_child", r);
        kill(c, SIGKILL);
        waitpid(c, NULL, 0);
    }
    line("keyctl", syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0));
    {
        union bpf_attr a;
        memset(&a, 0, sizeof a);
        a.map_type = BPF_MAP_TYPE_ARRAY;
        a.key_size = 4;
        a.value_size = 4;
        a.max_entries = 1;
        line("bpf", syscall(SYS_bpf, BPF_MAP_CREATE, &a, sizeof a));
    }
    {
        struct { unsigned int bytes; int type; unsigned char h[8]; } fh = { 8, 1, {0} };
        line("open_by_handle_at", syscall(SYS_open_by_handle_at, AT_FDCWD, &fh, O_RDONLY));
    }
    {
        long c = syscall(SYS_clone, CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0);
        if (c == 0) _exit(0);
        if (c > 0) waitpid(c, NULL, 0);
        line("clone_newns", c);
    }
    {
        /* A syscall newer than Docker's profile (mseal, 6.10): an allow list refuses what it
         * does not name. In a child, on a page of its own: sealing it is harmless. */
        int p[2];
        pipe(p);
        pid_t c = fork();
        if (c == 0) {
            void *m = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            int r = syscall(462, m, 4096, 0) < 0 ? errno : 0;
            write(p[1], &r, sizeof r);
            _exit(0);
        }
        int r = -1;
        read(p[0], &r, sizeof r);
        waitpid(c, NULL, 0);
        printf("unlisted_syscall %d\n", r);
    }
    {
        /* ping without CAP_NET_RAW: an ICMP datagram socket, allowed by ping_group_range, and
         * an echo to our own loopback answered. */
        int s = socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP);
        int rc = s < 0 ? errno : 0;
        if (s >= 0) {
            struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
            unsigned char echo[16] = {8, 0, 0, 0, 0, 0, 0, 1, 'b', 'e', 'r', 't', 'h'};
            struct timeval tv = {2, 0};
            setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            char reply[64];
            if (sendto(s, echo, sizeof echo, 0, (struct sockaddr *)&to, sizeof to) < 0) rc = errno;
            else if (recv(s, reply, sizeof reply, 0) < 1 || reply[0] != 0) rc = errno ? errno : 1001;
            close(s);
        }
        printf("icmp_echo %d\n", rc);
    }
    fflush(stdout);
    return 0;
}
