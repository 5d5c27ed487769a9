//! pcapng export: every RST as a packet Wireshark and tshark open, with the
//! cause, explanation, owner and kernel reason in the packet comment.
//!
//! Where the kernel hands over the RST segment itself (`net_dev_queue` /
//! `netif_receive_skb`, see `pairing`), the packet is those bytes. Otherwise
//! only the 4-tuple and the trigger segment are known, and the IP and TCP
//! headers are synthesised the way the kernel builds them
//! (`tcp_v4_send_reset`: `R` with seq = the trigger's ack, or `R.` acking
//! the trigger); each packet's comment says which it is.
//! The format is small and fixed (SHB, IDBs, EPBs: draft-ietf-opsawg-pcapng),
//! so it is written here rather than through a crate. Interface 0 holds
//! events whose network namespace is unknown; each namespace seen gets an
//! interface of its own (`netns:INODE`), written before its first packet.

pub(crate) mod pairing;

use std::io::{self, Write};
use std::net::IpAddr;
use std::time::UNIX_EPOCH;

use super::Sink;
use crate::model::event::{Direction, TcpFlags};
use crate::model::text::escape_control;
use crate::output::pcapng::pairing::{Pairing, WirePacket};
use crate::record::Classified;

const BLOCK_SHB: u32 = 0x0A0D_0D0A;
const BLOCK_IDB: u32 = 0x0000_0001;
const BLOCK_EPB: u32 = 0x0000_0006;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
/// LINKTYPE_RAW: packets start with the IP header.
const LINKTYPE_RAW: u16 = 101;
const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_DESCRIPTION: u16 = 3;
const IF_TSRESOL: u16 = 9;
/// Interfaces per file beyond which namespaces share interface 0.
const MAX_INTERFACES: usize = 1024;

pub(crate) struct PcapngSink<W: Write> {
    out: W,
    started: bool,
    /// Network namespace inode → interface id in this file.
    interfaces: std::collections::HashMap<u32, u32>,
    /// Events held until their segment arrives (end of the batch).
    pairing: Pairing,
}

impl<W: Write> PcapngSink<W> {
    pub(crate) fn new(out: W) -> PcapngSink<W> {
        PcapngSink {
            out,
            started: false,
            interfaces: std::collections::HashMap::new(),
            pairing: Pairing::default(),
        }
    }

    fn write_paired(&mut self, rec: &Classified, packet: Option<&WirePacket>) -> io::Result<()> {
        let interface = self.interface(rec.event.netns)?;
        self.out.write_all(&packet_block(rec, packet, interface))
    }

    /// Writes every held event, with its real segment where one came.
    fn release(&mut self) -> io::Result<()> {
        for (rec, packet) in self.pairing.drain() {
            self.write_paired(&rec, packet.as_ref())?;
        }
        Ok(())
    }

    /// The interface of `netns`, writing its description block first.
    fn interface(&mut self, netns: Option<u32>) -> io::Result<u32> {
        let Some(netns) = netns else {
            return Ok(0);
        };
        if let Some(&id) = self.interfaces.get(&netns) {
            return Ok(id);
        }
        if self.interfaces.len() >= MAX_INTERFACES {
            return Ok(0);
        }
        self.out.write_all(&interface_block(
            &format!("netns:{netns}"),
            &format!("network namespace inode {netns}"),
        ))?;
        let id = self.interfaces.len() as u32 + 1;
        self.interfaces.insert(netns, id);
        Ok(id)
    }

    fn start(&mut self) -> io::Result<()> {
        if !self.started {
            self.out.write_all(&header())?;
            self.started = true;
        }
        Ok(())
    }
}

impl<W: Write> Sink for PcapngSink<W> {
    fn write(&mut self, rec: &Classified) -> io::Result<()> {
        // An abort sent no packet; a capture holds packets only.
        if rec.event.direction == Direction::Abort {
            return Ok(());
        }
        self.start()?;
        match self.pairing.hold(rec.clone()) {
            Some((oldest, packet)) => self.write_paired(&oldest, packet.as_ref()),
            None => Ok(()),
        }
    }

    fn packet(&mut self, packet: &WirePacket) -> io::Result<()> {
        self.pairing.add_packet(packet.clone());
        Ok(())
    }

    /// A capture has no record for "nothing here": the loss is noted in the
    /// comment of an empty-payload block that tools still show.
    fn write_gap(&mut self, lost: u64, at: std::time::SystemTime) -> io::Result<()> {
        self.start()?;
        self.release()?;
        let comment = format!("rsttrace: {lost} events lost here (ring buffer full)");
        let now = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
        self.out.write_all(&epb(0, now, &[], 0, &comment))
    }

