//! The default seccomp filter: an allow list equivalent to Docker's default profile, generated
//! as classic BPF from the table in [`profile`] (syscall numbers from `libc::SYS_*` per target
//! arch, [`numbers`]) rather than by linking C libseccomp (LGPL).
//!
//! Shape: every syscall the profile allows (for the container's capabilities) is let through,
//! `socket`, `personality` and `clone` only with the arguments Docker allows; everything else
//! fails with EPERM, and a syscall numbered above every one the table knows (added by a newer
//! kernel) fails with ENOSYS so that libc falls back to an older one, as runc does. `clone3`
//! returns ENOSYS without CAP_SYS_ADMIN so libc falls back to `clone`, whose namespace flags
//! the filter can see. Where berth is tighter than Docker, [`profile::BERTH_TIGHTER`] says so.
//!
//! Foreign architectures: a syscall made under any audit arch but the native one (i386 or x32 on
//! x86_64, arm on aarch64) gets ENOSYS. The table resolves native numbers only, so 32-bit
//! binaries do not run under the default filter (`seccomp = "unconfined"` runs them); Docker
//! lets them through with their own numbers.

pub mod numbers;
pub mod profile;

use std::collections::BTreeSet;
use std::io;

use super::caps::CapSet;
use profile::{Args, BERTH_TIGHTER, DOCKER, When};

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
const JGT_K: u16 = 0x25;
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

pub type Nr = libc::c_long;

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

/// Where arm's private calls (`set_tls`, `cacheflush`) start: far above the ordinary table,
/// and no measure of how new a syscall is.
const ARCH_PRIVATE_BASE: u32 = 0x000f_0000;

/// What the filter does for a container holding some capabilities: the pure part of
/// [`default_filter`], from the table.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Allowed whatever the arguments.
    pub plain: BTreeSet<u32>,
    /// Allowed only with these arguments.
    pub with_args: Vec<(u32, Args)>,
    /// Answered ENOSYS (`clone3` without CAP_SYS_ADMIN).
    pub enosys: BTreeSet<u32>,
    /// The highest number the table knows: anything above is newer, and gets ENOSYS.
    pub max_known: u32,
}

impl Plan {
    pub fn new(caps: CapSet) -> Plan {
        let held = |names: &[&str]| names.iter().any(|n| caps.has_name(n));
        let mut plan = Plan::default();
        for group in DOCKER {
            for name in group.names {
                let Some(nr) = numbers::number(name) else {
                    continue;
                };
                if (nr as u32) < ARCH_PRIVATE_BASE {
                    plan.max_known = plan.max_known.max(nr as u32);
                }
                let applies = match group.when {
                    When::Always => true,
                    When::AnyCap(c) => held(c),
                };
                let allowed_by_berth = match BERTH_TIGHTER.iter().find(|(n, _)| n == name) {
                    None => true,
                    Some((_, None)) => false,
                    Some((_, Some(cap))) => held(&[cap]),
                };
                if !applies || !allowed_by_berth {
                    continue;
                }
                match group.args {
                    Args::Any => {
                        plan.plain.insert(nr as u32);
                    }
                    rule => plan.with_args.push((nr as u32, rule)),
                }
            }
        }
        let plain = plan.plain.clone();
        plan.with_args.retain(|(nr, _)| !plain.contains(nr));
        if let Some(clone3) = numbers::number("clone3")
            && !plan.plain.contains(&(clone3 as u32))
        {
            plan.enosys.insert(clone3 as u32);
        }
        plan
    }
}

/// Builds the default filter for a container holding `caps`.
pub fn default_filter(caps: CapSet) -> Vec<SockFilter> {
    compile(&Plan::new(caps))
}

