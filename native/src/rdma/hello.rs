//! The hello: the private data of rdma_cm connect requests and replies (and of
//! the rejection that sends a ring request to the two-sided path), in which
//! the two ends agree on the data path and exchange what it needs: a ring's
//! address, rkey and shape, or a receiver's slot grant. It is read from a
//! possibly Byzantine peer: `decode` checks what it can and the data paths
//! check the rest before they use it.

use crate::error::{Error, Result};

/// What a connection's data path is, announced in its hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathKind {
    /// Two-sided SEND/RECV of whole messages (`Connection`).
    Messages = 1,
    /// One-sided RDMA WRITE into rings (`RdmaStream`).
    Rings = 2,
    /// A byte stream of two-sided SENDs (`SendStream`): no rkey changes hands.
    Sends = 3,
}

/// Where a peer may write: the ring (and credit slot) it was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct RingGrant {
    pub addr: u64,
    pub rkey: u32,
    pub capacity: u32,
    pub max_payload: u32,
    pub seed: u32,
    /// Receives posted for immediate-data notifications.
    pub recv_depth: u32,
}

/// What a receiver of two-sided sends offers its peer: its slot size and how
/// many slots the peer may fill with data and with credit updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct SlotGrant {
    pub slot_len: u32,
    pub data_credits: u16,
    pub control_credits: u16,
}

/// The private data of connect requests and replies (and of the rejection
/// that sends a ring request to the two-sided path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hello {
    pub kind: PathKind,
    /// For `Rings`.
    pub grant: RingGrant,
    /// For `Sends`.
    pub slots: SlotGrant,
}

impl Hello {
    pub(crate) fn rings(grant: RingGrant) -> Hello {
        Hello { kind: PathKind::Rings, grant, slots: SlotGrant::default() }
    }

    pub(crate) fn sends(slots: SlotGrant) -> Hello {
        Hello { kind: PathKind::Sends, grant: RingGrant::default(), slots }
    }

    const MAGIC: u32 = u32::from_le_bytes(*b"rnio");
    const VERSION: u8 = 2;
    /// Fits the 56 bytes a connect request carries over IB and RoCE.
    pub(crate) const LEN: usize = 44;

    pub(crate) fn encode(&self) -> [u8; Self::LEN] {
        let mut bytes = [0u8; Self::LEN];
        bytes[0..4].copy_from_slice(&Self::MAGIC.to_le_bytes());
        bytes[4] = Self::VERSION;
        bytes[5] = self.kind as u8;
        let g = &self.grant;
        bytes[8..16].copy_from_slice(&g.addr.to_le_bytes());
        for (i, field) in [g.rkey, g.capacity, g.max_payload, g.seed, g.recv_depth].iter().enumerate() {
            bytes[16 + i * 4..20 + i * 4].copy_from_slice(&field.to_le_bytes());
        }
        bytes[36..40].copy_from_slice(&self.slots.slot_len.to_le_bytes());
        bytes[40..42].copy_from_slice(&self.slots.data_credits.to_le_bytes());
        bytes[42..44].copy_from_slice(&self.slots.control_credits.to_le_bytes());
        bytes
    }

    /// Parses a peer's hello; the connection manager may pad it with zeros.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Hello> {
        let invalid = |why: &str| Error::InvalidArgument(format!("peer's hello: {why}"));
        if bytes.len() < Self::LEN {
            return Err(invalid(&format!("{} bytes, expected {}", bytes.len(), Self::LEN)));
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        if u32_at(0) != Self::MAGIC || bytes[4] != Self::VERSION {
            return Err(invalid("not an rdma-nio peer of this version"));
        }
        let kind = match bytes[5] {
            1 => PathKind::Messages,
            2 => PathKind::Rings,
            3 => PathKind::Sends,
            other => return Err(invalid(&format!("unknown data path {other}"))),
        };
        let grant = RingGrant {
            addr: u64::from_le_bytes(bytes[8..16].try_into().unwrap()),
            rkey: u32_at(16),
            capacity: u32_at(20),
            max_payload: u32_at(24),
            seed: u32_at(28),
            recv_depth: u32_at(32),
        };
        let u16_at = |at: usize| u16::from_le_bytes(bytes[at..at + 2].try_into().unwrap());
        let slots = SlotGrant { slot_len: u32_at(36), data_credits: u16_at(40), control_credits: u16_at(42) };
        Ok(Hello { kind, grant, slots })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hellos_round_trip_and_tolerate_padding() {
        let hello = Hello::rings(RingGrant {
            addr: 0x7f00_dead_beef,
            rkey: 0x1234,
            capacity: 1 << 20,
            max_payload: 65536,
            seed: 9,
            recv_depth: 64,
        });
        let mut padded = hello.encode().to_vec();
        padded.resize(56, 0);
        assert_eq!(Hello::decode(&padded).unwrap(), hello);
    }

    #[test]
    fn a_two_sided_hello_carries_its_slot_grant() {
        let hello = Hello::sends(SlotGrant { slot_len: 2048, data_credits: 4, control_credits: 3 });
        let decoded = Hello::decode(&hello.encode()).unwrap();
        assert_eq!(decoded, hello);
        assert_eq!(decoded.grant, RingGrant::default(), "a two-sided hello grants no ring");
    }

    #[test]
    fn foreign_or_short_hellos_are_refused() {
        assert!(Hello::decode(&[0; 10]).unwrap_err().to_string().contains("10 bytes"));
        assert!(Hello::decode(&[0; 56]).unwrap_err().to_string().contains("not an rdma-nio peer"));
        let mut bytes =
            Hello { kind: PathKind::Messages, grant: RingGrant::default(), slots: SlotGrant::default() }
                .encode();
        bytes[5] = 9;
        assert!(Hello::decode(&bytes).unwrap_err().to_string().contains("unknown data path 9"));
    }
}
