//! Device access rules: the container's own /dev nodes plus the devices passed through, as v1
//! `devices.allow` lines and as a BPF_CGROUP_DEVICE program for v2 (written by hand: a dozen
//! eBPF instructions per rule, as runc's devicefilter emits).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevKind {
    Char,
    Block,
    /// Both kinds.
    All,
}

/// One allow rule; `None` for major or minor is a wildcard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub kind: DevKind,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// Bit mask of [`ACC_MKNOD`], [`ACC_READ`], [`ACC_WRITE`].
    pub access: u32,
}

pub const ACC_MKNOD: u32 = 1;
pub const ACC_READ: u32 = 2;
pub const ACC_WRITE: u32 = 4;
pub const ACC_ALL: u32 = 7;

pub fn parse_access(s: &str) -> u32 {
    s.chars()
        .map(|c| match c {
            'm' => ACC_MKNOD,
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            _ => 0,
        })
        .fold(0, |a, b| a | b)
}

const fn char_dev(major: u32, minor: Option<u32>) -> DeviceRule {
    DeviceRule {
        kind: DevKind::Char,
        major: Some(major),
        minor,
        access: ACC_ALL,
    }
}

/// The nodes every container's /dev has: null, zero, full, random, urandom, tty, ptmx, pts/*.
pub const DEFAULT_RULES: &[DeviceRule] = &[
    char_dev(1, Some(3)),
    char_dev(1, Some(5)),
    char_dev(1, Some(7)),
    char_dev(1, Some(8)),
    char_dev(1, Some(9)),
    char_dev(5, Some(0)),
    char_dev(5, Some(2)),
    char_dev(136, None),
];

impl DeviceRule {
    /// The `devices.allow` line: `c 1:3 rwm`.
    pub fn v1_line(&self) -> String {
        let k = match self.kind {
            DevKind::Char => 'c',
            DevKind::Block => 'b',
            DevKind::All => 'a',
        };
        let n = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_else(|| "*".into());
        let mut acc = String::new();
        for (bit, c) in [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')] {
            if self.access & bit != 0 {
                acc.push(c);
            }
        }
        format!("{k} {}:{} {acc}", n(self.major), n(self.minor))
    }
}

/// One eBPF instruction.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    pub code: u8,
    /// dst in the low nibble, src in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> BpfInsn {
    BpfInsn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

const LDX_W: u8 = 0x61; // BPF_LDX | BPF_W | BPF_MEM
const AND32_K: u8 = 0x54;
const RSH32_K: u8 = 0x74;
const MOV32_X: u8 = 0xbc;
const MOV64_K: u8 = 0xb7;
const JNE_K: u8 = 0x55;
const JNE_X: u8 = 0x5d;
const EXIT: u8 = 0x95;

