//! Account roles.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What an account may do. "Staff" means the first three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[clap(rename_all = "snake_case")]
pub enum Role {
    Admin,
    MedicalDirector,
    Technologist,
    Hospital,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::MedicalDirector, Role::Technologist, Role::Hospital];
    pub const STAFF: [Role; 3] = [Role::Admin, Role::MedicalDirector, Role::Technologist];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::MedicalDirector => "medical_director",
            Self::Technologist => "technologist",
            Self::Hospital => "hospital",
        }
    }

    pub fn is_staff(self) -> bool {
        !matches!(self, Self::Hospital)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown role {0:?}; expected admin, medical_director, technologist or hospital")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_role() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().expect("parses"), role);
            let json = serde_json::to_string(&role).expect("json");
            assert_eq!(json, format!("\"{}\"", role.as_str()));
        }
        assert!("Admin".parse::<Role>().is_err());
        assert!("".parse::<Role>().is_err());
    }

    #[test]
    fn the_policy_names_every_role() {
        let names: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names, crate::domain::policy::ROLE_NAMES);
    }

    #[test]
    fn staff_excludes_hospital() {
        assert_eq!(Role::ALL.iter().filter(|r| r.is_staff()).count(), 3);
        assert!(!Role::Hospital.is_staff());
    }
}
