//! The landing page's charts: inline SVG rendered on the server from the
//! in-process ring ([`super::series`]), with no script, font or stylesheet
//! from anywhere else. Every chart has a title, axis labels with units, and
//! a text alternative that says the latest values in words.

use std::fmt::Write;

use super::series::{Sample, BACKENDS, CACHES, KINDS, OPERATIONS, SCOPES};

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 180.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 8.0;
const BOTTOM: f64 = 28.0;
/// The time axis spans the ring: 30 minutes ending at the newest sample.
const SPAN_SECONDS: f64 = 1800.0;
const COLORS: [&str; 6] = [
    "#0969da", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#57606a",
];

/// One line: a name and a value per sample (`None`: nothing measured).
struct Line<'a> {
    name: &'a str,
    values: Vec<Option<f64>>,
}

/// The units a chart's values are in.
#[derive(Clone, Copy)]
enum Unit {
    Ratio,
    Seconds,
    PerSecond,
    Bytes,
}

impl Unit {
    fn axis(self) -> &'static str {
        match self {
            Self::Ratio => "ratio (0-1)",
            Self::Seconds => "seconds",
            Self::PerSecond => "per second",
            Self::Bytes => "MiB",
        }
    }

    fn say(self, value: f64) -> String {
        match self {
            Self::Ratio => format!("{:.1} %", value * 100.0),
            Self::Seconds if value < 1.0 => format!("{:.2} ms", value * 1000.0),
            Self::Seconds => format!("{value:.2} s"),
            Self::PerSecond => format!("{value:.1}/s"),
            Self::Bytes => format!("{:.1} MiB", value / (1024.0 * 1024.0)),
        }
    }

    fn scale(self, value: f64) -> f64 {
        match self {
            Self::Bytes => value / (1024.0 * 1024.0),
            _ => value,
        }
    }
}

/// One line per name, its value in each sample read by `value(sample, i)`
/// for the `i`-th name.
fn lines<'a>(
    names: &[&'a str],
    samples: &[Sample],
    value: impl Fn(&Sample, usize) -> Option<f64>,
) -> Vec<Line<'a>> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| Line {
            name,
            values: samples.iter().map(|s| value(s, i)).collect(),
        })
        .collect()
}

/// Every chart, for `samples` (oldest first).
pub(crate) fn all(samples: &[Sample]) -> String {
    let mut out = String::new();
    let hit_ratio = lines(&CACHES, samples, |s, i| s.hit_ratio[i]);
    out += &chart(
        "Cache hit ratio",
        Unit::Ratio,
        &hit_ratio,
        samples,
        Some(1.0),
    );
    let p50 = lines(&OPERATIONS, samples, |s, i| s.p50_seconds[i]);
    out += &chart(
        "p50 latency per operation",
        Unit::Seconds,
        &p50,
        samples,
        None,
    );
    let p99 = lines(&OPERATIONS, samples, |s, i| s.p99_seconds[i]);
    out += &chart(
        "p99 latency per operation",
        Unit::Seconds,
        &p99,
        samples,
        None,
    );
    let rates = [
        |s: &Sample| s.operations_per_second,
        |s: &Sample| s.errors_per_second,
    ];
    let throughput = lines(&["operations", "errors"], samples, |s, i| Some(rates[i](s)));
    out += &chart(
        "Operations and errors",
        Unit::PerSecond,
        &throughput,
        samples,
        None,
    );
    let kinds = lines(&KINDS, samples, |s, i| Some(s.errors_per_second_by_kind[i]));
    out += &chart("Errors by kind", Unit::PerSecond, &kinds, samples, None);
    let pool = lines(&["used", "budget"], samples, |s, i| {
        Some([s.pool_used_bytes, s.pool_budget_bytes][i])
    });
    out += &chart("Cache memory pool", Unit::Bytes, &pool, samples, None);
    let pressure = lines(&SCOPES, samples, |s, i| Some(s.memory_pressure[i]));
    let title = "Memory pressure (1 = under pressure)";
    out += &timeline(title, &pressure, samples, "#cf222e", "#d0d7de");
    let up = lines(&BACKENDS, samples, |s, i| Some(s.backend_up[i]));
    out += &timeline("Backends up", &up, samples, "#1a7f37", "#cf222e");
    if samples
        .iter()
        .any(|s| s.outage_seconds.iter().any(|o| *o > 0.0))
    {
        let outages = lines(&BACKENDS, samples, |s, i| Some(s.outage_seconds[i]));
        out += &chart(
            "Current outage length",
            Unit::Seconds,
            &outages,
            samples,
            None,
        );
    }
    out
}

/// A line chart.
fn chart(title: &str, unit: Unit, lines: &[Line], samples: &[Sample], max: Option<f64>) -> String {
    let top = max.unwrap_or_else(|| {
        let highest = lines
            .iter()
            .flat_map(|l| l.values.iter().flatten())
            .map(|v| unit.scale(*v))
            .fold(0.0, f64::max);
        nice(highest)
    });
    let points = lines
        .iter()
        .map(|l| l.values.iter().flatten().count())
        .sum::<usize>();
    let mut svg = frame(title, unit.axis(), top, points);
    for (line, color) in lines.iter().zip(COLORS.iter().cycle()) {
        let mut path = String::new();
        for (i, value) in line.values.iter().enumerate() {
            if let Some(value) = value {
                let x = x_of(samples, i);
                let y = TOP + (HEIGHT - TOP - BOTTOM) * (1.0 - (unit.scale(*value) / top).min(1.0));
                let _ = write!(path, "{x:.1},{y:.1} ");
            }
        }
        if !path.is_empty() {
            let _ = write!(
                svg,
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"><title>{}</title></polyline>",
                path.trim_end(),
                line.name
            );
        }
    }
    svg += "</svg>";
    let latest: Vec<String> = lines
        .iter()
        .map(|l| match l.values.last().copied().flatten() {
            Some(v) => format!("{} {}", l.name, unit.say(v)),
            None => format!("{} not measured", l.name),
        })
        .collect();
    figure(title, &svg, lines, &latest.join(", "))
}

