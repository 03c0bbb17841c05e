//! The evidence pages: a certificate and a period's report as one
//! self-contained HTML page each (inline CSS and SVG, no script, font or
//! image from elsewhere; prints on A4), through askama's compiled
//! templates in `templates/`, every value escaped by
//! [`super::escape::PageEscaper`] unless a template marks a fragment it
//! rendered itself `|safe`. Every figure carries a `data-figure` attribute
//! for the browser test. The purged tickets' table holds the mark where
//! [`super::stream::write_document`] streams its rows.
//!
//! Here the gathered documents become view models (figures, chart
//! geometry, sentences); the templates only lay them out.

use std::collections::BTreeMap;

use askama::Template;

use super::document::{
    latency_sentence, records_note, report_statement, settlement, unfinished_notes,
};
use super::escape::capitalised;
use super::stream::ROWS_MARK;
use crate::audit::{DecisionKind, OpenOutcome};
use crate::evidence::{Certificate, Integrity, PeriodReport, PurgedRows, VersionInWords};

/// A config version: its hash, rules and safety settings.
#[derive(Template)]
#[template(path = "version.html")]
struct VersionHtml<'a> {
    v: &'a VersionInWords,
}

/// The chain and the signatures as checked.
#[derive(Template)]
#[template(path = "integrity.html")]
struct IntegrityHtml<'a> {
    i: &'a Integrity,
    /// `ok`, `bad` or `muted`, by what the signatures showed.
    class: &'static str,
}

impl<'a> IntegrityHtml<'a> {
    fn of(i: &'a Integrity) -> Self {
        let class = match i.signatures {
            "verified" => "ok",
            "failed" | "unverifiable" => "bad",
            _ => "muted",
        };
        IntegrityHtml { i, class }
    }
}

/// The table of purged tickets, the mark where its rows go.
#[derive(Template)]
#[template(path = "purged_table.html")]
struct PurgedTableHtml {
    with_subjects: bool,
    mark: &'static str,
}

impl PurgedTableHtml {
    fn of(rows: PurgedRows) -> Self {
        PurgedTableHtml {
            with_subjects: rows.with_subjects,
            mark: ROWS_MARK,
        }
    }
}

/// One figure of a page's row of figures.
struct Figure {
    name: &'static str,
    label: &'static str,
    value: String,
}

fn figure(name: &'static str, label: &'static str, value: impl ToString) -> Figure {
    Figure {
        name,
        label,
        value: value.to_string(),
    }
}

/// A row of figures.
#[derive(Template)]
#[template(path = "figures.html")]
struct FiguresHtml {
    figures: Vec<Figure>,
}

#[derive(Template)]
#[template(path = "certificate.html")]
struct CertificatePage<'a> {
    cert: &'a Certificate,
    run: &'a crate::audit::RunRow,
    version: VersionHtml<'a>,
    figures: FiguresHtml,
    purged: PurgedTableHtml,
    integrity: IntegrityHtml<'a>,
}

/// A certificate as one page, its purged tickets at the mark.
pub fn certificate_html(cert: &Certificate) -> anyhow::Result<String> {
    let r = &cert.run;
    let page = CertificatePage {
        cert,
        run: r,
        version: VersionHtml { v: &cert.config },
        figures: FiguresHtml {
            figures: vec![
                figure("scanned", "tickets examined", r.scanned),
                figure("matched", "selected by a rule", r.matched),
                figure("purged", "purged (run's count)", r.purged),
                figure("purged-listed", "purged, listed below", cert.purged.listed),
                figure("failed", "failed", r.failed),
                figure("unknown", "unknown", r.unknown),
            ],
        },
        purged: PurgedTableHtml::of(cert.purged),
        integrity: IntegrityHtml::of(&cert.integrity),
    };
    Ok(page.render()?)
}

