//! Stimulation of granulocyte donors (domain.md §2): the timing window of each agent relative
//! to the collection start, and contraindication warnings. A stimulation is a record of what
//! was given, so these rules warn and never refuse.

use super::text_enum;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::domain::agents::same_agent;
use crate::domain::eligibility::DonorFacts;
use crate::domain::policy::{HoursWindow, Policy};

/// Agents with a timing window in the policy table. Other agents (prednisone, …) are recorded
/// and counted in the donor's exposure but have no window to check.
pub const GCSF: &str = "gcsf";
pub const DEXAMETHASONE: &str = "dexamethasone";

pub mod codes {
    pub const STIMULATION_TOO_EARLY: &str = "stimulation_too_early";
    pub const STIMULATION_TOO_LATE: &str = "stimulation_too_late";
    pub const CONTRAINDICATED_AGENT: &str = "contraindicated_agent";
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub code: &'static str,
    pub message: String,
}

/// Lower-cases an agent name and checks it is an identifier (`gcsf`, `dexamethasone`,
/// `prednisone`, `hes_6`): 2–40 of a-z 0-9 `_`, starting with a letter.
pub fn normalize_agent(raw: &str) -> Option<String> {
    let agent = raw.trim().to_ascii_lowercase();
    let mut bytes = agent.bytes();
    let ok = (2..=40).contains(&agent.len())
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    ok.then_some(agent)
}

/// The agents a donor will be given for a collection whose plan is `planned` (its planned
/// agents and the agents already given for it): the programme's default agents
/// (`stimulation.default_agents`) plus those, each once, defaults first.
pub fn agents_to_check(planned: &[String], policy: &Policy) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for agent in policy.stimulation.default_agents.iter().chain(planned) {
        if !out.iter().any(|a| same_agent(a, agent)) {
            out.push(agent.clone());
        }
    }
    out
}

/// The policy window for `agent`, in hours before the collection start.
pub fn window_for(agent: &str, policy: &Policy) -> Option<HoursWindow> {
    match agent {
        GCSF => Some(policy.donor.gcsf_window_hours),
        DEXAMETHASONE => Some(policy.donor.dexamethasone_window_hours),
        _ => None,
    }
}

fn fmt_offset(d: TimeDelta) -> String {
    let minutes = d.num_minutes().abs();
    format!("{} h {} min", minutes / 60, minutes % 60)
}

/// Checks the time given against the agent's window; both ends are inclusive (exactly 12 h
/// and exactly 24 h before the start are inside the G-CSF window).
pub fn window_warning(
    agent: &str,
    administered_at: DateTime<Utc>,
    collection_start: DateTime<Utc>,
    policy: &Policy,
) -> Option<Warning> {
    let window = window_for(agent, policy)?;
    let before = collection_start.signed_duration_since(administered_at);
    let min = TimeDelta::hours(i64::from(window.min));
    let max = TimeDelta::hours(i64::from(window.max));
    let expected = format!(
        "{agent} is given {}–{} h before collection start",
        window.min, window.max
    );
    if before < min {
        let when = if before < TimeDelta::zero() {
            format!("{} after collection start", fmt_offset(before))
        } else {
            format!("{} before collection start", fmt_offset(before))
        };
        Some(Warning {
            code: codes::STIMULATION_TOO_LATE,
            message: format!("given {when}; {expected}"),
        })
    } else if before > max {
        Some(Warning {
            code: codes::STIMULATION_TOO_EARLY,
            message: format!("given {} before collection start; {expected}", fmt_offset(before)),
        })
    } else {
        None
    }
}

/// Warns when the donor is flagged on a policy contraindication for this agent.
pub fn contraindication_warnings(agent: &str, donor: &DonorFacts, policy: &Policy) -> Vec<Warning> {
    policy
        .donor
        .contraindications
        .iter()
        .filter(|c| same_agent(&c.agent, agent))
        .filter(|c| {
            donor
                .flagged_contraindications
                .iter()
                .any(|f| same_agent(&f.agent, &c.agent) && f.item.trim().eq_ignore_ascii_case(c.item.trim()))
        })
        .map(|c| Warning {
            code: codes::CONTRAINDICATED_AGENT,
            message: format!("donor is flagged on contraindication \"{}\" for {agent}", c.item),
        })
        .collect()
}

/// A dose still to give for a booked collection: its agent and the window in which to give it
/// (both ends inclusive, as [`window_warning`] reads them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DueDose {
    pub agent: String,
    pub opens: DateTime<Utc>,
    pub closes: DateTime<Utc>,
}

