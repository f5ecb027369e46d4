//! The seeding steps, each one a service call as staff or a hospital would make it through the
//! API (same inputs, same rules, audited); a step the rules refuse fails the whole data set,
//! with the step named.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Datelike, DurationRound, NaiveDate, TimeDelta, Utc};
use chrono_tz::Tz;

use super::plan::{self, Fate, Left, Source, Testing, Typing, UnitPlan};
use super::{Account, Summary};
use crate::accounts::{self, NewAccount, Systems};
use crate::auth::{Role, password, tokens};
use crate::config::Settings;
use crate::domain::blood::{Abo, Cmv, DonorType, Hla, Rhd, Sex, UnitRhd};
use crate::domain::compatibility::{CrossmatchMethod, CrossmatchResult, Severity};
use crate::domain::eligibility::ProcedureKind;
use crate::domain::isbt128::Din;
use crate::domain::policy::{HoursWindow, Policy};
use crate::domain::units::TestResult;
use crate::error::{ApiError, ApiResult};
use crate::input::{Text, UnitKey};
use crate::services::allocations::{self, AllocateInput, CrossmatchInput, IssueInput, TransfusionInput};
use crate::services::collections::{self, CompleteInput, ScheduleInput, StartInput};
use crate::services::decisions::AuthorisationInput;
use crate::services::donations::{self, DonationInput};
use crate::services::donors::{self, DeferralInput, DonorInput};
use crate::services::patients::{self, PatientInput, SampleInput, TypingInput};
use crate::services::requests::{self, IndicationInput, OrderIdentifier, RequestInput, Requirements};
use crate::services::stimulations::{self, DoseUnit, StimulationInput};
use crate::services::units::{
    self, CreateUnitInput, IrradiationInput, Physician, ReadingInput, ReleaseInput, SourceInput, TestInput, UnitView,
};
use crate::store::audit::Actor;
use crate::store::{self, DbConn};

/// ISBT 128 product code of an apheresis granulocyte unit.
const PRODUCT: &str = "E4583V00";
const SUPPLIER: &str = "Regional blood centre";
/// FINs of the regional centre (the second when the bank's own FIN is the first).
const SUPPLIER_FINS: [&str; 2] = ["G0731", "G0732"];
const RNG_SEED: u64 = 0x6772_616e_756c_6f16;

/// SplitMix64: a fixed sequence without a dependency whose algorithm may change between
/// versions, so every load of the demo makes the same choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        let i = self.below(items.len());
        items.get(i).copied()
    }

    fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
}

/// Names the step that a refusal came from: a refused step is a bug in the data set.
trait Step<T> {
    fn step(self, what: &str) -> ApiResult<T>;
}

impl<T> Step<T> for ApiResult<T> {
    fn step(self, what: &str) -> ApiResult<T> {
        self.map_err(|e| {
            let p = e.problem();
            let mut why: Vec<String> = p.reasons.iter().map(|r| format!("{}: {}", r.code, r.message)).collect();
            why.extend(p.errors.iter().map(|f| format!("{}: {}", f.field, f.message)));
            ApiError::internal(anyhow::anyhow!("demo step '{what}': {e} [{}]", why.join("; ")))
        })
    }
}

fn hours(h: f64) -> TimeDelta {
    TimeDelta::seconds((h * 3600.0).round() as i64)
}

fn truncate(t: DateTime<Utc>, minutes: i64) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::minutes(minutes)).unwrap_or(t)
}

fn text<const MIN: usize, const MAX: usize>(field: &str, raw: &str) -> ApiResult<Text<MIN, MAX>> {
    Text::field(field, raw).step(field)
}

/// The intervals a device is booked.
type Bookings = Vec<(DateTime<Utc>, DateTime<Utc>)>;

struct PatientSeed {
    id: i64,
    /// The newest sample: crossmatches are made on it.
    sample: Option<i64>,
}

pub struct Seeder<'a> {
    conn: &'a mut DbConn,
    actor: Actor,
    policy: Policy,
    fin: String,
    tz: Tz,
    now: DateTime<Utc>,
    rng: Rng,
    supplier_fin: &'static str,
    supplier_sequence: u32,
    /// Device id and the intervals booked on it.
    devices: Vec<(i64, Bookings)>,
    device_names: HashSet<String>,
    hospitals: Vec<(i64, String)>,
    patients: HashMap<&'static str, PatientSeed>,
    requests: HashMap<&'static str, (i64, &'static str)>,
    accounts: Vec<Account>,
    summary: Summary,
    expired_by: DateTime<Utc>,
}

