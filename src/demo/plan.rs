//! The demo data set as tables: who, which group, how long each unit has left and what happens
//! to it. Times are relative (hours left at seeding, positions inside the policy's alert bands),
//! so the same tables make a living board whenever they are loaded and whatever the thresholds.

use crate::domain::blood::{Abo, Cmv, Rhd, Sex};
use crate::domain::requests::Priority;

pub struct HospitalPlan {
    pub code: &'static str,
    pub name: &'static str,
    /// The ward account's username (`<code>.ward` in lower case).
    pub ward: &'static str,
}

pub const HOSPITALS: &[HospitalPlan] = &[
    HospitalPlan {
        code: "STM",
        name: "St Mary's Hospital",
        ward: "stm.ward",
    },
    HospitalPlan {
        code: "RIN",
        name: "Royal Infirmary",
        ward: "rin.ward",
    },
    HospitalPlan {
        code: "NGH",
        name: "Northern General Hospital",
        ward: "ngh.ward",
    },
];

pub const DEVICES: &[&str] = &["Spectra Optia 1", "Spectra Optia 2", "Amicus 1"];

pub const GIVEN_FEMALE: &[&str] = &[
    "Ana", "Amara", "Chloé", "Fatima", "Grace", "Hannah", "Ingrid", "Leila", "Mei", "Nadia", "Olga", "Priya", "Rosa",
    "Siobhan", "Yasmin", "Zoë",
];
pub const GIVEN_MALE: &[&str] = &[
    "Ahmed", "Bartosz", "Carlos", "Daniel", "Emeka", "Felix", "Hiroshi", "Ivan", "Jonas", "Kwame", "Luca", "Mateo",
    "Omar", "Rahul", "Samuel", "Tomasz",
];
#[rustfmt::skip]
pub const FAMILY: &[&str] = &[
    "Adeyemi", "Bergström", "Carter", "Dubois", "Evans", "Fernández", "García", "Hughes", "Ivanova", "Jensen",
    "Kowalski", "Li", "Mensah", "Nowak", "O'Brien", "Patel", "Quinn", "Rossi", "Silva", "Tanaka", "Usman", "Walsh",
    "Yilmaz", "Zhang",
];

pub const HLA_A: &[&str] = &["A*01:01", "A*02:01", "A*03:01", "A*11:01", "A*24:02", "A*68:01"];
pub const HLA_B: &[&str] = &["B*07:02", "B*08:01", "B*15:01", "B*35:01", "B*44:02", "B*51:01"];
pub const HLA_C: &[&str] = &["C*03:04", "C*04:01", "C*05:01", "C*07:01", "C*07:02"];
pub const HLA_DRB1: &[&str] = &["DRB1*01:01", "DRB1*03:01", "DRB1*04:01", "DRB1*07:01", "DRB1*15:01"];

/// Donors besides those of the collections, with mixed histories.
pub const POOL_DONORS: usize = 28;

/// How long a unit has left when it is seeded.
#[derive(Debug, Clone, Copy)]
pub enum Left {
    /// Inside the alert band of the policy's `i`-th largest expiry threshold (within it, above
    /// the next one), at `frac` of the way up the band.
    Band(usize, f64),
    /// Above the largest threshold, at `frac` of the way to a fresh unit's shelf life.
    Beyond(f64),
}

#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// A unit bought in from the regional centre.
    Supplier(Abo, Rhd, Cmv),
    /// A unit of one of our own collections today; its donor has this group.
    Collection(Abo, Rhd, Cmv),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Testing {
    /// No marker result yet: quarantined awaiting release.
    Untested,
    /// Half the markers negative, the rest pending.
    Partial,
    /// Every required marker negative, released.
    Released,
    /// A marker reactive: held for good (the donor is deferred by the rule).
    Reactive,
}

