//! The nf_tables side of netlink: atomic batches and the dumps berth reads back.

use std::io;

use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, Hook, HookNumber, InetHookNumber, NfTablesMessage, RuleAttribute,
    RuleMessage, SetElementAttribute, SetElementList, SetElementMessage, TableAttribute,
    TableMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::protocols::NETLINK_NETFILTER;

use super::elements::PortElement;
use super::expr::{self, Expr};
use super::ruleset::Msg;
use crate::network::nl::{NlSocket, encode_message};

/// `NFNL_SUBSYS_NFTABLES`, the res_id of batch begin/end messages.
const NFNL_SUBSYS_NFTABLES: u16 = 10;

/// A batch message the kernel refused: its errno, and which message it was.
#[derive(Debug)]
pub struct BatchFailure {
    pub errno: i32,
    pub text: String,
}

impl std::fmt::Display for BatchFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for BatchFailure {}

/// The errno behind an error from [`NftSocket`], whether plain or a [`BatchFailure`].
pub fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<BatchFailure>())
            .map(|b| b.errno)
    })
}

/// A table as dumped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub family: NetfilterProtoFamily,
    pub name: String,
    pub comment: Option<String>,
}

/// A chain as dumped (any table, any family).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainInfo {
    pub family: NetfilterProtoFamily,
    pub table: String,
    pub name: String,
    /// The hook of a base chain (`InetHookNumber::Forward`, ...), `None` for a regular chain.
    pub hook: Option<InetHookNumber>,
    pub policy: Option<u32>,
}

/// A rule as dumped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    pub chain: String,
    pub comment: Option<String>,
    pub exprs: Vec<Expr>,
}

pub struct NftSocket {
    nl: NlSocket,
}

impl NftSocket {
    /// Opens a socket in the calling thread's netns; it stays there whichever thread uses it.
    pub fn open() -> io::Result<NftSocket> {
        let nl = NlSocket::open(NETLINK_NETFILTER)?;
        // Room for the acks of a large batch.
        let _ = nl.socket().set_rx_buf_sz(4 << 20);
        Ok(NftSocket { nl })
    }

    /// Applies `batch` as one transaction: all of it or none of it.
    pub fn apply(&mut self, batch: &[Msg]) -> io::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut out = Vec::with_capacity(256 * batch.len());
        let begin_seq = self.nl.next_seq();
        encode_message(control(ControlMessage::BatchBegin), 0, begin_seq, &mut out);
        let mut pending = std::collections::BTreeMap::new();
        for (i, m) in batch.iter().enumerate() {
            let seq = self
                .nl
                .encode(inet(m.body.clone()), m.flags | NLM_F_ACK, &mut out);
            pending.insert(seq, i);
        }
        let end_seq = self.nl.next_seq();
        encode_message(control(ControlMessage::BatchEnd), 0, end_seq, &mut out);
        self.nl.send(&out)?;

        // The kernel runs the whole batch inside send(2) and queues one reply per acked message
        // (it keeps going past errors), plus one for the batch if the commit fails: everything
        // is waiting by now.
        let mut first_error: Option<io::Error> = None;
        loop {
            let r = self.nl.recv_batch_flags(
                libc::MSG_DONTWAIT,
                |m: NetlinkMessage<NetfilterMessage>| {
                    let seq = m.header.sequence_number;
                    if let NetlinkPayload::Error(e) = m.payload {
                        if e.code.is_some() {
                            if let Some(i) = pending.get(&seq) {
                                let err = e.to_io();
                                first_error.get_or_insert(io::Error::new(
                                    err.kind(),
                                    BatchFailure {
                                        errno: err.raw_os_error().unwrap_or(0),
                                        text: format!(
                                            "{err} (message {i}: {})",
                                            describe(&batch[*i].body)
                                        ),
                                    },
                                ));
                            } else if seq == begin_seq {
                                first_error.get_or_insert(e.to_io());
                            }
                        }
                        pending.remove(&seq);
                    }
                    Ok(false)
                },
            );
            match r {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        match first_error {
            Some(e) => Err(e),
            None if !pending.is_empty() => Err(io::Error::other(format!(
                "nftables batch: {} messages were not acknowledged",
                pending.len()
            ))),
            None => Ok(()),
        }
    }

    /// A dump's replies, each with the family of the table it belongs to.
    fn dump_families(
        &mut self,
        family: NetfilterProtoFamily,
        body: NfTablesMessage,
    ) -> io::Result<Vec<(NetfilterProtoFamily, NfTablesMessage)>> {
        let replies = self.nl.request(
            NetfilterMessage::new(NetfilterHeader::new(family, 0, 0), body),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m.inner {
                netlink_packet_netfilter::NetfilterMessageInner::NfTables(t) => {
                    Some((m.header.family, t))
                }
                _ => None,
            })
            .collect())
    }

