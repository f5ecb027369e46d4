//! The configurable rule table (domain.md §7). A medical director owns these values; code reads
//! thresholds from here and never from literals. `Default` is the documented table;
//! `validate` reports every problem at once, keyed by the dotted JSON path.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub unit: UnitPolicy,
    pub donor: DonorPolicy,
    /// Added after the first release: a table without it takes the defaults.
    #[serde(default)]
    pub stimulation: StimulationPolicy,
    pub collection: CollectionPolicy,
    /// Added with the course planner: a table without it takes the defaults.
    #[serde(default)]
    pub device: DevicePolicy,
    pub compat: CompatPolicy,
    pub recipient: RecipientPolicy,
    pub request: RequestPolicy,
    pub alerts: AlertsPolicy,
    pub records: RecordsPolicy,
    #[serde(default)]
    pub tasks: TasksPolicy,
    #[serde(default)]
    pub security: SecurityPolicy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnitPolicy {
    pub max_shelf_life_hours: u32,
    pub pooled_expiry: PooledExpiry,
    pub storage_temp_min_c: f64,
    pub storage_temp_max_c: f64,
    pub irradiation_min_gy: f64,
    pub irradiation_max_gy: f64,
    /// Shelf life a unit must still have at the planned transfusion (`max(now, needed_by)`).
    pub min_remaining_hours_to_allocate: u32,
    /// Shelf life a unit must still have when it is issued.
    #[serde(default = "defaults::min_remaining_minutes_at_issue")]
    pub min_remaining_minutes_at_issue: u32,
    /// How long a returned unit may have been out of controlled storage and still go back to
    /// stock after inspection.
    #[serde(default = "defaults::max_minutes_out_of_storage")]
    pub max_minutes_out_of_storage: u32,
    /// Infectious-disease markers that must all be negative for a (non-emergency) release.
    pub required_markers: Vec<String>,
    /// Whether release to `available` also needs the irradiation recorded (issue always does).
    pub irradiation_before_release: bool,
    /// When the results still pending at an emergency release are expected, by default.
    #[serde(default = "defaults::marker_results_expected_hours")]
    pub marker_results_expected_hours: u32,
}

/// Expiry rule for pooled (buffy-coat) supplier units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PooledExpiry {
    MidnightDayAfterCollection,
    MaxShelfLife,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DonorPolicy {
    pub age_min: u32,
    pub age_max: u32,
    pub max_leukapheresis_per_12_months: u32,
    pub min_hours_between_leukapheresis: u32,
    pub max_procedures_per_7_days: u32,
    /// Weeks after a whole-blood donation (4 in the UK, 8 in the US), whether or not the
    /// donation record says red cells were returned.
    #[schema(minimum = 1)]
    pub weeks_after_whole_blood: u32,
    /// Weeks after an equivalent red-cell loss (at least `max_red_cell_loss_ml_per_8_weeks` mL)
    /// by any other procedure, a leukapheresis included. `null` (the default, and every table
    /// saved before this key existed): the same as `weeks_after_whole_blood`.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub weeks_after_red_cell_loss: Option<u32>,
    /// Weeks after a red-cell apheresis whose red cells were not returned.
    pub weeks_after_red_cell_loss_not_returned: u32,
    pub max_red_cell_loss_ml_per_8_weeks: u32,
    /// Hydroxyethyl starch a donor may have received in any 12 months (mL); reaching it makes
    /// the donor ineligible. The sources give no number: the medical director sets it.
    #[serde(default = "defaults::max_hes_ml_per_12_months")]
    #[schema(minimum = 1, maximum = 50000)]
    pub max_hes_ml_per_12_months: u32,
    /// Corticosteroid courses (see `stimulation.corticosteroid_agents`) a donor may have had in
    /// any 12 months; reaching it makes the donor ineligible (cataract risk rises with repeated
    /// courses). The sources give no number: the medical director sets it.
    #[serde(default = "defaults::max_steroid_courses_per_12_months")]
    #[schema(minimum = 1, maximum = 100)]
    pub max_steroid_courses_per_12_months: u32,
    pub gcsf_window_hours: HoursWindow,
    pub dexamethasone_window_hours: HoursWindow,
    pub contraindications: Vec<Contraindication>,
}

impl DonorPolicy {
    /// The interval after another procedure's equivalent red-cell loss, in weeks.
    pub fn red_cell_loss_weeks(&self) -> u32 {
        self.weeks_after_red_cell_loss.unwrap_or(self.weeks_after_whole_blood)
    }
}

/// The programme's stimulation regimen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StimulationPolicy {
    /// Agents a donor proposed or booked for a collection is given unless the collection plans
    /// otherwise; donor candidates and the alert scan check contraindications against them.
    /// Lower-case agent names as stimulations record them.
    #[serde(default = "defaults::default_agents")]
    pub default_agents: Vec<String>,
    /// Agents that are corticosteroids: each collection stimulated with one of them (or each
    /// such stimulation given without a collection) is one course.
    #[serde(default = "defaults::corticosteroid_agents")]
    pub corticosteroid_agents: Vec<String>,
}

impl Default for StimulationPolicy {
    fn default() -> Self {
        Self {
            default_agents: defaults::default_agents(),
            corticosteroid_agents: defaults::corticosteroid_agents(),
        }
    }
}

/// Hours before collection start within which a stimulation must be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoursWindow {
    pub min: u32,
    pub max: u32,
}

/// One checklist item that makes a flagged donor ineligible for `agent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Contraindication {
    pub agent: String,
    pub item: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CollectionPolicy {
    pub default_duration_minutes: u32,
}

/// Apheresis devices (the course planner offers slots only inside these hours).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevicePolicy {
    #[serde(default)]
    pub hours: DeviceHours,
}

/// When the apheresis unit is staffed, in the site's time zone (`GRANULO_TIMEZONE`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceHours {
    /// The earliest start of a collection, `HH:MM` local time.
    #[schema(example = "07:00")]
    pub opens: String,
    /// The time by which every collection has ended, `HH:MM` local time.
    #[schema(example = "17:00")]
    pub closes: String,
    /// The staffed days of the week: `mon` … `sun`.
    pub days: Vec<String>,
    /// Minutes between the start times offered on a device.
    #[schema(minimum = 5, maximum = 240)]
    pub slot_step_minutes: u32,
}

impl Default for DeviceHours {
    fn default() -> Self {
        Self {
            opens: "07:00".to_owned(),
            closes: "17:00".to_owned(),
            days: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
                .map(str::to_owned)
                .to_vec(),
            slot_step_minutes: 60,
        }
    }
}

