//! The transfusion outcome from the absolute neutrophil counts (ANC) a hospital reports for an
//! allocation: which count is the pre-transfusion one and which the post-transfusion one.
//!
//! Pre: the latest count taken at or before the transfusion started. Post: the earliest count
//! taken after it ended (after it started when no end is recorded). A count taken while the
//! unit ran is neither. Two counts taken at the same moment: the one recorded later wins (a
//! laboratory's correction is sent as a new result). No time limit applies: the hospital names
//! the allocation a count belongs to.

use chrono::{DateTime, Utc};

use super::text_enum;

text_enum!(
    /// The status a laboratory gives a count (FHIR `Observation.status`): only results that
    /// stand are taken.
    AncStatus {
        Final => "final",
        Amended => "amended",
        Corrected => "corrected",
    }
);

/// One absolute neutrophil count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    /// Order of recording (a later id was recorded later).
    pub id: i64,
    pub anc_per_ul: i32,
    /// When the sample was taken.
    pub effective_at: DateTime<Utc>,
}

/// The counts either side of a transfusion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    pub pre: Option<Count>,
    pub post: Option<Count>,
}

impl Outcome {
    /// post − pre, when both are known.
    pub fn increment(&self) -> Option<i32> {
        self.pre
            .zip(self.post)
            .map(|(p, q)| q.anc_per_ul.saturating_sub(p.anc_per_ul))
    }
}

/// Picks the pre- and post-transfusion counts among `counts` (any order).
pub fn pre_and_post(started_at: DateTime<Utc>, ended_at: Option<DateTime<Utc>>, counts: &[Count]) -> Outcome {
    let after = ended_at.unwrap_or(started_at).max(started_at);
    let pre = counts
        .iter()
        .filter(|c| c.effective_at <= started_at)
        .max_by_key(|c| (c.effective_at, c.id))
        .copied();
    let post = counts
        .iter()
        .filter(|c| c.effective_at > after)
        // Earliest time; at the same time the later recording.
        .min_by_key(|c| (c.effective_at, std::cmp::Reverse(c.id)))
        .copied();
    Outcome { pre, post }
}

/// The counts an allocation shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shown {
    pub pre: Option<i32>,
    pub post: Option<i32>,
    /// post − pre.
    pub increment: Option<i32>,
}

