//! `podroute lab --report FILE.html`: the lab's report as one self-contained
//! page (inline CSS and SVG, no script, nothing fetched): per run a timeline
//! of probes sent and lost with its phases, the phase table with the DF
//! check, and the loss of every pod pair; with `--compare` both runs side by
//! side. Every number is also in the JSON output; each carries a `data-key`
//! naming where, so a test can read them back from the rendered page.

use std::fmt::Write;

use super::report::{LabReport, MtuCheck, PairReport, PhaseReport, RunReport};

const CHART_WIDTH: f64 = 640.0;
const CHART_HEIGHT: f64 = 150.0;

pub fn render(report: &LabReport) -> String {
    let run = &report.run;
    let mut runs = vec![(run.rollout, run)];
    if let Some(naive) = &report.naive {
        runs.push((naive.rollout, naive));
    }
    let title = format!(
        "podroute lab: {} → {} on {} nodes ({}, {} subnet{})",
        run.from,
        run.to,
        run.nodes,
        run.ip_family,
        run.subnets,
        if run.subnets == 1 { "" } else { "s" }
    );
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n\
         <p class=\"why\">{why}</p>\n",
        title = escape(&title),
        why = escape(&report.modes_chosen),
    );
    if report.naive.is_some() {
        html.push_str("<p class=\"summary\">");
        for (i, (name, run)) in runs.iter().enumerate() {
            if i > 0 {
                html.push_str("; ");
            }
            let _ = write!(
                html,
                "{name} lost <b>{}</b> of {} probes",
                run.lost, run.sent
            );
        }
        html.push_str("</p>\n");
    }
    let _ = writeln!(html, "<div class=\"runs runs-{}\">", runs.len());
    for (name, run) in &runs {
        render_run(&mut html, name, run);
    }
    html.push_str("</div>\n</body>\n</html>\n");
    html
}

fn render_run(html: &mut String, name: &str, run: &RunReport) {
    let _ = write!(
        html,
        "<section class=\"run\">\n<h2>{name} rollout</h2>\n<p class=\"totals\">sent \
         <b data-key=\"{name}.sent\">{}</b>, lost <b data-key=\"{name}.lost\" class=\"{}\">{}</b> \
         ({})</p>\n",
        run.sent,
        if run.lost == 0 { "ok" } else { "bad" },
        run.lost,
        percent(run.lost, run.sent)
    );
    html.push_str("<h3>Probes over time</h3>\n");
    timeline(html, run);
    html.push_str("<h3>Phases</h3>\n");
    phases(html, name, run);
    html.push_str("<h3>Loss by pod pair</h3>\n");
    for family in ["ipv4", "ipv6"] {
        let pairs: Vec<&PairReport> = run.pairs.iter().filter(|p| p.family == family).collect();
        if !pairs.is_empty() {
            matrix(html, name, family, &pairs);
        }
    }
    html.push_str("</section>\n");
}

/// Bars of probes sent (grey) and lost (red) per time bucket, on the same
/// scale, over bands that mark the phases.
fn timeline(html: &mut String, run: &RunReport) {
    let t = &run.timeline;
    let buckets = t.sent.len().max(1) as f64;
    let peak = t.sent.iter().copied().max().unwrap_or(0).max(1) as f64;
    let bar = CHART_WIDTH / buckets;
    let top = 18.0;
    let plot = CHART_HEIGHT - top - 14.0;
    let _ = writeln!(
        html,
        "<svg class=\"timeline\" viewBox=\"0 0 {CHART_WIDTH} {CHART_HEIGHT}\" role=\"img\" \
         aria-label=\"probes sent and lost over time\">"
    );
    let bucket_ms = t.bucket_ms.max(1) as f64;
    for (i, phase) in run.phases.iter().enumerate() {
        let x = phase.start_ms as f64 / bucket_ms * bar;
        let w = (phase.duration_ms as f64 / bucket_ms * bar).max(1.0);
        let _ = writeln!(
            html,
            "<rect class=\"band band-{}\" x=\"{x:.1}\" y=\"0\" width=\"{w:.1}\" height=\"{CHART_HEIGHT}\"/>\
             <text class=\"phase\" x=\"{:.1}\" y=\"12\">{}</text>",
            i % 2,
            x + 3.0,
            escape(&phase.name)
        );
    }
    for (i, (&sent, &lost)) in t.sent.iter().zip(&t.lost).enumerate() {
        let x = i as f64 * bar;
        let h = sent as f64 / peak * plot;
        let l = lost as f64 / peak * plot;
        let base = top + plot;
        let _ = write!(
            html,
            "<rect class=\"sent\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\"/>",
            base - h,
            (bar - 0.5).max(0.5)
        );
        if lost > 0 {
            let _ = write!(
                html,
                "<rect class=\"lost\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"/>",
                base - l.max(2.0),
                (bar - 0.5).max(0.5),
                l.max(2.0)
            );
        }
    }
    let seconds = buckets * bucket_ms / 1000.0;
    let _ = write!(
        html,
        "\n<text class=\"axis\" x=\"0\" y=\"{}\">0 s</text><text class=\"axis end\" x=\"{CHART_WIDTH}\" \
         y=\"{}\">{seconds:.1} s</text>\n</svg>\n<p class=\"legend\"><span class=\"key sent\"></span>sent \
         <span class=\"key lost\"></span>lost, per {} ms</p>\n",
        CHART_HEIGHT - 2.0,
        CHART_HEIGHT - 2.0,
        t.bucket_ms
    );
}