#[derive(Template)]
#[template(path = "report.html")]
struct ReportPage<'a> {
    report: &'a PeriodReport,
    records_note: Option<String>,
    figures: FiguresHtml,
    /// Each note on unfinished runs, as it begins a paragraph.
    unfinished_notes: Vec<String>,
    /// Each failed or unknown outcome and how it settled.
    open_outcomes: Vec<(&'a OpenOutcome, String)>,
    /// Tickets kept now, and why.
    kept: Vec<(i64, String)>,
    purges_chart: ChartSvg,
    runs_chart: ChartSvg,
    /// From when, over how many runs of the period, which version.
    config_versions: Vec<(&'a str, usize, VersionHtml<'a>)>,
    latency: String,
    integrity: IntegrityHtml<'a>,
    statement: String,
    purged: PurgedTableHtml,
}

/// A period's report as one page, its purged tickets at the mark.
pub fn report_html(report: &PeriodReport) -> anyhow::Result<String> {
    let purges = per_day(
        &report.since,
        &report.until,
        report
            .purges_by_day
            .iter()
            .map(|p| (p.day.as_str(), p.rule.as_str(), p.count)),
    );
    let runs = per_day(
        &report.since,
        &report.until,
        report
            .runs_by_day
            .iter()
            .map(|p| (p.day.as_str(), p.status.as_str(), p.count)),
    );
    let page = ReportPage {
        report,
        records_note: records_note(report),
        figures: FiguresHtml {
            figures: vec![
                figure("runs", "runs", report.runs.len()),
                figure("purged", "tickets purged", report.purged.listed),
                figure(
                    "open-outcomes",
                    "failed or unknown outcomes",
                    report.open_outcomes.len(),
                ),
                figure(
                    "open-tickets",
                    "tickets they concern",
                    report.open_tickets(),
                ),
                figure(
                    "refused-runs",
                    "runs refused by a safety limit",
                    report.refused_runs.len(),
                ),
            ],
        },
        unfinished_notes: unfinished_notes(report)
            .iter()
            .map(|n| capitalised(n))
            .collect(),
        open_outcomes: report
            .open_outcomes
            .iter()
            .map(|o| (o, settlement(o)))
            .collect(),
        kept: report
            .kept_now
            .iter()
            .map(|k| {
                let why = match k.decision {
                    DecisionKind::KeepProtected => "protected id (safety.protect_ids)".to_string(),
                    _ => format!("kept by rule {}", k.rule.as_deref().unwrap_or("?")),
                };
                (k.tickets, why)
            })
            .collect(),
        purges_chart: ChartSvg::stacked(&purges.0, &purges.1, "chart-purges"),
        runs_chart: ChartSvg::stacked(&runs.0, &runs.1, "chart-runs"),
        config_versions: report
            .config_versions
            .iter()
            .map(|v| (v.from.as_str(), v.runs, VersionHtml { v: &v.version }))
            .collect(),
        latency: latency_sentence(report),
        integrity: IntegrityHtml::of(&report.integrity),
        statement: report_statement(report),
        purged: PurgedTableHtml::of(report.purged),
    };
    Ok(page.render()?)
}

/// One series' bar on one day of a chart.
struct ChartBar {
    x: String,
    y: String,
    height: String,
    colour: &'static str,
    series: String,
    value: i64,
}

/// One day (or month) of a chart: its bars bottom up, its label, its total.
struct ChartDay {
    day: String,
    bars: Vec<ChartBar>,
    /// Every so many days: the day without its year.
    label: Option<String>,
    /// The middle of the day's bar.
    middle: String,
    total: i64,
    total_y: String,
}

/// A series' key under the chart.
struct ChartKey {
    x: f64,
    y: f64,
    text_x: f64,
    text_y: f64,
    colour: &'static str,
    series: String,
}

/// Stacked bars per day: one colour per series.
#[derive(Template)]
#[template(path = "chart.svg")]
struct ChartSvg {
    figure: &'static str,
    width: f64,
    height: f64,
    left: f64,
    top: f64,
    /// The x axis's height.
    base: f64,
    right: f64,
    tick_x: f64,
    max_y: f64,
    max: i64,
    bar_width: String,
    label_y: f64,
    days: Vec<ChartDay>,
    legend: Vec<ChartKey>,
}