/// Compiles allow rules into a BPF_PROG_TYPE_CGROUP_DEVICE program: 1 allows, 0 denies.
pub fn compile(rules: &[DeviceRule]) -> Vec<BpfInsn> {
    // struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }
    let mut p = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(AND32_K, 2, 0, 0, 0xffff), // r2: type (1 block, 2 char)
        insn(LDX_W, 3, 1, 0, 0),
        insn(RSH32_K, 3, 0, 0, 16), // r3: requested access
        insn(LDX_W, 4, 1, 4, 0),    // r4: major
        insn(LDX_W, 5, 1, 8, 0),    // r5: minor
    ];
    for r in rules {
        let mut block = Vec::new();
        match r.kind {
            DevKind::Char => block.push(insn(JNE_K, 2, 0, 0, 2)),
            DevKind::Block => block.push(insn(JNE_K, 2, 0, 0, 1)),
            DevKind::All => {}
        }
        if r.access & ACC_ALL != ACC_ALL {
            block.push(insn(MOV32_X, 1, 3, 0, 0));
            block.push(insn(AND32_K, 1, 0, 0, r.access as i32));
            block.push(insn(JNE_X, 1, 3, 0, 0));
        }
        if let Some(m) = r.major {
            block.push(insn(JNE_K, 4, 0, 0, m as i32));
        }
        if let Some(m) = r.minor {
            block.push(insn(JNE_K, 5, 0, 0, m as i32));
        }
        block.push(insn(MOV64_K, 0, 0, 0, 1));
        block.push(insn(EXIT, 0, 0, 0, 0));
        // Every conditional jump in the block skips to the block's end.
        let len = block.len();
        for (i, b) in block.iter_mut().enumerate() {
            if b.code == JNE_K || b.code == JNE_X {
                b.off = (len - i - 1) as i16;
            }
        }
        p.extend(block);
    }
    p.push(insn(MOV64_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    pad: [u64; 8],
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    pad: [u32; 11],
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // Raw syscall: neither nix nor rustix has bpf(2).
    // SAFETY: `attr` is a zero-padded repr(C) bpf_attr prefix of the size we pass.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Loads `prog` and attaches it to the cgroup dir open at `cgroup`, replacing any program
/// attached there before. The attachment lives as long as the cgroup.
pub fn attach(cgroup: &impl AsRawFd, prog: &[BpfInsn]) -> io::Result<()> {
    let license = b"Apache-2.0\0";
    let mut load = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    load.prog_name[..11].copy_from_slice(b"berth_devfl");
    let fd = bpf(BPF_PROG_LOAD, &mut load)?;
    // SAFETY: a successful BPF_PROG_LOAD returns a new fd that we own.
    let prog_fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut at = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog_fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut at)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Interprets the subset of eBPF `compile` emits, on one device access.
    fn run(p: &[BpfInsn], kind: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [kind | (access << 16), major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_W => r[dst] = ctx[i.off as usize / 4] as u64,
                AND32_K => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                RSH32_K => r[dst] = (r[dst] as u32 >> i.imm) as u64,
                MOV32_X => r[dst] = r[src] as u32 as u64,
                MOV64_K => r[dst] = i.imm as i64 as u64,
                JNE_K if r[dst] != i.imm as u32 as u64 => pc += i.off as usize,
                JNE_X if r[dst] != r[src] => pc += i.off as usize,
                JNE_K | JNE_X => {}
                EXIT => return r[0],
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn defaults_allow_own_nodes_only() {
        let p = compile(DEFAULT_RULES);
        assert_eq!(run(&p, 2, ACC_READ | ACC_WRITE, 1, 3), 1);
        assert_eq!(run(&p, 2, ACC_READ, 136, 7), 1);
        assert_eq!(run(&p, 2, ACC_READ, 1, 1), 0, "/dev/mem");
        assert_eq!(run(&p, 1, ACC_READ, 254, 0), 0, "a block device");
        assert_eq!(run(&p, 1, ACC_READ, 1, 3), 0, "block 1:3 is not char 1:3");
    }

    #[test]
    fn partial_access_and_wildcards() {
        let rules = [
            DeviceRule {
                kind: DevKind::Block,
                major: Some(7),
                minor: None,
                access: ACC_READ,
            },
            DeviceRule {
                kind: DevKind::All,
                major: None,
                minor: None,
                access: ACC_MKNOD,
            },
        ];
        let p = compile(&rules);
        assert_eq!(run(&p, 1, ACC_READ, 7, 3), 1);
        assert_eq!(run(&p, 1, ACC_READ | ACC_WRITE, 7, 3), 0);
        assert_eq!(run(&p, 2, ACC_MKNOD, 99, 1), 1);
        assert_eq!(run(&p, 2, ACC_MKNOD | ACC_READ, 99, 1), 0);
        assert_eq!(rules[0].v1_line(), "b 7:* r");
        assert_eq!(DEFAULT_RULES[0].v1_line(), "c 1:3 rwm");
        assert_eq!(parse_access("rw"), ACC_READ | ACC_WRITE);
    }
}
