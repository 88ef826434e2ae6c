//! Near or far: how the GETs are spread over connections depends on the path to the
//! source, learnt from how soon its answers come.
//!
//! Over a long path each connection carries only so much, and every small object costs a
//! round trip, so many GETs in flight and big objects cut into ranges are what make a run
//! fast. Next to the server (the same machine or network) a single connection already
//! carries more than the archive can take, and every extra request is CPU spent on both
//! ends for nothing: there, fewer GETs and whole objects are faster.
//!
//! A run starts out assuming a far source and turns near once any GET's first byte came
//! sooner than [`NEAR_FIRST_BYTE_NS`]: no answer can come sooner than the round trip, so
//! one fast answer is proof enough, and a loaded server only makes answers slower (a far
//! source never looks near).

/// A first byte sooner than this means the source is near (a long path's round trip alone
/// is longer: 20 ms and more between regions, several ms within one).
pub const NEAR_FIRST_BYTE_NS: u64 = 3_000_000;
/// GETs in flight at most from a near source (unless CONCURRENCY is set).
pub const NEAR_CONCURRENCY: usize = 16;

/// What the run has learnt about the path to the source.
#[derive(Debug, Default)]
pub struct Link {
    fastest_ns: Option<u64>,
    near: bool,
}

impl Link {
    /// Notes one GET's time to its first byte; true when this one shows the link is near
    /// (once per run).
    pub fn note(&mut self, first_byte_ns: u64) -> bool {
        self.fastest_ns = Some(
            self.fastest_ns
                .map_or(first_byte_ns, |f| f.min(first_byte_ns)),
        );
        if self.near || first_byte_ns >= NEAR_FIRST_BYTE_NS {
            return false;
        }
        self.near = true;
        true
    }

    /// The fastest first byte seen, in milliseconds.
    pub fn fastest_ms(&self) -> Option<f64> {
        self.fastest_ns.map(|n| n as f64 / 1e6)
    }
}

/// GETs in flight: CONCURRENCY as set, or the default cut to [`NEAR_CONCURRENCY`] once the
/// link is near.
pub fn gets_in_flight(concurrency: usize, fixed: bool, near: bool) -> usize {
    if near && !fixed {
        concurrency.min(NEAR_CONCURRENCY)
    } else {
        concurrency
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_fast_answer_makes_the_link_near_once() {
        let mut link = Link::default();
        assert!(!link.note(40_000_000));
        assert!(!link.note(NEAR_FIRST_BYTE_NS));
        assert!(link.note(800_000));
        // Later answers, slow or fast, change nothing: it stays near.
        assert!(!link.note(500_000));
        assert!(!link.note(90_000_000));
        assert!(link.near);
        assert_eq!(link.fastest_ms(), Some(0.5));
    }

    #[test]
    fn a_set_concurrency_is_kept_on_a_near_link() {
        assert_eq!(gets_in_flight(32, false, false), 32);
        assert_eq!(gets_in_flight(32, false, true), NEAR_CONCURRENCY);
        assert_eq!(gets_in_flight(8, false, true), 8);
        assert_eq!(gets_in_flight(32, true, true), 32);
    }
}
