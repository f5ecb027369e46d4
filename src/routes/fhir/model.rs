//! The FHIR R5 data types granulo reads and writes, as serde structs: exactly the elements served,
//! nothing more (a full model crate would double the build for resources we never touch).
//!
//! Output structs skip empty elements, as FHIR requires (no `null`, no empty arrays). Input
//! structs deny unknown elements: an element granulo does not understand (a `modifierExtension`,
//! `doNotPerform`) must not be dropped silently from an order.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// granulo's canonical base for the extensions and code systems it defines (docs/fhir.md).
pub const CANONICAL: &str = "https://granulo.org/fhir";
pub const LOINC: &str = "http://loinc.org";
pub const UCUM: &str = "http://unitsofmeasure.org";
pub const ISBT_DIN: &str = "https://www.isbt128.org/uri/DonationIdentificationNumber";
pub const ISBT_ABO_RHD: &str = "https://www.isbt128.org/uri/ABORhD";
pub const ISBT_PRODUCT_CODE: &str = "https://www.isbt128.org/uri/ProductDescriptionCode";
pub const V2_0508: &str = "http://terminology.hl7.org/CodeSystem/v2-0508";

/// `{CANONICAL}/StructureDefinition/{name}`.
pub fn extension_url(name: &str) -> String {
    format!("{CANONICAL}/StructureDefinition/{name}")
}

