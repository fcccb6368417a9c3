//! A repeated event told by its first few frames and a count, in a few words of memory: a
//! half-open connection carries several, so they stay small when empty.

use crate::capture::Seen;

/// The first few frames of a repeated event; the count says how many there were in all.
/// Small when empty: a half-open connection carries several of these.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct FrameList {
    kept: Vec<u64>,
    pub count: u32,
    pub first: Option<Seen>,
    pub last: Option<Seen>,
}

impl FrameList {
    const KEPT: usize = 8;

    pub fn push(&mut self, at: Seen) {
        if self.kept.len() < Self::KEPT {
            self.kept.push(at.frame);
        }
        self.count = self.count.saturating_add(1);
        self.first.get_or_insert(at);
        self.last = Some(at);
    }

    /// The kept frames, plus the last one when it was not among them.
    pub fn frames(&self) -> Vec<u64> {
        let mut v = self.kept.clone();
        if let Some(last) = self.last
            && !v.contains(&last.frame)
        {
            v.push(last.frame);
        }
        v
    }
}
