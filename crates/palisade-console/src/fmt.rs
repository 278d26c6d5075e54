//! How values read on a page: times, ages, sizes, scores, and SVG charts.

use std::fmt::Write;

/// A Unix-ms time as `YYYY-MM-DD HH:MM UTC`.
pub fn when(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            )
        })
        .unwrap_or_default()
}

/// An optional time, or a dash.
pub fn when_opt(ms: Option<i64>) -> String {
    ms.map_or_else(|| "–".into(), when)
}

/// How long ago, in words.
pub fn ago(now_ms: i64, ms: i64) -> String {
    let d = (now_ms - ms).max(0) / 1000;
    match d {
        0..=59 => format!("{d} s ago"),
        60..=3599 => format!("{} min ago", d / 60),
        3600..=172_799 => format!("{} h ago", d / 3600),
        _ => format!("{} days ago", d / 86_400),
    }
}

/// A byte count for people.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A score, or a dash.
pub fn score(s: Option<f64>) -> String {
    s.map_or_else(|| "–".into(), |v| format!("{v:.0} %"))
}

/// An SVG line chart of `series` (label, colour, values) over `x` positions
/// 0..n, scaled to its own maximum, labelled with that maximum and each
/// series' latest value. Self-contained; no script. With fewer than two
/// points there is no line to draw: a sentence says so.
pub fn line_chart(title: &str, series: &[(&str, &str, Vec<f64>)]) -> String {
    let (w, h, pad) = (320.0, 120.0, 16.0);
    let n = series.iter().map(|s| s.2.len()).max().unwrap_or(0);
    if n < 2 {
        return format!(
            "<p class=\"muted\">{}: not enough history for a chart yet.</p>",
            attr(title)
        );
    }
    let max = series
        .iter()
        .flat_map(|s| s.2.iter().copied())
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{}\" \
         xmlns=\"http://www.w3.org/2000/svg\"><title>{}</title>",
        crate::fmt::attr(title),
        crate::fmt::attr(title)
    );
    let _ = write!(
        svg,
        "<line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\"/>",
        h - pad,
        w - pad,
        h - pad
    );
    for (i, (label, color, values)) in series.iter().enumerate() {
        if values.is_empty() {
            continue;
        }
        let step = if n > 1 {
            (w - 2.0 * pad) / (n - 1) as f64
        } else {
            0.0
        };
        let pts: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(x, v)| {
                format!(
                    "{:.1},{:.1}",
                    pad + x as f64 * step,
                    h - pad - (v / max) * (h - 2.0 * pad)
                )
            })
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            pts.join(" ")
        );
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" font-size=\"9\" fill=\"{color}\">{} {:.0}</text>",
            pad + i as f64 * 100.0,
            pad - 5.0,
            crate::fmt::attr(label),
            values.last().copied().unwrap_or(0.0)
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" font-size=\"8\" fill=\"#555\" text-anchor=\"end\">max {max:.0}</text>",
        w - pad,
        pad - 5.0
    );
    svg.push_str("</svg>");
    svg
}

/// Text made safe for an attribute or element content.
pub fn attr(s: &str) -> String {
    palisade_http::html::esc(s)
}