impl<'a> Seeder<'a> {
    pub fn new(conn: &'a mut DbConn, settings: &Settings) -> ApiResult<Self> {
        let policy = crate::services::policy::current(conn)?.policy;
        let now = Utc::now();
        let supplier_fin = if settings.fin == SUPPLIER_FINS[0] {
            SUPPLIER_FINS[1]
        } else {
            SUPPLIER_FINS[0]
        };
        Ok(Self {
            conn,
            actor: Actor::system(super::ACTOR),
            policy,
            fin: settings.fin.clone(),
            tz: settings.timezone,
            now,
            rng: Rng(RNG_SEED),
            supplier_fin,
            supplier_sequence: 4100,
            devices: Vec::new(),
            device_names: HashSet::new(),
            hospitals: Vec::new(),
            patients: HashMap::new(),
            requests: HashMap::new(),
            accounts: Vec::new(),
            summary: Summary::default(),
            expired_by: now,
        })
    }

    /// The whole data set; returns the accounts, the counts and when the units meant to expire
    /// meanwhile have expired.
    pub fn run(mut self) -> ApiResult<(Vec<Account>, Summary, DateTime<Utc>)> {
        // First, so that they expire a few seconds from now and not later.
        self.expiring_units()?;
        self.accounts()?;
        self.devices()?;
        self.pool_donors()?;
        self.patients()?;
        self.requests()?;
        for unit in plan::UNITS {
            self.unit(unit)?;
        }
        self.later_collections()?;
        Ok((self.accounts, self.summary, self.expired_by))
    }

    // -----------------------------------------------------------------------------------------
    // Accounts, hospitals, devices

    fn accounts(&mut self) -> ApiResult<()> {
        for (name, role) in [("tech", Role::Technologist), ("director", Role::MedicalDirector)] {
            self.user(name, role, None)?;
        }
        for h in plan::HOSPITALS {
            let code = self.free(h.code, |c, code| Ok(store::hospitals::find_by_code(c, code)?.is_some()))?;
            let systems = Systems {
                mrn_system: None,
                order_system: None,
            };
            let hospital =
                accounts::create_hospital(self.conn, &self.actor, h.name, &code, &systems).step("hospital")?;
            self.hospitals.push((hospital.id, code.clone()));
            self.user(h.ward, Role::Hospital, Some((hospital.id, &code)))?;
            // The hospital's system, as `POST /hospitals/{id}/clients` makes it.
            let client_id = tokens::new_client_id();
            let secret = tokens::new_client_secret();
            let name = format!("{} order system", h.name);
            accounts::create_client(
                self.conn,
                &self.actor,
                hospital.id,
                &name,
                &client_id,
                &tokens::sha256_hex(&secret),
            )
            .step("hospital client")?;
            self.accounts.push(Account {
                username: client_id,
                role: Role::Hospital,
                password: secret,
                hospital: Some(code),
                client: true,
            });
        }
        Ok(())
    }

    /// `base`, or `base2`, `base3`… when taken.
    fn free(&mut self, base: &str, taken: impl Fn(&mut DbConn, &str) -> ApiResult<bool>) -> ApiResult<String> {
        let mut candidate = base.to_owned();
        for n in 2..1000 {
            if !taken(self.conn, &candidate)? {
                return Ok(candidate);
            }
            candidate = format!("{base}{n}");
        }
        Err(ApiError::internal(anyhow::anyhow!("no free name like {base}")))
    }

    fn user(&mut self, name: &str, role: Role, hospital: Option<(i64, &str)>) -> ApiResult<()> {
        let username = self.free(name, |c, n| Ok(store::users::find_by_username(c, n)?.is_some()))?;
        let password = generated_password();
        if let Some(problem) = password::policy_violation(&password, &username) {
            return Err(ApiError::internal(anyhow::anyhow!("generated password {problem}")));
        }
        let hash = password::hash(&password).map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
        let account = NewAccount {
            username: username.clone(),
            password_hash: hash,
            role,
            hospital_id: hospital.map(|(id, _)| id),
        };
        accounts::create_user(self.conn, &self.actor, &account).step("account")?;
        self.accounts.push(Account {
            username,
            role,
            password,
            hospital: hospital.map(|(_, code)| code.to_owned()),
            client: false,
        });
        Ok(())
    }

    fn devices(&mut self) -> ApiResult<()> {
        self.device_names = store::devices::list(self.conn, None, 10_000)?
            .into_iter()
            .map(|d| d.name)
            .collect();
        for name in plan::DEVICES {
            self.add_device(name)?;
        }
        Ok(())
    }

    fn add_device(&mut self, base: &str) -> ApiResult<i64> {
        let mut name = base.to_owned();
        let mut n = 2;
        while self.device_names.contains(&name) {
            name = format!("{base} ({n})");
            n += 1;
        }
        let device = crate::services::devices::create_device(self.conn, &self.actor, &name).step("device")?;
        self.device_names.insert(name);
        self.devices.push((device.id, Vec::new()));
        Ok(device.id)
    }

