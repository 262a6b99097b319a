/* What a container can do, one line per item, for tests/tests/security_probe.rs, which runs
 * it as the init of a default berth container, of a podman (runc, default profile) container
 * and of a privileged berth container, and compares the answers.
 *
 * Lines:
 *   value <name> <value>        capability sets (hex), seccomp mode, no_new_privs, the
 *                               oom_score_adj it started with, how many fds it inherited
 *                               beyond 0-2, what /dev/null is (major:minor)
 *   dev <name>                  a device node present in /dev
 *   try <name> <rc>             an attempt: rc 0 when it worked, else the errno it failed with;
 *                               1000: opened but read nothing (a masked file or an empty
 *                               masked dir)
 * The test decides what counts as blocked; nothing here writes to what it opens, and every
 * attempt is harmless when it works (privileged runs): it opens without writing, or changes
 * only the container's own namespaces, or asks for something that does not exist. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/io_uring.h>
#include <linux/keyctl.h>
#include <linux/perf_event.h>
#include <linux/reboot.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/swap.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

static void try(const char *name, long r) { printf("try %s %ld\n", name, r < 0 ? (long)errno : 0L); }

/* Open and read a little: 0 with data, 1000 without, else the errno. */
static void read_file(const char *name, const char *path) {
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0) { printf("try %s %d\n", name, errno); return; }
    char buf[256];
    ssize_t n = read(fd, buf, sizeof buf);
    printf("try %s %d\n", name, n < 0 ? errno : n == 0 ? 1000 : 0);
    close(fd);
}

/* List a dir: 0 when it has entries, 1000 when empty (masked by an empty tmpfs). */
static void read_dir(const char *name, const char *path) {
    DIR *d = opendir(path);
    if (!d) { printf("try %s %d\n", name, errno); return; }
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    printf("try %s %d\n", name, n ? 0 : 1000);
}

/* Open for writing, write nothing. */
static void open_write(const char *name, const char *path) {
    int fd = open(path, O_WRONLY | O_NONBLOCK);
    printf("try %s %d\n", name, fd < 0 ? errno : 0);
    if (fd >= 0) close(fd);
}

/* Runs f in a child (its effects die with it) and reports what it returned. */
static void in_child(const char *name, int (*f)(void)) {
    int p[2];
    if (pipe(p) < 0) { printf("try %s %d\n", name, errno); return; }
    pid_t c = fork();
    if (c == 0) {
        int r = f();
        write(p[1], &r, sizeof r);
        _exit(0);
    }
    int r = -1;
    close(p[1]);
    if (read(p[0], &r, sizeof r) != sizeof r) r = 1001;
    close(p[0]);
    waitpid(c, NULL, 0);
    printf("try %s %d\n", name, r);
}

static int do_unshare_user(void) { return unshare(CLONE_NEWUSER) < 0 ? errno : 0; }
static int do_unshare_ns(void) { return unshare(CLONE_NEWNS) < 0 ? errno : 0; }
static int do_unshare_net(void) { return unshare(CLONE_NEWNET) < 0 ? errno : 0; }
static int do_unshare_cgroup(void) { return unshare(CLONE_NEWCGROUP) < 0 ? errno : 0; }
/* mseal (6.10), newer than Docker's profile: an allow list refuses a syscall it does not name. */
static int do_unlisted(void) {
    void *m = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return syscall(462, m, 4096, 0) < 0 ? errno : 0;
}
static int do_clone3(void) {
    /* An empty clone_args of the smallest size: glibc falls back to clone on ENOSYS. */
    unsigned long long args[8] = {0};
    args[4] = SIGCHLD; /* exit_signal */
    long c = syscall(SYS_clone3, args, 64);
    if (c == 0) _exit(0);
    if (c > 0) { waitpid(c, NULL, 0); return 0; }
    return errno;
}

static void status_value(const char *field, const char *name) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t len = strlen(field);
    while (f && fgets(line, sizeof line, f)) {
        if (!strncmp(line, field, len) && line[len] == ':') {
            char *v = line + len + 1;
            while (*v == ' ' || *v == '\t') v++;
            v[strcspn(v, "\n")] = 0;
            printf("value %s %s\n", name, v);
            fclose(f);
            return;
        }
    }
    if (f) fclose(f);
    printf("value %s absent\n", name);
}

