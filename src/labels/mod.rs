//! Printable ISBT 128 base labels: a [`Label`] laid out on 100 × 100 mm in the four quadrants
//! of the labelling standard, then drawn as PDF ([`pdf`]) or ZPL II ([`zpl`]). Pure code: the
//! routes fetch the label and record the print; here nothing reads the database.
//!
//! The bar codes carry exactly the four data strings of the JSON label (`LabelBarcodes`).

pub mod code128;
pub mod pdf;
pub mod zpl;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::blood::Cmv;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LabelBarcodes {
    /// `=` + DIN + Type 3 flags (the flags carry the check character).
    pub din: String,
    /// `=%` + blood group code + `00`.
    pub blood_group: String,
    /// `=<` + product code.
    pub product: String,
    /// `&>` + `cyyjjjhhmm`, on the facility's wall clock (scanners read it as local time).
    pub expiry: String,
}

/// What the label must carry (domain-reference §5.1), eye-readable, plus the ISBT 128 data.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Label {
    /// Which version of this unit's label this content is: the last printed version while the
    /// content is unchanged, the next one once the unit changed (irradiation, release, …).
    /// 1 before any print.
    pub version: i32,
    pub product_name: String,
    pub producer: String,
    /// DIN printed in groups (`A9999 26 000001`), with the boxed check character separately.
    pub din: String,
    pub check_character: String,
    pub blood_group: String,
    /// Printed as special testing ("CMV NEGATIVE") when negative.
    pub cmv: Cmv,
    pub volume_ml: i32,
    pub granulocyte_count: f64,
    pub collected_at: DateTime<Utc>,
    /// With the hour: the unit lives 24 h.
    pub expires_at: DateTime<Utc>,
    /// The expiry on the facility's wall clock, with its zone (`26 NOV 2026 06:04 EST`).
    pub expiry_text: String,
    /// The facility's IANA time zone (`GRANULO_TIMEZONE`).
    pub time_zone: String,
    pub storage: String,
    pub irradiated: bool,
    /// Not released (or back in quarantine): the label says it is not for transfusion.
    pub quarantined: bool,
    pub emergency_release: bool,
    pub pooled_from: Vec<String>,
    /// Statements to print, in order.
    pub statements: Vec<String>,
    pub isbt128: LabelBarcodes,
}

/// What a label printed before release says.
pub const QUARANTINE: &str = "QUARANTINE: not for transfusion";

/// The base label is square.
pub const LABEL_MM: f32 = 100.0;
/// Width of the narrowest bar.
pub const MODULE_MM: f32 = 0.25;
/// Height of every bar code.
pub const BAR_HEIGHT_MM: f32 = 12.0;
/// Points to millimetres.
pub const PT_MM: f32 = 25.4 / 72.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    Regular,
    Bold,
}

/// What a renderer draws. Millimetres from the label's top-left corner.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// Text starting at (`x`, `baseline`); `up` turns it 90° to read bottom to top.
    Text {
        x: f32,
        baseline: f32,
        size_pt: f32,
        weight: Weight,
        up: bool,
        text: String,
    },
    /// A Code 128 symbol: `modules` as from [`code128::modules`], `data` what it encodes.
    Barcode {
        x: f32,
        top: f32,
        height: f32,
        data: String,
        modules: Vec<u8>,
    },
    /// A stroked rectangle (the check character's box).
    Frame {
        x: f32,
        top: f32,
        w: f32,
        h: f32,
        line: f32,
    },
    /// A straight line (the quadrants' borders).
    Rule {
        x1: f32,
        y1: f32,
        x2: f32,
        y2: f32,
        line: f32,
    },
}

/// Helvetica advance widths (Adobe AFM, 1/1000 em) for ASCII 0x20–0x7E.
const HELVETICA: [u16; 95] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, // ' '../
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, // 0..?
    1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778, // @..O
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556, // P.._
    333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556, // `..o
    556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584, // p..~
];

/// Width of `text` in millimetres, on the safe side for bold (Helvetica-Bold is ≤ 10 % wider).
pub fn text_width(text: &str, size_pt: f32, weight: Weight) -> f32 {
    let em: u32 = text
        .chars()
        .map(|c| match c {
            ' '..='~' => u32::from(HELVETICA[(c as usize) - 0x20]),
            '—' => 1000,
            '°' => 400,
            _ => 556,
        })
        .sum();
    let bold = if weight == Weight::Bold { 1.1 } else { 1.0 };
    em as f32 / 1000.0 * size_pt * PT_MM * bold
}

