//! The default seccomp filter, generated as classic BPF from `libc::SYS_*` (so each target arch
//! compiles its own numbers) rather than by linking C libseccomp (LGPL).
//!
//! Shape: a deny list over an allow default. It blocks at least what Docker's default profile
//! blocks, and lifts a group of rules when the container holds the capability that Docker's
//! profile keys it on (`cap_add = ["CAP_SYS_ADMIN"]` allows mount, and so on). `clone3` returns
//! ENOSYS so libc falls back to `clone`, whose namespace flags the filter can see.
//!
//! Foreign architectures: a syscall made under any audit arch but the native one (i386 or x32 on
//! x86_64, arm on aarch64) gets ENOSYS. The deny list is keyed on native numbers, so letting
//! another ABI through would open a way around it; 32-bit binaries therefore do not run under the
//! default filter (`seccomp = "unconfined"` runs them).

use std::io;

use super::caps::CapSet;

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;

pub const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;

pub fn ret_errno(errno: i32) -> u32 {
    RET_ERRNO | (errno as u32 & 0xffff)
}

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg_lo(i: u32) -> u32 {
    // Little-endian on every supported arch: the low word comes first.
    16 + 8 * i
}

#[cfg(target_arch = "x86_64")]
pub const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
pub const AUDIT_ARCH: u32 = 0xC000_00B7;
#[cfg(target_arch = "arm")]
pub const AUDIT_ARCH: u32 = 0x4000_0028;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")))]
compile_error!("berth's seccomp filter supports x86_64, aarch64 and arm");

type Nr = libc::c_long;

/// A syscall the filter denies unless one of `unless_caps` is granted.
struct Rule {
    nr: Nr,
    errno: i32,
    unless_caps: &'static [&'static str],
}

const fn deny(nr: Nr, unless_caps: &'static [&'static str]) -> Rule {
    Rule {
        nr,
        errno: libc::EPERM,
        unless_caps,
    }
}

const ADMIN: &[&str] = &["CAP_SYS_ADMIN"];
const NEVER: &[&str] = &[];

fn rules() -> Vec<Rule> {
    use libc::*;
    let mut r = vec![
        deny(SYS_keyctl, NEVER),
        deny(SYS_add_key, NEVER),
        deny(SYS_request_key, NEVER),
        deny(SYS_kexec_load, &["CAP_SYS_BOOT"]),
        deny(SYS_kexec_file_load, &["CAP_SYS_BOOT"]),
        deny(SYS_reboot, &["CAP_SYS_BOOT"]),
        deny(SYS_init_module, &["CAP_SYS_MODULE"]),
        deny(SYS_finit_module, &["CAP_SYS_MODULE"]),
        deny(SYS_delete_module, &["CAP_SYS_MODULE"]),
        deny(SYS_bpf, &["CAP_SYS_ADMIN", "CAP_BPF"]),
        deny(SYS_perf_event_open, &["CAP_SYS_ADMIN", "CAP_PERFMON"]),
        deny(SYS_mount, ADMIN),
        deny(SYS_umount2, ADMIN),
        deny(SYS_pivot_root, ADMIN),
        deny(SYS_fsopen, ADMIN),
        deny(SYS_fsconfig, ADMIN),
        deny(SYS_fsmount, ADMIN),
        deny(SYS_fspick, ADMIN),
        deny(SYS_move_mount, ADMIN),
        deny(SYS_open_tree, ADMIN),
        deny(SYS_mount_setattr, ADMIN),
        deny(SYS_unshare, ADMIN),
        deny(SYS_setns, ADMIN),
        deny(SYS_swapon, ADMIN),
        deny(SYS_swapoff, ADMIN),
        deny(SYS_quotactl, ADMIN),
        deny(SYS_quotactl_fd, ADMIN),
        deny(SYS_fanotify_init, ADMIN),
        deny(SYS_lookup_dcookie, ADMIN),
        deny(SYS_syslog, &["CAP_SYS_ADMIN", "CAP_SYSLOG"]),
        deny(SYS_open_by_handle_at, &["CAP_DAC_READ_SEARCH"]),
        deny(SYS_ptrace, &["CAP_SYS_PTRACE"]),
        deny(SYS_process_vm_readv, &["CAP_SYS_PTRACE"]),
        deny(SYS_process_vm_writev, &["CAP_SYS_PTRACE"]),
        deny(SYS_kcmp, &["CAP_SYS_PTRACE"]),
        deny(SYS_pidfd_getfd, &["CAP_SYS_PTRACE"]),
        deny(SYS_userfaultfd, &["CAP_SYS_PTRACE"]),
        deny(SYS_acct, &["CAP_SYS_PACCT"]),
        deny(SYS_settimeofday, &["CAP_SYS_TIME"]),
        deny(SYS_clock_settime, &["CAP_SYS_TIME"]),
        deny(SYS_clock_adjtime, &["CAP_SYS_TIME"]),
        deny(SYS_vhangup, &["CAP_SYS_TTY_CONFIG"]),
        deny(SYS_get_mempolicy, &["CAP_SYS_NICE"]),
        deny(SYS_set_mempolicy, &["CAP_SYS_NICE"]),
        deny(SYS_mbind, &["CAP_SYS_NICE"]),
        deny(SYS_move_pages, &["CAP_SYS_NICE"]),
        deny(SYS_io_uring_setup, NEVER),
        deny(SYS_io_uring_enter, NEVER),
        deny(SYS_io_uring_register, NEVER),
        Rule {
            nr: SYS_clone3,
            errno: ENOSYS,
            unless_caps: ADMIN,
        },
    ];
    r.extend(arch_rules());
    r
}

