//! How the composed archive's data is cut into parts: pure, from the pieces it is made
//! of (byte ranges of fragments, and a few bytes written here), so that every part but
//! the last has S3's 5 MiB at least and the fragment data goes server-side wherever a
//! range is big enough.

use crate::config::MIN_PART_SIZE;

/// One piece of the archive's data, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Bytes `start..end` of fragment `frag`.
    Range { frag: usize, start: u64, end: u64 },
    /// Bytes written by the compose step (a renamed entry's local header).
    Bytes(Vec<u8>),
}

/// What the compose step does, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// One part, copied by the service from bytes `start..end` of fragment `frag`.
    Copy { frag: usize, start: u64, end: u64 },
    /// Bytes `start..end` of fragment `frag`, downloaded into the part buffer.
    Fetch { frag: usize, start: u64, end: u64 },
    /// These bytes into the part buffer.
    Write(Vec<u8>),
    /// The part buffer's bytes (at least 5 MiB) become a part, before a copied one.
    Cut,
}

/// The size of the copied parts of `total` bytes of ranges: 64 MiB (few requests, each
/// well within one copy's time), more when nine tenths of the `max_parts` the upload may
/// have would not hold it all (the rest is for the fragments' ends, which make parts of
/// their own), in whole MiB, at most S3's 5 GiB.
pub fn copy_part_size(total: u64, max_parts: u32) -> u64 {
    const MIB: u64 = 1024 * 1024;
    let parts = (u64::from(max_parts) * 9 / 10).max(1);
    (total.div_ceil(parts).div_ceil(MIB) * MIB).clamp(64 * MIB, 5 * 1024 * MIB)
}