/// `{CANONICAL}/CodeSystem/{name}`.
pub fn code_system(name: &str) -> String {
    format!("{CANONICAL}/CodeSystem/{name}")
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Identifier {
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl Identifier {
    pub fn new(system: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            use_: None,
            system: Some(system.into()),
            value: Some(value.into()),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Reference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<Identifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

impl Reference {
    /// `Type/id`.
    pub fn to(resource_type: &str, id: i64) -> Self {
        Self {
            reference: Some(format!("{resource_type}/{id}")),
            ..Self::default()
        }
    }

    pub fn display(text: impl Into<String>) -> Self {
        Self {
            display: Some(text.into()),
            ..Self::default()
        }
    }

    /// The id of a relative `Type/id` reference. An absolute URL is not read as one of ours: it
    /// may name a resource on another server.
    pub fn id_of(&self, resource_type: &str) -> Option<i64> {
        let r = self.reference.as_deref()?;
        let (ty, id) = r.split_once('/')?;
        if ty != resource_type {
            return None;
        }
        id.parse().ok().filter(|id| *id > 0)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Coding {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

impl Coding {
    pub fn new(system: impl Into<String>, code: impl Into<String>, display: impl Into<String>) -> Self {
        Self {
            system: Some(system.into()),
            version: None,
            code: Some(code.into()),
            display: Some(display.into()),
        }
    }

    pub fn is(&self, system: &str, code: &str) -> bool {
        self.system.as_deref() == Some(system) && self.code.as_deref() == Some(code)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CodeableConcept {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub coding: Vec<Coding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl CodeableConcept {
    pub fn coded(coding: Coding) -> Self {
        Self {
            text: coding.display.clone(),
            coding: vec![coding],
        }
    }

    pub fn text(text: impl Into<String>) -> Self {
        Self {
            coding: Vec::new(),
            text: Some(text.into()),
        }
    }

    /// The code of the first coding in `system`.
    pub fn code_in(&self, system: &str) -> Option<&str> {
        self.coding
            .iter()
            .find(|c| c.system.as_deref() == Some(system))
            .and_then(|c| c.code.as_deref())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CodeableReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concept: Option<CodeableConcept>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Quantity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl Quantity {
    /// A UCUM quantity.
    pub fn ucum(value: f64, code: &str, unit: &str) -> Self {
        Self {
            value: Some(value),
            comparator: None,
            unit: Some(unit.to_owned()),
            system: Some(UCUM.to_owned()),
            code: Some(code.to_owned()),
        }
    }

    /// The value, if the quantity is in UCUM `code` (or carries no system and code at all).
    pub fn value_in(&self, code: &str) -> Option<f64> {
        let ucum = self.system.as_deref().is_none_or(|s| s == UCUM) && self.code.as_deref().is_none_or(|c| c == code);
        if ucum && self.comparator.is_none() {
            self.value
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Range {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high: Option<Quantity>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Period {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Annotation {
    pub text: String,
}

/// An extension with the value types granulo uses. Unknown (non-modifier) extensions sent by a
/// client are read and ignored, as FHIR allows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Extension {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_boolean: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_integer: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_string: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_date_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_quantity: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_coding: Option<Coding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_codeable_concept: Option<CodeableConcept>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_period: Option<Period>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_reference: Option<Reference>,
}

impl Extension {
    /// An extension of granulo's (`name` under [`CANONICAL`]) with no value yet.
    pub fn ours(name: &str) -> Self {
        Self {
            url: extension_url(name),
            ..Self::default()
        }
    }
}

/// Every extension in `list` with granulo's `name`.
pub fn extensions<'a>(list: &'a [Extension], name: &str) -> impl Iterator<Item = &'a Extension> + 'a {
    let url = extension_url(name);
    list.iter().filter(move |e| e.url == url)
}

/// The one extension named `name`; more than one is a field error.
pub fn extension<'a>(list: &'a [Extension], name: &str) -> Result<Option<&'a Extension>, String> {
    let mut found = extensions(list, name);
    let first = found.next();
    if found.next().is_some() {
        return Err(format!("the extension {} appears more than once", extension_url(name)));
    }
    Ok(first)
}

/// How much of a group's RhD is known: the ISBT 128 Table 4 code depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RhdKnown {
    Typed(crate::domain::blood::Rhd),
    /// The RhD typings disagree, or the label does not say.
    NotSpecified,
    /// A pool of donations of mixed RhD.
    Pooled,
}

/// The ISBT 128 Table 4 coding (`https://www.isbt128.org/uri/ABORhD`, default-use column) of a
/// blood group, with how it reads.
pub fn abo_rhd_coding(abo: crate::domain::blood::Abo, rhd: RhdKnown) -> Coding {
    use crate::domain::isbt128;
    let (code, text) = match rhd {
        RhdKnown::Typed(r) => (
            isbt128::blood_group_code(abo, r),
            format!("{} RhD {}", abo.as_str(), r.as_str()),
        ),
        RhdKnown::NotSpecified => (
            isbt128::rhd_not_specified_code(abo),
            format!("{} (RhD not specified)", abo.as_str()),
        ),
        RhdKnown::Pooled => (isbt128::pooled_rhd_code(abo), format!("{}, pooled RhD", abo.as_str())),
    };
    Coding::new(ISBT_ABO_RHD, code, text)
}

/// Implements [`Resource`] for a struct with `id: String`, `meta: Option<Meta>` and the time
/// its record last changed in the field named.
macro_rules! resource {
    ($ty:ty, $name:expr, $updated:ident) => {
        impl $crate::routes::fhir::model::Resource for $ty {
            const TYPE: &'static str = $name;

            fn id(&self) -> String {
                self.id.clone()
            }

            fn meta_mut(&mut self) -> &mut Option<$crate::routes::fhir::model::Meta> {
                &mut self.meta
            }

            fn last_updated(&self) -> chrono::DateTime<chrono::Utc> {
                self.$updated
            }
        }
    };
}
pub(crate) use resource;

/// A resource granulo serves: its type, id, and the `meta` the server stamps.
pub trait Resource: Serialize {
    const TYPE: &'static str;
    /// The logical id (`[A-Za-z0-9-.]{1,64}`); searches page in its order.
    fn id(&self) -> String;
    fn meta_mut(&mut self) -> &mut Option<Meta>;
    /// When the record behind it last changed.
    fn last_updated(&self) -> DateTime<Utc>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_coded_in_isbt_128_table_4() {
        use crate::domain::blood::{Abo, Rhd};
        let c = abo_rhd_coding(Abo::A, RhdKnown::Typed(Rhd::Positive));
        assert_eq!(
            (c.code.as_deref(), c.display.as_deref()),
            (Some("62"), Some("A RhD positive"))
        );
        assert!(abo_rhd_coding(Abo::O, RhdKnown::Typed(Rhd::Negative)).is(ISBT_ABO_RHD, "95"));
        assert!(abo_rhd_coding(Abo::O, RhdKnown::NotSpecified).is(ISBT_ABO_RHD, "55"));
        assert!(abo_rhd_coding(Abo::A, RhdKnown::Pooled).is(ISBT_ABO_RHD, "A0"));
    }

    #[test]
    fn references_name_their_type_and_id() {
        let r = |s: &str| Reference {
            reference: Some(s.to_owned()),
            ..Reference::default()
        };
        assert_eq!(r("Patient/12").id_of("Patient"), Some(12));
        assert_eq!(r("https://x.org/fhir/R5/Patient/12").id_of("Patient"), None);
        assert_eq!(r("Patient/12/_history/3").id_of("Patient"), None);
        assert_eq!(r("Patient/12").id_of("Specimen"), None);
        assert_eq!(r("Patient/0").id_of("Patient"), None);
        assert_eq!(r("Patient/abc").id_of("Patient"), None);
        assert_eq!(r("#anc").id_of("Observation"), None);
        assert_eq!(Reference::default().id_of("Patient"), None);
    }

    #[test]
    fn quantities_read_only_in_their_unit() {
        assert_eq!(Quantity::ucum(70.0, "kg", "kg").value_in("kg"), Some(70.0));
        assert_eq!(Quantity::ucum(70.0, "[lb_av]", "lb").value_in("kg"), None);
        let bare = Quantity {
            value: Some(3.0),
            ..Quantity::default()
        };
        assert_eq!(bare.value_in("kg"), Some(3.0));
        let less = Quantity {
            comparator: Some("<".into()),
            ..Quantity::ucum(3.0, "kg", "kg")
        };
        assert_eq!(less.value_in("kg"), None);
    }
}