impl ChartSvg {
    fn stacked(days: &[String], series: &[(String, Vec<i64>)], figure: &'static str) -> Self {
        const COLOURS: [&str; 8] = [
            "#2f6db5", "#d9822b", "#3a9a4a", "#b53a3a", "#7a4fb5", "#8a6d3b", "#2aa1a1", "#777777",
        ];
        let (w, h, left, bottom, top) = (660.0_f64, 220.0_f64, 44.0, 34.0, 10.0);
        let totals: Vec<i64> = (0..days.len())
            .map(|i| series.iter().map(|(_, v)| v[i]).sum())
            .collect();
        let top_total = totals.iter().copied().max().unwrap_or(0).max(1);
        let max = top_total as f64;
        let slot = (w - left - 8.0) / days.len().max(1) as f64;
        let bar = (slot * 0.7).max(2.0);
        let scale = (h - bottom - top) / max;
        let label_every = (days.len() / 10).max(1);
        let days = days
            .iter()
            .enumerate()
            .map(|(i, day)| {
                let x = left + 4.0 + slot * i as f64;
                let mut y = h - bottom;
                let mut bars = Vec::new();
                for (k, (name, values)) in series.iter().enumerate() {
                    let v = values[i];
                    if v == 0 {
                        continue;
                    }
                    let height = v as f64 * scale;
                    y -= height;
                    bars.push(ChartBar {
                        x: format!("{x:.1}"),
                        y: format!("{y:.1}"),
                        height: format!("{height:.1}"),
                        colour: COLOURS[k % COLOURS.len()],
                        series: name.clone(),
                        value: v,
                    });
                }
                ChartDay {
                    day: day.clone(),
                    bars,
                    label: (i % label_every == 0).then(|| day.get(5..).unwrap_or(day).to_string()),
                    middle: format!("{:.1}", x + bar / 2.0),
                    total: totals[i],
                    total_y: format!("{:.1}", y - 3.0),
                }
            })
            .collect();
        let legend = series
            .iter()
            .enumerate()
            .map(|(k, (name, _))| {
                let (x, y) = (
                    left + 160.0 * (k % 4) as f64,
                    h + 4.0 + 18.0 * (k / 4) as f64,
                );
                ChartKey {
                    x,
                    y,
                    text_x: x + 14.0,
                    text_y: y + 9.0,
                    colour: COLOURS[k % COLOURS.len()],
                    series: name.clone(),
                }
            })
            .collect();
        ChartSvg {
            figure,
            width: w,
            height: h + 18.0 * series.len().div_ceil(4) as f64,
            left,
            top,
            base: h - bottom,
            right: w - 4.0,
            tick_x: left - 4.0,
            max_y: top + 8.0,
            max: top_total,
            bar_width: format!("{bar:.1}"),
            label_y: h - bottom + 14.0,
            days,
            legend,
        }
    }
}