fn compile(plan: &Plan) -> Vec<SockFilter> {
    let allow = stmt(RET_K, RET_ALLOW);
    let eperm = stmt(RET_K, ret_errno(libc::EPERM));
    let enosys = stmt(RET_K, ret_errno(libc::ENOSYS));
    let mut p = vec![
        stmt(LD_W_ABS, OFF_ARCH),
        jump(JEQ_K, AUDIT_ARCH, 1, 0),
        enosys,
        stmt(LD_W_ABS, OFF_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    {
        // x32 syscalls arrive under the x86_64 audit arch with this bit set.
        p.push(jump(JGE_K, 0x4000_0000, 0, 1));
        p.push(enosys);
    }
    // Argument rules: each block ends in returns, so A still holds the number after a skip.
    // Only the low word of an argument is compared: the kernel reads these as 32-bit values.
    for (nr, rule) in &plan.with_args {
        let block: Vec<SockFilter> = match rule {
            Args::FirstNot(v) => vec![
                stmt(LD_W_ABS, off_arg_lo(0)),
                jump(JEQ_K, *v, 0, 1),
                eperm,
                allow,
            ],
            Args::FirstIn(values) => {
                let n = values.len();
                let mut b = vec![stmt(LD_W_ABS, off_arg_lo(0))];
                for (i, v) in values.iter().enumerate() {
                    b.push(jump(JEQ_K, *v, (n - i) as u8, 0));
                }
                b.push(eperm);
                b.push(allow);
                b
            }
            Args::FirstHasNone(mask) => vec![
                stmt(LD_W_ABS, off_arg_lo(0)),
                jump(JSET_K, *mask, 0, 1),
                eperm,
                allow,
            ],
            Args::Any => vec![allow],
        };
        p.push(jump(JEQ_K, *nr, 0, block.len() as u8));
        p.extend(block);
    }
    for nr in &plan.enosys {
        p.push(jump(JEQ_K, *nr, 0, 1));
        p.push(enosys);
    }
    // The plain allow list, as runs of consecutive numbers.
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &nr in &plan.plain {
        match runs.last_mut() {
            Some((_, hi)) if *hi + 1 == nr => *hi = nr,
            _ => runs.push((nr, nr)),
        }
    }
    for (lo, hi) in runs {
        p.push(jump(JGE_K, lo, 0, 2));
        p.push(jump(JGT_K, hi, 1, 0));
        p.push(allow);
    }
    p.push(jump(JGT_K, plan.max_known, 0, 1));
    p.push(enosys);
    p.push(eperm);
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
    // Raw syscall: neither nix nor rustix has seccomp(2).
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
                JEQ_K | JGE_K | JGT_K | JSET_K => {
                    let t = match i.code {
                        JEQ_K => a == i.k,
                        JGE_K => a >= i.k,
                        JGT_K => a > i.k,
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

    fn with_caps(extra: &[&str]) -> CapSet {
        let sec = Security {
            cap_add: extra.iter().map(|s| s.to_string()).collect(),
            ..Security::default()
        };
        caps::compute(&sec, 0).unwrap().bounding
    }

    fn verdict(prog: &[SockFilter], nr: Nr, a0: u64) -> u32 {
        run(prog, AUDIT_ARCH, nr as u32, [a0, 0, 0, 0, 0, 0])
    }

    fn nr(name: &str) -> Nr {
        numbers::number(name).unwrap_or_else(|| panic!("{name} has no number here"))
    }

    /// What Docker's profile (with berth's tighter lines) says for `name` with first argument
    /// `a0`, read straight from the table: the reference the compiled program must match.
    fn expected(name: &str, a0: u64, caps: CapSet) -> u32 {
        let held = |c: &[&str]| c.iter().any(|n| caps.has_name(n));
        match BERTH_TIGHTER.iter().find(|(n, _)| *n == name) {
            Some((_, None)) => return ret_errno(libc::EPERM),
            Some((_, Some(cap))) if !held(&[cap]) => return ret_errno(libc::EPERM),
            _ => {}
        }
        let mut allowed = false;
        for g in DOCKER.iter().filter(|g| g.names.contains(&name)) {
            let applies = match g.when {
                When::Always => true,
                When::AnyCap(c) => held(c),
            };
            let args_ok = match g.args {
                Args::Any => true,
                Args::FirstNot(v) => a0 as u32 != v,
                Args::FirstIn(vs) => vs.contains(&(a0 as u32)),
                Args::FirstHasNone(m) => a0 as u32 & m == 0,
            };
            allowed |= applies && args_ok;
        }
        if allowed {
            RET_ALLOW
        } else if name == "clone3" {
            ret_errno(libc::ENOSYS)
        } else {
            ret_errno(libc::EPERM)
        }
    }

    #[test]
    fn the_program_matches_the_table_for_every_name_and_capability() {
        let names: BTreeSet<&str> = DOCKER
            .iter()
            .flat_map(|g| g.names.iter().copied())
            .collect();
        for caps in [
            default_caps(),
            with_caps(&["CAP_SYS_ADMIN"]),
            with_caps(&[
                "CAP_SYS_PTRACE",
                "CAP_SYS_TIME",
                "CAP_SYS_MODULE",
                "CAP_SYS_BOOT",
            ]),
            CapSet(0),
        ] {
            let p = default_filter(caps);
            assert!(p.len() < 4096, "{} instructions", p.len());
            for name in &names {
                let Some(n) = numbers::number(name) else {
                    continue;
                };
                for a0 in [
                    0u64,
                    8,
                    40,
                    2,
                    0xffff_ffff,
                    libc::SIGCHLD as u64,
                    0x1000_0000,
                ] {
                    assert_eq!(
                        verdict(&p, n, a0),
                        expected(name, a0, caps),
                        "{name}({a0:#x}) with caps {caps:?}"
                    );
                }
            }
        }
    }

    /// The generated table (literals) agrees with libc's constants where libc has them.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn numbers_agree_with_libc() {
        for (name, n) in [
            ("read", libc::SYS_read),
            ("openat", libc::SYS_openat),
            ("clone", libc::SYS_clone),
            ("clone3", libc::SYS_clone3),
            ("socket", libc::SYS_socket),
            ("personality", libc::SYS_personality),
            ("ptrace", libc::SYS_ptrace),
            ("mount", libc::SYS_mount),
            ("io_uring_setup", libc::SYS_io_uring_setup),
            ("futex_waitv", libc::SYS_futex_waitv),
            ("set_mempolicy_home_node", libc::SYS_set_mempolicy_home_node),
            ("arch_prctl", libc::SYS_arch_prctl),
        ] {
            assert_eq!(numbers::number(name), Some(n), "{name}");
        }
        assert_eq!(numbers::number("chown32"), None);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn what_docker_does_not_list_is_denied() {
        let p = default_filter(default_caps());
        let eperm = ret_errno(libc::EPERM);
        // Denied on main's deny list too.
        for name in [
            "kexec_load",
            "add_key",
            "keyctl",
            "request_key",
            "userfaultfd",
        ] {
            assert_eq!(verdict(&p, libc_nr(name), 0), eperm, "{name}");
        }
        // Allowed by the old deny list, not by Docker's profile.
        for (n, name) in [
            (libc::SYS_sethostname, "sethostname"),
            (libc::SYS_setdomainname, "setdomainname"),
            (libc::SYS_vhangup, "vhangup"),
            (libc::SYS_move_pages, "move_pages"),
            (libc::SYS_kexec_file_load, "kexec_file_load"),
        ] {
            assert_eq!(verdict(&p, n, 0), eperm, "{name}");
        }
        // Newer than anything the table knows: ENOSYS, so libc falls back.
        assert_eq!(verdict(&p, 462, 0), ret_errno(libc::ENOSYS), "mseal");
        assert_eq!(verdict(&p, 1000, 0), ret_errno(libc::ENOSYS));
    }

    #[cfg(target_arch = "x86_64")]
    fn libc_nr(name: &str) -> Nr {
        match name {
            "kexec_load" => libc::SYS_kexec_load,
            "add_key" => libc::SYS_add_key,
            "keyctl" => libc::SYS_keyctl,
            "request_key" => libc::SYS_request_key,
            "userfaultfd" => libc::SYS_userfaultfd,
            _ => unreachable!(),
        }
    }

    #[test]
    fn blocks_what_the_escape_suite_tries() {
        let p = default_filter(default_caps());
        let eperm = ret_errno(libc::EPERM);
        for name in [
            "bpf",
            "init_module",
            "finit_module",
            "delete_module",
            "mount",
            "umount2",
            "pivot_root",
            "unshare",
            "setns",
            "perf_event_open",
            "ptrace",
            "reboot",
            "swapon",
            "swapoff",
            "open_by_handle_at",
            "fsopen",
            "move_mount",
            "io_uring_setup",
            "process_vm_readv",
            "syslog",
            "acct",
            "settimeofday",
            "iopl",
        ] {
            let n = numbers::number(name).or(match name {
                "pivot_root" => Some(libc::SYS_pivot_root),
                "swapon" => Some(libc::SYS_swapon),
                "swapoff" => Some(libc::SYS_swapoff),
                _ => None,
            });
            assert_eq!(verdict(&p, n.unwrap(), 0), eperm, "{name}");
        }
        assert_eq!(verdict(&p, nr("clone3"), 0), ret_errno(libc::ENOSYS));
    }

    #[test]
    fn everyday_syscalls_and_docker_arguments() {
        let p = default_filter(default_caps());
        for name in [
            "read", "write", "openat", "execve", "chroot", "wait4", "futex", "rseq",
        ] {
            assert_eq!(verdict(&p, nr(name), 0), RET_ALLOW, "{name}");
        }
        let clone = nr("clone");
        assert_eq!(verdict(&p, clone, libc::SIGCHLD as u64), RET_ALLOW);
        assert_eq!(
            verdict(&p, clone, (libc::CLONE_THREAD | libc::CLONE_VM) as u64),
            RET_ALLOW
        );
        for f in [libc::CLONE_NEWUSER, libc::CLONE_NEWNS, libc::CLONE_NEWNET] {
            assert_eq!(
                verdict(&p, clone, (f | libc::SIGCHLD) as u64),
                ret_errno(libc::EPERM)
            );
        }
        let socket = nr("socket");
        assert_eq!(verdict(&p, socket, 2), RET_ALLOW);
        assert_eq!(verdict(&p, socket, 40), ret_errno(libc::EPERM));
        // The kernel reads the family as an int: high bits do not smuggle AF_VSOCK through.
        assert_eq!(verdict(&p, socket, 40 | 1 << 32), ret_errno(libc::EPERM));
        let pers = nr("personality");
        assert_eq!(verdict(&p, pers, 0xffff_ffff), RET_ALLOW);
        assert_eq!(verdict(&p, pers, 8), RET_ALLOW);
        assert_eq!(verdict(&p, pers, 0x0040_0000), ret_errno(libc::EPERM));
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
        let p = default_filter(with_caps(&["CAP_SYS_ADMIN", "CAP_SYS_PTRACE"]));
        for name in ["mount", "ptrace", "clone3", "sethostname", "unshare"] {
            assert_eq!(verdict(&p, nr(name), 0), RET_ALLOW, "{name}");
        }
        assert_eq!(
            verdict(&p, nr("clone"), libc::CLONE_NEWNS as u64),
            RET_ALLOW
        );
        assert_eq!(verdict(&p, nr("reboot"), 0), ret_errno(libc::EPERM));
        assert_eq!(verdict(&p, nr("io_uring_setup"), 0), ret_errno(libc::EPERM));
    }

    #[test]
    fn every_syscall_number_has_a_verdict() {
        // The program always terminates in a return, whatever the input.
        let p = default_filter(default_caps());
        for nr in 0..1100u32 {
            for a0 in [0u64, u64::MAX, 0x10000000] {
                let v = run(&p, AUDIT_ARCH, nr, [a0, 0, 0, 0, 0, 0]);
                assert!(v == RET_ALLOW || v & 0xffff_0000 == RET_ERRNO);
            }
        }
    }
}
