//! The posture report as one self-contained HTML page: inline style, no
//! script, no reference to any other resource, every value escaped. Written to
//! a file by `palisade posture report --out`.

use std::fmt::Write;

use super::{PostureView, TallyView};
use crate::html::esc;

fn score(t: &TallyView) -> String {
    t.score.map_or("–".into(), |s| format!("{s:.1} %"))
}

fn when(ms: i64) -> String {
    crate::views::rfc3339(ms.div_euclid(1000) * 1000)
}

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:70rem;color:#1a1a1a;padding:0 1rem}\
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:2px solid #ddd}\
table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #e4e4e4;vertical-align:top}\
th{background:#f4f4f4}.n{text-align:right;font-variant-numeric:tabular-nums}.score{font-size:1.4rem;font-weight:600}\
.fail{color:#a40000}.pass{color:#0b6b1f}.muted{color:#555}";

/// The report.
pub fn posture_html(v: &PostureView, now_ms: i64) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Palisade posture report</title>\
         <style>{STYLE}</style></head><body><h1>Fleet posture report</h1>\
         <p class=\"muted\">Generated {} from the evaluation of {} ({} ms). A score is the share of \
         assessable results that pass: unknown counts against it, not-assessable is left out.</p>",
        esc(&when(now_ms)),
        esc(&when(v.evaluated_ms)),
        v.took_ms
    );
    for f in &v.frameworks {
        let _ = write!(
            h,
            "<h2>{}</h2><p><span class=\"score\">{}</span> over {} devices \
             ({} pass, {} fail, {} unknown, {} not assessable)</p>",
            esc(&f.title),
            esc(&score(&f.results)),
            f.devices,
            f.results.pass,
            f.results.fail,
            f.results.unknown,
            f.results.not_assessable
        );
        h.push_str("<table><thead><tr><th scope=\"col\">Control</th><th scope=\"col\">What it asks</th><th scope=\"col\">Judged by</th>\
                    <th scope=\"col\" class=\"n\">Pass</th><th scope=\"col\" class=\"n\">Fail</th><th scope=\"col\" class=\"n\">Unknown</th><th scope=\"col\" class=\"n\">Score</th></tr></thead><tbody>");
        for c in &f.controls {
            let _ = write!(
                h,
                "<tr><td>{} {}</td><td>{}</td><td class=\"muted\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n{}\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&c.id),
                esc(&c.title),
                esc(&c.asks),
                esc(&c.basis),
                c.devices.pass,
                if c.devices.fail > 0 { " fail" } else { "" },
                c.devices.fail,
                c.devices.unknown,
                esc(&score(&c.devices))
            );
        }
        h.push_str("</tbody></table>");
        for (label, rows) in [("model", &f.by_model), ("site", &f.by_site)] {
            let _ = write!(
                h,
                "<table><thead><tr><th scope=\"col\">By {label}</th><th scope=\"col\" class=\"n\">Score</th>\
                 <th scope=\"col\" class=\"n\">Fail</th><th scope=\"col\" class=\"n\">Unknown</th></tr></thead><tbody>"
            );
            for (name, t) in rows {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                    esc(name),
                    esc(&score(t)),
                    t.fail,
                    t.unknown
                );
            }
            h.push_str("</tbody></table>");
        }
        if !f.trend.is_empty() {
            h.push_str("<table><thead><tr><th scope=\"col\">Day</th><th scope=\"col\" class=\"n\">Fleet score</th></tr></thead><tbody>");
            for (day, s) in &f.trend {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td class=\"n\">{}</td></tr>",
                    esc(day),
                    s.map_or("–".into(), |s| format!("{s:.1} %"))
                );
            }
            h.push_str("</tbody></table>");
        }
    }
    h.push_str("</body></html>\n");
    h
}