/// The counts recorded with the transfusion itself keep priority (a recorded fact is never
/// replaced); a count not recorded there is taken from the reported ones.
pub fn shown(recorded_pre: Option<i32>, recorded_post: Option<i32>, reported: &Outcome) -> Shown {
    let pre = recorded_pre.or(reported.pre.map(|c| c.anc_per_ul));
    let post = recorded_post.or(reported.post.map(|c| c.anc_per_ul));
    Shown {
        pre,
        post,
        increment: pre.zip(post).map(|(p, q)| q.saturating_sub(p)),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T14:00:00Z")
            .expect("time")
            .with_timezone(&Utc)
            + TimeDelta::minutes(minutes)
    }

    fn c(id: i64, anc: i32, minutes: i64) -> Count {
        Count {
            id,
            anc_per_ul: anc,
            effective_at: t(minutes),
        }
    }

    #[test]
    fn picks_the_counts_either_side_of_the_transfusion() {
        // Start at 0, end at 60 unless `None`. (counts, end, pre id, post id)
        type Case = (&'static str, Vec<Count>, Option<i64>, Option<i64>, Option<i64>);
        let cases: &[Case] = &[
            ("none", vec![], Some(60), None, None),
            ("one before", vec![c(1, 80, -30)], Some(60), Some(1), None),
            (
                "exactly at the start is pre",
                vec![c(1, 80, 0)],
                Some(60),
                Some(1),
                None,
            ),
            (
                "latest before wins",
                vec![c(1, 80, -300), c(2, 90, -30)],
                Some(60),
                Some(2),
                None,
            ),
            (
                "order of input does not matter",
                vec![c(2, 90, -30), c(1, 80, -300)],
                Some(60),
                Some(2),
                None,
            ),
            (
                "during the transfusion is neither",
                vec![c(1, 500, 30)],
                Some(60),
                None,
                None,
            ),
            (
                "exactly at the end is neither",
                vec![c(1, 500, 60)],
                Some(60),
                None,
                None,
            ),
            (
                "just after the end is post",
                vec![c(1, 500, 61)],
                Some(60),
                None,
                Some(1),
            ),
            (
                "earliest after wins",
                vec![c(1, 900, 600), c(2, 500, 120)],
                Some(60),
                None,
                Some(2),
            ),
            (
                "no end: after the start is post",
                vec![c(1, 500, 30)],
                None,
                None,
                Some(1),
            ),
            (
                "no end: at the start is pre",
                vec![c(1, 80, 0), c(2, 500, 1)],
                None,
                Some(1),
                Some(2),
            ),
            (
                "same time before: the later recording",
                vec![c(1, 80, -30), c(2, 85, -30)],
                Some(60),
                Some(2),
                None,
            ),
            (
                "same time after: the later recording",
                vec![c(3, 950, 120), c(2, 900, 120)],
                Some(60),
                None,
                Some(3),
            ),
            (
                "both sides",
                vec![
                    c(1, 60, -600),
                    c(2, 80, -20),
                    c(3, 400, 30),
                    c(4, 950, 240),
                    c(5, 1200, 1440),
                ],
                Some(60),
                Some(2),
                Some(4),
            ),
        ];
        for (name, counts, end, pre, post) in cases {
            let o = pre_and_post(t(0), end.map(t), counts);
            assert_eq!(o.pre.map(|x| x.id), *pre, "{name}: pre");
            assert_eq!(o.post.map(|x| x.id), *post, "{name}: post");
        }
    }

    #[test]
    fn the_increment_needs_both_counts() {
        let both = pre_and_post(t(0), Some(t(60)), &[c(1, 80, -20), c(2, 950, 240)]);
        assert_eq!(both.increment(), Some(870));
        let falling = pre_and_post(t(0), Some(t(60)), &[c(1, 800, -20), c(2, 300, 240)]);
        assert_eq!(falling.increment(), Some(-500));
        assert_eq!(pre_and_post(t(0), None, &[c(1, 80, -20)]).increment(), None);
        assert_eq!(pre_and_post(t(0), None, &[c(1, 80, 20)]).increment(), None);
    }

    #[test]
    fn recorded_counts_keep_priority_over_reported_ones() {
        let reported = pre_and_post(t(0), Some(t(60)), &[c(1, 80, -20), c(2, 950, 240)]);
        let pre_only = pre_and_post(t(0), Some(t(60)), &[c(1, 80, -20)]);
        let none = Outcome::default();
        // (recorded pre, recorded post, reported, expected pre, post, increment)
        let cases = [
            (None, None, reported, Some(80), Some(950), Some(870)),
            (Some(100), Some(900), reported, Some(100), Some(900), Some(800)),
            (Some(100), None, reported, Some(100), Some(950), Some(850)),
            (None, Some(900), reported, Some(80), Some(900), Some(820)),
            (None, None, pre_only, Some(80), None, None),
            (Some(100), Some(900), none, Some(100), Some(900), Some(800)),
            (None, None, none, None, None, None),
        ];
        for (pre, post, reported, want_pre, want_post, want_inc) in cases {
            let s = shown(pre, post, &reported);
            assert_eq!(
                (s.pre, s.post, s.increment),
                (want_pre, want_post, want_inc),
                "{pre:?} {post:?} {reported:?}"
            );
        }
    }

    #[test]
    fn statuses_read_their_fhir_spelling() {
        for s in AncStatus::ALL {
            assert_eq!(AncStatus::parse(s.as_str()), Some(*s));
        }
        assert_eq!(AncStatus::parse("preliminary"), None);
        assert_eq!(AncStatus::parse("entered-in-error"), None);
    }
}