    /// The least-booked device free from `start` to `end` (another one when all are taken).
    fn device_for(&mut self, start: DateTime<Utc>, end: DateTime<Utc>) -> ApiResult<i64> {
        let free = self
            .devices
            .iter_mut()
            .filter(|(_, booked)| booked.iter().all(|(s, e)| end <= *s || start >= *e))
            .min_by_key(|(_, booked)| booked.len());
        if let Some((id, booked)) = free {
            booked.push((start, end));
            return Ok(*id);
        }
        let n = self.devices.len() + 1;
        let id = self.add_device(&format!("Spectra Optia {n}"))?;
        if let Some((_, booked)) = self.devices.last_mut() {
            booked.push((start, end));
        }
        Ok(id)
    }

    // -----------------------------------------------------------------------------------------
    // Donors

    fn pool_donors(&mut self) -> ApiResult<()> {
        for i in 0..plan::POOL_DONORS {
            let (abo, rhd, cmv) = self.random_group();
            let age = if i == 9 { 77 } else { 19 + self.below(50) };
            let id = self.donor(abo, rhd, cmv, age)?;
            self.history(id, i)?;
        }
        Ok(())
    }

    fn random_group(&mut self) -> (Abo, Rhd, Cmv) {
        let abo = match self.rng.below(100) {
            0..44 => Abo::O,
            44..86 => Abo::A,
            86..96 => Abo::B,
            _ => Abo::Ab,
        };
        let rhd = if self.rng.percent(15) {
            Rhd::Negative
        } else {
            Rhd::Positive
        };
        let cmv = if self.rng.percent(45) {
            Cmv::Positive
        } else {
            Cmv::Negative
        };
        (abo, rhd, cmv)
    }

    fn below(&mut self, n: usize) -> i32 {
        i32::try_from(self.rng.below(n)).unwrap_or(0)
    }

    fn donor(&mut self, abo: Abo, rhd: Rhd, cmv: Cmv, age: i32) -> ApiResult<i64> {
        let sex = if self.rng.percent(50) { Sex::Female } else { Sex::Male };
        let given = match sex {
            Sex::Female => self.rng.pick(plan::GIVEN_FEMALE),
            _ => self.rng.pick(plan::GIVEN_MALE),
        }
        .unwrap_or("Alex");
        let family = self.rng.pick(plan::FAMILY).unwrap_or("Smith");
        let number = self.summary.donors + 1;
        let ascii = |s: &str| -> String {
            s.chars()
                .filter(char::is_ascii_alphabetic)
                .collect::<String>()
                .to_lowercase()
        };
        let donor_type = match self.rng.below(20) {
            0..3 => DonorType::Family,
            3..5 => DonorType::Directed,
            _ => DonorType::Community,
        };
        let input = DonorInput {
            given_name: given.to_owned(),
            family_name: family.to_owned(),
            date_of_birth: self.born(age),
            sex,
            weight_kg: f64::from(55 + self.below(45)) + 0.5 * f64::from(self.below(2)),
            abo,
            rhd,
            cmv,
            hla: self.hla(),
            donor_type,
            // Ofcom's range for drama (0113 496 0000–0999) and example.org: nobody's real contact.
            phone: Some(format!("+44 113 496 0{number:03}")),
            email: Some(format!("{}.{}{number}@example.org", ascii(given), ascii(family))),
            contraindications: Vec::new(),
        };
        let created = donors::register(self.conn, &self.actor, input, &self.policy).step("donor")?;
        self.summary.donors += 1;
        Ok(created.id)
    }

    /// Most donors are typed at A and B, some at C and DRB1 too, some not at all.
    fn hla(&mut self) -> Hla {
        let mut hla = Hla::default();
        if self.rng.percent(20) {
            return hla;
        }
        fn two(rng: &mut Rng, locus: &[&str]) -> Vec<String> {
            let mut alleles: Vec<String> = [rng.pick(locus), rng.pick(locus)]
                .into_iter()
                .flatten()
                .map(str::to_owned)
                .collect();
            alleles.dedup();
            alleles
        }
        hla.a = two(&mut self.rng, plan::HLA_A);
        hla.b = two(&mut self.rng, plan::HLA_B);
        if self.rng.percent(50) {
            hla.c = two(&mut self.rng, plan::HLA_C);
            hla.drb1 = two(&mut self.rng, plan::HLA_DRB1);
        }
        hla
    }

    /// A date of birth `age` years ago (give or take the birthday).
    fn born(&mut self, age: i32) -> NaiveDate {
        let today = self.now.with_timezone(&self.tz).date_naive();
        let month = 1 + self.rng.below(12);
        let day = 1 + self.rng.below(28);
        NaiveDate::from_ymd_opt(
            today.year() - age,
            u32::try_from(month).unwrap_or(1),
            u32::try_from(day).unwrap_or(1),
        )
        .unwrap_or(today)
    }

