//! Warnings about a capture: what could not be read or analyzed, said once with a count and the
//! first frame, and capped so a file broken everywhere cannot grow them without bound. The
//! capture layer makes them; the report carries them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, PartialEq, Deserialize)]
pub struct Warning {
    pub frame: Option<u64>,
    pub message: String,
}

/// Capture warnings, capped so a file that is broken everywhere cannot grow them without bound.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Warnings {
    items: Vec<Warning>,
    dropped: u64,
}

impl Warnings {
    const LIMIT: usize = 200;

    pub fn push(&mut self, frame: Option<u64>, message: String) {
        if self.items.len() < Self::LIMIT {
            self.items.push(Warning { frame, message });
        } else {
            self.dropped += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Warning> {
        self.items.iter()
    }

    pub fn into_vec(mut self) -> Vec<Warning> {
        if self.dropped > 0 {
            self.items.push(Warning {
                frame: None,
                message: format!("{} further warnings not shown", self.dropped),
            });
        }
        self.items
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn test_warnings_are_capped_with_a_count() {
        let mut w = Warnings::default();
        for i in 0..250 {
            w.push(Some(i), "x".into());
        }
        let v = w.into_vec();
        assert_eq!(v.len(), Warnings::LIMIT + 1);
        assert!(v.last().unwrap().message.starts_with("50 further"));
    }
}
