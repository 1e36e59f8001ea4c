//! Which objects one `verify` run reads and hashes. Pure: the candidates, what earlier runs
//! verified (object → the run that last read it good), and the run number are passed in.
//!
//! Rules, in order:
//! 1. every object no run has verified yet (new blocks, WAL, dumps; and objects found bad
//!    before, which are never recorded as verified), in key order;
//! 2. then a slice of the verified ones, stalest first (lowest last-verified run, then key).
//!    With M verified objects and rotation N, run r takes
//!    `⌊(k+1)·M/N⌋ − ⌊k·M/N⌋` of them, `k = (r − 1) mod N`: any N consecutive runs take M in
//!    all, and stalest-first makes those M distinct, so N runs read every object exactly once
//!    while the repository does not change. At least every object last verified N or more
//!    runs ago is taken, so growth cannot push one out of the rotation;
//! 3. `max_bytes` (stored bytes) bounds the run: an object that does not fit is deferred and
//!    the next ones are still tried; deferred objects stay first in line for the next run.
//!
//! `full` takes every candidate and ignores the budget.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleRequest {
    /// This run's number (1 for the first).
    pub run: u64,
    pub rotation: u32,
    pub max_bytes: Option<u64>,
    pub full: bool,
}

/// One object that could be read: its key and stored bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer<'a> {
    pub key: &'a str,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    /// Indexes into the offers, in reading order.
    pub chosen: Vec<usize>,
    /// Of the chosen, how many no run had verified.
    pub new_objects: u64,
    /// Objects that were due but did not fit `max_bytes`.
    pub deferred: u64,
}

pub fn choose(
    offers: &[Offer<'_>],
    verified: &BTreeMap<String, u64>,
    req: SampleRequest,
) -> Sample {
    if req.full {
        let new_objects = offers
            .iter()
            .filter(|o| !verified.contains_key(o.key))
            .count() as u64;
        return Sample {
            chosen: (0..offers.len()).collect(),
            new_objects,
            deferred: 0,
        };
    }
    let mut new: Vec<usize> = Vec::new();
    let mut old: Vec<(u64, usize)> = Vec::new();
    for (i, o) in offers.iter().enumerate() {
        match verified.get(o.key) {
            Some(&run) => old.push((run, i)),
            None => new.push(i),
        }
    }
    new.sort_by_key(|&i| offers[i].key);
    old.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| offers[a.1].key.cmp(offers[b.1].key))
    });
    let n = u64::from(req.rotation.max(1));
    let m = old.len() as u64;
    let k = req.run.saturating_sub(1) % n;
    let slice = ((k + 1) * m / n - k * m / n) as usize;
    let overdue = old
        .iter()
        .filter(|(last, _)| last.saturating_add(n) <= req.run)
        .count();
    let take = slice.max(overdue).min(old.len());
    let due = new
        .iter()
        .copied()
        .map(|i| (i, true))
        .chain(old[..take].iter().map(|&(_, i)| (i, false)));

    let mut sample = Sample::default();
    let mut spent = 0u64;
    for (i, is_new) in due {
        let bytes = offers[i].bytes;
        if let Some(max) = req.max_bytes
            && spent.saturating_add(bytes) > max
        {
            sample.deferred += 1;
            continue;
        }
        spent += bytes;
        sample.chosen.push(i);
        sample.new_objects += u64::from(is_new);
    }
    sample
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offers(keys: &[String]) -> Vec<Offer<'_>> {
        keys.iter().map(|k| Offer { key: k, bytes: 10 }).collect()
    }

    fn req(run: u64) -> SampleRequest {
        SampleRequest {
            run,
            rotation: 7,
            max_bytes: None,
            full: false,
        }
    }

    /// Records the chosen objects as verified in `run`, as a run that found them good does.
    fn record(verified: &mut BTreeMap<String, u64>, o: &[Offer<'_>], s: &Sample, run: u64) {
        for &i in &s.chosen {
            verified.insert(o[i].key.to_string(), run);
        }
    }

    #[test]
    fn new_objects_first_then_a_rotating_slice_that_covers_everything_in_n_runs() {
        for total in [1usize, 6, 7, 10, 23, 100] {
            let keys: Vec<String> = (0..total).map(|i| format!("k{i:03}")).collect();
            let o = offers(&keys);
            for start in [2u64, 5] {
                // The first run (whatever its number) reads every object: all are new.
                let mut v = BTreeMap::new();
                let first = choose(&o, &v, req(start - 1));
                assert_eq!(
                    first.chosen.len(),
                    total,
                    "the first run reads every new object"
                );
                assert_eq!(first.new_objects, total as u64);
                record(&mut v, &o, &first, start - 1);
                let mut reads = vec![0u32; total];
                for run in start..start + 7 {
                    let s = choose(&o, &v, req(run));
                    assert_eq!(s.new_objects, 0);
                    assert!(s.chosen.len() <= total.div_ceil(7), "an even slice: {s:?}");
                    for &i in &s.chosen {
                        reads[i] += 1;
                    }
                    record(&mut v, &o, &s, run);
                }
                assert!(
                    reads.iter().all(|&r| r == 1),
                    "{total} objects, runs {start}..{}: every object read exactly once: {reads:?}",
                    start + 7
                );
            }
        }
    }

    #[test]
    fn a_new_object_is_read_at_once_and_overdue_ones_are_never_left_behind() {
        let keys: Vec<String> = (0..14).map(|i| format!("k{i:02}")).collect();
        let o = offers(&keys);
        // Everything verified long ago except k05, which was never verified (or found bad).
        let mut verified: BTreeMap<String, u64> = keys.iter().map(|k| (k.clone(), 1)).collect();
        verified.remove("k05");
        let s = choose(&o, &verified, req(30));
        assert_eq!(s.chosen[0], 5, "the unverified object comes first");
        assert_eq!(s.new_objects, 1);
        assert_eq!(
            s.chosen.len(),
            14,
            "every verified object is overdue (run 1, rotation 7)"
        );
    }

    #[test]
    fn max_bytes_defers_what_does_not_fit_and_full_reads_everything() {
        let keys: Vec<String> = (0..5).map(|i| format!("k{i}")).collect();
        let mut o = offers(&keys);
        o[1].bytes = 100;
        let verified = BTreeMap::new();
        let s = choose(
            &o,
            &verified,
            SampleRequest {
                max_bytes: Some(35),
                ..req(1)
            },
        );
        assert_eq!(
            s.chosen,
            vec![0, 2, 3],
            "k1 does not fit; k4 would pass 35 bytes"
        );
        assert_eq!(s.deferred, 2);
        let full = choose(
            &o,
            &keys.iter().map(|k| (k.clone(), 1)).collect(),
            SampleRequest {
                full: true,
                max_bytes: Some(1),
                ..req(2)
            },
        );
        assert_eq!(full.chosen, vec![0, 1, 2, 3, 4]);
        assert_eq!((full.new_objects, full.deferred), (0, 0));
    }
}