    /// Past donations and deferrals, so that eligibility varies (the kind cycles with `i`).
    fn history(&mut self, donor: i64, i: usize) -> ApiResult<()> {
        let now = self.now;
        let days = move |d: i64| now - TimeDelta::days(d);
        match i % 10 {
            1 => self.donation(donor, ProcedureKind::WholeBlood, days(16), None)?,
            2 => {
                self.donation(donor, ProcedureKind::WholeBlood, days(150), None)?;
                self.donation(donor, ProcedureKind::Platelets, days(40), None)?;
            }
            3 => self.deferral(donor, "travel to a malaria-endemic area", Some((days(12), days(-20))))?,
            4 => self.donation(donor, ProcedureKind::Leukapheresis, now - TimeDelta::hours(30), None)?,
            5 => self.deferral(donor, "low haemoglobin at screening", Some((days(120), days(60))))?,
            6 => self.donation(donor, ProcedureKind::RedCells, days(20), Some(380))?,
            7 if i < 10 => self.deferral(donor, "confirmed reactive anti-HBc", None)?,
            8 => self.donation(donor, ProcedureKind::Plasma, days(10), None)?,
            _ => {}
        }
        Ok(())
    }

    fn donation(&mut self, donor: i64, kind: ProcedureKind, at: DateTime<Utc>, lost: Option<u32>) -> ApiResult<()> {
        let input = DonationInput {
            kind,
            donated_at: truncate(at, 15),
            red_cell_loss_ml: lost,
            red_cells_returned: lost.map(|_| false),
            site: Some(text("site", "city donor centre")?),
        };
        donations::record_donation(self.conn, &self.actor, donor, input).step("donation")?;
        Ok(())
    }

