//! A blocking netlink socket with sequence numbers, acks and dumps, shared by rtnetlink (links,
//! addresses, routes) and nfnetlink (nftables).
//!
//! Blocking on purpose: every call is a few microseconds of kernel work, and namespace-bound work
//! runs on dedicated OS threads (see [`super::netns`]), where an async runtime would only add a
//! reactor per thread. A socket stays in the netns where it was opened, whichever thread uses it.

use std::io;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkDeserializable, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NetlinkSerializable,
};
use netlink_sys::{Socket, SocketAddr};

/// Big enough for any single datagram the kernel sends in a dump (it caps them at 32 KiB).
const RECV_BUF: usize = 64 * 1024;

pub(crate) struct NlSocket {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl NlSocket {
    /// Opens a socket of `protocol` in the calling thread's network namespace.
    pub(crate) fn open(protocol: isize) -> io::Result<Self> {
        let mut sock = Socket::new(protocol)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        // Extended acks make the kernel say which attribute it rejected; best effort.
        let _ = sock.set_ext_ack(true);
        Ok(NlSocket {
            sock,
            seq: 0,
            buf: vec![0; RECV_BUF],
        })
    }

    pub(crate) fn socket(&self) -> &Socket {
        &self.sock
    }

    pub(crate) fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Serialises `msg` with `flags` and a fresh sequence number into `out`.
    pub(crate) fn encode<I: NetlinkSerializable>(
        &mut self,
        msg: I,
        flags: u16,
        out: &mut Vec<u8>,
    ) -> u32 {
        let seq = self.next_seq();
        encode_message(msg, flags, seq, out);
        seq
    }

    pub(crate) fn send(&self, bytes: &[u8]) -> io::Result<()> {
        let n = self.sock.send(bytes, 0)?;
        if n != bytes.len() {
            return Err(io::Error::other(format!(
                "netlink send was short: {n} of {} bytes",
                bytes.len()
            )));
        }
        Ok(())
    }

    /// One request; returns the messages of a dump, or nothing after the ack of a change.
    pub(crate) fn request<I>(&mut self, msg: I, flags: u16) -> io::Result<Vec<I>>
    where
        I: NetlinkSerializable + NetlinkDeserializable,
        I::Error: std::fmt::Display,
    {
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let flags = if dump { flags } else { flags | NLM_F_ACK };
        let mut out = Vec::new();
        let seq = self.encode(msg, flags, &mut out);
        self.send(&out)?;
        let mut result = Vec::new();
        loop {
            let done = self.recv_batch(|m: NetlinkMessage<I>| {
                if m.header.sequence_number != seq {
                    return Ok(false); // a late reply to an earlier request
                }
                match m.payload {
                    NetlinkPayload::Done(_) => Ok(true),
                    NetlinkPayload::Error(e) => match e.code {
                        Some(_) => Err(e.to_io()),
                        None => Ok(true),
                    },
                    NetlinkPayload::InnerMessage(inner) => {
                        result.push(inner);
                        Ok(false)
                    }
                    _ => Ok(false),
                }
            })?;
            if done {
                return Ok(result);
            }
        }
    }

    /// Receives one datagram and hands each message in it to `f`, which says when the reply is
    /// complete. Returns whether it was.
    pub(crate) fn recv_batch<I>(
        &mut self,
        f: impl FnMut(NetlinkMessage<I>) -> io::Result<bool>,
    ) -> io::Result<bool>
    where
        I: NetlinkDeserializable,
        I::Error: std::fmt::Display,
    {
        self.recv_batch_flags(0, f)
    }

    /// [`Self::recv_batch`] with recv(2) flags (`MSG_DONTWAIT`: `WouldBlock` when nothing is
    /// queued).
    pub(crate) fn recv_batch_flags<I>(
        &mut self,
        flags: libc::c_int,
        mut f: impl FnMut(NetlinkMessage<I>) -> io::Result<bool>,
    ) -> io::Result<bool>
    where
        I: NetlinkDeserializable,
        I::Error: std::fmt::Display,
    {
        let n = self.sock.recv(&mut &mut self.buf[..], flags)?;
        let mut off = 0;
        let mut done = false;
        let mut first_err = None;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(self.buf[off..off + 4].try_into().unwrap()) as usize;
            if len < 16 || off + len > n {
                return Err(io::Error::other("truncated netlink message"));
            }
            let msg = NetlinkMessage::<I>::deserialize(&self.buf[off..off + len])
                .map_err(|e| io::Error::other(format!("cannot parse netlink reply: {e}")))?;
            match f(msg) {
                Ok(d) => done |= d,
                Err(e) => {
                    done = true;
                    first_err.get_or_insert(e);
                }
            }
            off += (len + 3) & !3;
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }
}

pub(crate) fn encode_message<I: NetlinkSerializable>(
    msg: I,
    flags: u16,
    seq: u32,
    out: &mut Vec<u8>,
) {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = seq;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    packet.finalize();
    let start = out.len();
    out.resize(start + packet.buffer_len(), 0);
    packet.serialize(&mut out[start..]);
    // Messages in one datagram start on 4-byte boundaries.
    out.resize((out.len() + 3) & !3, 0);
}
