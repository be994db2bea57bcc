//! The dashboard's charts as inline SVG, and the text helpers every part of the page uses.
//!
//! Pure functions from numbers to markup. Every number is scaled in `f64` against the largest
//! value shown, so empty data (all zeros) and huge counts (up to `u64::MAX`) both draw
//! sensibly; every piece of text goes through [`escape`].

use std::fmt::Write;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate as a percentage with one decimal, or an em dash when there was nothing to divide.
pub fn percent(rate: Option<f64>) -> String {
    match rate {
        Some(r) if r.is_finite() => format!("{:.1}%", r * 100.0),
        _ => "—".to_owned(),
    }
}

/// A latency bucket bound as a short duration: `≤ 15 s`, `≤ 5 min`, `≤ 6 h`.
pub fn seconds(bound: Option<f64>) -> String {
    match bound {
        None => "—".to_owned(),
        Some(s) if s < 60.0 => format!("≤ {s} s"),
        Some(s) if s < 3600.0 => format!("≤ {} min", s / 60.0),
        Some(s) => format!("≤ {} h", s / 3600.0),
    }
}

/// One funnel stage: its id (for the DOM), label and count.
#[derive(Debug, Clone)]
pub struct Stage {
    pub id: &'static str,
    pub label: &'static str,
    pub value: u64,
}

const ROW: f64 = 24.0;
const LABEL_WIDTH: f64 = 110.0;
const BAR_WIDTH: f64 = 220.0;
const WIDTH: f64 = LABEL_WIDTH + BAR_WIDTH + 190.0;

/// A horizontal funnel: one bar per stage, its length relative to the largest stage, with the
/// exact count written beside it. `flow` and `window` tag each stage for readers and tests.
pub fn funnel(flow: &str, window: &str, stages: &[Stage]) -> String {
    let max = stages.iter().map(|s| s.value).max().unwrap_or(0);
    let height = ROW * stages.len() as f64 + 4.0;
    let (flow, window) = (escape(flow), escape(window));
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="funnel" role="img" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" data-flow="{flow}" data-window="{window}"><title>Funnel of {flow}, {window}</title>"#
    );
    for (i, stage) in stages.iter().enumerate() {
        let y = i as f64 * ROW + 2.0;
        let share = if max == 0 {
            0.0
        } else {
            stage.value as f64 / max as f64
        };
        // A visible sliver for any non-zero stage, so "few" never looks like "none".
        let bar = if stage.value == 0 {
            0.0
        } else {
            (share * BAR_WIDTH).max(2.0)
        };
        let _ = write!(
            svg,
            r##"<g class="stage" data-flow="{flow}" data-window="{window}" data-stage="{id}" data-value="{value}"><text x="0" y="{ty}" font-size="13">{label}</text><rect x="{LABEL_WIDTH}" y="{y}" width="{BAR_WIDTH}" height="{bh}" rx="3" fill="#eef3ef"/><rect x="{LABEL_WIDTH}" y="{y}" width="{bar:.1}" height="{bh}" rx="3" fill="#25a244"/><text class="count" x="{tx:.1}" y="{ty}" font-size="13">{shown}</text></g>"##,
            id = stage.id,
            value = stage.value,
            label = escape(stage.label),
            ty = y + 15.0,
            bh = ROW - 6.0,
            tx = LABEL_WIDTH + bar + 6.0,
            shown = thousands(stage.value),
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A sparkline of counts per hour, oldest first; flat on the baseline when all are zero.
pub fn sparkline(window: &str, counts: &[u64]) -> String {
    const W: f64 = 336.0;
    const H: f64 = 40.0;
    let max = counts.iter().copied().max().unwrap_or(0);
    let total = counts.iter().fold(0u64, |a, c| a.saturating_add(*c));
    let step = if counts.len() > 1 {
        W / (counts.len() - 1) as f64
    } else {
        0.0
    };
    let mut points = String::new();
    for (i, c) in counts.iter().enumerate() {
        let y = if max == 0 {
            H - 1.0
        } else {
            H - 1.0 - (*c as f64 / max as f64) * (H - 2.0)
        };
        let _ = write!(points, "{:.1},{:.1} ", i as f64 * step, y);
    }
    format!(
        r##"<svg class="sparkline" role="img" width="{W}" height="{H}" viewBox="0 0 {W} {H}" data-window="{window}" data-total="{total}" data-max="{max}"><title>Sessions per hour, {window}: {shown} in all, at most {peak} in one hour</title><polyline fill="none" stroke="#128c7e" stroke-width="1.5" points="{points}"/></svg>"##,
        window = escape(window),
        points = points.trim_end(),
        shown = thousands(total),
        peak = thousands(max),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stages(values: [u64; 3]) -> Vec<Stage> {
        ["a", "b", "c"]
            .iter()
            .zip(values)
            .map(|(id, value)| Stage {
                id,
                label: "Stage",
                value,
            })
            .collect()
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape(r#"<b a="1">&'"#),
            "&lt;b a=&quot;1&quot;&gt;&amp;&#39;"
        );
        let svg = funnel("<script>", "24h", &stages([1, 0, 0]));
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("&lt;script&gt;"));
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(u64::MAX), "18,446,744,073,709,551,615");
        assert_eq!(percent(None), "—");
        assert_eq!(percent(Some(0.5)), "50.0%");
        assert_eq!(percent(Some(f64::NAN)), "—");
        assert_eq!(seconds(Some(15.0)), "≤ 15 s");
        assert_eq!(seconds(Some(300.0)), "≤ 5 min");
        assert_eq!(seconds(Some(21600.0)), "≤ 6 h");
    }

    #[test]
    fn empty_and_huge_data_draw_finite_shapes() {
        for values in [[0, 0, 0], [u64::MAX, u64::MAX / 2, 1]] {
            let svg = funnel("f", "7d", &stages(values));
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
            assert!(svg.contains(&format!(r#"data-value="{}""#, values[0])));
        }
        let huge = funnel("f", "7d", &stages([u64::MAX, 1, 0]));
        assert!(huge.contains(r#"width="220.0""#), "{huge}");
        assert!(
            huge.contains(r#"width="2.0""#),
            "the smallest non-zero bar stays visible"
        );
        for counts in [vec![], vec![0; 24], vec![u64::MAX, 0, 7]] {
            let svg = sparkline("24h", &counts);
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        }
        assert!(sparkline("24h", &[u64::MAX, 1]).contains(&format!(r#"data-total="{}""#, u64::MAX)));
    }
}