/// The largest size ≤ `size_pt` (and ≥ `min_pt`) at which `text` fits `width` mm.
fn fit(text: &str, width: f32, size_pt: f32, min_pt: f32, weight: Weight) -> f32 {
    let w = text_width(text, size_pt, weight);
    if w <= width {
        size_pt
    } else {
        (size_pt * width / w).max(min_pt)
    }
}

/// Splits `text` into lines no wider than `width` mm (words longer than a line stay whole).
fn wrap(text: &str, width: f32, size_pt: f32, weight: Weight) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let candidate = if line.is_empty() {
            word.to_owned()
        } else {
            format!("{line} {word}")
        };
        if !line.is_empty() && text_width(&candidate, size_pt, weight) > width {
            lines.push(std::mem::replace(&mut line, word.to_owned()));
        } else {
            line = candidate;
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

struct Page {
    items: Vec<Item>,
}

impl Page {
    fn text(&mut self, x: f32, baseline: f32, size_pt: f32, weight: Weight, text: impl Into<String>) {
        self.items.push(Item::Text {
            x,
            baseline,
            size_pt,
            weight,
            up: false,
            text: text.into(),
        });
    }

    /// Centred on `cx`.
    fn centred(&mut self, cx: f32, baseline: f32, size_pt: f32, weight: Weight, text: &str) {
        let w = text_width(text, size_pt, weight);
        self.text(cx - w / 2.0, baseline, size_pt, weight, text);
    }

    /// A bar code centred on `cx`, with its data string in small type underneath. Returns the
    /// baseline of that text.
    fn barcode(&mut self, cx: f32, top: f32, data: &str) -> ApiResult<f32> {
        let modules = code128::modules(data)
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("cannot encode {data:?} in Code 128")))?;
        let w = modules.len() as f32 * MODULE_MM;
        self.items.push(Item::Barcode {
            x: cx - w / 2.0,
            top,
            height: BAR_HEIGHT_MM,
            data: data.to_owned(),
            modules,
        });
        let baseline = top + BAR_HEIGHT_MM + 3.0;
        self.centred(cx, baseline, 7.0, Weight::Regular, data);
        Ok(baseline)
    }
}

/// Half the label: the centre of the left quadrants, and the width text may take in one.
const Q: f32 = LABEL_MM / 2.0;
const TEXT_WIDTH: f32 = Q - 6.0;