    /// `span`: (from, until) of a temporary deferral; `None` is permanent.
    fn deferral(&mut self, donor: i64, reason: &str, span: Option<(DateTime<Utc>, DateTime<Utc>)>) -> ApiResult<()> {
        let input = DeferralInput {
            reason: text("reason", reason)?,
            permanent: span.is_none(),
            until: span.map(|(_, until)| truncate(until, 60)),
            starts_at: span.map(|(from, _)| truncate(from, 60)),
        };
        donors::defer(self.conn, &self.actor, donor, input).step("deferral")?;
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Collections

    fn duration(&self) -> TimeDelta {
        TimeDelta::minutes(i64::from(self.policy.collection.default_duration_minutes))
    }

    /// A donor booked from `start` (G-CSF and dexamethasone planned) on a free device.
    fn book(&mut self, donor: i64, start: DateTime<Utc>, request: Option<&str>) -> ApiResult<i64> {
        let device = self.device_for(start, start + self.duration())?;
        let request_id = match request {
            Some(key) => Some(self.request(key)?.0),
            None => None,
        };
        let input = ScheduleInput {
            donor_id: donor,
            device_id: device,
            scheduled_start: start,
            duration_minutes: None,
            request_id,
            planned_agents: vec!["gcsf".to_owned(), "dexamethasone".to_owned()],
        };
        let booked = collections::schedule(self.conn, &self.actor, input, &self.policy).step("booking")?;
        self.summary.collections += 1;
        Ok(booked.id)
    }

    /// G-CSF and dexamethasone inside their windows before `start`, those already given.
    fn stimulate(&mut self, donor: i64, collection: i64, start: DateTime<Utc>) -> ApiResult<()> {
        let before = |w: HoursWindow, at: f64| {
            let (min, max) = (f64::from(w.min), f64::from(w.max));
            start - hours(min + at * (max - min))
        };
        let doses = [
            (
                "gcsf",
                480.0,
                DoseUnit::Ug,
                before(self.policy.donor.gcsf_window_hours, 0.25),
            ),
            (
                "dexamethasone",
                8.0,
                DoseUnit::Mg,
                before(self.policy.donor.dexamethasone_window_hours, 0.5),
            ),
        ];
        for (agent, dose, dose_unit, at) in doses {
            if at > Utc::now() {
                continue;
            }
            let input = StimulationInput {
                agent: agent.to_owned(),
                dose,
                dose_unit,
                administered_at: truncate(at, 5),
                collection_id: Some(collection),
                adverse_effects: None,
            };
            stimulations::record_stimulation(self.conn, &self.actor, donor, input, &self.policy).step("stimulation")?;
        }
        Ok(())
    }

    /// A donor collected from `ended - duration` to `ended`, and the unit made of it.
    fn collected_unit(&mut self, (abo, rhd, cmv): (Abo, Rhd, Cmv), ended: DateTime<Utc>) -> ApiResult<UnitView> {
        let age = 22 + self.below(40);
        let donor = self.donor(abo, rhd, cmv, age)?;
        if self.rng.percent(50) {
            let months_ago = TimeDelta::days(120 + i64::try_from(self.rng.below(90)).unwrap_or(0));
            self.donation(donor, ProcedureKind::WholeBlood, self.now - months_ago, None)?;
        }
        let start = ended - self.duration();
        let id = self.book(donor, start, None)?;
        self.stimulate(donor, id, start)?;
        collections::start(
            self.conn,
            &self.actor,
            id,
            StartInput {
                started_at: Some(start),
            },
            &self.policy,
        )
        .step("collection start")?;
        let complete = CompleteInput {
            ended_at: Some(ended),
            volume_processed_ml: Some(7000 + 100 * u32::try_from(self.rng.below(20)).unwrap_or(0)),
            hes_volume_ml: Some(500),
            pre_count_wbc: Some(24.0 + f64::from(self.below(80)) / 10.0),
            pre_count_anc: Some(19.0 + f64::from(self.below(60)) / 10.0),
            ..CompleteInput::default()
        };
        collections::complete(self.conn, &self.actor, id, complete, &self.policy).step("collection end")?;
        let input = CreateUnitInput {
            source: SourceInput::Collection { collection_id: id },
            product_code: PRODUCT.to_owned(),
            volume_ml: 220 + u32::try_from(self.rng.below(120)).unwrap_or(0),
            granulocyte_count: f64::from(20 + self.below(40)) * 1e9,
            red_cell_volume_ml: Some(f64::from(12 + self.below(14))),
            pooled_from: None,
            storage_location: Some(text("storage_location", "Incubator 1")?),
        };
        units::create(self.conn, &self.actor, &self.fin, self.tz, input, &self.policy).step("collection unit")
    }

    /// One collection under way, two later today (stimulated last night), three tomorrow
    /// morning on the facility's clock (to be stimulated tonight), one for a request.
    fn later_collections(&mut self) -> ApiResult<()> {
        let mut starts: Vec<(DateTime<Utc>, Option<&str>, bool)> = vec![
            (truncate(self.now - TimeDelta::hours(1), 5), None, true),
            (truncate(self.now + TimeDelta::hours(3), 15), None, false),
            (truncate(self.now + TimeDelta::hours(5), 15), None, false),
        ];
        let tomorrow = self.now.with_timezone(&self.tz).date_naive() + TimeDelta::days(1);
        for (h, m, request) in [(8, 0, Some("routine-o")), (8, 30, None), (11, 0, None)] {
            if let Some(local) = tomorrow.and_hms_opt(h, m, 0) {
                starts.push((
                    crate::domain::wall_clock::earliest_instant(self.tz, local),
                    request,
                    false,
                ));
            }
        }
        for (start, request, under_way) in starts {
            // A donor booked for a request matches its patient's group.
            let (abo, rhd, cmv) = match request {
                Some(_) => (Abo::O, Rhd::Positive, Cmv::Negative),
                None => self.random_group(),
            };
            let age = 21 + self.below(45);
            let donor = self.donor(abo, rhd, cmv, age)?;
            let id = self.book(donor, start, request)?;
            self.stimulate(donor, id, start)?;
            if under_way {
                collections::start(
                    self.conn,
                    &self.actor,
                    id,
                    StartInput {
                        started_at: Some(start),
                    },
                    &self.policy,
                )
                .step("collection under way")?;
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Patients and requests

    fn patients(&mut self) -> ApiResult<()> {
        for p in plan::PATIENTS {
            let hospital_id = self.hospitals.get(p.hospital).map(|(id, _)| *id);
            let input = PatientInput {
                mrn: text("mrn", p.mrn)?,
                given_name: text("given_name", p.given)?,
                family_name: text("family_name", p.family)?,
                date_of_birth: self.born(p.age),
                sex: p.sex,
                weight_kg: p.weight_kg,
                abo: p.abo,
                rhd: p.rhd,
                cmv: p.cmv,
                childbearing_potential: None,
                hla_antibodies: p.hla_antibodies.iter().map(|a| (*a).to_owned()).collect(),
                granulocyte_antibodies: None,
                hospital_id,
            };
            let created = patients::create(self.conn, &self.actor, input, None, &self.policy).step("patient")?;
            self.summary.patients += 1;
            let typings = match p.typing {
                Typing::Confirmed => vec![(3, p.abo, p.rhd), (2, p.abo, p.rhd)],
                Typing::Discordant(abo, rhd) => vec![(2, abo, rhd)],
            };
            let mut sample = None;
            for (hours_ago, abo, rhd) in typings {
                let drawn = SampleInput {
                    drawn_at: truncate(self.now - TimeDelta::hours(hours_ago), 5),
                    transfused_or_pregnant_within_3_months: true,
                };
                let s = patients::add_sample(self.conn, &self.actor, created.id, drawn, None, &self.policy)
                    .step("sample")?;
                let typing = TypingInput {
                    abo,
                    rhd,
                    typed_at: None,
                };
                patients::type_sample(self.conn, &self.actor, s.id, typing, &self.policy).step("typing")?;
                sample = Some(s.id);
            }
            self.patients.insert(p.key, PatientSeed { id: created.id, sample });
        }
        Ok(())
    }

    fn requests(&mut self) -> ApiResult<()> {
        for (n, r) in plan::REQUESTS.iter().enumerate() {
            let patient = self.patient(r.patient)?.id;
            let code = plan::PATIENTS
                .iter()
                .find(|p| p.key == r.patient)
                .and_then(|p| self.hospitals.get(p.hospital))
                .map_or_else(|| "H".to_owned(), |(_, code)| code.clone());
            let input = RequestInput {
                patient_id: patient,
                units_requested: r.units,
                needed_by: truncate(self.now + TimeDelta::minutes(r.needed_in_minutes), 5),
                priority: r.priority,
                indication: IndicationInput {
                    anc_per_ul: r.anc_per_ul,
                    infection: r.infection.to_owned(),
                    refractory_hours: r.refractory_hours,
                },
                requirements: Some(Requirements {
                    cmv_negative: Some(r.cmv_negative),
                    hla_compatible: None,
                    irradiated: None,
                }),
                order_identifier: Some(OrderIdentifier {
                    system: None,
                    value: format!("ORD-{code}-{:05}", 4200 + n),
                }),
            };
            let created =
                requests::create(self.conn, &self.actor, input, None, &self.policy, chrono_tz::UTC).step("request")?;
            self.summary.requests += 1;
            self.requests.insert(r.key, (created.id, r.patient));
        }
        Ok(())
    }

    fn patient(&self, key: &str) -> ApiResult<&PatientSeed> {
        self.patients
            .get(key)
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("the demo has no patient {key}")))
    }

    /// (request id, patient id, the patient's newest sample).
    fn request(&self, key: &str) -> ApiResult<(i64, i64, Option<i64>)> {
        let (id, patient) = self
            .requests
            .get(key)
            .copied()
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("the demo has no request {key}")))?;
        let p = self.patient(patient)?;
        Ok((id, p.id, p.sample))
    }

