//! nf_tables expressions, as the kernel wants them on the wire.
//!
//! netlink-packet-netfilter types meta, cmp, payload, lookup, immediate and bitwise; nat, masq,
//! fib, ct and counter it does not know, so they are encoded here from the kernel's uapi header
//! (include/uapi/linux/netfilter/nf_tables.h). Test vectors in `ruleset.rs` come from `nft -f`
//! captured with `strace -e write=`.

use netlink_packet_core::DefaultNla;
use netlink_packet_netfilter::nftables::{
    Bitwise, Cmp, DataAttribute, ExpressionAttribute, Expressions, Immediate, ListAttribute,
    Lookup, Meta, MetaKey, Operator, Payload, Register, Verdict, VerdictAttribute,
};

pub type Expr = ListAttribute<ExpressionAttribute>;

/// Payload bases.
pub const NETWORK_HEADER: u32 = 1;
pub const TRANSPORT_HEADER: u32 = 2;

/// The 128-bit register 1 and the 32-bit registers inside it, used to build concatenations.
pub const REG1: Register = Register::Reg1;
pub const REG32_01: Register = Register::Reg32_01;
pub const REG32_02: Register = Register::Reg32_02;
/// The first two 32-bit registers after the 128-bit register 1 (an IPv6 address fills it).
pub const REG32_04: Register = Register::Reg32_04;
pub const REG32_05: Register = Register::Reg32_05;

const NFT_NAT_DNAT: u32 = 1;
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;

const NFTA_FIB_DREG: u16 = 1;
const NFTA_FIB_RESULT: u16 = 2;
const NFTA_FIB_FLAGS: u16 = 3;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const NFTA_FIB_F_DADDR: u32 = 1 << 1;

const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFT_CT_STATUS: u32 = 2;

/// `IPS_DST_NAT` in a conntrack entry's status: the connection was DNATed.
pub const CT_STATUS_DNAT: u32 = 1 << 5;
/// `RTN_LOCAL`: what `fib daddr type` yields for the host's own addresses.
pub const RTN_LOCAL: u32 = 2;
pub const NF_DROP: u32 = 0;

pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_IPV6: u8 = 10;

fn be32(v: u32) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

fn other(name: &str, attributes: Vec<DefaultNla>) -> Expr {
    Expressions::Other {
        expression_type: name.to_string(),
        attributes,
    }
    .into()
}

pub fn meta(key: MetaKey, dreg: Register) -> Expr {
    Expressions::Meta(vec![Meta::Key(key), Meta::DestinationRegister(dreg)]).into()
}

pub fn cmp(op: Operator, sreg: Register, data: &[u8]) -> Expr {
    Expressions::Cmp(vec![
        Cmp::SourceRegister(sreg),
        Cmp::Op(op),
        Cmp::Data(DataAttribute::Value(data.to_vec())),
    ])
    .into()
}

pub fn payload(base: u32, offset: u32, len: u32, dreg: Register) -> Expr {
    Expressions::Payload(vec![
        Payload::DestinationRegister(dreg),
        Payload::Base(base),
        Payload::Offset(offset),
        Payload::Len(len),
    ])
    .into()
}

/// `reg = (reg & mask) ^ xor` over `mask.len()` bytes.
pub fn bitwise(reg: Register, mask: &[u8], xor: &[u8]) -> Expr {
    Expressions::Bitwise(vec![
        Bitwise::SourceRegister(reg),
        Bitwise::DestinationRegister(reg),
        Bitwise::Length(mask.len() as u32),
        Bitwise::Mask(DataAttribute::Value(mask.to_vec())),
        Bitwise::Xor(DataAttribute::Value(xor.to_vec())),
    ])
    .into()
}

/// Looks `sreg` up in a map and loads the value into `dreg` (the rule stops on a miss).
pub fn lookup_map(set: &str, sreg: Register, dreg: Register) -> Expr {
    Expressions::Lookup(vec![
        Lookup::Set(set.to_string()),
        Lookup::SourceRegister(sreg),
        Lookup::DestinationRegister(dreg),
    ])
    .into()
}

fn verdict_expr(attrs: Vec<VerdictAttribute>) -> Expr {
    Expressions::Immediate(vec![
        Immediate::DestinationRegister(Register::Verdict),
        Immediate::Data(DataAttribute::Verdict(attrs)),
    ])
    .into()
}

