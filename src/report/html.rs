//! The page model drawn as one self-contained HTML document: inline CSS and SVG, no script,
//! nothing fetched (no URL at all in the document). Everything that comes from the repository
//! or the configuration is escaped ([`esc`]) — labels, reasons, error text.
//!
//! Hover text is SVG `<title>` (and HTML `title`), which every browser shows without script.
//! Stable hooks for tests and for people who script against the page: `data-timeline="N"` on
//! each timeline, `class="coverage"`, `class="hole"` (with `data-first`/`data-start-lsn`),
//! `class="mark backup"` / `class="mark dump"` with `data-labels` (every label a merged mark
//! stands for), `class="mark drill"` and `data-drill-verdict="passed|failed"`, `class="pitr"`,
//! `data-verdict` on the verdict, `data-label` on table rows.

use super::model::{Chart, DrillGroup, DrillItem, HoleInfo, Lane, MarkGroup, Page, WIDTH};
use crate::drill::report::{Verdict as DrillVerdict, secs};
use crate::units;
use chrono::{DateTime, Days, TimeZone, Utc};
use chrono_tz::Tz;
use std::fmt::Write as _;

/// Room left of the chart for the lane names.
const LEFT: f64 = 70.0;
const RIGHT: f64 = 10.0;
const CHART_H: f64 = 150.0;