/// What happens to a unit after it is tested. `&str`s name a request of [`REQUESTS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Stock,
    /// Crossmatched against the request's patient, left for staff to allocate.
    Crossmatched(&'static str),
    Allocated(&'static str),
    /// Released by a medical director before its results, for this request alone, and allocated.
    Emergency(&'static str),
    Issued(&'static str),
    /// Issued, then sent back from the ward: quarantined until inspected.
    Returned(&'static str),
    /// Issued and being transfused.
    Transfused(&'static str),
    /// A storage temperature outside the range quarantines it.
    Excursion,
    Discarded,
}

pub struct UnitPlan {
    pub left: Left,
    pub source: Source,
    pub irradiated: bool,
    pub testing: Testing,
    pub fate: Fate,
}

const fn unit(left: Left, source: Source, irradiated: bool, testing: Testing, fate: Fate) -> UnitPlan {
    UnitPlan {
        left,
        source,
        irradiated,
        testing,
        fate,
    }
}

use Abo::{A, Ab, B, O};
use Cmv::{Negative as CmvNeg, Positive as CmvPos};
use Fate::*;
use Left::{Band, Beyond};
use Priority::{Asap, Routine, Stat};
use Rhd::{Negative as Neg, Positive as Pos};
use Sex::{Female, Male};
use Source::{Collection, Supplier};
use Testing::*;
use Typing::{Confirmed, Discordant};

/// Units in the bank and beyond, first-expiring first; two more expire while the seed runs.
#[rustfmt::skip]
pub const UNITS: &[UnitPlan] = &[
    unit(Band(2, 0.6), Supplier(O, Pos, CmvNeg), true, Released, Stock),
    unit(Band(2, 0.85), Supplier(A, Pos, CmvPos), false, Untested, Stock),
    unit(Band(1, 0.4), Supplier(B, Pos, CmvNeg), true, Released, Stock),
    unit(Band(1, 0.8), Supplier(O, Pos, CmvPos), false, Released, Stock),
    unit(Band(0, 0.3), Collection(A, Pos, CmvNeg), true, Released, Allocated("stat-a")),
    unit(Band(0, 0.6), Supplier(O, Neg, CmvPos), true, Released, Crossmatched("stat-o")),
    unit(Band(0, 0.8), Supplier(A, Neg, CmvNeg), true, Released, Excursion),
    unit(Beyond(0.1), Collection(O, Pos, CmvNeg), true, Released, Crossmatched("stat-o")),
    unit(Beyond(0.2), Supplier(B, Pos, CmvPos), true, Released, Issued("asap-b")),
    unit(Beyond(0.3), Collection(A, Pos, CmvNeg), true, Released, Transfused("routine-a")),
    unit(Beyond(0.35), Supplier(O, Pos, CmvNeg), true, Released, Returned("asap-b")),
    unit(Beyond(0.4), Supplier(O, Pos, CmvNeg), true, Released, Stock),
    unit(Beyond(0.45), Collection(B, Neg, CmvNeg), false, Reactive, Stock),
    unit(Beyond(0.5), Supplier(Ab, Pos, CmvPos), false, Untested, Discarded),
    unit(Beyond(0.55), Supplier(O, Neg, CmvNeg), true, Released, Allocated("routine-o")),
    unit(Beyond(0.6), Supplier(A, Pos, CmvPos), true, Released, Stock),
    unit(Beyond(0.65), Collection(O, Pos, CmvNeg), true, Released, Stock),
    unit(Beyond(0.75), Collection(A, Pos, CmvPos), false, Partial, Stock),
    unit(Beyond(0.85), Collection(O, Neg, CmvNeg), true, Untested, Emergency("stat-child")),
    unit(Beyond(0.95), Collection(O, Pos, CmvNeg), false, Untested, Stock),
];

/// Supplier units collected a shelf life ago less these seconds: they expire while the rest is
/// seeded (one quarantined, one released), and the alert scan at the end finds them expired.
pub const EXPIRING_WHILE_SEEDED: &[(Abo, Rhd, bool)] = &[(A, Pos, false), (O, Pos, true)];
pub const EXPIRY_GRACE_SECS: i64 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Typing {
    /// Two samples drawn at different times typed the same as declared: confirmed.
    Confirmed,
    /// One sample typed differently from the declared group: discordant.
    Discordant(Abo, Rhd),
}

pub struct PatientPlan {
    pub key: &'static str,
    /// Index into [`HOSPITALS`].
    pub hospital: usize,
    pub mrn: &'static str,
    pub given: &'static str,
    pub family: &'static str,
    pub age: i32,
    pub sex: Sex,
    pub weight_kg: f64,
    pub abo: Abo,
    pub rhd: Rhd,
    pub cmv: Cmv,
    pub hla_antibodies: &'static [&'static str],
    pub typing: Typing,
}

#[expect(clippy::too_many_arguments)]
const fn patient(
    key: &'static str,
    hospital: usize,
    mrn: &'static str,
    (given, family): (&'static str, &'static str),
    (age, sex, weight_kg): (i32, Sex, f64),
    (abo, rhd, cmv): (Abo, Rhd, Cmv),
    hla_antibodies: &'static [&'static str],
    typing: Typing,
) -> PatientPlan {
    PatientPlan {
        key,
        hospital,
        mrn,
        given,
        family,
        age,
        sex,
        weight_kg,
        abo,
        rhd,
        cmv,
        hla_antibodies,
        typing,
    }
}

#[rustfmt::skip]
pub const PATIENTS: &[PatientPlan] = &[
    patient("p-a", 0, "STM-0048213", ("Martin", "Kovač"), (54, Male, 78.0), (A, Pos, CmvNeg), &[], Confirmed),
    patient("p-o", 0, "STM-0051977", ("Aisha", "Bello"), (31, Female, 62.0), (O, Neg, CmvNeg), &[], Confirmed),
    patient("p-child", 0, "STM-0060412", ("Leo", "Fischer"), (6, Male, 21.0), (O, Neg, CmvNeg), &[], Confirmed),
    patient("p-b", 1, "RIN-771204", ("George", "Okafor"), (67, Male, 84.0), (B, Pos, CmvPos), &[], Confirmed),
    patient("p-ab", 1, "RIN-772391", ("Helen", "Marsh"), (58, Female, 70.0), (Ab, Pos, CmvNeg), &["A2"], Confirmed),
    patient("p-bneg", 1, "RIN-775518", ("Irene", "Castillo"), (45, Female, 66.0), (B, Neg, CmvNeg), &[], Confirmed),
    patient("p-o-boy", 2, "NGH-30219", ("Tariq", "Hassan"), (12, Male, 41.0), (O, Pos, CmvNeg), &[], Confirmed),
    patient("p-aneg", 2, "NGH-30554", ("Sofia", "Lindqvist"), (34, Female, 59.0), (A, Neg, CmvNeg), &[], Confirmed),
    patient("p-disc", 2, "NGH-30871", ("Robert", "Nash"), (71, Male, 80.0), (A, Pos, CmvPos), &[], Discordant(B, Pos)),
];

pub struct RequestPlan {
    pub key: &'static str,
    pub patient: &'static str,
    pub priority: Priority,
    pub units: u32,
    /// `needed_by` relative to now (negative: it was needed earlier and is under way).
    pub needed_in_minutes: i64,
    pub anc_per_ul: u32,
    pub infection: &'static str,
    pub refractory_hours: u32,
    pub cmv_negative: bool,
}

const fn request(
    key: &'static str,
    patient: &'static str,
    priority: Priority,
    units: u32,
    needed_in_minutes: i64,
    (anc_per_ul, infection, refractory_hours): (u32, &'static str, u32),
    cmv_negative: bool,
) -> RequestPlan {
    RequestPlan {
        key,
        patient,
        priority,
        units,
        needed_in_minutes,
        anc_per_ul,
        infection,
        refractory_hours,
        cmv_negative,
    }
}

/// Open requests in every priority, and one outside the indication (pending approval).
#[rustfmt::skip]
pub const REQUESTS: &[RequestPlan] = &[
    request("stat-a", "p-a", Stat, 1, 60, (90, "Pseudomonas aeruginosa septicaemia", 72), false),
    request("stat-o", "p-o", Stat, 2, 120, (40, "invasive aspergillosis", 96), false),
    request("stat-child", "p-child", Stat, 1, 60, (30, "Klebsiella pneumoniae bacteraemia", 60), false),
    request("asap-b", "p-b", Asap, 3, 300, (150, "invasive candidiasis", 120), false),
    request("asap-ab", "p-ab", Asap, 2, 240, (200, "necrotising fasciitis", 72), false),
    request("routine-o", "p-o-boy", Routine, 3, 720, (110, "fungal pneumonia", 168), false),
    request("routine-a", "p-aneg", Routine, 4, -120, (60, "invasive mucormycosis", 144), true),
    request("routine-pending", "p-bneg", Routine, 2, 1440, (900, "perianal abscess", 24), false),
];