    fn flush(&mut self) -> io::Result<()> {
        // An export with no event is still a valid, empty capture.
        self.start()?;
        self.release()?;
        self.out.flush()
    }
}

/// Section header and the one interface every packet is recorded on.
pub(crate) fn header() -> Vec<u8> {
    let mut shb_body = Vec::new();
    shb_body.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
    shb_body.extend_from_slice(&1u16.to_le_bytes()); // major
    shb_body.extend_from_slice(&0u16.to_le_bytes()); // minor
    shb_body.extend_from_slice(&(-1i64).to_le_bytes()); // section length unknown
    option(
        &mut shb_body,
        SHB_USERAPPL,
        concat!("rsttrace ", env!("CARGO_PKG_VERSION")).as_bytes(),
    );
    option(&mut shb_body, OPT_END, &[]);

    let mut out = block(BLOCK_SHB, &shb_body);
    out.extend_from_slice(&interface_block(
        "rsttrace",
        "resets whose network namespace is unknown",
    ));
    out
}

fn interface_block(name: &str, description: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes()); // reserved
    body.extend_from_slice(&0u32.to_le_bytes()); // snaplen: no limit
    option(&mut body, IF_NAME, name.as_bytes());
    option(&mut body, IF_DESCRIPTION, description.as_bytes());
    option(&mut body, IF_TSRESOL, &[9]); // nanoseconds
    option(&mut body, OPT_END, &[]);
    block(BLOCK_IDB, &body)
}

pub(crate) fn packet_block(
    rec: &Classified,
    packet: Option<&WirePacket>,
    interface: u32,
) -> Vec<u8> {
    let ts = rec
        .event
        .time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    match packet {
        Some(p) => epb(interface, ts, &p.bytes, p.len, &comment(rec, true)),
        None => {
            let synthetic = rst_packet(rec);
            let len = synthetic.len() as u32;
            epb(interface, ts, &synthetic, len, &comment(rec, false))
        }
    }
}

/// `original_len` is the packet's length on the wire; `packet` may be a
/// prefix of it (captures keep the headers).
fn epb(interface: u32, ts_ns: u64, packet: &[u8], original_len: u32, comment: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(32 + packet.len() + comment.len());
    body.extend_from_slice(&interface.to_le_bytes());
    body.extend_from_slice(&((ts_ns >> 32) as u32).to_le_bytes());
    body.extend_from_slice(&(ts_ns as u32).to_le_bytes());
    body.extend_from_slice(&(packet.len() as u32).to_le_bytes());
    body.extend_from_slice(&original_len.max(packet.len() as u32).to_le_bytes());
    body.extend_from_slice(packet);
    pad4(&mut body);
    option(&mut body, OPT_COMMENT, comment.as_bytes());
    option(&mut body, OPT_END, &[]);
    block(BLOCK_EPB, &body)
}

/// What Wireshark shows under "Packet comments".
pub(crate) fn comment(rec: &Classified, captured: bool) -> String {
    let e = &rec.event;
    let owner = match &e.process {
        Some(p) => format!("{} ({})", p.pid, escape_control(&p.comm)),
        None => "-".into(),
    };
    let mut c = format!(
        "rsttrace: {} {} ({}): {}. state={} kernel_reason={} owner={} actor={} ({}, {})",
        e.direction.as_str(),
        rec.cause.id.id(),
        rec.cause.confidence.as_str(),
        rec.cause.id.explanation(),
        e.state.name(),
        escape_control(e.reason().unwrap_or("-")),
        owner,
        e.actor.pid,
        escape_control(&e.actor.comm),
        e.context.name(),
    );
    if !rec.cause.evidence.is_empty() {
        c.push_str(" evidence=");
        c.push_str(&rec.cause.evidence.to_string());
    }
    for (label, frames) in [
        ("kernel_stack", &rec.stacks.kernel),
        ("user_stack", &rec.stacks.user),
    ] {
        if let Some(frames) = frames {
            c.push_str(&format!(" {label}={}", super::joined_frames(frames)));
        }
    }
    c.push_str(if captured {
        " [packet captured from the device]"
    } else {
        " [headers synthesized from kernel tracepoint fields]"
    });
    c
}