/// The label laid out: what goes in each quadrant.
///
/// * upper left: DIN bar code; the DIN, its flag characters (turned 90°) and the boxed check
///   character; the producer; pooled donations; the label's version;
/// * upper right: blood group bar code; ABO large, RhD under it;
/// * lower left: product bar code; product name, volume and count, storage and handling;
/// * lower right: expiry bar code; expiry on the facility's clock; special testing.
pub fn layout(label: &Label) -> ApiResult<Vec<Item>> {
    let mut p = Page { items: Vec::new() };
    let codes = &label.isbt128;
    let (left, right) = (Q / 2.0, Q + Q / 2.0);
    for (x1, y1, x2, y2) in [(Q, 0.0, Q, LABEL_MM), (0.0, Q, LABEL_MM, Q)] {
        p.items.push(Item::Rule {
            x1,
            y1,
            x2,
            y2,
            line: 0.3,
        });
    }

    // Upper left: the DIN.
    p.barcode(left, 4.0, &codes.din)?;
    let flags = codes.din.get(codes.din.len().saturating_sub(2)..).unwrap_or_default();
    let (din_pt, flag_pt) = (12.0, 7.0);
    let din_w = text_width(&label.din, din_pt, Weight::Bold);
    let flag_w = flag_pt * PT_MM * 0.75;
    let k_w = text_width(&label.check_character, din_pt, Weight::Bold) + 2.0;
    let total = din_w + 1.0 + flag_w + 1.5 + k_w;
    let x0 = left - total / 2.0;
    let baseline = 26.0;
    p.text(x0, baseline, din_pt, Weight::Bold, label.din.as_str());
    // Turned text starts at its bottom; its glyphs stand to the left of `x`.
    let fx = x0 + din_w + 1.0 + flag_w;
    p.items.push(Item::Text {
        x: fx,
        baseline,
        size_pt: flag_pt,
        weight: Weight::Regular,
        up: true,
        text: flags.to_owned(),
    });
    let kx = fx + 1.5;
    let cap = din_pt * PT_MM * 0.72;
    p.items.push(Item::Frame {
        x: kx,
        top: baseline - cap - 1.0,
        w: k_w,
        h: cap + 2.0,
        line: 0.3,
    });
    p.text(kx + 1.0, baseline, din_pt, Weight::Bold, label.check_character.as_str());
    let mut y = 32.0;
    for line in wrap(&label.producer, TEXT_WIDTH, 7.0, Weight::Regular)
        .into_iter()
        .take(2)
    {
        p.centred(left, y, 7.0, Weight::Regular, &line);
        y += 3.2;
    }
    if !label.pooled_from.is_empty() {
        p.centred(
            left,
            y,
            7.0,
            Weight::Regular,
            &format!("Pooled from {} donations", label.pooled_from.len()),
        );
    }
    p.centred(
        left,
        47.0,
        5.5,
        Weight::Regular,
        &format!("Label version {}", label.version),
    );

    // Upper right: ABO and RhD.
    p.barcode(right, 4.0, &codes.blood_group)?;
    let (abo, rhd) = label
        .blood_group
        .split_once(' ')
        .unwrap_or((label.blood_group.as_str(), ""));
    p.centred(right, 38.0, 40.0, Weight::Bold, abo);
    let rhd_pt = fit(rhd, TEXT_WIDTH, 14.0, 8.0, Weight::Bold);
    p.centred(right, 46.0, rhd_pt, Weight::Bold, rhd);

    // Lower left: the product.
    p.barcode(left, Q + 4.0, &codes.product)?;
    let name_pt = fit(&label.product_name, TEXT_WIDTH, 11.0, 7.0, Weight::Bold);
    p.centred(left, Q + 24.0, name_pt, Weight::Bold, &label.product_name);
    let amount = format!(
        "{} mL, {:.1} × 10^10 granulocytes",
        label.volume_ml,
        label.granulocyte_count / 1e10
    );
    p.centred(
        left,
        Q + 28.5,
        fit(&amount, TEXT_WIDTH, 7.0, 5.0, Weight::Regular),
        Weight::Regular,
        &amount,
    );
    let handling = format!("{}. Do not agitate.", label.storage);
    p.centred(
        left,
        Q + 32.5,
        fit(&handling, TEXT_WIDTH, 7.0, 5.0, Weight::Regular),
        Weight::Regular,
        &handling,
    );
    // The general statements, small: six lines fit.
    let mut y = Q + 36.5;
    let general = label.statements.iter().filter(|s| {
        !(s.as_str() == "Do not agitate"
            || s.as_str() == "Irradiated"
            || s.as_str() == QUARANTINE
            || s.starts_with("EMERGENCY RELEASE"))
    });
    for s in general {
        for line in wrap(s, Q - 3.0, 5.5, Weight::Regular) {
            p.centred(left, y, 5.5, Weight::Regular, &line);
            y += 2.3;
        }
    }

    // Lower right: expiry and special testing.
    p.barcode(right, Q + 4.0, &codes.expiry)?;
    p.centred(right, Q + 23.0, 7.0, Weight::Regular, "EXPIRES");
    let exp_pt = fit(&label.expiry_text, TEXT_WIDTH, 11.0, 7.0, Weight::Bold);
    p.centred(right, Q + 28.0, exp_pt, Weight::Bold, &label.expiry_text);
    let mut special: Vec<&str> = Vec::new();
    if label.quarantined {
        special.extend(["QUARANTINE —", "NOT FOR TRANSFUSION"]);
    }
    if label.irradiated {
        special.push("IRRADIATED");
    }
    if label.cmv == crate::domain::blood::Cmv::Negative {
        special.push("CMV NEGATIVE");
    }
    if label.emergency_release {
        special.extend(["EMERGENCY RELEASE —", "markers pending"]);
    }
    // Lines closer and smaller when there are many (at most six: 3 mm, 8 pt).
    let step = (15.0 / (special.len().max(2) - 1) as f32).min(4.2);
    let max_pt = (step / PT_MM * 0.95).min(9.0);
    let mut y = Q + 33.5;
    for s in special {
        let pt = fit(s, TEXT_WIDTH, max_pt, 6.0, Weight::Bold);
        p.centred(right, y, pt, Weight::Bold, s);
        y += step;
    }
    Ok(p.items)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::blood::Cmv;
    use chrono::{TimeZone, Utc};

    /// A fixed label for the golden files and layout tests.
    pub(crate) fn sample() -> Label {
        let din = crate::domain::isbt128::Din::parse("A999926000001").expect("din");
        Label {
            version: 2,
            product_name: "Granulocytes, Apheresis".into(),
            producer: "granulo blood bank".into(),
            din: "A9999 26 000001".into(),
            check_character: din.check_character().to_string(),
            blood_group: "O RhD negative".into(),
            cmv: Cmv::Negative,
            volume_ml: 250,
            granulocyte_count: 3.2e10,
            collected_at: Utc.with_ymd_and_hms(2026, 11, 25, 11, 4, 0).single().expect("time"),
            expires_at: Utc.with_ymd_and_hms(2026, 11, 26, 11, 4, 0).single().expect("time"),
            expiry_text: "26 NOV 2026 06:04 EST".into(),
            time_zone: "America/New_York".into(),
            storage: "Store at 20–24 °C".into(),
            irradiated: true,
            quarantined: false,
            emergency_release: true,
            pooled_from: vec![],
            statements: vec![
                "Do not agitate".into(),
                "Irradiated".into(),
                "EMERGENCY RELEASE: not fully tested for infectious markers; released on the authority of Dr Fleming (25 NOV 2026 07:00 EST)".into(),
                "Always check patient/component compatibility/identity".into(),
                "Inspect pack and contents for signs of deterioration or damage".into(),
                "Risk of adverse reaction/infection, including vCJD".into(),
            ],
            isbt128: LabelBarcodes {
                din: format!("={}{}", din.as_text(), din.type3_flags()),
                blood_group: "=%9500".into(),
                product: "=<E9999V00".into(),
                expiry: "&>0263300604".into(),
            },
        }
    }

    #[test]
    fn every_item_is_on_the_label_and_every_data_string_has_bars() {
        let mut all = sample();
        all.quarantined = true;
        all.pooled_from = vec!["A999921123456".into(), "G101610840386".into()];
        all.producer = "A supplier with a very long name indeed, Filton, Bristol, United Kingdom".into();
        for label in [sample(), all] {
            check(&label);
        }
    }

    fn check(label: &Label) {
        let items = layout(label).expect("layout");
        let mut data = Vec::new();
        for item in &items {
            match item {
                Item::Barcode {
                    x,
                    top,
                    height,
                    data: d,
                    modules,
                } => {
                    let w = modules.len() as f32 * MODULE_MM;
                    // Quiet zone of 10 modules inside the quadrant.
                    let quadrant = if *x < Q { 0.0 } else { Q };
                    assert!(*x - quadrant >= 10.0 * MODULE_MM, "{d}");
                    assert!(quadrant + Q - (x + w) >= 10.0 * MODULE_MM, "{d}");
                    assert!(*top >= 0.0 && top + height <= LABEL_MM);
                    data.push(d.clone());
                }
                Item::Text {
                    x,
                    baseline,
                    text,
                    size_pt,
                    weight,
                    up: false,
                } => {
                    let w = text_width(text, *size_pt, *weight);
                    assert!(*x >= 0.5 && x + w <= LABEL_MM - 0.5, "{text} at {x} is {w} wide");
                    assert!(*baseline > 3.0 && *baseline < LABEL_MM - 1.0, "{text} at {baseline}");
                    // Within its quadrant.
                    let quadrant = if *x < Q { 0.0 } else { Q };
                    assert!(x + w <= quadrant + Q, "{text} crosses into the next quadrant");
                }
                _ => {}
            }
        }
        let l = &label.isbt128;
        assert_eq!(data, [&l.din, &l.blood_group, &l.product, &l.expiry].map(String::clone));
    }

    #[test]
    fn wrapping_and_fitting() {
        assert_eq!(wrap("a b c", 1000.0, 7.0, Weight::Regular), ["a b c"]);
        assert_eq!(wrap("aaaa bbbb", 4.0, 7.0, Weight::Regular), ["aaaa", "bbbb"]);
        assert!(wrap("", 10.0, 7.0, Weight::Regular).is_empty());
        let pt = fit(
            "EMERGENCY RELEASE — markers pending",
            TEXT_WIDTH,
            6.0,
            4.0,
            Weight::Bold,
        );
        assert!(pt < 6.0 && text_width("EMERGENCY RELEASE — markers pending", pt, Weight::Bold) <= TEXT_WIDTH + 0.01);
        assert_eq!(fit("O", TEXT_WIDTH, 40.0, 6.0, Weight::Bold), 40.0);
    }
}
