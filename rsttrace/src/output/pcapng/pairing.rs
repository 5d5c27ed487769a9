//! Real RST segments for pcapng exports, paired with the events they belong
//! to. Pure: the kernel hands over the bytes (`abi::PacketRecord`), the
//! pcapng sink asks for the packet of each event.
//!
//! A sent RST's event is made before the segment is queued, so the pcapng
//! sink holds events until the end of the ring-buffer batch (`Pairing`),
//! when their segments, made microseconds later, have arrived too.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use rsttrace_ebpf::abi::{PacketRecord, packet_dir};

use crate::model::event::Direction;
use crate::record::Classified;

/// One RST segment as a device sent or received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WirePacket {
    pub time: SystemTime,
    pub netns: Option<u32>,
    pub ifindex: u32,
    pub outgoing: bool,
    /// From the IP header on (at most `abi::PACKET_BYTES`).
    pub bytes: Vec<u8>,
    /// The IP packet's full length (`bytes` may be shorter).
    pub len: u32,
}

impl WirePacket {
    pub fn new(raw: &PacketRecord, boot_to_wall: impl Fn(u64) -> SystemTime) -> WirePacket {
        // Bytes past the packet's own IP length are whatever the buffer
        // held before: never write them.
        let caplen = usize::from(raw.caplen)
            .min(raw.data.len())
            .min(ip_length(&raw.data).unwrap_or(0));
        WirePacket {
            time: boot_to_wall(raw.ts_ns),
            netns: (raw.netns != 0).then_some(raw.netns),
            ifindex: raw.ifindex,
            outgoing: raw.direction == packet_dir::TX,
            bytes: raw.data[..caplen].to_vec(),
            len: raw.len,
        }
    }

    /// (source, destination) from the IP and TCP headers.
    pub fn endpoints(&self) -> Option<(SocketAddr, SocketAddr)> {
        let b = &self.bytes;
        let (src, dst, ihl): (IpAddr, IpAddr, usize) = match b.first()? >> 4 {
            4 if b.len() >= 20 => (
                Ipv4Addr::new(b[12], b[13], b[14], b[15]).into(),
                Ipv4Addr::new(b[16], b[17], b[18], b[19]).into(),
                usize::from(b[0] & 0x0f) * 4,
            ),
            6 if b.len() >= 40 => (v6(&b[8..24]).into(), v6(&b[24..40]).into(), 40),
            _ => return None,
        };
        let tcp = b.get(ihl..ihl + 4)?;
        let port = |i: usize| u16::from_be_bytes([tcp[i], tcp[i + 1]]);
        Some((SocketAddr::new(src, port(0)), SocketAddr::new(dst, port(2))))
    }
}

/// The length an IP header gives its packet, None for a header that is not
/// a valid IPv4 or IPv6 one (or cut before its length field).
fn ip_length(b: &[u8]) -> Option<usize> {
    match b.first()? >> 4 {
        4 => {
            let ihl = usize::from(b[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?]));
            (ihl >= 20 && total >= ihl).then_some(total)
        }
        6 => {
            let payload = usize::from(u16::from_be_bytes([*b.get(4)?, *b.get(5)?]));
            Some(40 + payload)
        }
        _ => None,
    }
}

fn v6(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(b);
    Ipv6Addr::from(a)
}

/// Events waiting for their segment, and recent segments waiting for their
/// event; both bounded.
#[derive(Default)]
pub struct Pairing {
    events: VecDeque<Classified>,
    packets: VecDeque<WirePacket>,
}

/// Segments kept for pairing; an RST storm must not grow memory.
const MAX_PACKETS: usize = 4096;
/// Events held at most; beyond, the oldest go out unpaired.
pub const MAX_HELD_EVENTS: usize = 4096;
/// How far apart an event and its segment may be.
const WINDOW: Duration = Duration::from_millis(200);

impl Pairing {
    pub fn hold(&mut self, rec: Classified) -> Option<(Classified, Option<WirePacket>)> {
        self.events.push_back(rec);
        if self.events.len() > MAX_HELD_EVENTS {
            let oldest = self.events.pop_front()?;
            let packet = self.take_packet_for(&oldest);
            return Some((oldest, packet));
        }
        None
    }

    pub fn add_packet(&mut self, p: WirePacket) {
        if self.packets.len() >= MAX_PACKETS {
            self.packets.pop_front();
        }
        self.packets.push_back(p);
    }

    /// Every held event, in order, with its segment when one was seen.
    pub fn drain(&mut self) -> Vec<(Classified, Option<WirePacket>)> {
        let events: Vec<Classified> = self.events.drain(..).collect();
        let paired = events
            .into_iter()
            .map(|rec| {
                let packet = self.take_packet_for(&rec);
                (rec, packet)
            })
            .collect();
        // Segments too old to belong to a later event.
        let newest = self.packets.back().map(|p| p.time);
        if let Some(newest) = newest {
            self.packets
                .retain(|p| newest.duration_since(p.time).unwrap_or_default() <= WINDOW);
        }
        paired
    }

    fn take_packet_for(&mut self, rec: &Classified) -> Option<WirePacket> {
        let at = self.packets.iter().position(|p| belongs_to(p, rec))?;
        self.packets.remove(at)
    }
}