const CSS: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}
h1{font-size:1.5em;margin:0 0 .2em}h2{font-size:1.2em;margin:1.2em 0 .4em}h3{font-size:1em;margin:.8em 0 .2em}
.meta{color:#555;margin:0}
.verdict{padding:.6em 1em;border-radius:6px;border:2px solid}
.verdict h2{margin:0}.verdict ul{margin:.3em 0 0;padding-left:1.2em}
.level-OK{background:#e8f5e9;border-color:#2e7d32}.level-WARNING{background:#fff8e1;border-color:#f9a825}
.level-CRITICAL{background:#ffebee;border-color:#c62828}.level-UNKNOWN{background:#eceff1;border-color:#546e7a}
li.level-CRITICAL,li.level-WARNING,li.level-UNKNOWN,li.level-OK{background:none}
svg{width:100%;height:auto;display:block}
svg text{font-size:11px;fill:#444}
.lane-bg{fill:#f3f3f3}.coverage{fill:#4a90d9}.hole{fill:#d0021b}
.pitr{fill:#43a047;fill-opacity:.16;stroke:#43a047;stroke-opacity:.5}
.backup rect{fill:#333}.dump rect{fill:#7b1fa2}.pinned rect{stroke:#f9a825;stroke-width:2}
.pin{fill:#f9a825}
.drill circle,.point{stroke:#fff;stroke-width:1}
[data-drill-verdict=passed] circle,circle[data-drill-verdict=passed]{fill:#2e7d32}
[data-drill-verdict=failed] circle,circle[data-drill-verdict=failed]{fill:#c62828}
.tick{stroke:#ccc}.now{stroke:#888;stroke-dasharray:3 2}
.limit{stroke:#c62828;stroke-dasharray:5 3}.grid{stroke:#eee}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#fafafa}td.num{text-align:right;white-space:nowrap}
tr.delete td{color:#888}tr.delete td.decision{color:#c62828}
td.passed{color:#2e7d32;font-weight:bold}td.failed{color:#c62828;font-weight:bold}
.holes{color:#c62828;margin:.2em 0}.warnings{color:#8d6e00}
.legend span{margin-right:1.2em}.sw{display:inline-block;width:.9em;height:.9em;vertical-align:-.1em;margin-right:.3em}
";

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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

/// A time in UTC and in the policy's zone (once when the zone is UTC).
pub fn when(t: DateTime<Utc>, tz: Tz) -> String {
    let utc = t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    if tz == Tz::UTC {
        return utc;
    }
    format!(
        "{utc} ({})",
        t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %Z")
    )
}

/// Draws the page.
pub fn page(p: &Page) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let tz = p.timezone;
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>pgward recovery report</title><style>{CSS}</style></head><body>\n\
         <header><h1>pgward recovery report</h1><p class=\"meta\">system identifier {} · \
         generated {} · times in UTC and {}</p></header>\n",
        esc(&p.system_identifier),
        esc(&when(p.now, tz)),
        esc(tz.name())
    );
    verdict(&mut h, p);
    timelines(&mut h, p);
    table(&mut h, p);
    drills(&mut h, p);
    if !p.warnings.is_empty() {
        h.push_str("<section id=\"warnings\"><h2>Warnings</h2><ul class=\"warnings\">");
        for w in &p.warnings {
            let _ = write!(h, "<li>{}</li>", esc(w));
        }
        h.push_str("</ul></section>\n");
    }
    h.push_str("</body></html>\n");
    h
}

fn verdict(h: &mut String, p: &Page) {
    let level = p.verdict.level.as_str();
    let _ = write!(
        h,
        "<section id=\"verdict\" class=\"verdict level-{level}\" data-verdict=\"{level}\">\
         <h2>{level}</h2>"
    );
    if p.verdict.reasons.is_empty() {
        h.push_str("<p>Nothing to report.</p>");
    } else {
        h.push_str("<ul>");
        for r in &p.verdict.reasons {
            let l = r.level.as_str();
            let _ = write!(
                h,
                "<li class=\"reason level-{l}\">{l}: {}</li>",
                esc(&r.text)
            );
        }
        h.push_str("</ul>");
    }
    h.push_str("</section>\n");
}

fn x(v: f64) -> f64 {
    LEFT + v
}

/// Day ticks at midnight in the policy's zone, every `k` days so that about 14 show.
fn ticks(h: &mut String, p: &Page, height: f64) {
    let tz = p.timezone;
    let step = u64::from(p.days.div_ceil(14).max(1));
    let format = if p.days > 180 { "%Y-%m-%d" } else { "%m-%d" };
    let first = p.axis.from.with_timezone(&tz).date_naive().succ_opt();
    let days = std::iter::successors(first, |d| d.checked_add_days(Days::new(step)));
    for day in days.take(32) {
        // Midnight, or the first hour that exists when a DST change skips it.
        let Some(t) = (0..3)
            .find_map(|hour| {
                tz.from_local_datetime(&day.and_hms_opt(hour, 0, 0)?)
                    .earliest()
            })
            .map(|t| t.with_timezone(&Utc))
        else {
            continue;
        };
        if t > p.axis.to {
            break;
        }
        let xx = x(p.axis.x(t));
        // A label near the right edge ends at its tick instead of running off the chart.
        let anchor = if p.axis.x(t) > WIDTH - 20.0 {
            "end"
        } else {
            "middle"
        };
        let _ = write!(
            h,
            "<line class=\"tick\" x1=\"{xx:.1}\" x2=\"{xx:.1}\" y1=\"12\" y2=\"{height:.0}\"/>\
             <text x=\"{xx:.1}\" y=\"10\" text-anchor=\"{anchor}\">{}</text>",
            day.format(format)
        );
    }
    let now = x(WIDTH);
    let _ = write!(
        h,
        "<line class=\"now\" x1=\"{now:.1}\" x2=\"{now:.1}\" y1=\"12\" y2=\"{height:.0}\"/>"
    );
}

fn svg_open(h: &mut String, height: f64, label: &str) {
    let _ = write!(
        h,
        "<svg viewBox=\"0 0 {:.0} {height:.0}\" role=\"img\" aria-label=\"{}\">",
        LEFT + WIDTH + RIGHT,
        esc(label)
    );
}

fn lane_bg(h: &mut String, y: f64, height: f64, name: &str) {
    let _ = write!(
        h,
        "<text x=\"2\" y=\"{:.0}\">{name}</text><rect class=\"lane-bg\" x=\"{LEFT}\" \
         y=\"{y:.0}\" width=\"{WIDTH}\" height=\"{height:.0}\"/>",
        y + height * 0.7
    );
}

fn pitr(h: &mut String, p: &Page, y: f64, height: f64) {
    if let Some(w) = &p.pitr {
        let what = match w.window_seconds {
            Some(s) => format!(
                "PITR window (pitr_window {}): every moment from {} on is to stay recoverable",
                humantime::format_duration(std::time::Duration::from_secs(s)),
                when(w.from, p.timezone)
            ),
            None => format!(
                "PITR window: from the oldest kept backup, {}",
                when(w.from, p.timezone)
            ),
        };
        let _ = write!(
            h,
            "<rect class=\"pitr\" x=\"{:.1}\" y=\"{y:.0}\" width=\"{:.1}\" height=\"{height:.0}\">\
             <title>{}</title></rect>",
            x(w.span.x0),
            (w.span.x1 - w.span.x0).max(0.0),
            esc(&what)
        );
    }
}

fn timelines(h: &mut String, p: &Page) {
    let _ = writeln!(
        h,
        "<section id=\"timelines\"><h2>Recovery timeline, last {} days</h2>\
         <p class=\"legend\"><span><i class=\"sw\" style=\"background:#4a90d9\"></i>WAL archived</span>\
         <span><i class=\"sw\" style=\"background:#d0021b\"></i>hole</span>\
         <span><i class=\"sw\" style=\"background:#333\"></i>base backup</span>\
         <span><i class=\"sw\" style=\"background:#7b1fa2\"></i>dump</span>\
         <span><i class=\"sw\" style=\"background:#f9a825\"></i>pinned</span>\
         <span><i class=\"sw\" style=\"background:#2e7d32\"></i>drill passed</span>\
         <span><i class=\"sw\" style=\"background:#c62828\"></i>drill failed</span>\
         <span><i class=\"sw\" style=\"background:#c8e6c9\"></i>PITR window</span></p>",
        p.days
    );
    if p.lanes.is_empty() {
        h.push_str("<p>No WAL and no backups in the repository.</p>");
    }
    for lane in &p.lanes {
        timeline(h, p, lane);
    }
    if !p.dumps.is_empty() || !p.dump_drills.is_empty() {
        h.push_str("<div class=\"lane-dumps\" data-lane=\"dumps\"><h3>Logical dumps</h3>");
        let height = 70.0;
        svg_open(h, height, "logical dumps and dump drills");
        ticks(h, p, height);
        lane_bg(h, 18.0, 20.0, "dumps");
        lane_bg(h, 44.0, 20.0, "drills");
        marks(h, p, &p.dumps, "dump", 18.0);
        drill_marks(h, p, &p.dump_drills, 54.0);
        h.push_str("</svg></div>\n");
    }
    h.push_str("</section>\n");
}

fn timeline(h: &mut String, p: &Page, lane: &Lane) {
    let tz = p.timezone;
    let tli = lane.timeline.0;
    let _ = write!(
        h,
        "<div class=\"timeline\" data-timeline=\"{tli}\"><h3>Timeline {tli}</h3><p class=\"meta\">"
    );
    match (&lane.first_segment, &lane.last_segment) {
        (Some(f), Some(l)) => {
            let _ = write!(
                h,
                "{} archived, {} … {}",
                esc(&units::count(lane.segments, "segment", "segments")),
                esc(f),
                esc(l)
            );
            if let (Some(a), Some(b)) = (lane.wal_from, lane.wal_to) {
                let _ = write!(h, " · from {} to {}", esc(&when(a, tz)), esc(&when(b, tz)));
            }
        }
        _ => h.push_str("no WAL archived"),
    }
    let _ = write!(
        h,
        " · {}</p>",
        esc(&units::count(lane.holes_total as u64, "hole", "holes"))
    );
    let height = 96.0;
    svg_open(h, height, &format!("timeline {tli}"));
    ticks(h, p, height);
    lane_bg(h, 18.0, 22.0, "WAL");
    lane_bg(h, 46.0, 20.0, "backups");
    lane_bg(h, 72.0, 20.0, "drills");
    pitr(h, p, 16.0, 78.0);
    for c in &lane.coverage {
        let _ = write!(
            h,
            "<rect class=\"coverage\" data-start-lsn=\"{}\" data-end-lsn=\"{}\" x=\"{:.1}\" \
             y=\"18\" width=\"{:.1}\" height=\"22\"><title>{}</title></rect>",
            c.start_lsn,
            c.end_lsn,
            x(c.span.x0),
            (c.span.x1 - c.span.x0).max(1.0),
            esc(&format!(
                "WAL {} – {}, {} archived{}, {} – {}",
                c.start_lsn,
                c.end_lsn,
                units::count(c.segments, "segment", "segments"),
                if c.holes > 0 {
                    format!(
                        " around {} (red)",
                        units::count(c.holes as u64, "hole", "holes")
                    )
                } else {
                    String::new()
                },
                when(c.from, tz),
                when(c.to, tz)
            ))
        );
    }
    for m in &lane.hole_marks {
        let first = &m.holes[0];
        let mut title: Vec<String> = m.holes.iter().map(hole_text).collect();
        if m.count > m.holes.len() {
            title.push(format!("and {} more holes", m.count - m.holes.len()));
        }
        let _ = write!(
            h,
            "<rect class=\"hole\" data-first=\"{}\" data-start-lsn=\"{}\" data-end-lsn=\"{}\" \
             data-count=\"{}\" x=\"{:.1}\" y=\"16\" width=\"{:.1}\" height=\"26\">\
             <title>{}</title></rect>",
            esc(&first.first),
            first.start_lsn,
            first.end_lsn,
            m.count,
            x(m.span.x0),
            m.span.x1 - m.span.x0,
            esc(&title.join("\n"))
        );
    }
    marks(h, p, &lane.backups, "backup", 46.0);
    drill_marks(h, p, &lane.drills, 82.0);
    h.push_str("</svg>");
    if !lane.holes.is_empty() {
        h.push_str("<ul class=\"holes\">");
        for hole in &lane.holes {
            let _ = write!(h, "<li>{}</li>", esc(&hole_text(hole)));
        }
        if lane.holes_total > lane.holes.len() {
            let _ = write!(
                h,
                "<li>and {} more</li>",
                lane.holes_total - lane.holes.len()
            );
        }
        h.push_str("</ul>");
    }
    h.push_str("</div>\n");
}

fn hole_text(hole: &HoleInfo) -> String {
    let names = if hole.first == hole.last {
        hole.first.clone()
    } else {
        format!("{} … {}", hole.first, hole.last)
    };
    format!(
        "hole: {names} missing ({}), WAL {} – {}: recovery from a backup before it stops at {}",
        units::count(hole.segments, "segment", "segments"),
        hole.start_lsn,
        hole.end_lsn,
        hole.start_lsn
    )
}

fn marks(h: &mut String, p: &Page, groups: &[MarkGroup], kind: &str, y: f64) {
    let tz = p.timezone;
    for g in groups {
        let mut lines: Vec<String> = g
            .items
            .iter()
            .map(|it| {
                let mut s = format!(
                    "{kind} {}: {} → {}, size {}, stored {}",
                    it.label,
                    when(it.start, tz),
                    it.stop.format("%H:%M:%S UTC"),
                    units::bytes(it.size),
                    units::bytes(it.stored)
                );
                if it.pinned {
                    s.push_str(", pinned");
                }
                match it.keep {
                    Some(true) => s.push_str(", kept by retention"),
                    Some(false) => s.push_str(", the next expire deletes it"),
                    None => {}
                }
                s
            })
            .collect();
        if g.labels.len() > g.items.len() {
            lines.push(format!("and {} more", g.labels.len() - g.items.len()));
        }
        let class = if g.pinned {
            format!("mark {kind} pinned")
        } else {
            format!("mark {kind}")
        };
        let xx = x(g.x);
        let w = if g.labels.len() > 1 { 4.0 } else { 3.0 };
        let _ = write!(
            h,
            "<g class=\"{class}\" data-count=\"{}\" data-labels=\"{}\"><title>{}</title>\
             <rect x=\"{:.1}\" y=\"{:.0}\" width=\"{w}\" height=\"20\"/>",
            g.labels.len(),
            esc(&g.labels.join(" ")),
            esc(&lines.join("\n")),
            xx - w / 2.0,
            y
        );
        if g.pinned {
            let _ = write!(
                h,
                "<circle class=\"pin\" cx=\"{xx:.1}\" cy=\"{:.0}\" r=\"3\"/>",
                y - 1.0
            );
        }
        h.push_str("</g>");
    }
}

fn drill_text(d: &DrillItem, tz: Tz) -> String {
    let mut s = format!(
        "drill {} {}: {}, {} from {}",
        d.drill,
        match d.verdict {
            DrillVerdict::Passed => "passed",
            DrillVerdict::Failed => "FAILED",
        },
        when(d.started_at, tz),
        d.target,
        d.backup.as_deref().unwrap_or(&d.from)
    );
    if let Some(r) = d.rto_seconds {
        let _ = write!(s, ", RTO {}", secs(r));
    }
    if let Some(r) = d.rpo_seconds {
        let _ = write!(s, ", RPO {}", secs(r));
    }
    if let Some(f) = &d.failure {
        let _ = write!(s, "; failed in {f}");
    }
    s
}

fn verdict_str(v: DrillVerdict) -> &'static str {
    match v {
        DrillVerdict::Passed => "passed",
        DrillVerdict::Failed => "failed",
    }
}

fn drill_marks(h: &mut String, p: &Page, groups: &[DrillGroup], cy: f64) {
    for g in groups {
        let mut lines: Vec<String> = g.items.iter().map(|d| drill_text(d, p.timezone)).collect();
        if g.count > g.items.len() {
            lines.push(format!("and {} more drills", g.count - g.items.len()));
        }
        let labels: Vec<&str> = g.items.iter().map(|d| d.label.as_str()).collect();
        let _ = write!(
            h,
            "<g class=\"mark drill\" data-drill-verdict=\"{}\" data-count=\"{}\" \
             data-labels=\"{}\"><title>{}</title><circle cx=\"{:.1}\" cy=\"{cy:.0}\" r=\"6\"/></g>",
            verdict_str(g.verdict),
            g.count,
            esc(&labels.join(" ")),
            esc(&lines.join("\n")),
            x(g.x)
        );
    }
}

fn table(h: &mut String, p: &Page) {
    let tz = p.timezone;
    h.push_str(
        "<section id=\"retention\"><h2>Backups and dumps, and what keeps each</h2>\
         <table class=\"items\"><thead><tr><th>kind</th><th>label</th><th>started</th>\
         <th>timeline / databases</th><th>size</th><th>stored</th><th>retention</th></tr></thead><tbody>\n",
    );
    for r in &p.rows {
        let it = &r.item;
        let (class, decision) = match it.keep {
            Some(true) => ("keep", "keep"),
            Some(false) => ("delete", "delete"),
            None => ("unknown", "—"),
        };
        let pin = if it.pinned { " pinned" } else { "" };
        let _ = writeln!(
            h,
            "<tr class=\"{} {class}{pin}\" data-kind=\"{}\" data-label=\"{}\"><td>{}</td><td>{}{}</td>\
             <td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"decision\">{decision}: {}</td></tr>",
            r.kind,
            r.kind,
            esc(&it.label),
            r.kind,
            esc(&it.label),
            if it.pinned { " (pinned)" } else { "" },
            esc(&when(it.start, tz)),
            esc(&r.detail),
            esc(&units::bytes(it.size)),
            esc(&units::bytes(it.stored)),
            esc(r
                .why
                .as_deref()
                .unwrap_or("no retention plan (see warnings)"))
        );
    }
    if p.rows.is_empty() {
        h.push_str("<tr><td colspan=\"7\">No complete backup or dump.</td></tr>");
    }
    h.push_str("</tbody></table></section>\n");
}

fn drills(h: &mut String, p: &Page) {
    let tz = p.timezone;
    let _ = write!(
        h,
        "<section id=\"drills\"><h2>Restore drills, last {} days</h2>",
        p.days
    );
    if p.drills.is_empty() {
        h.push_str("<p>No drill ran in this period.</p></section>\n");
        return;
    }
    chart(
        h,
        p,
        &p.rto,
        "RTO (restore until the server accepts connections)",
    );
    chart(h, p, &p.rpo, "RPO (drill start − last recovered commit)");
    h.push_str(
        "<table class=\"drills\"><thead><tr><th>drill</th><th>started</th><th>verdict</th>\
         <th>restored</th><th>RTO</th><th>RPO</th><th>failure</th></tr></thead><tbody>\n",
    );
    // Bounded by what `render` reads (`MAX_DRILL_REPORTS`).
    for d in &p.drills {
        let v = verdict_str(d.verdict);
        let limit = |l: Option<std::time::Duration>| {
            l.map(|l| format!(" (max {})", secs(l.as_secs_f64())))
                .unwrap_or_default()
        };
        let _ = writeln!(
            h,
            "<tr class=\"drill\" data-drill-verdict=\"{v}\" data-label=\"{}\"><td>{}</td><td>{}</td>\
             <td class=\"{v}\">{v}</td><td>{} {}</td><td class=\"num\">{}{}</td>\
             <td class=\"num\">{}{}</td><td>{}</td></tr>",
            esc(&d.label),
            esc(&d.drill),
            esc(&when(d.started_at, tz)),
            esc(&d.target),
            esc(d.backup.as_deref().unwrap_or(&d.from)),
            d.rto_seconds.map(secs).unwrap_or_default(),
            limit(d.limits.max_rto),
            d.rpo_seconds.map(secs).unwrap_or_default(),
            limit(d.limits.max_rpo),
            esc(d.failure.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</tbody></table></section>\n");
}

fn chart(h: &mut String, p: &Page, c: &Chart, title: &str) {
    let _ = write!(h, "<h3>{}</h3>", esc(title));
    let top = 14.0;
    let bottom = CHART_H - 6.0;
    let y = |v: f64| bottom - (v / c.y_max).clamp(0.0, 1.0) * (bottom - top);
    svg_open(h, CHART_H, title);
    ticks(h, p, CHART_H - 6.0);
    for f in [0.0, 0.5, 1.0] {
        let v = c.y_max * f / 1.15;
        let yy = y(v);
        let _ = write!(
            h,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.0}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\"/>\
             <text x=\"2\" y=\"{:.1}\">{}</text>",
            LEFT + WIDTH,
            yy + 4.0,
            esc(&secs(v))
        );
    }
    for (drill, v) in &c.limits {
        let yy = y(*v);
        let _ = write!(
            h,
            "<line class=\"limit\" data-metric=\"{}\" data-drill=\"{}\" x1=\"{LEFT}\" x2=\"{:.0}\" \
             y1=\"{yy:.1}\" y2=\"{yy:.1}\"><title>max_{} of {}: {}</title></line>\
             <text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\">max_{} {}: {}</text>",
            c.metric,
            esc(drill),
            LEFT + WIDTH,
            c.metric,
            esc(drill),
            esc(&secs(*v)),
            LEFT + WIDTH - 4.0,
            yy - 3.0,
            c.metric,
            esc(drill),
            esc(&secs(*v))
        );
    }
    for (px, v, verdict, label, drill) in &c.points {
        let _ = write!(
            h,
            "<circle class=\"point {}\" data-drill-verdict=\"{}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\">\
             <title>{} {}: {} {}</title></circle>",
            c.metric,
            verdict_str(*verdict),
            x(*px),
            y(*v),
            esc(drill),
            esc(label),
            c.metric.to_uppercase(),
            esc(&secs(*v))
        );
    }
    h.push_str("</svg>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn times_show_utc_and_the_zone() {
        let t = DateTime::parse_from_rfc3339("2026-12-02T05:48:39Z")
            .unwrap()
            .to_utc();
        assert_eq!(when(t, Tz::UTC), "2026-12-02 05:48:39 UTC");
        assert_eq!(
            when(t, chrono_tz::Europe::Berlin),
            "2026-12-02 05:48:39 UTC (2026-12-02 06:48:39 CET)"
        );
    }
}