    // -----------------------------------------------------------------------------------------
    // Units

    fn shelf_hours(&self) -> f64 {
        f64::from(self.policy.unit.max_shelf_life_hours)
    }

    /// Hours a unit placed at `left` has at seeding time.
    fn hours_left(&self, left: Left) -> f64 {
        let shelf = self.shelf_hours();
        let mut thresholds: Vec<f64> = self
            .policy
            .alerts
            .expiry_thresholds_hours
            .iter()
            .map(|h| f64::from(*h))
            .filter(|h| *h > 0.0 && *h < shelf)
            .collect();
        thresholds.sort_by(|a, b| b.total_cmp(a));
        thresholds.dedup();
        let at = match left {
            Left::Band(i, frac) => match thresholds.len() {
                0 => frac * shelf.min(2.0),
                n => {
                    let i = i.min(n - 1);
                    let high = thresholds.get(i).copied().unwrap_or(shelf);
                    let low = thresholds.get(i + 1).copied().unwrap_or(0.0);
                    low + frac * (high - low)
                }
            },
            Left::Beyond(frac) => {
                let low = thresholds.first().copied().unwrap_or(0.0);
                low + frac * (shelf - low)
            }
        };
        // Collected at least a few minutes ago, and not yet expired.
        at.clamp(0.1, shelf - 0.1)
    }

    /// When a unit that has `left` hours now was collected.
    fn collected_for(&self, left: f64) -> DateTime<Utc> {
        truncate(self.now - hours(self.shelf_hours() - left), 1)
    }

    fn next_supplier_din(&mut self) -> ApiResult<String> {
        self.supplier_sequence += 1;
        let year = u8::try_from(self.now.year() % 100).unwrap_or(0);
        let din = Din::new(self.supplier_fin, year, self.supplier_sequence)
            .map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
        Ok(din.as_text())
    }