#[cfg(target_arch = "x86_64")]
fn arch_rules() -> Vec<Rule> {
    use libc::*;
    vec![
        deny(SYS_iopl, &["CAP_SYS_RAWIO"]),
        deny(SYS_ioperm, &["CAP_SYS_RAWIO"]),
        deny(SYS_modify_ldt, NEVER),
        deny(SYS_uselib, NEVER),
        deny(SYS__sysctl, NEVER),
        deny(SYS_sysfs, NEVER),
        deny(SYS_ustat, NEVER),
        deny(SYS_nfsservctl, NEVER),
    ]
}

#[cfg(target_arch = "aarch64")]
fn arch_rules() -> Vec<Rule> {
    vec![deny(libc::SYS_nfsservctl, NEVER)]
}

#[cfg(target_arch = "arm")]
fn arch_rules() -> Vec<Rule> {
    vec![
        deny(libc::SYS_uselib, NEVER),
        deny(libc::SYS_ustat, NEVER),
        deny(libc::SYS_sysfs, NEVER),
    ]
}

/// Namespace flags `clone` may not carry without CAP_SYS_ADMIN. (CLONE_NEWTIME shares its bit
/// with the exit signal byte of clone's flags, and only `unshare` and `clone3` take it.)
pub const CLONE_NS_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u32;

const AF_VSOCK: u32 = 40;
/// Docker's allowed `personality` values: PER_LINUX, PER_LINUX32, UNAME26 variants, query.
const PERSONALITIES: &[u32] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

