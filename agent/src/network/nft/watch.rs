//! Drift detection: a thread subscribed to nf_tables notifications (`NFNLGRP_NFTABLES`) that
//! reports when someone else deletes anything in berth's table (`nft flush ruleset`, a firewall
//! reload, a hand edit), so the table can be restored within a second instead of at the next
//! periodic resync.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::thread::JoinHandle;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, GenAttribute, NfTablesMessage, RuleAttribute, SetAttribute, SetElementList,
    TableAttribute,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};
use netlink_sys::protocols::NETLINK_NETFILTER;

use crate::network::nl::NlSocket;

const NFNLGRP_NFTABLES: u32 = 7;

/// Why the watcher thinks berth's table may have drifted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// Another process deleted something in the table, or the table itself.
    Changed {
        by_pid: Option<u32>,
        by_name: Option<String>,
    },
    /// Notifications were lost (the socket overflowed): anything may have happened.
    Overrun,
}

/// A running watcher; dropping it stops and joins its thread.
pub struct Watcher {
    stop: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // Closing the pipe's write end wakes the thread's poll with a hang-up.
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts a thread in the netns `host_ns` that calls `on_drift` whenever another process
/// deletes something in `inet <table>`. Returns once the subscription is in place.
pub fn spawn(
    host_ns: &File,
    table: String,
    mut on_drift: impl FnMut(Drift) + Send + 'static,
) -> io::Result<Watcher> {
    let ns = host_ns.try_clone()?;
    // Close-on-exec: a child the agent spawns (a shim) must not keep the write end open, or
    // dropping the watcher would never wake the thread.
    let (stop_rx, stop_tx) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
    let thread = std::thread::Builder::new()
        .name("berth-nft-watch".into())
        .spawn(move || {
            // A dedicated thread for its whole life: switching its namespace is harmless.
            let sock = nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(io::Error::from)
                .and_then(|()| subscribe());
            let mut sock = match sock {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let mut touched = false;
            loop {
                let mut fds =
                    [sock.socket().as_raw_fd(), stop_rx.as_raw_fd()].map(|fd| libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    });
                // SAFETY: a live array of pollfds.
                if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) } < 0 {
                    continue;
                }
                // Readable or hung up: the watcher was dropped.
                if fds[1].revents != 0 {
                    return;
                }
                let r = sock.recv_batch_flags(
                    libc::MSG_DONTWAIT,
                    |m: NetlinkMessage<NetfilterMessage>| {
                        if let NetlinkPayload::InnerMessage(m) = m.payload
                            && let Some(drift) = classify(&table, &m, &mut touched)
                        {
                            on_drift(drift);
                        }
                        Ok(false)
                    },
                );
                match r {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        touched = false;
                        on_drift(Drift::Overrun);
                    }
                    // A message the parser does not know: assume the worst, cheaply checked.
                    Err(_) => on_drift(Drift::Overrun),
                }
            }
        })?;
    ready_rx
        .recv()
        .unwrap_or_else(|_| Err(io::Error::other("watcher thread died")))?;
    Ok(Watcher {
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

fn subscribe() -> io::Result<NlSocket> {
    let sock = NlSocket::open(NETLINK_NETFILTER)?;
    sock.socket().add_membership(NFNLGRP_NFTABLES)?;
    let _ = sock.socket().set_rx_buf_sz(4 << 20);
    Ok(sock)
}

/// Folds one notification into the state of the transaction being reported: deletions in our
/// table mark it touched; the closing NEWGEN says who made the transaction.
fn classify(table: &str, m: &NetfilterMessage, touched: &mut bool) -> Option<Drift> {
    let NetfilterMessageInner::NfTables(msg) = &m.inner else {
        return None;
    };
    if let NfTablesMessage::NewGen(g) = msg {
        if !std::mem::take(touched) {
            return None;
        }
        let by_pid = g.attributes.iter().find_map(|a| match a {
            GenAttribute::ProcPid(p) => Some(*p),
            _ => None,
        });
        let by_name = g.attributes.iter().find_map(|a| match a {
            GenAttribute::ProcName(n) => Some(n.clone()),
            _ => None,
        });
        // The kernel reports the thread that sent the batch: berth's own changes are ignored.
        if by_pid.is_some_and(is_own_thread) {
            return None;
        }
        return Some(Drift::Changed { by_pid, by_name });
    }
    if m.header.family != NetfilterProtoFamily::Inet {
        return None;
    }
    let name = match msg {
        NfTablesMessage::DeleteTable(t) => t.attributes.iter().find_map(|a| match a {
            TableAttribute::Name(n) => Some(n),
            _ => None,
        }),
        NfTablesMessage::DeleteChain(c) => c.attributes.iter().find_map(|a| match a {
            ChainAttribute::Table(n) => Some(n),
            _ => None,
        }),
        NfTablesMessage::DeleteRule(r) => r.attributes.iter().find_map(|a| match a {
            RuleAttribute::Table(n) => Some(n),
            _ => None,
        }),
        NfTablesMessage::DeleteSet(s) => s.attributes.iter().find_map(|a| match a {
            SetAttribute::Table(n) => Some(n),
            _ => None,
        }),
        NfTablesMessage::DeleteSetElement(s) => s.attributes.iter().find_map(|a| match a {
            SetElementList::Table(n) => Some(n),
            _ => None,
        }),
        _ => None,
    };
    if name.is_some_and(|n| n == table) {
        *touched = true;
    }
    None
}

fn is_own_thread(tid: u32) -> bool {
    std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()
}
