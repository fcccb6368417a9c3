//! TCP sequence numbers: 32-bit and wrapping, compared by their signed distance (RFC 793 /
//! RFC 1982 serial number arithmetic). No bare `u32` arithmetic on sequence numbers elsewhere.

use std::cmp::Ordering;

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct SeqNumber(pub u32);

impl SeqNumber {
    pub fn plus(self, n: u32) -> SeqNumber {
        SeqNumber(self.0.wrapping_add(n))
    }

    /// Signed distance from `other` to `self`; meaningful while they are less than 2^31 apart.
    pub fn diff(self, other: SeqNumber) -> i64 {
        self.0.wrapping_sub(other.0) as i32 as i64
    }
}

impl PartialOrd for SeqNumber {
    fn partial_cmp(&self, other: &SeqNumber) -> Option<Ordering> {
        Some(self.diff(*other).cmp(&0))
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn test_wraparound_compares_by_distance() {
        let before_wrap = SeqNumber(u32::MAX - 10);
        let after_wrap = before_wrap.plus(20);
        assert_eq!(after_wrap, SeqNumber(9));
        assert!(after_wrap > before_wrap);
        assert_eq!(after_wrap.diff(before_wrap), 20);
        assert_eq!(before_wrap.diff(after_wrap), -20);
    }
}