    fn dump(
        &mut self,
        family: NetfilterProtoFamily,
        body: NfTablesMessage,
    ) -> io::Result<Vec<NfTablesMessage>> {
        let replies = self.dump_families(family, body)?;
        Ok(replies.into_iter().map(|(_, m)| m).collect())
    }

    /// The table `inet <name>`, if it exists.
    pub fn table(&mut self, name: &str) -> io::Result<Option<TableInfo>> {
        let req = NfTablesMessage::GetTable(TableMessage {
            attributes: vec![TableAttribute::Name(name.to_string())],
        });
        match self.nl.request(inet(req), 0) {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| {
                let family = m.header.family;
                match m.inner {
                    netlink_packet_netfilter::NetfilterMessageInner::NfTables(
                        NfTablesMessage::NewTable(t),
                    ) => Some(table_info(family, &t)),
                    _ => None,
                }
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every table of every family (names only matter to berth).
    pub fn tables(&mut self) -> io::Result<Vec<TableInfo>> {
        let get = NfTablesMessage::GetTable(TableMessage { attributes: vec![] });
        let replies = self.dump_families(NetfilterProtoFamily::Unspec, get)?;
        Ok(replies
            .into_iter()
            .filter_map(|(family, m)| match m {
                NfTablesMessage::NewTable(t) => Some(table_info(family, &t)),
                _ => None,
            })
            .collect())
    }

    /// Every chain of every table and family.
    pub fn chains(&mut self) -> io::Result<Vec<ChainInfo>> {
        let get = NfTablesMessage::GetChain(ChainMessage { attributes: vec![] });
        let replies = self.dump_families(NetfilterProtoFamily::Unspec, get)?;
        Ok(replies
            .into_iter()
            .filter_map(|(family, m)| match m {
                NfTablesMessage::NewChain(c) => Some(chain_info(family, &c)),
                _ => None,
            })
            .collect())
    }

    /// The rules of a table (of one chain if given), in order.
    pub fn rules(
        &mut self,
        family: NetfilterProtoFamily,
        table: &str,
        chain: Option<&str>,
    ) -> io::Result<Vec<RuleInfo>> {
        let mut attributes = vec![RuleAttribute::Table(table.to_string())];
        if let Some(c) = chain {
            attributes.push(RuleAttribute::Chain(c.to_string()));
        }
        let replies = self.dump(family, NfTablesMessage::GetRule(RuleMessage { attributes }))?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                NfTablesMessage::NewRule(r) => Some(rule_info(&r)),
                _ => None,
            })
            .collect())
    }

