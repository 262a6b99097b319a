/* An image's ELF interpreter, as an attacker would ship it at /lib64/ld-linux-x86-64.so.2:
 * when a dynamically linked binary is exec'd in the container (the host's berth, through a
 * `#!/proc/self/exe` target), the kernel maps that binary and runs this instead of the real
 * loader, so this owns a process whose /proc/self/exe is whatever berth ran from. It prints
 *   interp_exe <st_dev> <st_ino>    of /proc/self/exe
 *   interp_write <rc>               opening it for writing: 0 when it opened, else the errno
 * on stdout and appended to /tmp/interp.out (a health check's output is not kept), and exits. Freestanding (no libc: a static libc would read the host binary's program
 * headers as its own); x86_64 only. */
#include <asm/unistd.h>
#include <fcntl.h>
#include <sys/stat.h>

static long sys3(long n, long a, long b, long c) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}

static long sys4(long n, long a, long b, long c, long d) {
    long r;
    register long r10 __asm__("r10") = d;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
    return r;
}

static char out[256];
static int len;

static void put(const char *s) { while (*s) out[len++] = *s++; }

static void num(unsigned long v) {
    char b[24];
    int i = 0;
    do { b[i++] = '0' + v % 10; v /= 10; } while (v);
    while (i) out[len++] = b[--i];
}

__attribute__((force_align_arg_pointer, noreturn)) void _start(void) {
    struct stat st;
    long r = sys4(__NR_newfstatat, AT_FDCWD, (long)"/proc/self/exe", (long)&st, 0);
    put("interp_exe ");
    if (r < 0) { put("error "); num(-r); }
    else { num(st.st_dev); put(" "); num(st.st_ino); }
    put("\ninterp_write ");
    r = sys3(__NR_open, (long)"/proc/self/exe", O_WRONLY, 0);
    num(r < 0 ? -r : 0);
    put("\n");
    sys3(__NR_write, 1, (long)out, len);
    long f = sys3(__NR_open, (long)"/tmp/interp.out", O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (f >= 0) sys3(__NR_write, f, (long)out, len);
    sys3(__NR_exit_group, 0, 0, 0);
    for (;;) {}
}
