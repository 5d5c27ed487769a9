//! Ring-buffer records → validated ABI structs. Pure: fuzzed and unit-tested.

use std::fmt;

use rsttrace_ebpf::abi::{ABI_VERSION, EventHeader, PacketRecord, RstEvent, kind};

/// A record the kernel programs wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "decoded one at a time on the stack; boxing would allocate per event"
)]
pub(crate) enum Record {
    Rst(RstEvent),
    /// An RST segment's bytes (pcapng exports only).
    Packet(PacketRecord),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    TooShort {
        len: usize,
        need: usize,
    },
    Version {
        found: u16,
    },
    SizeMismatch {
        declared: u16,
        expected: usize,
        len: usize,
    },
    UnknownKind(u8),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooShort { len, need } => {
                write!(f, "record of {len} bytes is shorter than {need}")
            }
            DecodeError::Version { found } => write!(
                f,
                "record has ABI version {found}, this rsttrace understands {ABI_VERSION} \
                 (kernel object and binary are from different builds)"
            ),
            DecodeError::SizeMismatch {
                declared,
                expected,
                len,
            } => write!(
                f,
                "record declares {declared} bytes, its kind has {expected}, {len} were read"
            ),
            DecodeError::UnknownKind(k) => write!(f, "unknown record kind {k}"),
        }
    }
}

impl std::error::Error for DecodeError {}

pub(crate) fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let header: EventHeader = read_pod(bytes)?;
    if header.version != ABI_VERSION {
        return Err(DecodeError::Version {
            found: header.version,
        });
    }
    match header.kind {
        kind::RST => {
            check_size::<RstEvent>(&header, bytes)?;
            Ok(Record::Rst(read_pod(bytes)?))
        }
        kind::PACKET => {
            check_size::<PacketRecord>(&header, bytes)?;
            Ok(Record::Packet(read_pod(bytes)?))
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

fn check_size<T>(header: &EventHeader, bytes: &[u8]) -> Result<(), DecodeError> {
    let expected = size_of::<T>();
    // The ring buffer rounds records up to 8 bytes, so `len` may exceed `expected`.
    if header.size as usize != expected || bytes.len() < expected {
        return Err(DecodeError::SizeMismatch {
            declared: header.size,
            expected,
            len: bytes.len(),
        });
    }
    Ok(())
}

/// Marker for ABI structs made only of integers and byte arrays, for which
/// every bit pattern is a valid value.
trait Pod: Copy {}
impl Pod for EventHeader {}
impl Pod for RstEvent {}
impl Pod for PacketRecord {}

fn read_pod<T: Pod>(bytes: &[u8]) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::TooShort {
            len: bytes.len(),
            need,
        });
    }
    // SAFETY: length checked above; `T: Pod` accepts any bit pattern; the
    // read is unaligned because ring-buffer memory gives no alignment promise
    // to a copied slice.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// For tests: serialises an event as the kernel would.
#[cfg(test)]
pub(crate) fn encode(ev: &RstEvent) -> Vec<u8> {
    // SAFETY: RstEvent is repr(C) without implicit padding (size asserted in the ABI).
    let bytes = unsafe {
        std::slice::from_raw_parts((ev as *const RstEvent).cast::<u8>(), size_of::<RstEvent>())
    };
    bytes.to_vec()
}