fn phases(html: &mut String, name: &str, run: &RunReport) {
    html.push_str(
        "<table class=\"phases\">\n<tr><th>phase</th><th>gen</th><th>time</th><th>sent</th>\
         <th>lost</th><th>DF at pod MTU</th></tr>\n",
    );
    for (i, p) in run.phases.iter().enumerate() {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{:.1} s</td><td data-key=\"{name}.phase.{i}.sent\">{}</td>\
             <td data-key=\"{name}.phase.{i}.lost\" class=\"{}\">{}</td><td>{}</td></tr>",
            escape(&p.name),
            p.generation,
            p.duration_ms as f64 / 1000.0,
            p.sent,
            if p.lost == 0 { "ok" } else { "bad" },
            p.lost,
            df_checks(p)
        );
    }
    html.push_str("</table>\n");
}

/// The DF check of a phase: one per family the lab has.
fn df_checks(phase: &PhaseReport) -> String {
    let f = &phase.families;
    let checks: Vec<String> = [("v4", &f.ipv4), ("v6", &f.ipv6)]
        .into_iter()
        .filter_map(|(label, family)| Some((label, family.as_ref()?.mtu_check?)))
        .map(|(label, c): (&str, MtuCheck)| {
            let class = if c.ok == c.total { "ok" } else { "bad" };
            format!(
                "<span class=\"{class}\">{label} {} {}/{}</span>",
                c.mtu, c.ok, c.total
            )
        })
        .collect();
    if checks.is_empty() {
        "–".into()
    } else {
        checks.join(" ")
    }
}