/// The RST as the kernel would have built it, from this host's view.
pub(crate) fn rst_packet(rec: &Classified) -> Vec<u8> {
    let e = &rec.event;
    let (src, dst) = match e.direction {
        Direction::Sent | Direction::Abort => (e.local, e.remote),
        Direction::Received => (e.remote, e.local),
    };
    // tcp_v4_send_reset: answer an ACK with seq = its ack number; answer
    // anything else with seq 0 and an ACK of everything it occupied.
    let (seq, ack, flags) = match (e.direction, e.packet) {
        (Direction::Sent, Some(p)) if p.flags.has(TcpFlags::ACK) => (p.ack, 0, TcpFlags::RST),
        (Direction::Sent, Some(p)) => {
            let occupied = p.len
                + u32::from(p.flags.has(TcpFlags::SYN))
                + u32::from(p.flags.has(TcpFlags::FIN));
            (
                0,
                p.seq.wrapping_add(occupied),
                TcpFlags::RST | TcpFlags::ACK,
            )
        }
        _ => (0, 0, TcpFlags::RST | TcpFlags::ACK),
    };
    let mut tcp = Vec::with_capacity(20);
    tcp.extend_from_slice(&src.port().to_be_bytes());
    tcp.extend_from_slice(&dst.port().to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.push(5 << 4); // data offset: 20 bytes
    tcp.push(flags);
    tcp.extend_from_slice(&0u16.to_be_bytes()); // window
    tcp.extend_from_slice(&0u16.to_be_bytes()); // checksum, below
    tcp.extend_from_slice(&0u16.to_be_bytes()); // urgent
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut pseudo = Vec::with_capacity(12 + tcp.len());
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, 6]);
            pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
            pseudo.extend_from_slice(&tcp);
            tcp[16..18].copy_from_slice(&checksum(&pseudo).to_be_bytes());
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
            ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]); // id 0, DF, ttl 64, TCP
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let sum = checksum(&ip);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            ip.extend_from_slice(&tcp);
            ip
        }
        (s, d) => {
            let (s, d) = (v6(s), v6(d));
            let mut pseudo = Vec::with_capacity(40 + tcp.len());
            pseudo.extend_from_slice(&s);
            pseudo.extend_from_slice(&d);
            pseudo.extend_from_slice(&(tcp.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 6]);
            pseudo.extend_from_slice(&tcp);
            tcp[16..18].copy_from_slice(&checksum(&pseudo).to_be_bytes());
            let mut ip = vec![0x60, 0, 0, 0];
            ip.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
            ip.extend_from_slice(&[6, 64]);
            ip.extend_from_slice(&s);
            ip.extend_from_slice(&d);
            ip.extend_from_slice(&tcp);
            ip
        }
    }
}