/// The segment an event describes: same namespace, same way, same ends,
/// and close in time. A sent RST leaves from local to remote; a received
/// one arrives from remote to local.
pub fn belongs_to(p: &WirePacket, rec: &Classified) -> bool {
    let e = &rec.event;
    let (outgoing, src, dst) = match e.direction {
        Direction::Sent => (true, e.local, e.remote),
        Direction::Received => (false, e.remote, e.local),
        Direction::Abort => return false,
    };
    let near = match p.time.duration_since(e.time) {
        Ok(after) => after <= WINDOW,
        Err(before) => before.duration() <= WINDOW,
    };
    p.outgoing == outgoing
        && near
        && (p.netns.is_none() || e.netns.is_none() || p.netns == e.netns)
        && p.endpoints()
            .is_some_and(|(s, d)| same(s, src) && same(d, dst))
}

/// Events show IPv4-mapped IPv6 addresses as IPv4.
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    let plain = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    a.port() == b.port() && plain(a.ip()) == plain(b.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::fixtures::record;

    /// An IPv4 RST from `src` to `dst`.
    fn rst(src: SocketAddr, dst: SocketAddr, outgoing: bool, time: SystemTime) -> WirePacket {
        let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
            panic!("v4 only")
        };
        let mut b = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
        b.extend_from_slice(&s.octets());
        b.extend_from_slice(&d.octets());
        b.extend_from_slice(&src.port().to_be_bytes());
        b.extend_from_slice(&dst.port().to_be_bytes());
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&[0x50, 0x04, 0, 0, 0, 0, 0, 0]);
        WirePacket {
            time,
            netns: None,
            ifindex: 1,
            outgoing,
            len: b.len() as u32,
            bytes: b,
        }
    }

    #[test]
    fn reads_the_ends_of_a_segment() {
        let p = rst(
            "10.0.0.1:80".parse().unwrap(),
            "10.0.0.2:4000".parse().unwrap(),
            true,
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(
            p.endpoints(),
            Some((
                "10.0.0.1:80".parse().unwrap(),
                "10.0.0.2:4000".parse().unwrap()
            ))
        );
        let short = WirePacket {
            bytes: p.bytes[..22].to_vec(),
            ..p
        };
        assert_eq!(short.endpoints(), None);
    }

    #[test]
    fn pairs_each_event_with_its_own_segment() {
        let rec = record(); // sent, 127.0.0.1:8080 -> [::1]:40000
        let mut rec = rec;
        rec.event.remote = "127.0.0.2:40000".parse().unwrap();
        let t = rec.event.time;
        let mut pairing = Pairing::default();
        assert!(pairing.hold(rec.clone()).is_none());
        // The received copy on loopback, a stranger, then the real one.
        pairing.add_packet(rst(rec.event.remote, rec.event.local, false, t));
        pairing.add_packet(rst(
            "127.0.0.1:8080".parse().unwrap(),
            "127.0.0.3:1".parse().unwrap(),
            true,
            t,
        ));
        let mine = rst(rec.event.local, rec.event.remote, true, t + WINDOW / 2);
        pairing.add_packet(mine.clone());
        let out = pairing.drain();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.as_ref(), Some(&mine));
        // Taken: a second event for the same ends gets nothing.
        pairing.hold(rec.clone());
        assert_eq!(pairing.drain()[0].1, None);
    }

    #[test]
    fn too_far_apart_or_in_another_namespace_is_not_a_pair() {
        let mut rec = record();
        rec.event.remote = "127.0.0.2:40000".parse().unwrap();
        rec.event.netns = Some(7);
        let t = rec.event.time;
        let late = rst(rec.event.local, rec.event.remote, true, t + WINDOW * 2);
        assert!(!belongs_to(&late, &rec));
        let mut elsewhere = rst(rec.event.local, rec.event.remote, true, t);
        elsewhere.netns = Some(8);
        assert!(!belongs_to(&elsewhere, &rec));
        elsewhere.netns = Some(7);
        assert!(belongs_to(&elsewhere, &rec));
    }

    #[test]
    fn memory_stays_bounded() {
        let mut pairing = Pairing::default();
        let t = SystemTime::UNIX_EPOCH;
        for port in 0..(MAX_PACKETS as u16 + 10) {
            pairing.add_packet(rst(
                SocketAddr::from(([10, 0, 0, 1], port)),
                "10.0.0.2:1".parse().unwrap(),
                true,
                t,
            ));
        }
        assert_eq!(pairing.packets.len(), MAX_PACKETS);
        let mut released = 0;
        for _ in 0..MAX_HELD_EVENTS + 3 {
            released += usize::from(pairing.hold(record()).is_some());
        }
        assert_eq!(released, 3);
        assert_eq!(pairing.drain().len(), MAX_HELD_EVENTS);
    }

    #[test]
    fn stale_bytes_past_the_ip_length_are_not_captured() {
        // SAFETY: all-zero is a valid PacketRecord.
        let mut raw: PacketRecord = unsafe { std::mem::zeroed() };
        raw.data.fill(0xaa); // a previous, longer packet
        let p = rst(
            "10.0.0.1:80".parse().unwrap(),
            "10.0.0.2:4000".parse().unwrap(),
            true,
            SystemTime::UNIX_EPOCH,
        );
        raw.data[..40].copy_from_slice(&p.bytes);
        raw.caplen = raw.data.len() as u16;
        raw.len = 40;
        let w = WirePacket::new(&raw, |_| SystemTime::UNIX_EPOCH);
        assert_eq!(w.bytes, p.bytes);
        // Not an IP header at all: nothing is captured.
        raw.data[0] = 0x00;
        assert!(
            WirePacket::new(&raw, |_| SystemTime::UNIX_EPOCH)
                .bytes
                .is_empty()
        );
        // An IPv4 header whose total length is shorter than the header.
        raw.data[0] = 0x45;
        raw.data[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert!(
            WirePacket::new(&raw, |_| SystemTime::UNIX_EPOCH)
                .bytes
                .is_empty()
        );
    }
}