/// From (rows) to (columns): lost of sent, shaded by the share lost.
fn matrix(html: &mut String, name: &str, family: &str, pairs: &[&PairReport]) {
    let mut pods: Vec<&str> = pairs.iter().flat_map(|p| [&*p.from, &*p.to]).collect();
    pods.sort_unstable();
    pods.dedup();
    let _ = write!(
        html,
        "<table class=\"matrix\"><caption>{family}: lost / sent, from (row) to (column)</caption>\n<tr><th></th>"
    );
    for to in &pods {
        let _ = write!(html, "<th>{}</th>", escape(to));
    }
    html.push_str("</tr>\n");
    for from in &pods {
        let _ = write!(html, "<tr><th>{}</th>", escape(from));
        for to in &pods {
            match pairs.iter().find(|p| p.from == *from && p.to == *to) {
                None => html.push_str("<td class=\"self\"></td>"),
                Some(p) => {
                    let share = if p.sent == 0 {
                        0.0
                    } else {
                        p.lost as f64 / p.sent as f64
                    };
                    let style = if p.lost == 0 {
                        String::new()
                    } else {
                        format!(
                            " style=\"background: rgba(220, 38, 38, {:.2})\"",
                            0.2 + 0.8 * share
                        )
                    };
                    let key = format!("{name}.pair.{family}.{}.{}", escape(from), escape(to));
                    let _ = write!(
                        html,
                        "<td class=\"{}\"{style}><span data-key=\"{key}.lost\">{}</span> / \
                         <span data-key=\"{key}.sent\">{}</span></td>",
                        if p.lost == 0 { "ok" } else { "bad" },
                        p.lost,
                        p.sent
                    );
                }
            }
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n");
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "0%".into();
    }
    format!("{:.2}%", part as f64 * 100.0 / whole as f64)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "
body { font: 14px/1.4 system-ui, sans-serif; color: #1e293b; margin: 24px; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 0 0 4px; text-transform: capitalize; }
h3 { font-size: 14px; margin: 16px 0 6px; color: #475569; }
.why, .legend { color: #64748b; margin: 0 0 12px; }
.summary { font-size: 15px; }
.runs { display: grid; gap: 24px; }
.runs-2 { grid-template-columns: 1fr 1fr; }
.run { border: 1px solid #e2e8f0; border-radius: 8px; padding: 16px; }
.ok { color: #15803d; }
.bad { color: #b91c1c; font-weight: 600; }
svg.timeline { width: 100%; height: auto; background: #f8fafc; }
.band-0 { fill: #eef2ff; } .band-1 { fill: #f1f5f9; }
.phase { font-size: 10px; fill: #475569; }
.axis { font-size: 9px; fill: #64748b; } .axis.end { text-anchor: end; }
rect.sent { fill: #94a3b8; } rect.lost { fill: #dc2626; }
.key { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 8px; }
.key.sent { background: #94a3b8; } .key.lost { background: #dc2626; }
table { border-collapse: collapse; margin-bottom: 8px; }
th, td { border: 1px solid #e2e8f0; padding: 3px 8px; text-align: right; }
th { background: #f8fafc; }
.matrix td.ok { background: #dcfce7; }
.matrix td.self { background: #e2e8f0; }
.matrix td.bad { color: #450a0a; }
caption { text-align: left; color: #475569; padding-bottom: 4px; }
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Mode;
    use crate::lab::report::{Families, FamilyReport, Timeline};

    fn run(rollout: &'static str, lost: u64) -> RunReport {
        let family = FamilyReport {
            sent: 600,
            lost,
            mtu_check: Some(MtuCheck {
                mtu: 1430,
                ok: 6,
                total: 6,
            }),
        };
        let families = Families {
            ipv4: Some(family),
            ipv6: None,
        };
        RunReport {
            rollout,
            from: Mode::Vxlan,
            to: Mode::Native,
            nodes: 3,
            subnets: 1,
            ip_family: "ipv4",
            sent: 600,
            lost,
            families,
            phases: vec![PhaseReport {
                name: "steady <vxlan>".into(),
                generation: 1,
                start_ms: 0,
                duration_ms: 1000,
                sent: 600,
                lost,
                mtu_check: family.mtu_check,
                families,
            }],
            pairs: vec![PairReport {
                from: "node-1".into(),
                to: "node-2".into(),
                family: "ipv4",
                sent: 100,
                lost,
            }],
            timeline: Timeline {
                bucket_ms: 100,
                sent: vec![60; 10],
                lost: vec![lost / 10; 10],
            },
        }
    }

    fn report(naive: Option<RunReport>) -> LabReport {
        LabReport {
            modes_chosen: "this kernel has no ipip: vxlan".into(),
            run: run("seamless", 0),
            naive,
            kept_namespaces: Vec::new(),
        }
    }

    #[test]
    fn every_number_carries_its_key() {
        let html = render(&report(Some(run("naive", 40))));
        for (key, value) in [
            ("seamless.sent", 600),
            ("seamless.lost", 0),
            ("naive.lost", 40),
            ("naive.phase.0.lost", 40),
            ("naive.pair.ipv4.node-1.node-2.lost", 40),
            ("naive.pair.ipv4.node-1.node-2.sent", 100),
        ] {
            let needle = format!("data-key=\"{key}\"");
            let at = html
                .find(&needle)
                .unwrap_or_else(|| panic!("{key} in\n{html}"));
            let text = &html[at..];
            let value_at = text.find('>').expect("tag end") + 1;
            let end = text[value_at..].find('<').expect("text end");
            assert_eq!(&text[value_at..value_at + end], value.to_string(), "{key}");
        }
        assert!(html.contains("class=\"runs runs-2\""));
        assert!(
            html.contains("class=\"lost\""),
            "the naive run's losses are drawn"
        );
    }

    #[test]
    fn the_page_fetches_nothing_and_escapes_names() {
        let html = render(&report(None));
        for fetch in ["http:", "https:", "src=", "href=", "@import", "url("] {
            assert!(!html.contains(fetch), "{fetch} in the page");
        }
        assert!(html.contains("steady &lt;vxlan&gt;"));
        assert!(!html.contains("<vxlan>"));
        assert!(!html.contains("naive"), "no second run without --compare");
    }
}