    fn supplier_unit(&mut self, (abo, rhd, cmv): (Abo, Rhd, Cmv), collected_at: DateTime<Utc>) -> ApiResult<UnitView> {
        let din = self.next_supplier_din()?;
        let input = CreateUnitInput {
            source: SourceInput::External {
                supplier: SUPPLIER.to_owned(),
                din,
                abo,
                rhd: match rhd {
                    Rhd::Positive => UnitRhd::Positive,
                    Rhd::Negative => UnitRhd::Negative,
                },
                collected_at,
                cmv: Some(cmv),
                expires_at: None,
            },
            product_code: PRODUCT.to_owned(),
            volume_ml: 200 + u32::try_from(self.rng.below(150)).unwrap_or(0),
            granulocyte_count: f64::from(15 + self.below(35)) * 1e9,
            red_cell_volume_ml: Some(f64::from(10 + self.below(20))),
            pooled_from: None,
            storage_location: Some(text("storage_location", "Incubator 2")?),
        };
        let created =
            units::create(self.conn, &self.actor, &self.fin, self.tz, input, &self.policy).step("supplier unit")?;
        self.summary.units += 1;
        Ok(created)
    }

    /// Units collected a shelf life ago less a few seconds: they expire while the rest is
    /// seeded (`expired_by`).
    fn expiring_units(&mut self) -> ApiResult<()> {
        for (abo, rhd, release) in plan::EXPIRING_WHILE_SEEDED {
            let collected = Utc::now() - hours(self.shelf_hours()) + TimeDelta::seconds(plan::EXPIRY_GRACE_SECS);
            let u = self.supplier_unit((*abo, *rhd, Cmv::Negative), collected)?;
            self.expired_by = self.expired_by.max(u.expires_at);
            if *release {
                self.test(u.id, Testing::Released)?;
            }
        }
        Ok(())
    }

    fn unit(&mut self, plan: &UnitPlan) -> ApiResult<()> {
        let left = self.hours_left(plan.left);
        let collected = self.collected_for(left);
        let u = match plan.source {
            Source::Supplier(abo, rhd, cmv) => self.supplier_unit((abo, rhd, cmv), collected)?,
            Source::Collection(abo, rhd, cmv) => {
                let u = self.collected_unit((abo, rhd, cmv), collected)?;
                self.summary.units += 1;
                u
            }
        };
        let key = UnitKey::Id(u.id);
        let issued = matches!(plan.fate, Fate::Issued(_) | Fate::Returned(_) | Fate::Transfused(_));
        if plan.irradiated || issued {
            let dose = (self.policy.unit.irradiation_min_gy + self.policy.unit.irradiation_max_gy) / 2.0;
            let input = IrradiationInput {
                dose_gy: dose.round(),
                irradiated_at: None,
                device: Some(text("device", "Gammacell 3000")?),
            };
            units::irradiate(self.conn, &self.actor, &key, input, &self.policy).step("irradiation")?;
        }
        self.test(u.id, plan.testing)?;
        self.fate(&u, plan.fate)
    }

