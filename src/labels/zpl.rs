//! The label in ZPL II for Zebra printers at 203 or 300 dpi: the same layout as the PDF, the
//! bar codes as `^BC` (Code 128) fields whose data names its subsets with invocation codes.

use super::code128::{self, Segment};
use super::{Item, LABEL_MM, MODULE_MM};

/// Printer resolutions a label can be rendered for.
pub const DPIS: [u16; 2] = [203, 300];

/// Dots per millimetre and the module width in dots (0.25 mm at 203 dpi, 0.254 mm at 300).
fn scale(dpi: u16) -> (f32, u32) {
    // "203 dpi" printheads are 8 dots/mm exactly.
    let per_mm = if dpi == 203 { 8.0 } else { f32::from(dpi) / 25.4 };
    (per_mm, (MODULE_MM * per_mm).round().max(1.0) as u32)
}

fn dots(mm: f32, per_mm: f32) -> i64 {
    (mm * per_mm).round() as i64
}

/// `^FD` of a `^BC` field: start in B (`>:`), `>5` to switch to C, `>6` back to B; in B the
/// characters ZPL reserves are written as invocation codes (`>0` `>`, `><` `^`, `>=` `~`).
pub fn bc_field_data(data: &str) -> Option<String> {
    let mut out = String::new();
    for (i, s) in code128::segments(data)?.iter().enumerate() {
        match (i, s) {
            (0, Segment::B(_)) => out.push_str(">:"),
            (0, Segment::C(_)) => out.push_str(">;"),
            (_, Segment::B(_)) => out.push_str(">6"),
            (_, Segment::C(_)) => out.push_str(">5"),
        }
        match s {
            Segment::C(digits) => out.push_str(digits),
            Segment::B(text) => {
                for c in text.chars() {
                    match c {
                        '>' => out.push_str(">0"),
                        '^' => out.push_str("><"),
                        '~' => out.push_str(">="),
                        c => out.push(c),
                    }
                }
            }
        }
    }
    Some(out)
}

