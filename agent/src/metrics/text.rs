//! The Prometheus text format (0.0.4) from prometheus-client's OpenMetrics output.
//!
//! prometheus-client only writes OpenMetrics, where a counter's `# TYPE` names the family
//! (`berth_x`) while its sample is `berth_x_total`; Prometheus' text parser (and `promtool
//! check metrics`) then sees a sample with no help and no type. Rewriting the few lines that
//! differ is all it takes, so it is done here rather than through a second metrics crate.

/// Rewrites OpenMetrics text into the text format: counter families named with `_total`,
/// info families as `_info` gauges, no `# UNIT` and no `# EOF`.
pub fn from_openmetrics(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    // A `# HELP` line waits for its `# TYPE` line, which says how to name both.
    let mut help: Option<(&str, &str)> = None;
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(&mut out, help.take(), None);
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "unknown" => (name.to_string(), "untyped"),
                k => (name.to_string(), k),
            };
            flush_help(&mut out, help.take(), Some(&name));
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        flush_help(&mut out, help.take(), None);
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    flush_help(&mut out, help, None);
    out
}

fn flush_help(out: &mut String, help: Option<(&str, &str)>, renamed: Option<&str>) {
    if let Some((name, text)) = help {
        out.push_str(&format!("# HELP {} {text}\n", renamed.unwrap_or(name)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_info_take_their_sample_names() {
        let om = "# HELP berth_passes Passes run.\n# TYPE berth_passes counter\nberth_passes_total 3\n\
                  # HELP berth_build Build.\n# TYPE berth_build info\nberth_build_info{version=\"1\"} 1\n\
                  # HELP berth_up Up.\n# TYPE berth_up gauge\nberth_up 1\n\
                  # HELP berth_t_seconds T.\n# TYPE berth_t_seconds histogram\n# UNIT berth_t_seconds seconds\n\
                  berth_t_seconds_sum 1.0\nberth_t_seconds_count 1\nberth_t_seconds_bucket{le=\"+Inf\"} 1\n# EOF\n";
        assert_eq!(
            from_openmetrics(om),
            "# HELP berth_passes_total Passes run.\n# TYPE berth_passes_total counter\nberth_passes_total 3\n\
             # HELP berth_build_info Build.\n# TYPE berth_build_info gauge\nberth_build_info{version=\"1\"} 1\n\
             # HELP berth_up Up.\n# TYPE berth_up gauge\nberth_up 1\n\
             # HELP berth_t_seconds T.\n# TYPE berth_t_seconds histogram\n\
             berth_t_seconds_sum 1.0\nberth_t_seconds_count 1\nberth_t_seconds_bucket{le=\"+Inf\"} 1\n"
        );
    }
}