/// The doses due for a collection starting at `start`: each of `agents` (the collection's, from
/// [`agents_to_check`]) that has a policy window and was not given for it (`given`). Agents
/// without a window have no due time and are left out. Earliest closing first.
pub fn doses_due(agents: &[String], given: &[&str], start: DateTime<Utc>, policy: &Policy) -> Vec<DueDose> {
    let mut out: Vec<DueDose> = agents
        .iter()
        .filter(|a| !given.iter().any(|g| same_agent(g, a)))
        .filter_map(|a| {
            let window = window_for(a, policy)?;
            Some(DueDose {
                agent: a.clone(),
                opens: start - TimeDelta::hours(i64::from(window.max)),
                closes: start - TimeDelta::hours(i64::from(window.min)),
            })
        })
        .collect();
    out.sort_by(|x, y| x.closes.cmp(&y.closes).then_with(|| x.agent.cmp(&y.agent)));
    out
}

text_enum!(
    /// `ug` (fixed dose), `ug_per_kg`, or `mg`.
    DoseUnit {
        Ug => "ug",
        UgPerKg => "ug_per_kg",
        Mg => "mg",
    }
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::eligibility::ContraindicationFlag;
    use crate::domain::policy::Contraindication;
    use chrono::{NaiveDate, TimeZone};
    use proptest::prelude::*;

    fn start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, 8, 0, 0).single().expect("valid")
    }

    fn hm(h: i64, m: i64) -> TimeDelta {
        TimeDelta::hours(h) + TimeDelta::minutes(m)
    }

    #[test]
    fn windows_at_their_boundaries() {
        use codes::*;
        let p = Policy::default();
        // (agent, given this long before the start, expected warning)
        let cases: &[(&str, TimeDelta, Option<&str>)] = &[
            (GCSF, hm(14, 0), None),
            (GCSF, hm(12, 0), None),
            (GCSF, hm(11, 59), Some(STIMULATION_TOO_LATE)),
            (GCSF, hm(24, 0), None),
            (GCSF, hm(24, 1), Some(STIMULATION_TOO_EARLY)),
            (GCSF, hm(0, 0), Some(STIMULATION_TOO_LATE)),
            (GCSF, hm(-1, 0), Some(STIMULATION_TOO_LATE)),
            (GCSF, hm(72, 0), Some(STIMULATION_TOO_EARLY)),
            (DEXAMETHASONE, hm(12, 0), None),
            (DEXAMETHASONE, hm(10, 0), None),
            (DEXAMETHASONE, hm(9, 59), Some(STIMULATION_TOO_LATE)),
            (DEXAMETHASONE, hm(14, 0), None),
            (DEXAMETHASONE, hm(14, 1), Some(STIMULATION_TOO_EARLY)),
            ("prednisone", hm(40, 0), None),
            ("prednisone", hm(-3, 0), None),
        ];
        for (agent, before, expected) in cases {
            let got = window_warning(agent, start() - *before, start(), &p).map(|w| w.code);
            assert_eq!(got, *expected, "{agent} given {before} before");
        }
    }

    #[test]
    fn windows_follow_the_policy() {
        let mut p = Policy::default();
        p.donor.gcsf_window_hours = HoursWindow { min: 6, max: 8 };
        assert_eq!(window_warning(GCSF, start() - hm(7, 0), start(), &p), None);
        let w = window_warning(GCSF, start() - hm(9, 30), start(), &p).expect("warns");
        assert_eq!(w.code, codes::STIMULATION_TOO_EARLY);
        assert!(
            w.message.contains("9 h 30 min") && w.message.contains("6–8 h"),
            "{}",
            w.message
        );
        let late = window_warning(GCSF, start() + hm(0, 45), start(), &p).expect("warns");
        assert!(late.message.contains("0 h 45 min after"), "{}", late.message);
    }

    /// (agent, opens, closes), in hours before the start.
    type Due = (&'static str, i64, i64);

    #[test]
    fn doses_due_are_the_windows_of_agents_not_given() {
        let p = Policy::default();
        let agents = agents_to_check(&["prednisone".to_owned()], &p);
        let at = |h: i64| start() - TimeDelta::hours(h);
        // (given for the collection, expected (agent, opens, closes) earliest closing first)
        let cases: &[(&[&str], &[Due])] = &[
            (&[], &[(GCSF, 24, 12), (DEXAMETHASONE, 14, 10)]),
            (&["gcsf"], &[(DEXAMETHASONE, 14, 10)]),
            (&["G-CSF"], &[(DEXAMETHASONE, 14, 10)]),
            (&["dexamethasone", "gcsf"], &[]),
            (&["prednisone"], &[(GCSF, 24, 12), (DEXAMETHASONE, 14, 10)]),
        ];
        for (given, expected) in cases {
            let got: Vec<(String, DateTime<Utc>, DateTime<Utc>)> = doses_due(&agents, given, start(), &p)
                .into_iter()
                .map(|d| (d.agent, d.opens, d.closes))
                .collect();
            let want: Vec<(String, DateTime<Utc>, DateTime<Utc>)> = expected
                .iter()
                .map(|(a, o, c)| ((*a).to_owned(), at(*o), at(*c)))
                .collect();
            assert_eq!(got, want, "given {given:?}");
        }
        let mut narrow = Policy::default();
        narrow.donor.gcsf_window_hours = HoursWindow { min: 6, max: 8 };
        let due = doses_due(&[GCSF.to_owned()], &[], start(), &narrow);
        assert_eq!((due[0].opens, due[0].closes), (at(8), at(6)), "from the policy");
    }

    #[test]
    fn agents_are_identifiers() {
        assert_eq!(normalize_agent(" GCSF ").as_deref(), Some("gcsf"));
        assert_eq!(normalize_agent("hes_6").as_deref(), Some("hes_6"));
        for bad in ["", "g", "g-csf", "1gcsf", "dexa methasone", &"x".repeat(41)] {
            assert_eq!(normalize_agent(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn contraindications_warn_for_the_flagged_agent_only() {
        let mut p = Policy::default();
        p.donor.contraindications = vec![
            Contraindication {
                agent: "dexamethasone".into(),
                item: "diabetes".into(),
            },
            Contraindication {
                agent: "gcsf".into(),
                item: "sickle cell disease".into(),
            },
        ];
        let donor = DonorFacts {
            date_of_birth: NaiveDate::from_ymd_opt(1980, 1, 1).expect("date"),
            active: true,
            flagged_contraindications: vec![ContraindicationFlag {
                agent: "Dexamethasone".into(),
                item: "Diabetes".into(),
            }],
        };
        assert_eq!(contraindication_warnings(GCSF, &donor, &p), vec![]);
        let w = contraindication_warnings(DEXAMETHASONE, &donor, &p);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].code, codes::CONTRAINDICATED_AGENT);
        // A flag for an item the policy no longer lists does not warn.
        p.donor.contraindications.remove(0);
        assert_eq!(contraindication_warnings(DEXAMETHASONE, &donor, &p), vec![]);
    }

    #[test]
    fn agents_to_check_are_the_defaults_plus_the_plan() {
        let mut p = Policy::default();
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(agents_to_check(&[], &p), strings(&[GCSF, DEXAMETHASONE]));
        assert_eq!(
            agents_to_check(&strings(&["prednisone", "gcsf"]), &p),
            strings(&[GCSF, DEXAMETHASONE, "prednisone"])
        );
        p.stimulation.default_agents = vec![];
        assert_eq!(agents_to_check(&[], &p), Vec::<String>::new());
        assert_eq!(agents_to_check(&strings(&["gcsf"]), &p), strings(&["gcsf"]));
    }

    #[test]
    fn a_checklist_agent_written_with_punctuation_still_warns() {
        let mut p = Policy::default();
        p.donor.contraindications = vec![Contraindication {
            agent: "G-CSF".into(),
            item: "sickle cell disease".into(),
        }];
        let donor = DonorFacts {
            date_of_birth: NaiveDate::from_ymd_opt(1980, 1, 1).expect("date"),
            active: true,
            flagged_contraindications: vec![ContraindicationFlag {
                agent: "G-CSF".into(),
                item: "sickle cell disease".into(),
            }],
        };
        assert_eq!(contraindication_warnings(GCSF, &donor, &p).len(), 1);
    }

    proptest! {
        #[test]
        fn windows_agree_with_their_inclusive_bounds(
            agent in prop::sample::select(vec![GCSF, DEXAMETHASONE, "prednisone"]),
            (min, max) in (0u32..=72, 0u32..=72).prop_map(|(a, b)| (a.min(b), a.max(b))),
            before_minutes in prop_oneof![-3_000i64..6_000, (0i64..=72).prop_map(|h| h * 60)],
        ) {
            let mut p = Policy::default();
            p.donor.gcsf_window_hours = HoursWindow { min, max };
            p.donor.dexamethasone_window_hours = HoursWindow { min, max };
            let got = window_warning(agent, start() - TimeDelta::minutes(before_minutes), start(), &p);
            let expected = if agent == "prednisone" {
                None
            } else if before_minutes < i64::from(min) * 60 {
                Some(codes::STIMULATION_TOO_LATE)
            } else if before_minutes > i64::from(max) * 60 {
                Some(codes::STIMULATION_TOO_EARLY)
            } else {
                None
            };
            prop_assert_eq!(got.as_ref().map(|w| w.code), expected);
            if let Some(w) = got {
                prop_assert_eq!(w.message.contains("after collection start"), before_minutes < 0, "{}", w.message);
            }
        }

        #[test]
        fn agent_names_normalise_to_marker_shaped_identifiers(
            raw in prop_oneof![any::<String>(), "[ a-zA-Z0-9_-]{0,44}"],
        ) {
            let normalised = normalize_agent(&raw);
            let lower = raw.trim().to_ascii_lowercase();
            prop_assert_eq!(normalised.is_some(), crate::domain::policy::is_marker_name(&lower));
            if let Some(agent) = normalised {
                prop_assert_eq!(normalize_agent(&agent), Some(agent.clone()));
                prop_assert_eq!(agent, lower);
            }
        }
    }
}
