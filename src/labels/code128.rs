//! Code 128 for ISBT 128 data strings: which subset encodes which part, and the bars.
//!
//! ISBT 128 data strings start with `=`/`&` and a second identifier character (`%<>*`, or a
//! letter for the DIN), then data. Subset B encodes every printable ASCII character; a trailing
//! run of digits goes into subset C (two digits a symbol), which keeps the DIN's bars short
//! enough for a 50 mm quadrant at a 0.25 mm module.

use barcoders::sym::code128::Code128;

/// One run of the data in one subset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Printable ASCII (0x20–0x7E).
    B(String),
    /// An even number of digits.
    C(String),
}

/// Digits fewer than this stay in subset B (a switch to C costs a symbol).
const MIN_C_RUN_AT_END: usize = 4;
const MIN_C_RUN_INSIDE: usize = 6;

/// Splits `data` into subsets: B, with C for long runs of digits (an odd run leaves its first
/// digit in B). `None` when `data` is empty or holds a character outside printable ASCII.
pub fn segments(data: &str) -> Option<Vec<Segment>> {
    if data.is_empty() || !data.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return None;
    }
    let bytes = data.as_bytes();
    let mut out: Vec<Segment> = Vec::new();
    let mut b = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let run = bytes[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        let at_end = i + run == bytes.len();
        let min = if at_end { MIN_C_RUN_AT_END } else { MIN_C_RUN_INSIDE };
        // Never start in C: every ISBT 128 string starts with its identifier anyway.
        if run >= min && i > 0 {
            let lead = run % 2;
            b.push_str(&data[i..i + lead]);
            if !b.is_empty() {
                out.push(Segment::B(std::mem::take(&mut b)));
            }
            out.push(Segment::C(data[i + lead..i + run].to_owned()));
            i += run;
        } else if run > 0 {
            b.push_str(&data[i..i + run]);
            i += run;
        } else {
            b.push(char::from(bytes[i]));
            i += 1;
        }
    }
    if !b.is_empty() {
        out.push(Segment::B(b));
    }
    Some(out)
}

/// The bars of `data` (1 = bar, 0 = space, one module each), without quiet zones.
pub fn modules(data: &str) -> Option<Vec<u8>> {
    let mut spec = String::new();
    // barcoders: the first selector is the start character, later ones switch subsets.
    for s in segments(data)? {
        match s {
            Segment::B(t) => {
                spec.push('Ɓ');
                spec.push_str(&t);
            }
            Segment::C(t) => {
                spec.push('Ć');
                spec.push_str(&t);
            }
        }
    }
    Code128::new(spec).ok().map(|c| c.encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Segment {
        Segment::B(s.to_owned())
    }
    fn c(s: &str) -> Segment {
        Segment::C(s.to_owned())
    }

    #[test]
    fn subsets_of_isbt_strings() {
        let cases: &[(&str, Option<Vec<Segment>>)] = &[
            ("=A99992612345670", Some(vec![b("=A"), c("99992612345670")])),
            ("=%9500", Some(vec![b("=%"), c("9500")])),
            ("=%A000", Some(vec![b("=%A000")])),
            ("=<E9999V00", Some(vec![b("=<E9999V00")])),
            ("&>0263301159", Some(vec![b("&>"), c("0263301159")])),
            ("&>026330115", Some(vec![b("&>0"), c("26330115")])),
            ("=G12341765432170", Some(vec![b("=G"), c("12341765432170")])),
            ("=A123456B", Some(vec![b("=A"), c("123456"), b("B")])),
            ("=A12345B", Some(vec![b("=A12345B")])),
            ("1234", Some(vec![b("1234")])),
            ("", None),
            ("=%é", None),
            ("=\n", None),
        ];
        for (data, want) in cases {
            assert_eq!(&segments(data), want, "{data}");
        }
    }

    #[test]
    fn bars_have_code128_lengths() {
        // start + symbols + check (11 modules each) + stop (13).
        for (data, symbols) in [
            ("=A99992612345670", 2 + 1 + 7),
            ("=%9500", 2 + 1 + 2),
            ("=<E9999V00", 10),
        ] {
            let m = modules(data).expect("encodes");
            assert_eq!(m.len(), 11 * (symbols + 2) + 13, "{data}");
            assert_eq!(m.first(), Some(&1));
            assert_eq!(m.last(), Some(&1));
        }
        assert_eq!(modules("=%é"), None);
    }
}