fn v6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// RFC 1071 Internet checksum.
/// The Internet checksum (RFC 1071) of IP and TCP headers.
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Writes an option; a value is cut to 65,535 bytes (the length field's
/// limit; a text value at a character boundary), never written with a
/// wrapped length that would make readers misparse the rest.
fn option(body: &mut Vec<u8>, code: u16, value: &[u8]) {
    let mut end = value.len().min(usize::from(u16::MAX));
    if end < value.len() && std::str::from_utf8(value).is_ok() {
        while end > 0 && (value[end] & 0xc0) == 0x80 {
            end -= 1;
        }
    }
    let value = &value[..end];
    body.extend_from_slice(&code.to_le_bytes());
    body.extend_from_slice(&(value.len() as u16).to_le_bytes());
    body.extend_from_slice(value);
    pad4(body);
}

fn pad4(body: &mut Vec<u8>) {
    while !body.len().is_multiple_of(4) {
        body.push(0);
    }
}

fn block(kind: u32, body: &[u8]) -> Vec<u8> {
    let total = (12 + body.len()) as u32;
    let mut b = Vec::with_capacity(total as usize);
    b.extend_from_slice(&kind.to_le_bytes());
    b.extend_from_slice(&total.to_le_bytes());
    b.extend_from_slice(body);
    b.extend_from_slice(&total.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::fixtures::record;

    /// Walks the blocks: every block's two length fields agree and are
    /// multiples of 4, as readers require.
    fn blocks(bytes: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let kind = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
            let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
            assert!(len.is_multiple_of(4));
            let trailer = u32::from_le_bytes(bytes[at + len - 4..at + len].try_into().unwrap());
            assert_eq!(trailer as usize, len);
            out.push((kind, bytes[at + 8..at + len - 4].to_vec()));
            at += len;
        }
        out
    }

    #[test]
    fn a_capture_is_shb_idb_then_one_epb_per_rst() {
        let mut buf = Vec::new();
        {
            let mut sink = PcapngSink::new(&mut buf);
            sink.write(&record()).unwrap();
            sink.write(&record()).unwrap();
            sink.flush().unwrap();
        }
        let kinds: Vec<u32> = blocks(&buf).into_iter().map(|(k, _)| k).collect();
        assert_eq!(kinds, [BLOCK_SHB, BLOCK_IDB, BLOCK_EPB, BLOCK_EPB]);
    }

    #[test]
    fn each_network_namespace_gets_its_own_interface() {
        let mut buf = Vec::new();
        {
            let mut sink = PcapngSink::new(&mut buf);
            let mut rec = record();
            for netns in [Some(4026531840), Some(4026532177), Some(4026531840), None] {
                rec.event.netns = netns;
                sink.write(&rec).unwrap();
            }
            let mut abort = record();
            abort.event.direction = Direction::Abort;
            sink.write(&abort).unwrap();
            sink.flush().unwrap();
        }
        let blocks = blocks(&buf);
        let kinds: Vec<u32> = blocks.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds,
            [
                BLOCK_SHB, BLOCK_IDB, BLOCK_IDB, BLOCK_EPB, BLOCK_IDB, BLOCK_EPB, BLOCK_EPB,
                BLOCK_EPB
            ],
            "an abort is not a packet"
        );
        let interface = |body: &[u8]| u32::from_le_bytes(body[..4].try_into().unwrap());
        let epbs: Vec<u32> = blocks
            .iter()
            .filter(|(k, _)| *k == BLOCK_EPB)
            .map(|(_, b)| interface(b))
            .collect();
        assert_eq!(epbs, [1, 2, 1, 0]);
        let second_idb = &blocks[4].1;
        let text = String::from_utf8_lossy(second_idb);
        assert!(text.contains("netns:4026532177"), "{text}");
    }

    #[test]
    fn the_packet_is_a_valid_rst_from_the_sender() {
        let mut rec = record();
        rec.event.remote = "10.0.0.2:40000".parse().unwrap();
        let p = rst_packet(&rec);
        assert_eq!(p[0], 0x45);
        assert_eq!(checksum(&p[..20]), 0, "IPv4 header checksum");
        assert_eq!(&p[12..16], &[127, 0, 0, 1], "sent: source is local");
        let tcp = &p[20..];
        assert_eq!(u16::from_be_bytes([tcp[0], tcp[1]]), 8080);
        assert_eq!(u16::from_be_bytes([tcp[2], tcp[3]]), 40000);
        // The trigger was P. with ack 2: the RST carries seq 2, flag R only.
        assert_eq!(u32::from_be_bytes(tcp[4..8].try_into().unwrap()), 2);
        assert_eq!(tcp[13], TcpFlags::RST);
        let mut pseudo = vec![127, 0, 0, 1, 10, 0, 0, 2, 0, 6, 0, 20];
        pseudo.extend_from_slice(tcp);
        assert_eq!(checksum(&pseudo), 0, "TCP checksum");
    }

    #[test]
    fn a_syn_is_answered_with_rst_ack() {
        let mut rec = record();
        rec.event.remote = "10.0.0.2:40000".parse().unwrap();
        rec.event.packet.as_mut().unwrap().flags = TcpFlags(TcpFlags::SYN);
        rec.event.packet.as_mut().unwrap().len = 0;
        let tcp = &rst_packet(&rec)[20..];
        assert_eq!(tcp[13], TcpFlags::RST | TcpFlags::ACK);
        assert_eq!(
            u32::from_be_bytes(tcp[8..12].try_into().unwrap()),
            2,
            "ack = seq + 1"
        );
    }

    #[test]
    fn comments_carry_the_cause_and_stay_inert() {
        let c = comment(&record(), false);
        assert!(c.contains("close_unread_data (certain)"), "{c}");
        assert!(c.contains("kernel_reason=TCP_ABORT_ON_CLOSE"), "{c}");
        assert!(c.contains("synthesized"), "{c}");
        assert!(!c.contains('\x1b') && !c.contains('\n'), "{c:?}");
    }

    #[test]
    fn an_option_longer_than_its_length_field_is_cut() {
        let mut rec = record();
        // A comment of more than 64 KiB: frames of a deep stack, say.
        rec.stacks.user = Some(vec!["é".repeat(40_000); 2]);
        let epb = packet_block(&rec, None, 1);
        let (_, body) = blocks(&epb).remove(0);
        // Interface, timestamp, lengths, then the packet, padded.
        let caplen = u32::from_le_bytes(body[12..16].try_into().unwrap()) as usize;
        let mut at = 20 + caplen.next_multiple_of(4);
        let mut comment_len = None;
        while at + 4 <= body.len() {
            let code = u16::from_le_bytes([body[at], body[at + 1]]);
            let len = usize::from(u16::from_le_bytes([body[at + 2], body[at + 3]]));
            if code == OPT_END {
                assert_eq!(at + 4, body.len(), "opt_endofopt ends the block");
                break;
            }
            if code == OPT_COMMENT {
                comment_len = Some(len);
                assert!(std::str::from_utf8(&body[at + 4..at + 4 + len]).is_ok());
            }
            at += 4 + len.next_multiple_of(4);
        }
        assert!(comment_len.is_some_and(|n| n > 60_000), "{comment_len:?}");
    }
}