/// For tests: a zeroed RST event with a valid header to fill in.
#[cfg(test)]
pub(crate) fn blank_rst() -> RstEvent {
    // SAFETY: all-zero is a valid RstEvent (integers and arrays only).
    let mut ev: RstEvent = unsafe { std::mem::zeroed() };
    ev.header = EventHeader {
        version: ABI_VERSION,
        size: size_of::<RstEvent>() as u16,
        kind: kind::RST,
        _pad: [0; 3],
    };
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_an_rst() {
        let mut ev = blank_rst();
        ev.local_port = 8080;
        ev.reason = 11;
        let bytes = encode(&ev);
        assert_eq!(decode(&bytes), Ok(Record::Rst(ev)));
    }

    #[test]
    fn packets_decode_with_their_own_size() {
        // SAFETY: all-zero is a valid PacketRecord (integers and arrays only).
        let mut p: PacketRecord = unsafe { std::mem::zeroed() };
        p.header = EventHeader {
            version: ABI_VERSION,
            size: size_of::<PacketRecord>() as u16,
            kind: kind::PACKET,
            _pad: [0; 3],
        };
        p.caplen = 40;
        // SAFETY: repr(C) without implicit padding (size asserted in the ABI).
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&p as *const PacketRecord).cast::<u8>(),
                size_of::<PacketRecord>(),
            )
        };
        assert_eq!(decode(bytes), Ok(Record::Packet(p)));
        // A packet header on an RST-sized record is a lie.
        let mut lying = bytes.to_vec();
        lying[4] = kind::RST;
        assert!(decode(&lying).is_err());
    }

    #[test]
    fn accepts_ring_buffer_rounding() {
        let mut bytes = encode(&blank_rst());
        bytes.extend_from_slice(&[0; 8]);
        assert!(decode(&bytes).is_ok());
    }

    #[test]
    fn rejects_short_records() {
        let bytes = encode(&blank_rst());
        assert!(matches!(
            decode(&bytes[..4]),
            Err(DecodeError::TooShort { len: 4, .. })
        ));
        assert!(matches!(
            decode(&bytes[..100]),
            Err(DecodeError::SizeMismatch { len: 100, .. })
        ));
    }

    #[test]
    fn rejects_other_versions_and_kinds() {
        let mut ev = blank_rst();
        ev.header.version = ABI_VERSION + 1;
        assert_eq!(
            decode(&encode(&ev)),
            Err(DecodeError::Version {
                found: ABI_VERSION + 1
            })
        );
        let mut ev = blank_rst();
        ev.header.kind = 200;
        assert_eq!(decode(&encode(&ev)), Err(DecodeError::UnknownKind(200)));
    }

    #[test]
    fn rejects_a_lying_size() {
        let mut ev = blank_rst();
        ev.header.size = 8;
        assert!(matches!(
            decode(&encode(&ev)),
            Err(DecodeError::SizeMismatch { declared: 8, .. })
        ));
    }

    proptest::proptest! {
        /// The decoder takes bytes from the kernel and, through replay, from
        /// files: no input may panic it, and whatever it accepts re-encodes
        /// to the same bytes.
        #[test]
        fn fuzz_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            if let Ok(Record::Rst(ev)) = decode(&bytes) {
                proptest::prop_assert_eq!(&encode(&ev)[..], &bytes[..size_of::<RstEvent>()]);
            }
        }

        /// Valid headers with arbitrary bodies of the right size (and
        /// trailing bytes, as the ring buffer's 8-byte rounding leaves)
        /// always decode, and re-encode to the same bytes.
        #[test]
        fn fuzz_valid_header_random_body(
            body in proptest::collection::vec(proptest::num::u8::ANY, size_of::<RstEvent>() - 8..=size_of::<RstEvent>()),
            short in proptest::bool::ANY,
        ) {
            let mut bytes = encode(&blank_rst())[..8].to_vec();
            bytes.extend_from_slice(&body);
            if short {
                bytes.truncate(bytes.len() - 1);
            }
            match decode(&bytes) {
                Ok(Record::Rst(ev)) => {
                    proptest::prop_assert_eq!(&encode(&ev)[..], &bytes[..size_of::<RstEvent>()]);
                }
                other => proptest::prop_assert!(
                    bytes.len() < size_of::<RstEvent>(),
                    "{} bytes: {other:?}",
                    bytes.len()
                ),
            }
        }
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        // A cheap deterministic fuzz: every prefix of a valid record and
        // pseudo-random buffers of many lengths.
        let valid = encode(&blank_rst());
        for n in 0..valid.len() + 16 {
            let mut b = valid.clone();
            b.resize(n, 0xa5);
            let _ = decode(&b);
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..512 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode(&buf);
        }
    }
}