/// Every day from `since` to `until`, and each series' value per day.
fn per_day<'a>(
    since: &str,
    until: &str,
    points: impl Iterator<Item = (&'a str, &'a str, i64)>,
) -> (Vec<String>, Vec<(String, Vec<i64>)>) {
    let parse =
        |t: &str| chrono::NaiveDate::parse_from_str(t.get(..10).unwrap_or(""), "%Y-%m-%d").ok();
    let points: Vec<(&str, &str, i64)> = points.collect();
    // a period that begins long before the first figure starts at it
    let first = points.iter().filter_map(|(d, _, _)| parse(d)).min();
    let (Some(start), Some(end)) = (parse(since), parse(until)) else {
        return (Vec::new(), Vec::new());
    };
    let long = |a: chrono::NaiveDate| (end - a).num_days() > 400;
    let start = match first {
        Some(f) if long(start) => f.max(start).min(end),
        // nothing to show: the last 400 days are enough to say so
        None if long(start) => end - chrono::Duration::days(400),
        _ => start,
    };
    // still more than 400 days: a bar per month
    let monthly = long(start);
    let key = |d: chrono::NaiveDate| {
        if monthly {
            d.format("%Y-%m").to_string()
        } else {
            d.format("%Y-%m-%d").to_string()
        }
    };
    let mut days: Vec<String> = Vec::new();
    let mut d = start;
    while d <= end {
        let k = key(d);
        if days.last() != Some(&k) {
            days.push(k);
        }
        match d.succ_opt() {
            Some(next) => d = next,
            None => break,
        }
    }
    let mut by_series: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (day, name, count) in points {
        let values = by_series
            .entry(name.to_string())
            .or_insert_with(|| vec![0; days.len()]);
        if let Some(i) = parse(day).and_then(|d| days.iter().position(|k| *k == key(d))) {
            values[i] += count;
        }
    }
    (days, by_series.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RunId;

    #[test]
    fn days_cover_the_period_and_values_land_on_their_day() {
        let points = [
            ("2026-11-02", "r1", 3),
            ("2026-11-02", "r2", 1),
            ("2026-11-04", "r1", 2),
        ];
        let (days, series) = per_day(
            "2026-11-01T00:00:00.000Z",
            "2026-11-04T10:00:00.000Z",
            points.iter().map(|(d, r, n)| (*d, *r, *n)),
        );
        assert_eq!(
            days,
            ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]
        );
        assert_eq!(series[0], ("r1".to_string(), vec![0, 3, 0, 2]));
        assert_eq!(series[1], ("r2".to_string(), vec![0, 1, 0, 0]));
        let svg = ChartSvg::stacked(&days, &series, "chart").render().unwrap();
        assert_eq!(
            svg.matches("<rect x").count(),
            3 + 2,
            "three bars and two legend keys"
        );
        assert!(svg.contains("data-value=\"3\""));
    }

    #[test]
    fn a_config_version_page_fragment_escapes_its_rules_with_the_page_escaper() {
        let v = VersionInWords {
            hash: "abc".into(),
            first_run: Some(RunId::new(1)),
            first_used: Some("2026-11-01".into()),
            account: None,
            rules: vec!["<img src=x onerror=y>: purge \u{1}".into()],
            safety: vec![],
            settings: Some(serde_json::json!({})),
        };
        let html = VersionHtml { v: &v }.render().unwrap();
        assert_eq!(
            html,
            "<p>Config version <code data-figure=\"config-hash\">abc</code>, first used 2026-11-01 (run 1)</p>\n<ul>\n<li>&lt;img src=x onerror=y&gt;: purge \u{fffd}</li>\n</ul>\n"
        );
    }

    #[test]
    fn a_series_name_is_escaped_in_the_chart() {
        let days = ["2026-11-01".to_string()];
        let series = [("<b>&\"\u{1}".to_string(), vec![1])];
        let svg = ChartSvg::stacked(&days, &series, "chart").render().unwrap();
        assert!(
            svg.contains("data-series=\"&lt;b&gt;&amp;&quot;\u{fffd}\""),
            "{svg}"
        );
        assert!(!svg.contains("<b>"), "{svg}");
    }

    #[test]
    fn a_long_period_starts_at_its_first_figure_and_goes_by_month_when_still_long() {
        let points = [("2025-01-15", "r", 2), ("2026-11-02", "r", 5)];
        let (days, series) = per_day(
            "2016-01-01T00:00:00.000Z",
            "2026-11-04T00:00:00.000Z",
            points.iter().map(|(d, r, n)| (*d, *r, *n)),
        );
        assert_eq!(days.first().unwrap(), "2025-01");
        assert_eq!(days.last().unwrap(), "2026-11");
        assert_eq!(series[0].1.iter().sum::<i64>(), 7, "no figure dropped");
        let (days, series) = per_day(
            "2016-01-01T00:00:00.000Z",
            "2026-11-04T00:00:00.000Z",
            [("2026-11-02", "r", 5)].into_iter(),
        );
        assert_eq!(days.first().unwrap(), "2026-11-02");
        assert_eq!(series[0].1.iter().sum::<i64>(), 5);
        // no figure at all over a century: a bounded chart, not 36,000 days
        let (days, series) = per_day(
            "1926-01-01T00:00:00.000Z",
            "2026-11-04T00:00:00.000Z",
            std::iter::empty(),
        );
        assert!(days.len() <= 401, "{}", days.len());
        assert!(series.is_empty());
    }
}