const fn stmt(code: u16, k: u32) -> SockFilter {
    SockFilter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> SockFilter {
    SockFilter { code, jt, jf, k }
}

/// Builds the default filter for a container holding `caps`.
pub fn default_filter(caps: CapSet) -> Vec<SockFilter> {
    let granted = |names: &[&str]| names.iter().any(|n| caps.has_name(n));
    let admin = granted(ADMIN);
    let mut p = vec![
        stmt(LD_W_ABS, OFF_ARCH),
        jump(JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(RET_K, ret_errno(libc::ENOSYS)),
        stmt(LD_W_ABS, OFF_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    {
        // x32 syscalls arrive under the x86_64 audit arch with this bit set.
        p.push(jump(JGE_K, 0x4000_0000, 0, 1));
        p.push(stmt(RET_K, ret_errno(libc::ENOSYS)));
    }
    for rule in rules() {
        if granted(rule.unless_caps) {
            continue;
        }
        p.push(jump(JEQ_K, rule.nr as u32, 0, 1));
        p.push(stmt(RET_K, ret_errno(rule.errno)));
    }
    if !admin {
        // clone with namespace flags
        p.push(stmt(LD_W_ABS, OFF_NR));
        p.push(jump(JEQ_K, libc::SYS_clone as u32, 0, 3));
        p.push(stmt(LD_W_ABS, off_arg_lo(0)));
        p.push(jump(JSET_K, CLONE_NS_FLAGS, 0, 1));
        p.push(stmt(RET_K, ret_errno(libc::EPERM)));
    }
    // socket(AF_VSOCK): the host's vsock is not the container's to reach.
    p.push(stmt(LD_W_ABS, OFF_NR));
    p.push(jump(JEQ_K, libc::SYS_socket as u32, 0, 3));
    p.push(stmt(LD_W_ABS, off_arg_lo(0)));
    p.push(jump(JEQ_K, AF_VSOCK, 0, 1));
    p.push(stmt(RET_K, ret_errno(libc::EPERM)));
    // personality: only the values Docker allows.
    let n = PERSONALITIES.len();
    p.push(stmt(LD_W_ABS, OFF_NR));
    // A miss skips to the final allow, which doubles as the program's default.
    p.push(jump(JEQ_K, libc::SYS_personality as u32, 0, (n + 2) as u8));
    p.push(stmt(LD_W_ABS, off_arg_lo(0)));
    for (i, v) in PERSONALITIES.iter().enumerate() {
        p.push(jump(JEQ_K, *v, (n - i) as u8, 0));
    }
    p.push(stmt(RET_K, ret_errno(libc::EPERM)));
    p.push(stmt(RET_K, RET_ALLOW));
    p
}

#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const SockFilter,
}

/// Installs `prog` on the calling thread (needs no_new_privs or CAP_SYS_ADMIN).
pub fn load(prog: &[SockFilter]) -> io::Result<()> {
    let fprog = SockFprog {
        len: prog.len() as u16,
        filter: prog.as_ptr(),
    };
    const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
    // SAFETY: seccomp reads `fprog` and the filter it points to, both alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            0 as libc::c_ulong,
            &fprog as *const SockFprog,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::caps;
    use berth_spec::model::Security;

    /// A classic-BPF interpreter for the subset the generator emits.
    fn run(prog: &[SockFilter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let word = |off: u32| -> u32 {
            match off {
                0 => nr,
                4 => arch,
                o if o >= 16 => {
                    let i = ((o - 16) / 8) as usize;
                    if (o - 16) % 8 == 0 {
                        args[i] as u32
                    } else {
                        (args[i] >> 32) as u32
                    }
                }
                _ => panic!("bad offset {off}"),
            }
        };
        let (mut pc, mut a) = (0usize, 0u32);
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                LD_W_ABS => a = word(i.k),
                RET_K => return i.k,
                JEQ_K | JGE_K | JSET_K => {
                    let t = match i.code {
                        JEQ_K => a == i.k,
                        JGE_K => a >= i.k,
                        _ => a & i.k != 0,
                    };
                    pc += if t { i.jt } else { i.jf } as usize;
                }
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    fn default_caps() -> CapSet {
        caps::compute(&Security::default(), 0).unwrap().bounding
    }

    fn verdict(prog: &[SockFilter], nr: Nr, a0: u64) -> u32 {
        run(prog, AUDIT_ARCH, nr as u32, [a0, 0, 0, 0, 0, 0])
    }

    #[test]
    fn blocks_dockers_list_by_default() {
        let p = default_filter(default_caps());
        let eperm = ret_errno(libc::EPERM);
        for nr in [
            libc::SYS_keyctl,
            libc::SYS_add_key,
            libc::SYS_request_key,
            libc::SYS_bpf,
            libc::SYS_kexec_load,
            libc::SYS_init_module,
            libc::SYS_finit_module,
            libc::SYS_delete_module,
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_pivot_root,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_perf_event_open,
            libc::SYS_ptrace,
            libc::SYS_reboot,
            libc::SYS_swapon,
            libc::SYS_swapoff,
            libc::SYS_open_by_handle_at,
            libc::SYS_fsopen,
            libc::SYS_move_mount,
        ] {
            assert_eq!(verdict(&p, nr, 0), eperm, "syscall {nr}");
        }
        assert_eq!(verdict(&p, libc::SYS_clone3, 0), ret_errno(libc::ENOSYS));
    }

    #[test]
    fn everyday_syscalls_pass() {
        let p = default_filter(default_caps());
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_openat,
            libc::SYS_execve,
            libc::SYS_chroot,
            libc::SYS_sethostname,
            libc::SYS_wait4,
        ] {
            assert_eq!(verdict(&p, nr, 0), RET_ALLOW, "syscall {nr}");
        }
        // fork-style clone passes; namespace flags do not
        assert_eq!(
            verdict(&p, libc::SYS_clone, libc::SIGCHLD as u64),
            RET_ALLOW
        );
        assert_eq!(
            verdict(
                &p,
                libc::SYS_clone,
                (libc::CLONE_THREAD | libc::CLONE_VM) as u64
            ),
            RET_ALLOW
        );
        for f in [libc::CLONE_NEWUSER, libc::CLONE_NEWNS, libc::CLONE_NEWNET] {
            assert_eq!(
                verdict(&p, libc::SYS_clone, (f | libc::SIGCHLD) as u64),
                ret_errno(libc::EPERM)
            );
        }
        assert_eq!(verdict(&p, libc::SYS_socket, 2), RET_ALLOW);
        assert_eq!(verdict(&p, libc::SYS_socket, 40), ret_errno(libc::EPERM));
        assert_eq!(verdict(&p, libc::SYS_personality, 0xffff_ffff), RET_ALLOW);
        assert_eq!(verdict(&p, libc::SYS_personality, 8), RET_ALLOW);
        assert_eq!(
            verdict(&p, libc::SYS_personality, 0x0040_0000),
            ret_errno(libc::EPERM)
        );
    }

    #[test]
    fn foreign_arch_and_x32_get_enosys() {
        let p = default_filter(default_caps());
        let enosys = ret_errno(libc::ENOSYS);
        assert_eq!(run(&p, 0x4000_0003, 1, [0; 6]), enosys);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(run(&p, AUDIT_ARCH, 0x4000_0000 | 1, [0; 6]), enosys);
    }

    #[test]
    fn caps_lift_their_groups() {
        let sec = Security {
            cap_add: vec!["CAP_SYS_ADMIN".into(), "CAP_SYS_PTRACE".into()],
            ..Security::default()
        };
        let p = default_filter(caps::compute(&sec, 0).unwrap().bounding);
        assert_eq!(verdict(&p, libc::SYS_mount, 0), RET_ALLOW);
        assert_eq!(verdict(&p, libc::SYS_ptrace, 0), RET_ALLOW);
        assert_eq!(verdict(&p, libc::SYS_clone3, 0), RET_ALLOW);
        assert_eq!(
            verdict(&p, libc::SYS_clone, libc::CLONE_NEWNS as u64),
            RET_ALLOW
        );
        assert_eq!(verdict(&p, libc::SYS_keyctl, 0), ret_errno(libc::EPERM));
        assert_eq!(verdict(&p, libc::SYS_reboot, 0), ret_errno(libc::EPERM));
    }

    #[test]
    fn every_syscall_number_has_a_verdict() {
        // The program always terminates in a return, whatever the input.
        let p = default_filter(default_caps());
        for nr in 0..600u32 {
            for a0 in [0u64, u64::MAX, 0x10000000] {
                let v = run(&p, AUDIT_ARCH, nr, [a0, 0, 0, 0, 0, 0]);
                assert!(v == RET_ALLOW || v & 0xffff_0000 == RET_ERRNO);
            }
        }
    }
}
