//! Facts about the recipient that are derived rather than typed in (domain.md §3): whether a
//! patient has childbearing potential.

use chrono::NaiveDate;

use crate::domain::blood::Sex;
use crate::domain::eligibility::age_on;
use crate::domain::policy::Policy;

/// The record's statement when it makes one; otherwise a female aged
/// `recipient.childbearing_age_min`..=`recipient.childbearing_age_max` whole years on `on`.
/// A patient of unknown sex is not presumed to have it (their RhD findings still need an
/// acknowledgement).
pub fn childbearing_potential(
    stated: Option<bool>,
    sex: Sex,
    date_of_birth: NaiveDate,
    on: NaiveDate,
    policy: &Policy,
) -> bool {
    if let Some(stated) = stated {
        return stated;
    }
    let age = i64::from(age_on(date_of_birth, on));
    let r = &policy.recipient;
    sex == Sex::Female && (i64::from(r.childbearing_age_min)..=i64::from(r.childbearing_age_max)).contains(&age)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("date")
    }

    #[test]
    fn derived_from_sex_and_age_at_the_policy_bounds_unless_stated() {
        let p = Policy::default();
        let on = date(2026, 11, 29);
        // (stated, sex, born, expected)
        let cases = [
            (None, Sex::Female, date(2014, 11, 30), false),
            (None, Sex::Female, date(2014, 11, 29), true),
            (None, Sex::Female, date(1971, 11, 30), true),
            (None, Sex::Female, date(1971, 11, 29), true),
            (None, Sex::Female, date(1970, 11, 29), false),
            (None, Sex::Male, date(1990, 1, 1), false),
            (None, Sex::Unknown, date(1990, 1, 1), false),
            (Some(false), Sex::Female, date(1990, 1, 1), false),
            (Some(true), Sex::Female, date(1950, 1, 1), true),
            (Some(true), Sex::Male, date(1990, 1, 1), true),
        ];
        for (stated, sex, born, expected) in cases {
            assert_eq!(
                childbearing_potential(stated, sex, born, on, &p),
                expected,
                "{stated:?} {sex} {born}"
            );
        }
        let mut narrow = Policy::default();
        narrow.recipient.childbearing_age_max = 45;
        assert!(!childbearing_potential(
            None,
            Sex::Female,
            date(1976, 1, 1),
            on,
            &narrow
        ));
    }
}