/// A timeline of 0/1 states, one row per line.
fn timeline(title: &str, lines: &[Line], samples: &[Sample], on: &str, off: &str) -> String {
    let points = lines.iter().map(|l| l.values.len()).sum::<usize>();
    let mut svg = frame(title, "state per row", 1.0, points);
    let row = (HEIGHT - TOP - BOTTOM) / lines.len().max(1) as f64;
    // One sample's width on the time axis.
    let step = (WIDTH - LEFT - RIGHT) * 10.0 / SPAN_SECONDS;
    for (r, line) in lines.iter().enumerate() {
        let y = TOP + row * r as f64;
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
            LEFT - 4.0,
            y + row * 0.6,
            line.name
        );
        for (i, value) in line.values.iter().enumerate() {
            let color = if value.unwrap_or(0.0) >= 0.5 { on } else { off };
            let _ = write!(
                svg,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\"/>",
                x_of(samples, i) - step,
                y + 1.0,
                step.max(0.5),
                row - 2.0
            );
        }
    }
    svg += "</svg>";
    let latest: Vec<String> = lines
        .iter()
        .map(|l| {
            let state = if l.values.last().copied().flatten().unwrap_or(0.0) >= 0.5 {
                "yes"
            } else {
                "no"
            };
            format!("{} {state}", l.name)
        })
        .collect();
    figure(title, &svg, lines, &latest.join(", "))
}

/// Where sample `i` stands on the time axis: its age against the newest.
fn x_of(samples: &[Sample], i: usize) -> f64 {
    let newest = samples.last().map_or(0, |s| s.time);
    let age = newest.saturating_sub(samples[i].time) as f64;
    WIDTH - RIGHT - (WIDTH - LEFT - RIGHT) * (age / SPAN_SECONDS).min(1.0)
}

/// The SVG's start: axes, the y scale and the time axis.
fn frame(title: &str, axis: &str, top: f64, points: usize) -> String {
    let (x0, x1, y0, y1) = (LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM);
    format!(
        "<svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{title}\" data-points=\"{points}\" \
         xmlns=\"http://www.w3.org/2000/svg\"><title>{title}</title>\
         <line x1=\"{x0}\" y1=\"{y1}\" x2=\"{x1}\" y2=\"{y1}\" stroke=\"#57606a\"/>\
         <line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{y1}\" stroke=\"#57606a\"/>\
         <text x=\"{lx:.1}\" y=\"{ty:.1}\" font-size=\"10\" text-anchor=\"end\">{top}</text>\
         <text x=\"{lx:.1}\" y=\"{y1}\" font-size=\"10\" text-anchor=\"end\">0</text>\
         <text x=\"12\" y=\"{my:.1}\" font-size=\"10\" transform=\"rotate(-90 12 {my:.1})\" text-anchor=\"middle\">{axis}</text>\
         <text x=\"{x0}\" y=\"{by:.1}\" font-size=\"10\">-30 min</text>\
         <text x=\"{x1}\" y=\"{by:.1}\" font-size=\"10\" text-anchor=\"end\">now (time, minutes)</text>",
        lx = LEFT - 4.0,
        ty = TOP + 8.0,
        my = (TOP + HEIGHT - BOTTOM) / 2.0,
        by = HEIGHT - 8.0,
        top = trim(top),
    )
}

fn figure(title: &str, svg: &str, lines: &[Line], alternative: &str) -> String {
    let legend: String = lines
        .iter()
        .zip(COLORS.iter().cycle())
        .map(|(l, c)| format!("<span style=\"color:{c}\">&#9632; {}</span> ", l.name))
        .collect();
    format!(
        "<figure><figcaption><b>{title}</b>: {alternative}</figcaption>{svg}<div class=\"legend\">{legend}</div></figure>\n"
    )
}

/// A round axis top at or above `value`.
fn nice(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|top| *top >= value)
        .unwrap_or(10.0 * magnitude)
}

fn trim(value: f64) -> String {
    let text = format!("{value:.4}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice(0.0), 1.0);
        assert_eq!(nice(0.0031), 0.005);
        assert_eq!(nice(42.0), 50.0);
        assert_eq!(nice(100.0), 100.0);
    }

    #[test]
    fn every_chart_has_a_title_axes_points_and_words() {
        let samples: Vec<Sample> = (0..5)
            .map(|i| Sample {
                time: 1000 + i * 10,
                hit_ratio: [Some(0.5), None, Some(0.9)],
                p50_seconds: [Some(0.001); 4],
                p99_seconds: [Some(0.02); 4],
                operations_per_second: 20.0,
                backend_up: [1.0, 1.0, 0.0],
                pool_budget_bytes: 64.0 * 1024.0 * 1024.0,
                ..Sample::default()
            })
            .collect();
        let html = all(&samples);
        assert_eq!(html.matches("<figure>").count(), 8, "{html}");
        assert!(html.contains("chat_history 50.0 %"), "{html}");
        assert!(html.contains("embeddings no"), "{html}");
        assert!(html.contains("p99 latency per operation</b>: get_chat_history 20.00 ms"));
        assert!(!html.contains("data-points=\"0\""), "{html}");
        assert!(
            !html.contains("http://")
                || html.matches("http://").count() == html.matches("xmlns").count()
        );
    }
}