/// Text for `^FH_^FD`: `_`, `^` and `~` as hexadecimal escapes (free text such as a supplier's
/// name must not end the field or start a command).
fn text_field(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '_' => out.push_str("_5F"),
            '^' => out.push_str("_5E"),
            '~' => out.push_str("_7E"),
            // ZPL's font 0 has no typographic dashes.
            '–' | '—' => out.push('-'),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Renders laid-out items (see [`super::layout`]) as one ZPL II label; `None` for a
/// resolution not in [`DPIS`].
pub fn render(items: &[Item], dpi: u16) -> Option<String> {
    if !DPIS.contains(&dpi) {
        return None;
    }
    let (per_mm, module) = scale(dpi);
    let size = dots(LABEL_MM, per_mm);
    let mut z = format!("^XA\n^CI28\n^PW{size}\n^LL{size}\n^LH0,0\n");
    for item in items {
        match item {
            Item::Text {
                x,
                baseline,
                size_pt,
                up,
                text,
                ..
            } => {
                let h = (size_pt * f32::from(dpi) / 72.0).round() as i64;
                let o = if *up { 'B' } else { 'N' };
                z.push_str(&format!(
                    "^FT{},{}^A0{o},{h},{h}^FH_^FD{}^FS\n",
                    dots(*x, per_mm),
                    dots(*baseline, per_mm),
                    text_field(text)
                ));
            }
            Item::Barcode {
                x,
                top,
                height,
                data,
                modules,
            } => {
                let centre = x + modules.len() as f32 * MODULE_MM / 2.0;
                let width = modules.len() as i64 * i64::from(module);
                let fd = bc_field_data(data)?;
                z.push_str(&format!(
                    "^FO{},{}^BY{module}^BCN,{},N,N,N,N^FD{fd}^FS\n",
                    dots(centre, per_mm) - width / 2,
                    dots(*top, per_mm),
                    dots(*height, per_mm)
                ));
            }
            Item::Frame { x, top, w, h, line } => {
                z.push_str(&format!(
                    "^FO{},{}^GB{},{},{}^FS\n",
                    dots(*x, per_mm),
                    dots(*top, per_mm),
                    dots(*w, per_mm),
                    dots(*h, per_mm),
                    dots(*line, per_mm).max(1)
                ));
            }
            Item::Rule { x1, y1, x2, y2, line } => {
                let t = dots(*line, per_mm).max(1);
                let (w, h) = if x1 == x2 {
                    (t, dots((y2 - y1).abs(), per_mm))
                } else {
                    (dots((x2 - x1).abs(), per_mm), t)
                };
                let (x0, y0) = (
                    dots(x1.min(*x2), per_mm) - if x1 == x2 { t / 2 } else { 0 },
                    dots(y1.min(*y2), per_mm) - if x1 == x2 { 0 } else { t / 2 },
                );
                z.push_str(&format!("^FO{},{}^GB{w},{h},{t}^FS\n", x0.max(0), y0.max(0)));
            }
        }
    }
    z.push_str("^XZ\n");
    Some(z)
}

/// Reads a `^BC` field's data back (the inverse of [`bc_field_data`]), as a printer would.
pub fn decode_bc_field_data(fd: &str) -> Option<String> {
    #[derive(PartialEq)]
    enum Set {
        B,
        C,
    }
    let mut set = Set::B;
    let mut out = String::new();
    let mut chars = fd.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '>' {
            match chars.next()? {
                ':' | '6' => set = Set::B,
                ';' | '5' => set = Set::C,
                '0' if set == Set::B => out.push('>'),
                '<' if set == Set::B => out.push('^'),
                '=' if set == Set::B => out.push('~'),
                _ => return None,
            }
        } else if set == Set::C {
            let d = chars.next()?;
            if !(c.is_ascii_digit() && d.is_ascii_digit()) {
                return None;
            }
            out.push(c);
            out.push(d);
        } else {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::super::{layout, tests::sample};
    use super::*;

    #[test]
    fn field_data_round_trips() {
        for data in [
            "=A99992612345670",
            "=%9500",
            "=%A000",
            "=<E9999V00",
            "&>0263301159",
            "&>026330115",
            "=A123456B>^~",
        ] {
            let fd = bc_field_data(data).expect("encodes");
            assert!(!fd.contains('^') && !fd.contains('~'), "{fd}");
            assert_eq!(decode_bc_field_data(&fd).as_deref(), Some(data), "{fd}");
        }
        assert_eq!(bc_field_data("&>0263301159").as_deref(), Some(">:&>0>50263301159"));
        assert_eq!(bc_field_data("=<E9999V00").as_deref(), Some(">:=<E9999V00"));
        assert_eq!(bc_field_data("é"), None);
        assert_eq!(decode_bc_field_data(">;123"), None);
        assert_eq!(decode_bc_field_data(">:a>9"), None);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(text_field("a_b^c~d–e—f°"), "a_5Fb_5Ec_7Ed-e-f°");
    }

    /// Each `^BC` field's data, decoded.
    fn barcodes(zpl: &str) -> Vec<String> {
        zpl.lines()
            .filter(|l| l.contains("^BC"))
            .map(|l| {
                let fd = l
                    .split("^FD")
                    .nth(1)
                    .and_then(|r| r.strip_suffix("^FS"))
                    .expect("^FD…^FS");
                decode_bc_field_data(fd).expect("decodes")
            })
            .collect()
    }

    #[test]
    fn golden_files_and_bar_code_data() {
        let label = sample();
        let items = layout(&label).expect("layout");
        let want = [
            label.isbt128.din.clone(),
            label.isbt128.blood_group.clone(),
            label.isbt128.product.clone(),
            label.isbt128.expiry.clone(),
        ];
        for dpi in DPIS {
            let zpl = render(&items, dpi).expect("renders");
            assert_eq!(barcodes(&zpl), want, "{dpi} dpi");
            let size = if dpi == 203 { 800 } else { 1181 };
            assert!(zpl.contains(&format!("^PW{size}\n^LL{size}\n")));
            // Every field origin on the label.
            for l in zpl.lines().filter(|l| l.starts_with("^FO") || l.starts_with("^FT")) {
                let (x, y) = l[3..]
                    .split('^')
                    .next()
                    .and_then(|p| p.split_once(','))
                    .expect("origin");
                let (x, y): (i64, i64) = (x.parse().expect("x"), y.parse().expect("y"));
                assert!((0..=size).contains(&x) && (0..=size).contains(&y), "{l}");
            }
            let path = format!("{}/tests/golden/label-{dpi}.zpl", env!("CARGO_MANIFEST_DIR"));
            if std::env::var_os("GRANULO_UPDATE_GOLDEN").is_some() {
                std::fs::write(&path, &zpl).expect("write golden");
            }
            let golden = std::fs::read_to_string(&path).expect("golden file (GRANULO_UPDATE_GOLDEN=1 writes it)");
            assert_eq!(
                zpl, golden,
                "{path} (GRANULO_UPDATE_GOLDEN=1 rewrites it after a deliberate change)"
            );
        }
        assert_eq!(render(&items, 600), None);
    }
}