/// The actions for `pieces`. The part buffer cuts a part by itself whenever it holds
/// `buffer_part` bytes; `copy_part` is the size of copied parts (`None`: nothing is
/// copied, every byte goes through the buffer).
pub fn plan(pieces: Vec<Piece>, buffer_part: u64, copy_part: Option<u64>) -> Vec<Action> {
    let mut out = Vec::new();
    // Bytes in the buffer, not yet a part.
    let mut held = 0u64;
    let add = |held: &mut u64, n: u64| {
        *held = (*held + n) % buffer_part.max(1);
    };
    for piece in pieces {
        let (frag, mut start, end) = match piece {
            Piece::Bytes(b) => {
                add(&mut held, b.len() as u64);
                out.push(Action::Write(b));
                continue;
            }
            Piece::Range { frag, start, end } if start < end => (frag, start, end),
            Piece::Range { .. } => continue,
        };
        let Some(copy) = copy_part else {
            add(&mut held, end - start);
            out.push(Action::Fetch { frag, start, end });
            continue;
        };
        if held > 0 {
            // The buffer needs `need` more bytes to make a part: taken from this range
            // if what is left can still be copied, otherwise the whole range is taken.
            let need = MIN_PART_SIZE.saturating_sub(held);
            if end - start < need + MIN_PART_SIZE {
                add(&mut held, end - start);
                out.push(Action::Fetch { frag, start, end });
                continue;
            }
            if need > 0 {
                out.push(Action::Fetch {
                    frag,
                    start,
                    end: start + need,
                });
                add(&mut held, need);
                start += need;
            }
            if held > 0 {
                out.push(Action::Cut);
                held = 0;
            }
        }
        let len = end - start;
        if len < MIN_PART_SIZE {
            add(&mut held, len);
            out.push(Action::Fetch { frag, start, end });
            continue;
        }
        // Parts of `copy` bytes; a remainder under 5 MiB joins the part before it.
        let mut count = len.div_ceil(copy);
        if count > 1 && len - (count - 1) * copy < MIN_PART_SIZE {
            count -= 1;
        }
        for i in 0..count {
            let a = start + i * copy;
            let b = if i + 1 == count { end } else { a + copy };
            out.push(Action::Copy {
                frag,
                start: a,
                end: b,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn range(frag: usize, start: u64, end: u64) -> Piece {
        Piece::Range { frag, start, end }
    }

    /// Simulates the part buffer over `actions`: the parts, each (size, copied).
    fn parts(actions: &[Action], buffer_part: u64) -> Vec<(u64, bool)> {
        let mut out = Vec::new();
        let mut held = 0;
        let fill = |out: &mut Vec<(u64, bool)>, held: &mut u64, mut n: u64| {
            while *held + n >= buffer_part {
                n -= buffer_part - *held;
                out.push((buffer_part, false));
                *held = 0;
            }
            *held += n;
        };
        for a in actions {
            match a {
                Action::Copy { start, end, .. } => {
                    assert_eq!(held, 0, "a copy after bytes not yet a part");
                    out.push((end - start, true));
                }
                Action::Fetch { start, end, .. } => fill(&mut out, &mut held, end - start),
                Action::Write(b) => fill(&mut out, &mut held, b.len() as u64),
                Action::Cut => {
                    assert!(held >= MIN_PART_SIZE);
                    out.push((held, false));
                    held = 0;
                }
            }
        }
        if held > 0 {
            out.push((held, false));
        }
        out
    }

    /// Every byte exactly once, in order.
    fn covered(actions: &[Action]) -> Vec<(usize, u64, u64)> {
        let mut spans: Vec<(usize, u64, u64)> = Vec::new();
        for a in actions {
            if let Action::Copy { frag, start, end } | Action::Fetch { frag, start, end } = a {
                match spans.last_mut() {
                    Some(last) if last.0 == *frag && last.2 == *start => last.2 = *end,
                    _ => spans.push((*frag, *start, *end)),
                }
            }
        }
        spans
    }

    #[test]
    fn big_fragments_are_copied_in_big_parts() {
        let pieces = vec![range(0, 0, 300 * MIB), range(1, 0, 130 * MIB + 7)];
        let actions = plan(pieces, 5 * MIB, Some(64 * MIB));
        let p = parts(&actions, 5 * MIB);
        assert!(p.iter().all(|(_, copied)| *copied));
        // 300 = 4 × 64 + 44; 130 MiB + 7 = 64 + 66 MiB + 7 (the rest is over 5 MiB).
        assert_eq!(p.len(), 5 + 2);
        assert_eq!(
            covered(&actions),
            [(0, 0, 300 * MIB), (1, 0, 130 * MIB + 7)]
        );
    }

    #[test]
    fn a_small_remainder_joins_the_part_before() {
        let actions = plan(vec![range(0, 0, 128 * MIB + 1)], 5 * MIB, Some(64 * MIB));
        assert_eq!(
            parts(&actions, 5 * MIB),
            [(64 * MIB, true), (64 * MIB + 1, true)]
        );
    }

    #[test]
    fn small_fragments_and_headers_go_through_the_buffer() {
        let pieces = vec![
            range(0, 0, 3 * MIB),
            Piece::Bytes(vec![1; 100]),
            range(0, 3 * MIB, 3 * MIB + 10),
            range(1, 0, MIB),
            range(2, 0, 40 * MIB),
            range(3, 0, 2 * MIB),
        ];
        let actions = plan(pieces, 5 * MIB, Some(64 * MIB));
        let p = parts(&actions, 5 * MIB);
        // Every part but the last is at least 5 MiB, and most bytes are copied.
        for (size, _) in &p[..p.len() - 1] {
            assert!(*size >= MIN_PART_SIZE, "{p:?}");
        }
        let copied: u64 = p.iter().filter(|x| x.1).map(|x| x.0).sum();
        assert!(copied >= 34 * MIB, "{p:?}");
        assert_eq!(
            covered(&actions),
            [
                (0, 0, 3 * MIB + 10),
                (1, 0, MIB),
                (2, 0, 40 * MIB),
                (3, 0, 2 * MIB)
            ]
        );
        // A range too short to both fill the buffer and be copied is fetched whole.
        let actions = plan(
            vec![range(0, 0, MIB), range(1, 0, 8 * MIB)],
            5 * MIB,
            Some(64 * MIB),
        );
        assert!(!parts(&actions, 5 * MIB).iter().any(|x| x.1));
    }

    #[test]
    fn without_copies_every_part_has_the_buffer_size() {
        let pieces = vec![range(0, 0, 70 * MIB), range(1, 0, 3), range(2, 0, 12 * MIB)];
        let actions = plan(pieces, 8 * MIB, None);
        let p = parts(&actions, 8 * MIB);
        assert!(p[..p.len() - 1].iter().all(|x| *x == (8 * MIB, false)));
        assert_eq!(p.iter().map(|x| x.0).sum::<u64>(), 82 * MIB + 3);
    }

    #[test]
    fn copy_parts_grow_with_the_archive() {
        assert_eq!(copy_part_size(10 << 30, 10_000), 64 * MIB);
        let five_tb = 5_000_000_000_000u64;
        let p = copy_part_size(five_tb, 10_000);
        assert!(five_tb.div_ceil(p) <= 9_000 && p.is_multiple_of(MIB));
        // A service with fewer parts gets bigger copies, up to S3's largest part.
        let p = copy_part_size(five_tb, 2_000);
        assert!(five_tb.div_ceil(p) <= 1_800);
        assert_eq!(copy_part_size(u64::MAX / 2, 2), 5 * 1024 * MIB);
    }
}