int main(int argc, char **argv) {
    /* argv[1]: a host block device "major:minor" */
    unsigned maj = 0, min = 0;
    if (getpid() != 1) {
        fprintf(stderr, "probe: refusing to run outside a container (not pid 1)\n");
        return 2;
    }
    if (argc > 1) sscanf(argv[1], "%u:%u", &maj, &min);
    setvbuf(stdout, NULL, _IOLBF, 0);

    status_value("CapInh", "cap_inh");
    status_value("CapPrm", "cap_prm");
    status_value("CapEff", "cap_eff");
    status_value("CapBnd", "cap_bnd");
    status_value("CapAmb", "cap_amb");
    status_value("Seccomp", "seccomp");
    status_value("NoNewPrivs", "no_new_privs");
    {
        /* Before anything here opens a file: every fd beyond 0-2 came from the runtime. */
        int n = 0;
        DIR *fds = opendir("/proc/self/fd");
        struct dirent *f;
        while (fds && (f = readdir(fds)))
            if (f->d_name[0] != '.' && atoi(f->d_name) > 2 && atoi(f->d_name) != dirfd(fds)) n++;
        if (fds) closedir(fds);
        printf("value inherited_fds %d\n", n);
        char adj[16] = "absent";
        int fd = open("/proc/self/oom_score_adj", O_RDONLY);
        if (fd >= 0) {
            ssize_t r = read(fd, adj, sizeof adj - 1);
            adj[r > 0 ? r : 0] = 0;
            adj[strcspn(adj, "\n")] = 0;
            close(fd);
        }
        printf("value oom_score_adj %s\n", adj);
        struct stat st;
        if (lstat("/dev/null", &st) == 0 && S_ISCHR(st.st_mode))
            printf("value dev_null %u:%u\n", major(st.st_rdev), minor(st.st_rdev));
        else
            printf("value dev_null not-a-char-device\n");
    }

    DIR *d = opendir("/dev");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        struct stat st;
        char p[300];
        snprintf(p, sizeof p, "/dev/%s", e->d_name);
        if (lstat(p, &st) == 0 && (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)))
            printf("dev %s\n", e->d_name);
    }
    if (d) closedir(d);

    /* Masked paths: unreadable, or read as empty. */
    read_file("read_kcore", "/proc/kcore");
    read_file("read_keys", "/proc/keys");
    read_file("read_timer_list", "/proc/timer_list");
    read_file("read_sched_debug", "/proc/sched_debug");
    read_file("read_latency_stats", "/proc/latency_stats");
    read_file("read_proc_kmsg", "/proc/kmsg");
    read_dir("list_proc_acpi", "/proc/acpi");
    read_dir("list_proc_scsi", "/proc/scsi");
    read_dir("list_sys_firmware", "/sys/firmware");
    /* Read-only paths. */
    open_write("write_core_pattern", "/proc/sys/kernel/core_pattern");
    open_write("write_proc_sys_hostname", "/proc/sys/kernel/hostname");
    open_write("write_sysrq", "/proc/sysrq-trigger");
    open_write("write_proc_irq", "/proc/irq/default_smp_affinity");
    open_write("write_uevent_helper", "/sys/kernel/uevent_helper");
    open_write("write_sys_lo_mtu", "/sys/class/net/lo/mtu");
    /* The agent's /etc files, bound from the host. */
    open_write("write_etc_hosts", "/etc/hosts");
    open_write("write_etc_resolv_conf", "/etc/resolv.conf");
    /* Devices. */
    read_file("open_dev_kmsg", "/dev/kmsg");
    if (mknod("/tmp/mem", S_IFCHR | 0600, makedev(1, 1)) < 0) printf("try mknod_mem %d\n", errno);
    else { read_file("mknod_mem", "/tmp/mem"); unlink("/tmp/mem"); }
    if (mknod("/tmp/blk", S_IFBLK | 0600, makedev(maj, min)) < 0) printf("try mknod_blockdev %d\n", errno);
    else { read_file("mknod_blockdev", "/tmp/blk"); unlink("/tmp/blk"); }

    /* Privileged operations. */
    mkdir("/tmp/m", 0755);
    try("mount_tmpfs", mount("none", "/tmp/m", "tmpfs", 0, NULL));
    /* The container's cgroup is read-only inside (privileged: writable). */
    try("mkdir_sys_fs_cgroup", mkdir("/sys/fs/cgroup/berth-probe", 0755));
    rmdir("/sys/fs/cgroup/berth-probe");
    umount2("/tmp/m", MNT_DETACH);
    in_child("unshare_user", do_unshare_user);
    in_child("unshare_mnt", do_unshare_ns);
    in_child("unshare_net", do_unshare_net);
    in_child("unshare_cgroup", do_unshare_cgroup);
    in_child("clone3", do_clone3);
    in_child("unlisted_syscall", do_unlisted);
    try("sethostname", sethostname("probe", 5));
    try("setdomainname", setdomainname("probe", 5));
    try("reboot_cad_off", syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_CAD_OFF, NULL));
    try("init_module", syscall(SYS_init_module, NULL, 0, ""));
    try("finit_module", syscall(SYS_finit_module, -1, "", 0));
    try("delete_module", syscall(SYS_delete_module, "berth_probe_absent", O_NONBLOCK));
    {
        /* With the privilege, an empty kexec_load unloads a loaded crash kernel: only ask
         * when none is loaded. */
        char k[4] = "0";
        int fd = open("/sys/kernel/kexec_crash_loaded", O_RDONLY);
        if (fd >= 0) { read(fd, k, 1); close(fd); }
        if (k[0] == '1') printf("try kexec_load 1002\n");
        else try("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
    }
    try("swapon", swapon("/berth-probe-absent", 0));
    try("acct", acct("/berth-probe-absent"));
    /* The raw call: glibc dereferences a NULL time. Both NULL: a permission check, no change. */
    try("settimeofday", syscall(SYS_settimeofday, NULL, NULL));
    {
        char buf[64];
        try("syslog_read", syscall(SYS_syslog, 3 /* READ_ALL */, buf, sizeof buf));
    }
    try("iopl", iopl(3));
    try("ioperm", ioperm(0x80, 1, 1));
    {
        struct { unsigned int bytes; int type; unsigned char h[8]; } fh = { 8, 1, {0} };
        try("open_by_handle_at", syscall(SYS_open_by_handle_at, AT_FDCWD, &fh, O_RDONLY));
    }
    {
        pid_t c = fork();
        if (c == 0) { pause(); _exit(0); }
        try("ptrace_child", ptrace(PTRACE_ATTACH, c, 0, 0));
        kill(c, SIGKILL);
        waitpid(c, NULL, 0);
    }
    try("keyctl", syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0));
    try("add_key", syscall(SYS_add_key, "user", "berth-probe", "x", 1, KEY_SPEC_PROCESS_KEYRING));
    {
        union bpf_attr a;
        memset(&a, 0, sizeof a);
        a.map_type = BPF_MAP_TYPE_ARRAY;
        a.key_size = 4;
        a.value_size = 4;
        a.max_entries = 1;
        long fd = syscall(SYS_bpf, BPF_MAP_CREATE, &a, sizeof a);
        try("bpf", fd);
        if (fd >= 0) close(fd);
    }
    {
        struct perf_event_attr a;
        memset(&a, 0, sizeof a);
        a.type = PERF_TYPE_SOFTWARE;
        a.size = sizeof a;
        a.config = PERF_COUNT_SW_CPU_CLOCK;
        a.disabled = 1;
        long fd = syscall(SYS_perf_event_open, &a, 0, -1, -1, 0);
        try("perf_event_open", fd);
        if (fd >= 0) close(fd);
    }
    {
        long fd = syscall(SYS_userfaultfd, 0);
        try("userfaultfd", fd);
        if (fd >= 0) close(fd);
    }
    {
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        long fd = syscall(SYS_io_uring_setup, 1, &p);
        try("io_uring_setup", fd);
        if (fd >= 0) close(fd);
    }
    {
        long s = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
        try("raw_socket", s);
        if (s >= 0) close(s);
        s = socket(AF_PACKET, SOCK_RAW, 0);
        try("packet_socket", s);
        if (s >= 0) close(s);
        s = socket(AF_INET, SOCK_DGRAM, 0);
        int mark = 1;
        try("so_mark", s < 0 ? -1 : setsockopt(s, SOL_SOCKET, SO_MARK, &mark, sizeof mark));
        if (s >= 0) close(s);
    }
    try("nice_raise", setpriority(PRIO_PROCESS, 0, -5));
    {
        struct rlimit r;
        getrlimit(RLIMIT_NOFILE, &r);
        if (r.rlim_max != RLIM_INFINITY) r.rlim_max += 1;
        try("rlimit_raise", setrlimit(RLIMIT_NOFILE, &r));
    }
    {
        int fd = open("/proc/self/oom_score_adj", O_WRONLY);
        long r = fd < 0 ? -1 : write(fd, "-1000", 5);
        try("oom_score_adj_lower", r);
        if (fd >= 0) close(fd);
    }
    fflush(stdout);
    return 0;
}