    /// The elements of one of berth's port maps in `inet <table>`.
    pub fn elements(&mut self, table: &str, map: &str) -> io::Result<Vec<PortElement>> {
        let replies = self.dump(
            NetfilterProtoFamily::Inet,
            NfTablesMessage::GetSetElement(SetElementMessage {
                attributes: vec![
                    SetElementList::Table(table.to_string()),
                    SetElementList::Set(map.to_string()),
                ],
            }),
        )?;
        let mut out = Vec::new();
        for m in replies {
            let NfTablesMessage::NewSetElement(msg) = m else {
                continue;
            };
            for list in &msg.attributes {
                let SetElementList::Elements(elements) = list else {
                    continue;
                };
                for element in elements {
                    let netlink_packet_netfilter::nftables::ListAttribute::Element(attrs) = element
                    else {
                        continue;
                    };
                    let (mut key, mut data, mut userdata) = (None, None, None);
                    for a in attrs {
                        match a {
                            SetElementAttribute::Key(
                                netlink_packet_netfilter::nftables::DataAttribute::Value(v),
                            ) => key = Some(v.as_slice()),
                            SetElementAttribute::Data(
                                netlink_packet_netfilter::nftables::DataAttribute::Value(v),
                            ) => data = Some(v.as_slice()),
                            SetElementAttribute::UserData(u) => userdata = Some(u.as_slice()),
                            _ => {}
                        }
                    }
                    if let (Some(k), Some(d)) = (key, data)
                        && let Some(e) = PortElement::decode(map, k, d, userdata)
                    {
                        out.push(e);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// What a batch message does, for error messages: "new rule in chain postrouting".
fn describe(m: &NfTablesMessage) -> String {
    match m {
        NfTablesMessage::NewTable(_) => "new table".into(),
        NfTablesMessage::DeleteTable(_) => "delete table".into(),
        NfTablesMessage::NewChain(c) => format!(
            "new chain {}",
            c.attributes
                .iter()
                .find_map(|a| match a {
                    ChainAttribute::Name(n) => Some(n.as_str()),
                    _ => None,
                })
                .unwrap_or("?")
        ),
        NfTablesMessage::NewRule(r) => {
            let info = rule_info(r);
            format!(
                "new rule {} in chain {}",
                info.comment.unwrap_or_default(),
                info.chain
            )
        }
        NfTablesMessage::NewSet(_) => "new map".into(),
        NfTablesMessage::NewSetElement(_) => "add elements".into(),
        NfTablesMessage::DeleteSetElement(_) => "delete elements".into(),
        other => format!("{:?}", other.message_type()),
    }
}

fn control(m: ControlMessage) -> NetfilterMessage {
    NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES),
        m,
    )
}

fn inet(body: NfTablesMessage) -> NetfilterMessage {
    NetfilterMessage::new(NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0), body)
}

fn table_info(family: NetfilterProtoFamily, t: &TableMessage) -> TableInfo {
    let mut info = TableInfo {
        family,
        name: String::new(),
        comment: None,
    };
    for a in &t.attributes {
        match a {
            TableAttribute::Name(n) => info.name = n.clone(),
            TableAttribute::UserData(u) => info.comment = expr::parse_comment(u),
            _ => {}
        }
    }
    info
}

fn chain_info(family: NetfilterProtoFamily, c: &ChainMessage) -> ChainInfo {
    let mut info = ChainInfo {
        family,
        table: String::new(),
        name: String::new(),
        hook: None,
        policy: None,
    };
    for a in &c.attributes {
        match a {
            ChainAttribute::Table(t) => info.table = t.clone(),
            ChainAttribute::Name(n) => info.name = n.clone(),
            ChainAttribute::Policy(p) => info.policy = Some(*p),
            ChainAttribute::Hook(hooks) => {
                for h in hooks {
                    if let Hook::Number(HookNumber::Inet(n)) = h {
                        info.hook = Some(*n);
                    }
                }
            }
            _ => {}
        }
    }
    info
}

fn rule_info(r: &RuleMessage) -> RuleInfo {
    let mut info = RuleInfo {
        chain: String::new(),
        comment: None,
        exprs: Vec::new(),
    };
    for a in &r.attributes {
        match a {
            RuleAttribute::Chain(c) => info.chain = c.clone(),
            RuleAttribute::UserData(u) => info.comment = expr::parse_comment(u),
            RuleAttribute::Expressions(e) => info.exprs = e.clone(),
            _ => {}
        }
    }
    info
}
