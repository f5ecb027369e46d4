//! The label as a one-page PDF, 100 × 100 mm, with the PDF's builtin Helvetica (WinAnsi
//! covers `—`, `–`, `°` and `×`; nothing is embedded).

use printpdf::{
    BuiltinFont, Color, Mm, Op, PaintMode, PdfDocument, PdfFontHandle, PdfPage, PdfSaveOptions, Pt, Rect, Rgb,
    TextItem, TextMatrix, WindingOrder,
};

use super::{Item, LABEL_MM, MODULE_MM, Weight};

fn black() -> Color {
    Color::Rgb(Rgb {
        r: 0.0,
        g: 0.0,
        b: 0.0,
        icc_profile: None,
    })
}

/// Millimetres from the top to PDF points from the bottom.
fn y(top_mm: f32) -> Pt {
    Mm(LABEL_MM - top_mm).into_pt()
}

fn x(mm: f32) -> Pt {
    Mm(mm).into_pt()
}

fn rect(x0: f32, top: f32, w: f32, h: f32, mode: PaintMode) -> Op {
    Op::DrawRectangle {
        rectangle: Rect {
            x: x(x0),
            y: y(top + h),
            width: Mm(w).into_pt(),
            height: Mm(h).into_pt(),
            mode: Some(mode),
            winding_order: Some(WindingOrder::NonZero),
        },
    }
}

/// Renders laid-out items (see [`super::layout`]) as PDF bytes.
pub fn render(items: &[Item], title: &str) -> Vec<u8> {
    let mut ops = vec![Op::SetFillColor { col: black() }, Op::SetOutlineColor { col: black() }];
    for item in items {
        match item {
            Item::Text {
                x: x0,
                baseline,
                size_pt,
                weight,
                up,
                text,
            } => {
                let font = match weight {
                    Weight::Regular => BuiltinFont::Helvetica,
                    Weight::Bold => BuiltinFont::HelveticaBold,
                };
                let matrix = if *up {
                    TextMatrix::TranslateRotate(x(*x0), y(*baseline), 90.0)
                } else {
                    TextMatrix::Translate(x(*x0), y(*baseline))
                };
                ops.extend([
                    Op::StartTextSection,
                    Op::SetFont {
                        font: PdfFontHandle::Builtin(font),
                        size: Pt(*size_pt),
                    },
                    Op::SetTextMatrix { matrix },
                    Op::ShowText {
                        items: vec![TextItem::Text(text.clone())],
                    },
                    Op::EndTextSection,
                ]);
            }
            Item::Barcode {
                x: x0,
                top,
                height,
                modules,
                ..
            } => {
                // One rectangle per bar (a run of dark modules).
                let mut i = 0;
                while i < modules.len() {
                    if modules[i] == 1 {
                        let run = modules[i..].iter().take_while(|m| **m == 1).count();
                        ops.push(rect(
                            x0 + i as f32 * MODULE_MM,
                            *top,
                            run as f32 * MODULE_MM,
                            *height,
                            PaintMode::Fill,
                        ));
                        i += run;
                    } else {
                        i += 1;
                    }
                }
            }
            Item::Frame { x: x0, top, w, h, line } => {
                ops.push(Op::SetOutlineThickness {
                    pt: Mm(*line).into_pt(),
                });
                ops.push(rect(*x0, *top, *w, *h, PaintMode::Stroke));
            }
            Item::Rule { x1, y1, x2, y2, line } => {
                // A thin filled rectangle: exact at any zoom, no line caps to think about.
                let half = line / 2.0;
                ops.push(if x1 == x2 {
                    rect(x1 - half, y1.min(*y2), *line, (y2 - y1).abs(), PaintMode::Fill)
                } else {
                    rect(x1.min(*x2), y1 - half, (x2 - x1).abs(), *line, PaintMode::Fill)
                });
            }
        }
    }
    let page = PdfPage::new(Mm(LABEL_MM), Mm(LABEL_MM), ops);
    let mut doc = PdfDocument::new(title);
    let mut warnings = Vec::new();
    doc.with_pages(vec![page])
        .save(&PdfSaveOptions::default(), &mut warnings)
}

#[cfg(test)]
mod tests {
    use super::super::{layout, tests::sample};
    use super::*;

    #[test]
    fn a_one_page_pdf() {
        let bytes = render(&layout(&sample()).expect("layout"), "A9999 26 000001");
        assert!(bytes.starts_with(b"%PDF-"));
        assert!(bytes.len() < 20_000, "{}", bytes.len());
        // `GRANULO_LABEL_PDF=path` keeps the sample for a look (docs/img/label.png comes from it).
        if let Some(path) = std::env::var_os("GRANULO_LABEL_PDF") {
            std::fs::write(path, &bytes).expect("write");
        }
    }
}