    /// Marker results as `testing` says, and the standard release when all are negative.
    fn test(&mut self, unit: i64, testing: Testing) -> ApiResult<()> {
        let key = UnitKey::Id(unit);
        let markers = self.policy.unit.required_markers.clone();
        let half = markers.len() / 2;
        let results: Vec<(String, TestResult)> = match testing {
            Testing::Untested => Vec::new(),
            Testing::Released => markers.iter().map(|m| (m.clone(), TestResult::Negative)).collect(),
            Testing::Partial => markers
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    (
                        m.clone(),
                        if i < half {
                            TestResult::Negative
                        } else {
                            TestResult::Pending
                        },
                    )
                })
                .collect(),
            Testing::Reactive => {
                let mut r: Vec<(String, TestResult)> = markers
                    .iter()
                    .take(half)
                    .map(|m| (m.clone(), TestResult::Negative))
                    .collect();
                let reactive = markers.get(half).cloned().unwrap_or_else(|| "hbv_nat".to_owned());
                r.push((reactive, TestResult::Positive));
                r
            }
        };
        for (marker, result) in results {
            let input = TestInput { marker, result };
            units::record_test(self.conn, &self.actor, &key, input, &self.policy).step("marker result")?;
        }
        if testing == Testing::Released {
            let input = ReleaseInput {
                emergency: false,
                physician: None,
                excursion_disposition: None,
                request_id: None,
                results_expected_at: None,
            };
            units::release(self.conn, &self.actor, false, &key, input, &self.policy).step("release")?;
        }
        Ok(())
    }

    fn fate(&mut self, u: &UnitView, fate: Fate) -> ApiResult<()> {
        let key = UnitKey::Id(u.id);
        match fate {
            Fate::Stock => {}
            Fate::Crossmatched(r) => self.crossmatch(u.id, r)?,
            Fate::Allocated(r) => {
                self.crossmatch(u.id, r)?;
                self.allocate(u.id, r)?;
            }
            Fate::Emergency(r) => {
                let (request, _, _) = self.request(r)?;
                let input = ReleaseInput {
                    emergency: true,
                    physician: Some(Physician {
                        name: "Dr L. Moreau, consultant haematologist".to_owned(),
                        acknowledged_at: truncate(Utc::now() - TimeDelta::minutes(20), 1),
                    }),
                    excursion_disposition: None,
                    request_id: Some(request),
                    results_expected_at: None,
                };
                // A medical director's release (the API's role check; the actor stays `demo`).
                units::release(self.conn, &self.actor, true, &key, input, &self.policy).step("emergency release")?;
                self.crossmatch(u.id, r)?;
                self.allocate(u.id, r)?;
            }
            Fate::Issued(r) | Fate::Returned(r) | Fate::Transfused(r) => {
                self.crossmatch(u.id, r)?;
                if let Some(allocation) = self.allocate(u.id, r)? {
                    let input = IssueInput {
                        scanned_din: u.din.clone(),
                        scanned_group: None,
                        acknowledge: None,
                        authorisation: None,
                    };
                    allocations::issue(self.conn, &self.actor, allocation, input, &self.policy).step("issue")?;
                    self.after_issue(allocation, fate)?;
                }
            }
            Fate::Excursion => {
                let input = ReadingInput {
                    temperature_c: self.policy.unit.storage_temp_max_c + 3.0,
                    at: None,
                    location: Some(text("location", "Incubator 2")?),
                };
                units::record_reading(self.conn, &self.actor, &key, input, &self.policy).step("storage reading")?;
            }
            Fate::Discarded => {
                let reason = text("reason", "bag leaking at the ports on receipt inspection")?;
                units::discard(self.conn, &self.actor, &key, &reason).step("discard")?;
            }
        }
        Ok(())
    }

    fn after_issue(&mut self, allocation: i64, fate: Fate) -> ApiResult<()> {
        match fate {
            Fate::Returned(_) => {
                let reason = text("reason", "transfusion postponed on the ward: patient febrile")?;
                allocations::return_unit(self.conn, &self.actor, allocation, &reason, &self.policy).step("return")?;
            }
            Fate::Transfused(_) => {
                let input = TransfusionInput {
                    started_at: Utc::now(),
                    ended_at: None,
                    reaction: None,
                    pre_anc_per_ul: Some(60),
                    post_anc_per_ul: None,
                };
                allocations::transfusion(self.conn, &self.actor, allocation, input, None, &self.policy)
                    .step("transfusion")?;
            }
            _ => {}
        }
        Ok(())
    }

    /// A compatible IAT crossmatch on the patient's newest sample.
    fn crossmatch(&mut self, unit: i64, request: &str) -> ApiResult<()> {
        let (_, _, sample) = self.request(request)?;
        let Some(sample) = sample else { return Ok(()) };
        let input = CrossmatchInput {
            unit_id: unit,
            sample_id: sample,
            result: CrossmatchResult::Compatible,
            method: CrossmatchMethod::Iat,
            kind: None,
            performed_at: None,
        };
        allocations::record_crossmatch(self.conn, &self.actor, input, &self.policy).step("crossmatch")?;
        Ok(())
    }

    /// Allocates as staff would after reading the unit's findings: acknowledging those of the
    /// acknowledge tier, recording a physician's authorisation over those of the authorise
    /// tier. A unit the rules block (a policy stricter than the default) stays in stock.
    fn allocate(&mut self, unit: i64, request: &str) -> ApiResult<Option<i64>> {
        let (request_id, patient, _) = self.request(request)?;
        let found = allocations::compatibility(self.conn, unit, patient, Some(request_id), None, &self.policy)
            .step("compatibility")?;
        if found.reasons.iter().any(|f| f.severity == Severity::Block) {
            tracing::warn!(
                unit,
                request_id,
                "demo: the policy blocks this allocation; the unit stays in stock"
            );
            return Ok(None);
        }
        let acknowledge: Vec<String> = found
            .reasons
            .iter()
            .filter(|f| f.severity == Severity::Acknowledge)
            .map(|f| f.code.clone())
            .collect();
        let authorisation = if found.reasons.iter().any(|f| f.severity == Severity::Authorise) {
            Some(AuthorisationInput {
                by: text("by", "Dr N. Adeyemi")?,
                role: text("role", "on-call haematologist")?,
                at: truncate(Utc::now() - TimeDelta::minutes(10), 1),
                reason: text(
                    "reason",
                    "no better-matched unit before the patient's need; benefit outweighs risk",
                )?,
            })
        } else {
            None
        };
        let input = AllocateInput {
            unit_id: unit,
            acknowledge: Some(acknowledge),
            authorisation,
        };
        let made = allocations::allocate(self.conn, &self.actor, request_id, input, &self.policy).step("allocation")?;
        Ok(Some(made.id))
    }
}

/// 18 random bytes, as the bootstrap admin's password (not from the seeded generator).
fn generated_password() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 18];
    rand::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