/// The weekday names of `device.hours.days`, Monday first.
pub const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl DeviceHours {
    /// Opening and closing times, when both are `HH:MM` and the first is earlier.
    pub fn times(&self) -> Option<(chrono::NaiveTime, chrono::NaiveTime)> {
        let parse = |s: &str| chrono::NaiveTime::parse_from_str(s, "%H:%M").ok();
        let (o, c) = (parse(&self.opens)?, parse(&self.closes)?);
        (o < c).then_some((o, c))
    }

    /// Whether devices are staffed on `day`.
    pub fn staffed_on(&self, day: chrono::Weekday) -> bool {
        let name = WEEKDAYS[day.num_days_from_monday() as usize];
        self.days.iter().any(|d| d == name)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompatPolicy {
    pub sample_valid_hours: u32,
    pub rhd_mismatch: RhdMismatch,
    pub cmv_mismatch: CmvMismatch,
    pub minor_abo_check: bool,
    /// A patient whose CMV serostatus is unknown is treated as CMV-negative.
    #[serde(default = "defaults::yes")]
    pub cmv_unknown_as_negative: bool,
    /// Tier of `hla_untyped_locus` and `hla_antibody_unresolved`.
    #[serde(default = "defaults::authorise")]
    pub hla_untyped: AuthoriseOrBlock,
    /// Tier of `hna_antibodies`.
    #[serde(default = "defaults::authorise")]
    pub hna_antibodies: AuthoriseOrBlock,
}

/// Defaults of keys added after the first release, so that a client that writes the table it
/// read from an older release is not refused for a key it never saw.
mod defaults {
    pub fn min_remaining_minutes_at_issue() -> u32 {
        30
    }

    pub fn max_minutes_out_of_storage() -> u32 {
        30
    }

    pub fn yes() -> bool {
        true
    }

    pub fn authorise() -> super::AuthoriseOrBlock {
        super::AuthoriseOrBlock::Authorise
    }

    pub fn marker_results_expected_hours() -> u32 {
        24
    }

    pub fn childbearing_age_min() -> u32 {
        12
    }

    pub fn childbearing_age_max() -> u32 {
        55
    }

    pub fn anti_d_due_hours() -> u32 {
        72
    }

    pub fn look_forward_due_hours() -> u32 {
        72
    }

    /// 12 collections (the default yearly maximum) of about 500 mL of HES each.
    pub fn max_hes_ml_per_12_months() -> u32 {
        6000
    }

    /// One course per collection at the default yearly maximum of collections.
    pub fn max_steroid_courses_per_12_months() -> u32 {
        12
    }

    pub fn mfa_required_roles() -> Vec<String> {
        vec!["admin".to_owned(), "medical_director".to_owned()]
    }

    pub fn hospital_daily_request_cap() -> u32 {
        20
    }

    pub fn idempotency_key_hours() -> u32 {
        24
    }

    pub fn default_agents() -> Vec<String> {
        vec!["gcsf".to_owned(), "dexamethasone".to_owned()]
    }

    pub fn corticosteroid_agents() -> Vec<String> {
        [
            "dexamethasone",
            "prednisone",
            "prednisolone",
            "methylprednisolone",
            "hydrocortisone",
            "betamethasone",
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

/// The tier of `rhd_mismatch`. `acknowledge`: any staff member acknowledges it, except for a
/// female of childbearing potential, where it needs an authorisation. (`warn`, the spelling of
/// earlier releases, reads as `acknowledge`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RhdMismatch {
    #[serde(alias = "warn")]
    Acknowledge,
    Authorise,
    Block,
}

/// The tier of `cmv_mismatch` (`warn` of earlier releases reads as `authorise`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CmvMismatch {
    #[serde(alias = "warn")]
    Authorise,
    Acknowledge,
    Block,
    Off,
}

/// The tier of a finding a jurisdiction may make stricter: `authorise` or `block`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthoriseOrBlock {
    Authorise,
    Block,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientPolicy {
    pub anc_threshold_per_ul: u32,
    pub refractory_hours: u32,
    pub dose_target_per_kg: f64,
    /// Ages (whole years, inclusive) at which a female patient has childbearing potential unless
    /// her record says otherwise.
    #[serde(default = "defaults::childbearing_age_min")]
    pub childbearing_age_min: u32,
    #[serde(default = "defaults::childbearing_age_max")]
    pub childbearing_age_max: u32,
}

/// When follow-up tasks fall due.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TasksPolicy {
    /// Anti-D prophylaxis after an RhD-positive unit reaches an RhD-negative female of
    /// childbearing potential, from the start of the transfusion.
    #[serde(default = "defaults::anti_d_due_hours")]
    pub anti_d_due_hours: u32,
    /// Look-forward after a reactive result (US HIV look-back must start within 3 days).
    #[serde(default = "defaults::look_forward_due_hours")]
    pub look_forward_due_hours: u32,
}

/// Who must use a second factor, and how much one hospital account may write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecurityPolicy {
    /// Roles that must sign in with a second factor (TOTP): they can change policy and
    /// accounts, and release units in an emergency.
    #[serde(default = "defaults::mfa_required_roles")]
    pub mfa_required_roles: Vec<String>,
    /// Requests one hospital may place per day (the facility's calendar day).
    #[serde(default = "defaults::hospital_daily_request_cap")]
    pub hospital_daily_request_cap: u32,
    /// How long an `Idempotency-Key` and its first answer are kept, per caller.
    #[serde(default = "defaults::idempotency_key_hours")]
    pub idempotency_key_hours: u32,
}

impl Default for SecurityPolicy {
    fn default() -> Self {
        Self {
            mfa_required_roles: defaults::mfa_required_roles(),
            hospital_daily_request_cap: defaults::hospital_daily_request_cap(),
            idempotency_key_hours: defaults::idempotency_key_hours(),
        }
    }
}

/// The role names a policy may list (the account roles of `credentials::role`).
pub const ROLE_NAMES: [&str; 4] = ["admin", "medical_director", "technologist", "hospital"];

impl Default for TasksPolicy {
    fn default() -> Self {
        Self {
            anti_d_due_hours: defaults::anti_d_due_hours(),
            look_forward_due_hours: defaults::look_forward_due_hours(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestPolicy {
    pub approval: ApprovalPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalPolicy {
    OutsideIndication,
    Always,
    Never,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertsPolicy {
    pub expiry_thresholds_hours: Vec<u32>,
    /// Alert when an open request is due within this many hours and has nothing allocated.
    pub request_unallocated_hours: u32,
    /// Alert when an issued unit has no transfusion outcome this many hours after issue.
    pub outcome_missing_hours: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordsPolicy {
    pub retention_years: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            unit: UnitPolicy {
                max_shelf_life_hours: 24,
                pooled_expiry: PooledExpiry::MidnightDayAfterCollection,
                storage_temp_min_c: 20.0,
                storage_temp_max_c: 24.0,
                irradiation_min_gy: 25.0,
                irradiation_max_gy: 50.0,
                min_remaining_hours_to_allocate: 2,
                min_remaining_minutes_at_issue: defaults::min_remaining_minutes_at_issue(),
                max_minutes_out_of_storage: defaults::max_minutes_out_of_storage(),
                required_markers: [
                    "anti_hiv",
                    "hiv_nat",
                    "hbsag",
                    "hbv_nat",
                    "anti_hcv",
                    "hcv_nat",
                    "syphilis",
                    "anti_htlv",
                ]
                .map(str::to_owned)
                .to_vec(),
                irradiation_before_release: false,
                marker_results_expected_hours: defaults::marker_results_expected_hours(),
            },
            donor: DonorPolicy {
                age_min: 18,
                age_max: 75,
                max_leukapheresis_per_12_months: 12,
                min_hours_between_leukapheresis: 48,
                max_procedures_per_7_days: 2,
                weeks_after_whole_blood: 4,
                weeks_after_red_cell_loss: None,
                weeks_after_red_cell_loss_not_returned: 8,
                max_red_cell_loss_ml_per_8_weeks: 200,
                max_hes_ml_per_12_months: defaults::max_hes_ml_per_12_months(),
                max_steroid_courses_per_12_months: defaults::max_steroid_courses_per_12_months(),
                gcsf_window_hours: HoursWindow { min: 12, max: 24 },
                dexamethasone_window_hours: HoursWindow { min: 10, max: 14 },
                contraindications: Vec::new(),
            },
            stimulation: StimulationPolicy::default(),
            collection: CollectionPolicy {
                default_duration_minutes: 180,
            },
            device: DevicePolicy::default(),
            compat: CompatPolicy {
                sample_valid_hours: 72,
                rhd_mismatch: RhdMismatch::Acknowledge,
                cmv_mismatch: CmvMismatch::Authorise,
                minor_abo_check: false,
                cmv_unknown_as_negative: defaults::yes(),
                hla_untyped: defaults::authorise(),
                hna_antibodies: defaults::authorise(),
            },
            recipient: RecipientPolicy {
                anc_threshold_per_ul: 500,
                refractory_hours: 48,
                dose_target_per_kg: 6e8,
                childbearing_age_min: defaults::childbearing_age_min(),
                childbearing_age_max: defaults::childbearing_age_max(),
            },
            request: RequestPolicy {
                approval: ApprovalPolicy::OutsideIndication,
            },
            alerts: AlertsPolicy {
                expiry_thresholds_hours: vec![8, 4, 2],
                request_unallocated_hours: 6,
                outcome_missing_hours: 24,
            },
            records: RecordsPolicy { retention_years: 30 },
            tasks: TasksPolicy::default(),
            security: SecurityPolicy::default(),
        }
    }
}

/// One invalid setting; `key` is the dotted path (`donor.age_min`,
/// `alerts.expiry_thresholds_hours[1]`, `donor.contraindications[0].agent`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{key}: {message}")]
pub struct PolicyError {
    pub key: String,
    pub message: String,
}

// Sanity bounds on the table itself (not clinical thresholds).
const AGE_FLOOR: u32 = 16;
const AGE_CEILING: u32 = 100;
const SHELF_LIFE_HOURS: (u32, u32) = (1, 120);
const STORAGE_TEMP_C: (f64, f64) = (-10.0, 40.0);
const IRRADIATION_CEILING_GY: f64 = 150.0;
const STIMULATION_WINDOW_CEILING_HOURS: u32 = 72;
const EXPIRY_THRESHOLD_HOURS: (u32, u32) = (1, 72);
const SLOT_STEP_MINUTES: (u32, u32) = (5, 240);
const ALERT_DELAY_HOURS: (u32, u32) = (1, 168);
const COLLECTION_MINUTES_CEILING: u32 = 24 * 60;
const OUT_OF_STORAGE_MINUTES: (u32, u32) = (0, 24 * 60);
const FOLLOW_UP_HOURS: (u32, u32) = (1, 24 * 30);
const HES_ML_PER_12_MONTHS: (u32, u32) = (1, 50_000);
const STEROID_COURSES_PER_12_MONTHS: (u32, u32) = (1, 100);

/// Infectious-disease marker names: lower-case identifiers such as `anti_hiv` or `hcv_nat`.
pub fn is_marker_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    (2..=40).contains(&name.len())
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[derive(Default)]
struct Problems(Vec<PolicyError>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(PolicyError {
            key: key.into(),
            message: message.into(),
        });
    }

    fn positive(&mut self, key: &str, value: u32) {
        if value == 0 {
            self.add(key, "must be at least 1");
        }
    }

    fn int_range(&mut self, key: &str, value: u32, (lo, hi): (u32, u32)) {
        if !(lo..=hi).contains(&value) {
            self.add(key, format!("must be between {lo} and {hi}, got {value}"));
        }
    }

    fn float_range(&mut self, key: &str, value: f64, (lo, hi): (f64, f64)) {
        if !(value.is_finite() && (lo..=hi).contains(&value)) {
            self.add(key, format!("must be between {lo} and {hi}, got {value}"));
        }
    }

    /// Reports an inverted range on the lower key.
    fn ordered<T: PartialOrd + std::fmt::Display>(&mut self, min_key: &str, min: T, max_key: &str, max: T) {
        if min > max {
            self.add(min_key, format!("must not exceed {max_key} ({max}), got {min}"));
        }
    }

    /// Agent names as stimulations record them (`gcsf`, `dexamethasone`), each listed once.
    fn agents(&mut self, key: &str, agents: &[String]) {
        for (i, agent) in agents.iter().enumerate() {
            let item = format!("{key}[{i}]");
            if !is_marker_name(agent) {
                self.add(
                    &item,
                    "must be a lower-case agent name of 2–40 of a-z 0-9 _ (e.g. gcsf, dexamethasone)",
                );
            } else if agents[..i].contains(agent) {
                self.add(&item, format!("{agent} is listed twice"));
            }
        }
    }

    fn window(&mut self, key: &str, w: HoursWindow) {
        let ceiling = STIMULATION_WINDOW_CEILING_HOURS;
        let (min_key, max_key) = (format!("{key}.min"), format!("{key}.max"));
        self.int_range(&min_key, w.min, (0, ceiling));
        self.int_range(&max_key, w.max, (0, ceiling));
        self.ordered(&min_key, w.min, &max_key, w.max);
    }
}

impl Policy {
    /// Checks every setting; `Err` lists all problems found, in table order.
    pub fn validate(&self) -> Result<(), Vec<PolicyError>> {
        let mut p = Problems::default();

        let u = &self.unit;
        p.int_range("unit.max_shelf_life_hours", u.max_shelf_life_hours, SHELF_LIFE_HOURS);
        p.float_range("unit.storage_temp_min_c", u.storage_temp_min_c, STORAGE_TEMP_C);
        p.float_range("unit.storage_temp_max_c", u.storage_temp_max_c, STORAGE_TEMP_C);
        p.ordered(
            "unit.storage_temp_min_c",
            u.storage_temp_min_c,
            "unit.storage_temp_max_c",
            u.storage_temp_max_c,
        );
        if !(u.irradiation_min_gy.is_finite() && u.irradiation_min_gy > 0.0) {
            p.add(
                "unit.irradiation_min_gy",
                format!("must be above 0 Gy, got {}", u.irradiation_min_gy),
            );
        }
        p.float_range(
            "unit.irradiation_max_gy",
            u.irradiation_max_gy,
            (0.0, IRRADIATION_CEILING_GY),
        );
        p.ordered(
            "unit.irradiation_min_gy",
            u.irradiation_min_gy,
            "unit.irradiation_max_gy",
            u.irradiation_max_gy,
        );
        p.positive(
            "unit.min_remaining_hours_to_allocate",
            u.min_remaining_hours_to_allocate,
        );
        if u.min_remaining_hours_to_allocate > 0 && u.min_remaining_hours_to_allocate >= u.max_shelf_life_hours {
            p.add(
                "unit.min_remaining_hours_to_allocate",
                format!(
                    "must be below unit.max_shelf_life_hours ({}), got {}",
                    u.max_shelf_life_hours, u.min_remaining_hours_to_allocate
                ),
            );
        }

        p.positive("unit.min_remaining_minutes_at_issue", u.min_remaining_minutes_at_issue);
        if u.min_remaining_hours_to_allocate > 0
            && u64::from(u.min_remaining_minutes_at_issue) > 60 * u64::from(u.min_remaining_hours_to_allocate)
        {
            p.add(
                "unit.min_remaining_minutes_at_issue",
                format!(
                    "must not exceed unit.min_remaining_hours_to_allocate ({} h), got {} min",
                    u.min_remaining_hours_to_allocate, u.min_remaining_minutes_at_issue
                ),
            );
        }
        p.int_range(
            "unit.max_minutes_out_of_storage",
            u.max_minutes_out_of_storage,
            OUT_OF_STORAGE_MINUTES,
        );

        if u.required_markers.is_empty() {
            p.add("unit.required_markers", "must list at least one marker");
        }
        for (i, marker) in u.required_markers.iter().enumerate() {
            let key = format!("unit.required_markers[{i}]");
            if !is_marker_name(marker) {
                p.add(&key, "must be a marker name of 2–40 of a-z 0-9 _ (e.g. anti_hiv)");
            } else if u.required_markers[..i].contains(marker) {
                p.add(&key, format!("{marker} is listed twice"));
            }
        }

        let d = &self.donor;
        if d.age_min < AGE_FLOOR {
            p.add(
                "donor.age_min",
                format!("must be at least {AGE_FLOOR}, got {}", d.age_min),
            );
        }
        if d.age_max > AGE_CEILING {
            p.add(
                "donor.age_max",
                format!("must be at most {AGE_CEILING}, got {}", d.age_max),
            );
        }
        p.ordered("donor.age_min", d.age_min, "donor.age_max", d.age_max);
        p.positive(
            "donor.max_leukapheresis_per_12_months",
            d.max_leukapheresis_per_12_months,
        );
        p.positive(
            "donor.min_hours_between_leukapheresis",
            d.min_hours_between_leukapheresis,
        );
        p.positive("donor.max_procedures_per_7_days", d.max_procedures_per_7_days);
        p.positive("donor.weeks_after_whole_blood", d.weeks_after_whole_blood);
        if let Some(weeks) = d.weeks_after_red_cell_loss {
            p.positive("donor.weeks_after_red_cell_loss", weeks);
        }
        p.positive(
            "donor.weeks_after_red_cell_loss_not_returned",
            d.weeks_after_red_cell_loss_not_returned,
        );
        // Not returning red cells can only lengthen the interval after an equivalent loss
        // (whole blood has its own interval). Reported on the key that sets it.
        let loss_key = match d.weeks_after_red_cell_loss {
            Some(_) => "donor.weeks_after_red_cell_loss",
            None => "donor.weeks_after_whole_blood",
        };
        p.ordered(
            loss_key,
            d.red_cell_loss_weeks(),
            "donor.weeks_after_red_cell_loss_not_returned",
            d.weeks_after_red_cell_loss_not_returned,
        );
        p.positive(
            "donor.max_red_cell_loss_ml_per_8_weeks",
            d.max_red_cell_loss_ml_per_8_weeks,
        );
        p.int_range(
            "donor.max_hes_ml_per_12_months",
            d.max_hes_ml_per_12_months,
            HES_ML_PER_12_MONTHS,
        );
        p.int_range(
            "donor.max_steroid_courses_per_12_months",
            d.max_steroid_courses_per_12_months,
            STEROID_COURSES_PER_12_MONTHS,
        );
        p.window("donor.gcsf_window_hours", d.gcsf_window_hours);
        p.window("donor.dexamethasone_window_hours", d.dexamethasone_window_hours);
        for (i, c) in d.contraindications.iter().enumerate() {
            let key = format!("donor.contraindications[{i}]");
            if c.agent.trim().is_empty() {
                p.add(format!("{key}.agent"), "must not be blank");
            }
            if c.item.trim().is_empty() {
                p.add(format!("{key}.item"), "must not be blank");
            }
            let duplicate = d.contraindications[..i].iter().any(|e| {
                e.agent.trim().eq_ignore_ascii_case(c.agent.trim()) && e.item.trim().eq_ignore_ascii_case(c.item.trim())
            });
            if duplicate {
                p.add(key, format!("duplicate of an earlier entry ({} / {})", c.agent, c.item));
            }
        }

        let st = &self.stimulation;
        p.agents("stimulation.default_agents", &st.default_agents);
        if st.corticosteroid_agents.is_empty() {
            p.add("stimulation.corticosteroid_agents", "must list at least one agent");
        }
        p.agents("stimulation.corticosteroid_agents", &st.corticosteroid_agents);

        p.int_range(
            "collection.default_duration_minutes",
            self.collection.default_duration_minutes,
            (1, COLLECTION_MINUTES_CEILING),
        );

        let h = &self.device.hours;
        let time_ok = |s: &str| chrono::NaiveTime::parse_from_str(s, "%H:%M").is_ok();
        if !time_ok(&h.opens) {
            p.add("device.hours.opens", format!("must be HH:MM, got {:?}", h.opens));
        }
        if !time_ok(&h.closes) {
            p.add("device.hours.closes", format!("must be HH:MM, got {:?}", h.closes));
        }
        if time_ok(&h.opens) && time_ok(&h.closes) && h.times().is_none() {
            p.add("device.hours.closes", "must be later than device.hours.opens");
        }
        for (i, d) in h.days.iter().enumerate() {
            if !WEEKDAYS.contains(&d.as_str()) {
                p.add(
                    format!("device.hours.days[{i}]"),
                    "must be one of mon, tue, wed, thu, fri, sat, sun",
                );
            }
        }
        p.int_range("device.hours.slot_step_minutes", h.slot_step_minutes, SLOT_STEP_MINUTES);

        p.positive("compat.sample_valid_hours", self.compat.sample_valid_hours);

        let r = &self.recipient;
        p.positive("recipient.anc_threshold_per_ul", r.anc_threshold_per_ul);
        p.positive("recipient.refractory_hours", r.refractory_hours);
        if !(r.dose_target_per_kg.is_finite() && r.dose_target_per_kg > 0.0) {
            p.add(
                "recipient.dose_target_per_kg",
                format!("must be a positive number, got {}", r.dose_target_per_kg),
            );
        }

        let thresholds = &self.alerts.expiry_thresholds_hours;
        if thresholds.is_empty() {
            p.add("alerts.expiry_thresholds_hours", "must list at least one threshold");
        }
        for (i, &h) in thresholds.iter().enumerate() {
            let key = format!("alerts.expiry_thresholds_hours[{i}]");
            p.int_range(&key, h, EXPIRY_THRESHOLD_HOURS);
            if let Some(&prev) = i.checked_sub(1).and_then(|j| thresholds.get(j))
                && h >= prev
            {
                p.add(key, format!("must be below the previous threshold ({prev}), got {h}"));
            }
        }

        p.int_range(
            "alerts.request_unallocated_hours",
            self.alerts.request_unallocated_hours,
            ALERT_DELAY_HOURS,
        );
        p.int_range(
            "alerts.outcome_missing_hours",
            self.alerts.outcome_missing_hours,
            ALERT_DELAY_HOURS,
        );

        p.positive("records.retention_years", self.records.retention_years);

        p.int_range(
            "unit.marker_results_expected_hours",
            self.unit.marker_results_expected_hours,
            FOLLOW_UP_HOURS,
        );
        p.int_range(
            "recipient.childbearing_age_min",
            r.childbearing_age_min,
            (0, AGE_CEILING),
        );
        p.int_range(
            "recipient.childbearing_age_max",
            r.childbearing_age_max,
            (0, AGE_CEILING),
        );
        p.ordered(
            "recipient.childbearing_age_min",
            r.childbearing_age_min,
            "recipient.childbearing_age_max",
            r.childbearing_age_max,
        );
        p.int_range("tasks.anti_d_due_hours", self.tasks.anti_d_due_hours, FOLLOW_UP_HOURS);
        p.int_range(
            "tasks.look_forward_due_hours",
            self.tasks.look_forward_due_hours,
            FOLLOW_UP_HOURS,
        );
        let sec = &self.security;
        for (i, role) in sec.mfa_required_roles.iter().enumerate() {
            if !ROLE_NAMES.contains(&role.as_str()) {
                p.add(
                    format!("security.mfa_required_roles[{i}]"),
                    format!("must be one of {}", ROLE_NAMES.join(", ")),
                );
            } else if sec.mfa_required_roles[..i].contains(role) {
                p.add(format!("security.mfa_required_roles[{i}]"), "is listed twice");
            }
        }
        p.int_range(
            "security.hospital_daily_request_cap",
            sec.hospital_daily_request_cap,
            (1, 10_000),
        );
        p.int_range(
            "security.idempotency_key_hours",
            sec.idempotency_key_hours,
            (1, 24 * 30),
        );

        if p.0.is_empty() { Ok(()) } else { Err(p.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn errors(policy: &Policy) -> Vec<PolicyError> {
        policy.validate().err().unwrap_or_default()
    }

    fn keys(policy: &Policy) -> Vec<String> {
        errors(policy).into_iter().map(|e| e.key).collect()
    }

    fn assert_only(policy: &Policy, key: &str) {
        assert_eq!(keys(policy), vec![key.to_owned()], "{:?}", errors(policy));
    }

    #[test]
    fn defaults_match_the_table_and_are_valid() {
        let p = Policy::default();
        assert_eq!(p.validate(), Ok(()));
        assert_eq!(p.unit.max_shelf_life_hours, 24);
        assert_eq!(p.unit.pooled_expiry, PooledExpiry::MidnightDayAfterCollection);
        assert_eq!((p.unit.storage_temp_min_c, p.unit.storage_temp_max_c), (20.0, 24.0));
        assert_eq!((p.unit.irradiation_min_gy, p.unit.irradiation_max_gy), (25.0, 50.0));
        assert_eq!(p.unit.min_remaining_hours_to_allocate, 2);
        assert_eq!(p.unit.min_remaining_minutes_at_issue, 30);
        assert_eq!(p.unit.max_minutes_out_of_storage, 30);
        assert!(p.compat.cmv_unknown_as_negative);
        assert_eq!((p.donor.age_min, p.donor.age_max), (18, 75));
        assert_eq!(p.donor.max_leukapheresis_per_12_months, 12);
        assert_eq!(p.donor.min_hours_between_leukapheresis, 48);
        assert_eq!(p.donor.max_procedures_per_7_days, 2);
        assert_eq!(p.donor.weeks_after_whole_blood, 4);
        assert_eq!(
            p.donor.weeks_after_red_cell_loss, None,
            "follows weeks_after_whole_blood"
        );
        assert_eq!(p.donor.red_cell_loss_weeks(), 4);
        assert_eq!(p.donor.weeks_after_red_cell_loss_not_returned, 8);
        assert_eq!(p.donor.max_red_cell_loss_ml_per_8_weeks, 200);
        assert_eq!(p.donor.max_hes_ml_per_12_months, 6000);
        assert_eq!(p.donor.max_steroid_courses_per_12_months, 12);
        assert_eq!(p.stimulation.default_agents, vec!["gcsf", "dexamethasone"]);
        assert!(
            p.stimulation
                .default_agents
                .iter()
                .all(|a| crate::domain::stimulation::window_for(a, &p).is_some()),
            "the default agents are the ones with a policy window"
        );
        assert!(
            p.stimulation
                .corticosteroid_agents
                .contains(&"dexamethasone".to_owned())
        );
        assert!(p.stimulation.corticosteroid_agents.contains(&"prednisone".to_owned()));
        assert!(!p.stimulation.corticosteroid_agents.contains(&"gcsf".to_owned()));
        assert_eq!(p.donor.gcsf_window_hours, HoursWindow { min: 12, max: 24 });
        assert_eq!(p.donor.dexamethasone_window_hours, HoursWindow { min: 10, max: 14 });
        assert!(p.donor.contraindications.is_empty());
        assert_eq!(p.collection.default_duration_minutes, 180);
        assert_eq!(p.compat.sample_valid_hours, 72);
        assert_eq!(p.compat.rhd_mismatch, RhdMismatch::Acknowledge);
        assert_eq!(p.compat.cmv_mismatch, CmvMismatch::Authorise);
        assert_eq!(p.compat.hla_untyped, AuthoriseOrBlock::Authorise);
        assert_eq!(p.compat.hna_antibodies, AuthoriseOrBlock::Authorise);
        assert!(!p.compat.minor_abo_check);
        assert_eq!(p.recipient.anc_threshold_per_ul, 500);
        assert_eq!(p.recipient.refractory_hours, 48);
        assert_eq!(p.recipient.dose_target_per_kg, 6e8);
        assert_eq!(p.request.approval, ApprovalPolicy::OutsideIndication);
        assert_eq!(p.alerts.expiry_thresholds_hours, vec![8, 4, 2]);
        assert_eq!(p.records.retention_years, 30);
        assert_eq!(p.unit.marker_results_expected_hours, 24);
        assert_eq!(
            (p.recipient.childbearing_age_min, p.recipient.childbearing_age_max),
            (12, 55)
        );
        assert_eq!((p.tasks.anti_d_due_hours, p.tasks.look_forward_due_hours), (72, 72));
    }

    #[test]
    fn each_violation_is_reported_under_its_key() {
        type Edit = fn(&mut Policy);
        let cases: Vec<(&str, Edit)> = vec![
            ("unit.max_shelf_life_hours", |p| p.unit.max_shelf_life_hours = 121),
            ("unit.storage_temp_min_c", |p| p.unit.storage_temp_min_c = -10.5),
            ("unit.storage_temp_max_c", |p| p.unit.storage_temp_max_c = 40.1),
            ("unit.storage_temp_min_c", |p| p.unit.storage_temp_min_c = 25.0),
            ("unit.storage_temp_max_c", |p| p.unit.storage_temp_max_c = f64::NAN),
            ("unit.irradiation_min_gy", |p| p.unit.irradiation_min_gy = 0.0),
            ("unit.irradiation_max_gy", |p| p.unit.irradiation_max_gy = 150.5),
            ("unit.irradiation_min_gy", |p| p.unit.irradiation_min_gy = 60.0),
            ("unit.min_remaining_hours_to_allocate", |p| {
                p.unit.min_remaining_hours_to_allocate = 0
            }),
            ("unit.min_remaining_hours_to_allocate", |p| {
                p.unit.min_remaining_hours_to_allocate = 24
            }),
            ("unit.min_remaining_minutes_at_issue", |p| {
                p.unit.min_remaining_minutes_at_issue = 0
            }),
            ("unit.min_remaining_minutes_at_issue", |p| {
                p.unit.min_remaining_minutes_at_issue = 121
            }),
            ("unit.max_minutes_out_of_storage", |p| {
                p.unit.max_minutes_out_of_storage = 1441
            }),
            ("unit.min_remaining_hours_to_allocate", |p| {
                p.unit.min_remaining_hours_to_allocate = u32::MAX
            }),
            ("unit.required_markers[1]", |p| {
                p.unit.required_markers = vec!["anti_hiv".into(), "Anti-HCV".into()]
            }),
            ("unit.required_markers[1]", |p| {
                p.unit.required_markers = vec!["hbsag".into(), "hbsag".into()]
            }),
            ("unit.required_markers", |p| p.unit.required_markers = vec![]),
            ("donor.age_min", |p| p.donor.age_min = 15),
            ("donor.age_max", |p| p.donor.age_max = 101),
            ("donor.age_min", |p| p.donor.age_min = 76),
            ("donor.max_leukapheresis_per_12_months", |p| {
                p.donor.max_leukapheresis_per_12_months = 0
            }),
            ("donor.min_hours_between_leukapheresis", |p| {
                p.donor.min_hours_between_leukapheresis = 0
            }),
            ("donor.max_procedures_per_7_days", |p| {
                p.donor.max_procedures_per_7_days = 0
            }),
            // While weeks_after_red_cell_loss is null, whole blood's interval is also the
            // equivalent loss's, which must not exceed the not-returned one.
            ("donor.weeks_after_whole_blood", |p| p.donor.weeks_after_whole_blood = 9),
            ("donor.weeks_after_whole_blood", |p| p.donor.weeks_after_whole_blood = 0),
            ("donor.weeks_after_red_cell_loss", |p| {
                p.donor.weeks_after_red_cell_loss = Some(0)
            }),
            ("donor.weeks_after_red_cell_loss", |p| {
                p.donor.weeks_after_red_cell_loss = Some(9)
            }),
            ("donor.max_hes_ml_per_12_months", |p| {
                p.donor.max_hes_ml_per_12_months = 0
            }),
            ("donor.max_hes_ml_per_12_months", |p| {
                p.donor.max_hes_ml_per_12_months = 50_001
            }),
            ("donor.max_steroid_courses_per_12_months", |p| {
                p.donor.max_steroid_courses_per_12_months = 0
            }),
            ("donor.max_steroid_courses_per_12_months", |p| {
                p.donor.max_steroid_courses_per_12_months = 101
            }),
            ("stimulation.default_agents[0]", |p| {
                p.stimulation.default_agents = vec!["G-CSF".into()]
            }),
            ("stimulation.default_agents[1]", |p| {
                p.stimulation.default_agents = vec!["gcsf".into(), "gcsf".into()]
            }),
            ("stimulation.corticosteroid_agents", |p| {
                p.stimulation.corticosteroid_agents = vec![]
            }),
            ("stimulation.corticosteroid_agents[0]", |p| {
                p.stimulation.corticosteroid_agents = vec![" dexamethasone".into()]
            }),
            ("donor.max_red_cell_loss_ml_per_8_weeks", |p| {
                p.donor.max_red_cell_loss_ml_per_8_weeks = 0
            }),
            ("donor.gcsf_window_hours.min", |p| p.donor.gcsf_window_hours.min = 25),
            ("donor.gcsf_window_hours.max", |p| {
                p.donor.gcsf_window_hours = HoursWindow { min: 12, max: 73 }
            }),
            ("donor.dexamethasone_window_hours.min", |p| {
                p.donor.dexamethasone_window_hours = HoursWindow { min: 15, max: 14 }
            }),
            ("donor.contraindications[0].agent", |p| {
                p.donor.contraindications = vec![Contraindication {
                    agent: " ".into(),
                    item: "diabetes".into(),
                }]
            }),
            ("donor.contraindications[0].item", |p| {
                p.donor.contraindications = vec![Contraindication {
                    agent: "dexamethasone".into(),
                    item: String::new(),
                }]
            }),
            ("donor.contraindications[1]", |p| {
                p.donor.contraindications = vec![
                    Contraindication {
                        agent: "G-CSF".into(),
                        item: "sickle cell disease".into(),
                    },
                    Contraindication {
                        agent: "g-csf".into(),
                        item: "Sickle cell disease ".into(),
                    },
                ]
            }),
            ("collection.default_duration_minutes", |p| {
                p.collection.default_duration_minutes = 0
            }),
            ("collection.default_duration_minutes", |p| {
                p.collection.default_duration_minutes = 1441
            }),
            ("compat.sample_valid_hours", |p| p.compat.sample_valid_hours = 0),
            ("recipient.anc_threshold_per_ul", |p| {
                p.recipient.anc_threshold_per_ul = 0
            }),
            ("recipient.refractory_hours", |p| p.recipient.refractory_hours = 0),
            ("recipient.dose_target_per_kg", |p| {
                p.recipient.dose_target_per_kg = -1.0
            }),
            ("recipient.dose_target_per_kg", |p| {
                p.recipient.dose_target_per_kg = f64::INFINITY
            }),
            ("alerts.request_unallocated_hours", |p| {
                p.alerts.request_unallocated_hours = 0
            }),
            ("alerts.outcome_missing_hours", |p| p.alerts.outcome_missing_hours = 169),
            ("alerts.expiry_thresholds_hours", |p| {
                p.alerts.expiry_thresholds_hours.clear()
            }),
            ("alerts.expiry_thresholds_hours[0]", |p| {
                p.alerts.expiry_thresholds_hours = vec![73, 4, 2]
            }),
            ("alerts.expiry_thresholds_hours[2]", |p| {
                p.alerts.expiry_thresholds_hours = vec![8, 4, 4]
            }),
            ("alerts.expiry_thresholds_hours[1]", |p| {
                p.alerts.expiry_thresholds_hours = vec![4, 8]
            }),
            ("records.retention_years", |p| p.records.retention_years = 0),
            ("recipient.childbearing_age_min", |p| {
                p.recipient.childbearing_age_min = 56
            }),
            ("recipient.childbearing_age_max", |p| {
                p.recipient.childbearing_age_max = 101
            }),
            ("tasks.anti_d_due_hours", |p| p.tasks.anti_d_due_hours = 0),
            ("tasks.look_forward_due_hours", |p| p.tasks.look_forward_due_hours = 721),
            ("security.mfa_required_roles[0]", |p| {
                p.security.mfa_required_roles = vec!["root".into()]
            }),
            ("security.mfa_required_roles[1]", |p| {
                p.security.mfa_required_roles = vec!["admin".into(), "admin".into()]
            }),
            ("security.hospital_daily_request_cap", |p| {
                p.security.hospital_daily_request_cap = 0
            }),
            ("security.idempotency_key_hours", |p| {
                p.security.idempotency_key_hours = 721
            }),
            ("unit.marker_results_expected_hours", |p| {
                p.unit.marker_results_expected_hours = 0
            }),
        ];
        for (key, edit) in cases {
            let mut p = Policy::default();
            edit(&mut p);
            assert_only(&p, key);
            assert!(errors(&p).iter().all(|e| !e.message.is_empty()));
        }
    }

    #[test]
    fn boundaries_of_the_sanity_ranges_are_accepted() {
        let mut p = Policy::default();
        p.unit.max_shelf_life_hours = 120;
        p.unit.storage_temp_min_c = -10.0;
        p.unit.storage_temp_max_c = 40.0;
        p.unit.irradiation_min_gy = 150.0;
        p.unit.irradiation_max_gy = 150.0;
        p.donor.age_min = 16;
        p.donor.age_max = 100;
        p.donor.weeks_after_whole_blood = 8;
        p.donor.max_hes_ml_per_12_months = 50_000;
        p.donor.max_steroid_courses_per_12_months = 100;
        p.stimulation.default_agents = vec![];
        p.donor.gcsf_window_hours = HoursWindow { min: 0, max: 72 };
        p.donor.dexamethasone_window_hours = HoursWindow { min: 12, max: 12 };
        p.collection.default_duration_minutes = 1440;
        p.alerts.expiry_thresholds_hours = vec![72, 1];
        p.records.retention_years = 1;
        assert_eq!(p.validate(), Ok(()));

        // Whole blood's own interval is free of the red-cell-loss ones once those are set.
        p.donor.weeks_after_whole_blood = 12;
        p.donor.weeks_after_red_cell_loss = Some(8);
        p.donor.max_hes_ml_per_12_months = 1;
        p.donor.max_steroid_courses_per_12_months = 1;
        assert_eq!(p.validate(), Ok(()));
        p.donor.weeks_after_red_cell_loss = None;
        assert_only(&p, "donor.weeks_after_whole_blood");
        p.donor.weeks_after_red_cell_loss = Some(1);
        assert_eq!(p.validate(), Ok(()));

        p.unit.max_shelf_life_hours = 1;
        p.unit.min_remaining_hours_to_allocate = 1;
        assert_only(&p, "unit.min_remaining_hours_to_allocate");
        p.unit.max_shelf_life_hours = 0;
        assert_eq!(
            keys(&p),
            vec!["unit.max_shelf_life_hours", "unit.min_remaining_hours_to_allocate"]
        );
    }

    #[test]
    fn every_violation_is_reported_together() {
        let mut p = Policy::default();
        p.unit.max_shelf_life_hours = 0;
        p.unit.min_remaining_hours_to_allocate = 0;
        p.donor.age_min = 10;
        p.donor.age_max = 120;
        p.donor.max_procedures_per_7_days = 0;
        p.donor.gcsf_window_hours = HoursWindow { min: 80, max: 75 };
        p.recipient.dose_target_per_kg = 0.0;
        p.alerts.expiry_thresholds_hours = vec![0, 2, 2];
        p.records.retention_years = 0;
        assert_eq!(
            keys(&p),
            vec![
                "unit.max_shelf_life_hours",
                "unit.min_remaining_hours_to_allocate",
                "donor.age_min",
                "donor.age_max",
                "donor.max_procedures_per_7_days",
                "donor.gcsf_window_hours.min",
                "donor.gcsf_window_hours.max",
                "donor.gcsf_window_hours.min",
                "recipient.dose_target_per_kg",
                "alerts.expiry_thresholds_hours[0]",
                "alerts.expiry_thresholds_hours[1]",
                "alerts.expiry_thresholds_hours[2]",
                "records.retention_years",
            ]
        );
    }

    #[test]
    fn error_displays_key_and_message() {
        let mut p = Policy::default();
        p.donor.age_min = 15;
        let e = &errors(&p)[0];
        assert_eq!(e.to_string(), "donor.age_min: must be at least 16, got 15");
    }

    #[test]
    fn json_round_trips_with_nested_snake_case_shape() {
        let mut p = Policy::default();
        p.unit.pooled_expiry = PooledExpiry::MaxShelfLife;
        p.compat.rhd_mismatch = RhdMismatch::Block;
        p.compat.cmv_mismatch = CmvMismatch::Off;
        p.request.approval = ApprovalPolicy::Always;
        p.donor.contraindications = vec![Contraindication {
            agent: "dexamethasone".into(),
            item: "uncontrolled diabetes".into(),
        }];
        let json = serde_json::to_value(&p).expect("serialises");
        assert_eq!(json["unit"]["max_shelf_life_hours"], 24);
        assert_eq!(json["unit"]["pooled_expiry"], "max_shelf_life");
        assert_eq!(json["donor"]["gcsf_window_hours"]["min"], 12);
        assert_eq!(json["donor"]["contraindications"][0]["agent"], "dexamethasone");
        assert_eq!(json["compat"]["rhd_mismatch"], "block");
        assert_eq!(json["compat"]["cmv_mismatch"], "off");
        assert_eq!(json["request"]["approval"], "always");
        assert_eq!(json["alerts"]["expiry_thresholds_hours"], serde_json::json!([8, 4, 2]));
        assert_eq!(json["records"]["retention_years"], 30);
        assert_eq!(json["donor"]["weeks_after_red_cell_loss"], serde_json::Value::Null);
        assert_eq!(json["donor"]["max_hes_ml_per_12_months"], 6000);
        assert_eq!(json["donor"]["max_steroid_courses_per_12_months"], 12);
        assert_eq!(
            json["stimulation"]["default_agents"],
            serde_json::json!(["gcsf", "dexamethasone"])
        );
        let back: Policy = serde_json::from_value(json).expect("deserialises");
        assert_eq!(back, p);

        let default_json = serde_json::to_string(&Policy::default()).expect("serialises");
        assert!(default_json.contains("\"pooled_expiry\":\"midnight_day_after_collection\""));
        assert!(default_json.contains("\"approval\":\"outside_indication\""));
        let back: Policy = serde_json::from_str(&default_json).expect("deserialises");
        assert_eq!(back, Policy::default());
    }

    #[test]
    fn tables_without_the_exposure_keys_read_with_their_defaults() {
        // A table (or a client) from before the stimulation section and the exposure keys.
        let mut json = serde_json::to_value(Policy::default()).expect("serialises");
        let root = json.as_object_mut().expect("object");
        root.remove("stimulation");
        let donor = root.get_mut("donor").and_then(|d| d.as_object_mut()).expect("donor");
        for key in [
            "weeks_after_red_cell_loss",
            "max_hes_ml_per_12_months",
            "max_steroid_courses_per_12_months",
        ] {
            assert!(donor.remove(key).is_some(), "{key}");
        }
        let back: Policy = serde_json::from_value(json.clone()).expect("deserialises");
        assert_eq!(back, Policy::default());
        // An older table whose whole-blood interval was changed keeps it for equivalent losses.
        json["donor"]["weeks_after_whole_blood"] = serde_json::json!(6);
        let back: Policy = serde_json::from_value(json.clone()).expect("deserialises");
        assert_eq!(back.donor.red_cell_loss_weeks(), 6);
        // A stimulation section with one key takes the default of the other.
        json["stimulation"] = serde_json::json!({"default_agents": ["gcsf"]});
        let back: Policy = serde_json::from_value(json).expect("deserialises");
        assert_eq!(back.stimulation.default_agents, vec!["gcsf"]);
        assert_eq!(
            back.stimulation.corticosteroid_agents,
            StimulationPolicy::default().corticosteroid_agents
        );
        assert_eq!(back.validate(), Ok(()));
    }

    #[test]
    fn json_rejects_unknown_fields_at_every_level() {
        let base = serde_json::to_value(Policy::default()).expect("serialises");
        let paths: [&[&str]; 6] = [
            &[],
            &["unit"],
            &["donor"],
            &["donor", "gcsf_window_hours"],
            &["stimulation"],
            &["records"],
        ];
        for path in paths {
            let mut json = base.clone();
            let mut target = &mut json;
            for part in path {
                target = &mut target[*part];
            }
            target["surprise"] = serde_json::json!(1);
            let err = serde_json::from_value::<Policy>(json).expect_err("unknown field accepted");
            assert!(err.to_string().contains("unknown field"), "{err}");
        }

        let mut json = base.clone();
        json["donor"]["contraindications"] = serde_json::json!([{"agent": "g-csf", "item": "x", "note": "y"}]);
        assert!(serde_json::from_value::<Policy>(json).is_err());
    }

    #[test]
    fn json_rejects_bad_enum_values_and_negative_counts() {
        let base = serde_json::to_value(Policy::default()).expect("serialises");
        let mut json = base.clone();
        json["compat"]["rhd_mismatch"] = serde_json::json!("off");
        assert!(serde_json::from_value::<Policy>(json).is_err());
        let mut json = base.clone();
        json["request"]["approval"] = serde_json::json!("OutsideIndication");
        assert!(serde_json::from_value::<Policy>(json).is_err());
        let mut json = base.clone();
        json["donor"]["age_min"] = serde_json::json!(-18);
        assert!(serde_json::from_value::<Policy>(json).is_err());
        // A table written by an earlier release: `warn` reads as the tier it meant.
        let mut json = base;
        json["compat"]["rhd_mismatch"] = serde_json::json!("warn");
        json["compat"]["cmv_mismatch"] = serde_json::json!("warn");
        let read: Policy = serde_json::from_value(json).expect("earlier spelling");
        assert_eq!(read.compat.rhd_mismatch, RhdMismatch::Acknowledge);
        assert_eq!(read.compat.cmv_mismatch, CmvMismatch::Authorise);
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::{Value, json};
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u32>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[ -~]{0,12}".prop_map(Value::from),
            Just(json!("block")),
            Just(json!(-1)),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                prop::collection::vec(("[a-z_]{1,8}", inner), 0..2)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// Every path to a value in the default table's JSON (objects and arrays, then leaves).
    fn paths(v: &serde_json::Value, at: Vec<String>, out: &mut Vec<Vec<String>>) {
        if let Some(map) = v.as_object() {
            for (k, child) in map {
                let mut next = at.clone();
                next.push(k.clone());
                paths(child, next, out);
            }
        }
        out.push(at);
    }

    fn arb_valid() -> impl Strategy<Value = Policy> {
        (
            (
                2u32..=120,
                0u32..=120,
                -100i32..=400,
                0i32..=500,
                1u32..=1500,
                0u32..=1500,
            ),
            (
                16u32..=50,
                0u32..=50,
                1u32..=8,
                0u32..=8,
                (0u32..=72, 0u32..=72),
                (0u32..=72, 0u32..=72),
            ),
            (any::<bool>(), 1u32..=1_000, 1u32..=1_440, 1u64..=10_000),
            prop::sample::subsequence((1u32..=72).rev().collect::<Vec<_>>(), 1..4),
            prop::sample::subsequence(vec!["anti_hiv", "hbsag", "hcv_nat", "syphilis", "anti_htlv"], 1..=5),
        )
            .prop_map(|(unit, donor, other, thresholds, markers)| {
                let (shelf, remaining, temp_min, temp_span, gy_min, gy_span) = unit;
                let (age_min, age_span, wb, not_returned, gcsf, dexa) = donor;
                let (minor, hours, minutes, dose_tenths) = other;
                let mut p = Policy::default();
                p.unit.max_shelf_life_hours = shelf;
                // At least 1 h and below the shelf life.
                p.unit.min_remaining_hours_to_allocate = 1 + remaining % (shelf - 1);
                // Tenths of a degree / Gy, as a director would type them.
                p.unit.storage_temp_min_c = f64::from(temp_min) / 10.0;
                p.unit.storage_temp_max_c = f64::from((temp_min + temp_span).min(400)) / 10.0;
                p.unit.irradiation_min_gy = f64::from(gy_min) / 10.0;
                p.unit.irradiation_max_gy = f64::from((gy_min + gy_span).min(1500)) / 10.0;
                p.unit.required_markers = markers.into_iter().map(str::to_owned).collect();
                p.donor.age_min = age_min;
                p.donor.age_max = (age_min + age_span).min(100);
                p.donor.weeks_after_whole_blood = wb;
                p.donor.weeks_after_red_cell_loss_not_returned = wb + not_returned;
                // Whole blood may then be longer than the not-returned interval.
                if minor {
                    p.donor.weeks_after_red_cell_loss = Some(wb);
                    p.donor.weeks_after_whole_blood = wb + not_returned + 1;
                }
                p.donor.max_hes_ml_per_12_months = minutes * 30;
                p.donor.max_steroid_courses_per_12_months = 1 + hours % 100;
                p.donor.gcsf_window_hours = HoursWindow {
                    min: gcsf.0.min(gcsf.1),
                    max: gcsf.0.max(gcsf.1),
                };
                p.donor.dexamethasone_window_hours = HoursWindow {
                    min: dexa.0.min(dexa.1),
                    max: dexa.0.max(dexa.1),
                };
                p.compat.minor_abo_check = minor;
                p.compat.sample_valid_hours = hours;
                p.collection.default_duration_minutes = minutes;
                p.recipient.dose_target_per_kg = dose_tenths as f64 * 1e7;
                p.alerts.expiry_thresholds_hours = thresholds;
                p
            })
    }

    proptest! {
        #[test]
        fn any_policy_json_is_refused_or_validated_without_panicking(
            which in any::<prop::sample::Index>(),
            value in arb_json(),
        ) {
            let mut json = serde_json::to_value(Policy::default()).expect("serialises");
            let mut all = Vec::new();
            paths(&json, Vec::new(), &mut all);
            let path = &all[which.index(all.len())];
            let mut target = &mut json;
            for part in path {
                target = &mut target[part.as_str()];
            }
            *target = value;
            if let Ok(policy) = serde_json::from_value::<Policy>(json) {
                match policy.validate() {
                    Ok(()) => {
                        let text = serde_json::to_string(&policy).expect("serialises");
                        prop_assert_eq!(serde_json::from_str::<Policy>(&text).expect("reads back"), policy);
                    }
                    Err(problems) => {
                        prop_assert!(!problems.is_empty());
                        prop_assert!(problems.iter().all(|p| !p.key.is_empty() && !p.message.is_empty()));
                    }
                }
            }
        }

        #[test]
        fn valid_policies_round_trip_through_json(policy in arb_valid()) {
            prop_assert_eq!(policy.validate(), Ok(()));
            let text = serde_json::to_string(&policy).expect("serialises");
            prop_assert_eq!(serde_json::from_str::<Policy>(&text).expect("reads back"), policy);
        }

        #[test]
        fn every_problem_is_keyed_by_a_setting_of_the_table(
            numbers in prop::collection::vec(any::<u32>(), 20),
            floats in prop::collection::vec(any::<f64>(), 5),
            markers in prop::collection::vec(any::<String>(), 0..3),
            thresholds in prop::collection::vec(any::<u32>(), 0..4),
        ) {
            let mut p = Policy::default();
            let n = |i: usize| numbers[i] % 200;
            (p.unit.max_shelf_life_hours, p.unit.min_remaining_hours_to_allocate) = (n(0), n(1));
            (p.donor.age_min, p.donor.age_max) = (n(2), n(3));
            p.donor.max_leukapheresis_per_12_months = n(4);
            p.donor.min_hours_between_leukapheresis = n(5);
            p.donor.max_procedures_per_7_days = n(6);
            (p.donor.weeks_after_whole_blood, p.donor.weeks_after_red_cell_loss_not_returned) = (n(7), n(8));
            p.donor.max_red_cell_loss_ml_per_8_weeks = n(9);
            p.donor.gcsf_window_hours = HoursWindow { min: n(10), max: n(11) };
            p.donor.dexamethasone_window_hours = HoursWindow { min: n(12), max: numbers[13] };
            p.collection.default_duration_minutes = numbers[14];
            p.compat.sample_valid_hours = n(15);
            (p.recipient.anc_threshold_per_ul, p.recipient.refractory_hours) = (n(16), n(17));
            (p.alerts.request_unallocated_hours, p.alerts.outcome_missing_hours) = (n(18), n(19));
            p.unit.storage_temp_min_c = floats[0];
            p.unit.storage_temp_max_c = floats[1];
            p.unit.irradiation_min_gy = floats[2];
            p.unit.irradiation_max_gy = floats[3];
            p.recipient.dose_target_per_kg = floats[4];
            p.unit.required_markers = markers;
            p.alerts.expiry_thresholds_hours = thresholds;
            let json = serde_json::to_value(&p).expect("serialises");
            for problem in p.validate().err().unwrap_or_default() {
                // `alerts.expiry_thresholds_hours[1]` → alerts / expiry_thresholds_hours.
                let mut node = &json;
                for part in problem.key.split('.') {
                    let name = part.split('[').next().unwrap_or(part);
                    prop_assert!(node.get(name).is_some(), "{} is not a setting", problem.key);
                    node = &node[name];
                }
            }
        }
    }
}