pub fn jump(chain: &str) -> Expr {
    verdict_expr(vec![
        VerdictAttribute::Code(Verdict::Jump),
        VerdictAttribute::Chain(chain.to_string()),
    ])
}

pub fn ret() -> Expr {
    verdict_expr(vec![VerdictAttribute::Code(Verdict::Return)])
}

pub fn drop() -> Expr {
    verdict_expr(vec![VerdictAttribute::Code(Verdict::Other(NF_DROP))])
}

/// DNAT to the address in `addr_reg` and the port in `proto_reg`.
pub fn dnat(family: u8, addr_reg: Register, proto_reg: Register) -> Expr {
    other(
        "nat",
        vec![
            DefaultNla::new(NFTA_NAT_TYPE, be32(NFT_NAT_DNAT)),
            DefaultNla::new(NFTA_NAT_FAMILY, be32(family as u32)),
            DefaultNla::new(NFTA_NAT_REG_ADDR_MIN, be32(u32::from(addr_reg))),
            DefaultNla::new(NFTA_NAT_REG_PROTO_MIN, be32(u32::from(proto_reg))),
        ],
    )
}

pub fn masquerade() -> Expr {
    other("masq", Vec::new())
}

/// `fib daddr type` into `dreg`.
pub fn fib_daddr_type(dreg: Register) -> Expr {
    other(
        "fib",
        vec![
            DefaultNla::new(NFTA_FIB_DREG, be32(u32::from(dreg))),
            DefaultNla::new(NFTA_FIB_RESULT, be32(NFT_FIB_RESULT_ADDRTYPE)),
            DefaultNla::new(NFTA_FIB_FLAGS, be32(NFTA_FIB_F_DADDR)),
        ],
    )
}

/// `ct status` into `dreg` (a host-endian u32 bit field).
pub fn ct_status(dreg: Register) -> Expr {
    other(
        "ct",
        vec![
            DefaultNla::new(NFTA_CT_DREG, be32(u32::from(dreg))),
            DefaultNla::new(NFTA_CT_KEY, be32(NFT_CT_STATUS)),
        ],
    )
}

pub fn counter() -> Expr {
    other("counter", Vec::new())
}

/// An interface name as `meta iifname`/`oifname` compares it: NUL-padded to IFNAMSIZ.
pub fn ifname(name: &str) -> [u8; 16] {
    let mut b = [0u8; 16];
    let n = name.len().min(15);
    b[..n].copy_from_slice(&name.as_bytes()[..n]);
    b
}

/// nft's comment encoding (a userdata TLV of type 0, NUL-terminated), for rules, elements and
/// tables alike.
pub fn comment(text: &str) -> Vec<u8> {
    let len = (text.len() + 1).min(255);
    let mut out = Vec::with_capacity(len + 2);
    out.push(0);
    out.push(len as u8);
    out.extend_from_slice(&text.as_bytes()[..len - 1]);
    out.push(0);
    out
}

/// The comment in a userdata blob, if any.
pub fn parse_comment(userdata: &[u8]) -> Option<String> {
    let mut rest = userdata;
    while rest.len() >= 2 {
        let (kind, len) = (rest[0], rest[1] as usize);
        let value = rest.get(2..2 + len)?;
        if kind == 0 {
            let text = value.strip_suffix(&[0]).unwrap_or(value);
            return String::from_utf8(text.to_vec()).ok();
        }
        rest = &rest[2 + len..];
    }
    None
}

/// The name of an expression as the kernel reports it, for inspecting other tables' rules.
pub fn expr_name(e: &Expr) -> Option<&str> {
    match e {
        ListAttribute::Element(attrs) => attrs.iter().find_map(|a| match a {
            ExpressionAttribute::Name(n) => Some(n.as_str()),
            _ => None,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_roundtrip() {
        let c = comment("web-0123456789ab");
        assert_eq!(c[..2], [0, 17]);
        assert_eq!(parse_comment(&c).as_deref(), Some("web-0123456789ab"));
        assert_eq!(
            parse_comment(&[7, 2, b'x', 0, 0, 2, b'y', 0]).as_deref(),
            Some("y")
        );
        assert_eq!(parse_comment(&[0, 9, b'x']), None);
    }

    #[test]
    fn ifnames_pad_to_ifnamsiz() {
        assert_eq!(&ifname("br-probe")[..9], b"br-probe\0");
        assert_eq!(ifname("br-probe").len(), 16);
    }
}
