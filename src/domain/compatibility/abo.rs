//! ABO compatibility of the unit's red cells and plasma with the patient (domain.md §3).

use crate::domain::blood::Abo;

fn has_a(abo: Abo) -> bool {
    matches!(abo, Abo::A | Abo::Ab)
}

fn has_b(abo: Abo) -> bool {
    matches!(abo, Abo::B | Abo::Ab)
}

/// Major side: the unit's red cells against the patient's plasma. The unit may carry only ABO
/// antigens the patient has (O → O; A → A, O; B → B, O; AB → all).
pub fn red_cells_compatible(patient: Abo, unit: Abo) -> bool {
    (!has_a(unit) || has_a(patient)) && (!has_b(unit) || has_b(patient))
}

/// Minor side: the unit's plasma against the patient's red cells. The donor's plasma has
/// antibodies to the antigens the donor lacks, so the patient may carry only antigens the donor
/// has (AB plasma to all; A plasma to A, O; B plasma to B, O; O plasma to O only).
pub fn plasma_compatible(patient: Abo, unit: Abo) -> bool {
    red_cells_compatible(unit, patient)
}
