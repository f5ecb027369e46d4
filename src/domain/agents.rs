//! Names of stimulation agents, compared as people write them, and what the policy says of them.
//! Below both eligibility and stimulation, which each need them.

use crate::domain::policy::Policy;

/// Whether two agent names mean the same agent: letters and digits compared without case, so
/// a checklist entry written `G-CSF` matches the recorded agent `gcsf`.
pub fn same_agent(a: &str, b: &str) -> bool {
    let key = |s: &str| {
        s.chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect::<String>()
    };
    let (a, b) = (key(a), key(b));
    !a.is_empty() && a == b
}

/// Whether `agent` is a corticosteroid (`stimulation.corticosteroid_agents`).
pub fn is_corticosteroid(agent: &str, policy: &Policy) -> bool {
    policy
        .stimulation
        .corticosteroid_agents
        .iter()
        .any(|s| same_agent(s, agent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names_match_on_letters_and_digits() {
        let cases = [
            ("gcsf", "G-CSF", true),
            ("gcsf", " g_csf ", true),
            ("dexamethasone", "Dexamethasone", true),
            ("gcsf", "gmcsf", false),
            ("hes_6", "hes6", true),
            ("hes_6", "hes_60", false),
            ("", "", false),
            ("-", "_", false),
        ];
        for (a, b, same) in cases {
            assert_eq!(same_agent(a, b), same, "{a:?} {b:?}");
            assert_eq!(same_agent(b, a), same, "{b:?} {a:?}");
        }
    }

    #[test]
    fn corticosteroids_come_from_the_policy() {
        let mut p = Policy::default();
        assert!(is_corticosteroid("dexamethasone", &p));
        assert!(is_corticosteroid("prednisone", &p));
        assert!(!is_corticosteroid("gcsf", &p));
        p.stimulation.corticosteroid_agents = vec!["prednisone".into()];
        assert!(!is_corticosteroid("dexamethasone", &p));
    }
}
