//! Clinical rules as pure functions over plain data: no diesel, no actix. Thresholds come
//! from the policy table, never from literals here. (Filled in by the clinical issues:
//! blood groups and compatibility, ISBT 128, eligibility, stimulation windows, shelf life.)

pub mod agents;
pub mod alerts;
pub mod blood;
pub mod board;
pub mod compatibility;
pub mod course;
pub mod course_plan;
pub mod destinations;
pub mod eligibility;
pub mod group;
pub mod isbt128;
pub mod issue;
pub mod label_scan;
pub mod matching;
pub mod outcome;
pub mod policy;
pub mod rate;
pub mod recipient;
pub mod requests;
pub mod scheduling;
pub mod stimulation;
pub mod tasks;
pub mod units;
pub mod wall_clock;

/// A closed set of lower-case (or clinical) spellings, with `as_str`, `parse` and serde.
macro_rules! text_enum_impl {
    ($(#[doc = $doc:literal])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            /// Parses the stored / wire spelling exactly.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        // Written by hand: the derive does not see `rename = $text` through the macro and
        // would document the Rust variant names instead of the wire spellings.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                let doc: &[&str] = &[$($doc),*];
                let description = doc.iter().map(|line| line.trim()).collect::<Vec<_>>().join(" ");
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($text),+]))
                    .description((!description.is_empty()).then_some(description))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

pub(crate) use text_enum_impl as text_enum;
