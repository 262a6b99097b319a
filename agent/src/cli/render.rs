//! Plain-text tables and plan diffs for the read commands (their `--json` twins print the
//! same data as JSON).

use crate::status::{ContainerStatus, EventRecord, PlanView, SourceStatus};

/// Columns padded to their widest cell, two spaces apart, as `docker ps` prints them.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        for (i, c) in cells.iter().enumerate() {
            out.push_str(c);
            if i < last {
                out.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

pub fn status_table(statuses: &[ContainerStatus]) -> String {
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .map(|s| {
            let status = match (&s.health, s.status.as_str()) {
                (Some(h), st) => format!("{st} ({h})"),
                (None, st) => st.to_string(),
            };
            let note = match (&s.error, &s.reason) {
                (Some(e), _) => first_line(e),
                (None, Some(r)) => r.clone(),
                (None, None) => String::new(),
            };
            vec![
                s.name.clone(),
                status,
                s.desired.clone(),
                s.image.clone(),
                {
                    // Both addresses of a dual-stack container, IPv4 first.
                    let ip = [s.ip.as_deref(), s.ip6.as_deref()]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(" ");
                    match &s.network_of {
                        // A sidecar: the address is its container's, in that container's netns.
                        Some(of) if ip.is_empty() => format!("- ({of}'s netns)"),
                        Some(of) => format!("{ip} ({of}'s netns)"),
                        None => ip,
                    }
                },
                s.ports.join(","),
                s.restarts.to_string(),
                note,
            ]
        })
        .collect();
    table(
        &[
            "NAME", "STATUS", "DESIRED", "IMAGE", "IP", "PORTS", "RESTARTS", "NOTE",
        ],
        &rows,
    )
}

/// The lines `berth status` prints above its table when specs come from a repository.
pub fn source_header(s: &SourceStatus) -> String {
    let mut out = format!("source: {}", remote_of(s));
    match &s.state.applied {
        Some(a) => {
            out += &format!(" @ {} {:?}", a.commit.short(), a.subject);
            if let Some(sig) = &a.signer {
                out += &format!(" signed by {}", sig.principal);
            }
        }
        None => out += " (nothing applied yet)",
    }
    if let Some(r) = &s.state.rollout {
        let side = if r.included {
            "in"
        } else {
            "out, on its from commit"
        };
        out += &format!("; rollout {} at {}: {side}", r.id, r.percent);
    }
    out.push('\n');
    if let Some(t) = &s.state.refused.first()
        && s.state.tip.as_ref() == Some(&t.tip)
    {
        out += &format!(
            "source refused {}: {}: commit {} {}\n",
            t.tip.short(),
            t.reason,
            t.commit.short(),
            t.detail
        );
    }
    if let Some(e) = &s.state.last_error {
        out += &format!("source error: {}\n", first_line(e));
    }
    for w in &s.warnings {
        out += &format!("source warning: {w}\n");
    }
    out
}

fn remote_of(s: &SourceStatus) -> String {
    let path = if s.path.is_empty() {
        String::new()
    } else {
        format!(":{}", s.path)
    };
    match &s.remote {
        Some(r) => format!("{r} {}{path}", s.branch),
        None => format!("bundles of {}{path}", s.branch),
    }
}

/// `berth source`.
pub fn source_details(s: &SourceStatus) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out += &format!("{k:<10}{v}\n");
    line("remote:", remote_of(s));
    let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    line(
        "host:",
        format!(
            "{}{}",
            s.host_id.as_deref().unwrap_or("(no host id)"),
            if labels.is_empty() {
                String::new()
            } else {
                format!(" ({})", labels.join(", "))
            }
        ),
    );
    match &s.state.applied {
        Some(a) => {
            let signer = a
                .signer
                .as_ref()
                .map(|g| format!(", signed by {} ({})", g.principal, g.fingerprint))
                .unwrap_or_else(|| ", not signature-checked".into());
            line(
                "applied:",
                format!(
                    "{} {:?} by {}{signer}, at {}",
                    a.commit, a.subject, a.author, a.applied_at
                ),
            );
        }
        None => line("applied:", "nothing yet".into()),
    }
    let opt = |c: &Option<crate::reconcile::fleet::CommitId>| {
        c.as_ref().map_or("-".to_string(), |c| c.to_string())
    };
    line("verified:", opt(&s.state.verified));
    line("tip:", opt(&s.state.tip));
    if let Some(r) = &s.state.rollout {
        let bucket = r
            .bucket
            .map_or("no bucket".to_string(), |b| format!("bucket {b}"));
        let side = if r.included { "in" } else { "out" };
        line(
            "rollout:",
            format!(
                "{} at {}, from {}: {bucket}, {side}, applies {}",
                r.id, r.percent, r.from, r.applies
            ),
        );
    }
    line(
        "fetched:",
        format!(
            "{} (last success: {})",
            s.state.last_fetch.as_deref().unwrap_or("never"),
            s.state.last_success.as_deref().unwrap_or("never")
        ),
    );
    if let Some(e) = &s.state.last_error {
        line(
            "error:",
            format!("{e} ({} failed fetches in a row)", s.state.fetch_failures),
        );
    }
    for w in &s.warnings {
        line("warning:", w.clone());
    }
    if !s.state.refused.is_empty() {
        line("refused:", String::new());
        for r in &s.state.refused {
            out += &format!(
                "  {} {} ({}): {}: commit {} {}\n",
                r.time,
                r.tip.short(),
                r.via,
                r.reason,
                r.commit.short(),
                r.detail
            );
        }
    }
    out
}

fn first_line(s: &str) -> String {
    let mut lines = s.lines();
    let first = lines.next().unwrap_or_default().to_string();
    match lines.count() {
        0 => first,
        n => format!("{first} (+{n} more)"),
    }
}

/// `+` creates, `-` removes, `~` changes; waiting containers are listed after.
pub fn plan_diff(plan: &PlanView) -> String {
    let mut out = String::new();
    for p in &plan.in_progress {
        let what = p.container.as_deref().or(p.image.as_deref()).unwrap_or("");
        out.push_str(&format!("* {} {what} (in progress)\n", p.action));
    }
    if plan.actions.is_empty() && plan.in_progress.is_empty() {
        out.push_str("nothing to do\n");
    }
    for a in &plan.actions {
        let mark = match a.action.as_str() {
            "create" | "pull" => '+',
            "remove" => '-',
            _ => '~',
        };
        out.push_str(&format!("{mark} {}\n", a.description));
    }
    for w in &plan.waiting {
        out.push_str(&format!("  {}: {}\n", w.container, w.reason));
    }
    out
}

pub fn event_line(e: &EventRecord) -> String {
    match &e.container {
        Some(c) => format!("{}  {c}  {}  {}", e.time, e.kind, e.message),
        None => format!("{}  -  {}  {}", e.time, e.kind, e.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{InProgressView, PlannedAction, WaitingView};

    #[test]
    fn table_aligns() {
        let t = table(
            &["A", "BB"],
            &[
                vec!["xyz".into(), "1".into()],
                vec!["q".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A    BB\nxyz  1\nq    22\n");
    }

    #[test]
    fn plan_marks() {
        let p = PlanView {
            actions: vec![
                PlannedAction {
                    action: "create".into(),
                    container: Some("a".into()),
                    description: "create a".into(),
                },
                PlannedAction {
                    action: "remove".into(),
                    container: Some("b".into()),
                    description: "remove b".into(),
                },
                PlannedAction {
                    action: "pause".into(),
                    container: Some("c".into()),
                    description: "pause c".into(),
                },
            ],
            waiting: vec![WaitingView {
                container: "d".into(),
                reason: "waiting".into(),
            }],
            in_progress: vec![],
        };
        assert_eq!(
            plan_diff(&p),
            "+ create a\n- remove b\n~ pause c\n  d: waiting\n"
        );
        assert_eq!(
            plan_diff(&PlanView {
                actions: vec![],
                waiting: vec![],
                in_progress: vec![],
            }),
            "nothing to do\n"
        );
        assert_eq!(
            plan_diff(&PlanView {
                actions: vec![],
                waiting: vec![],
                in_progress: vec![InProgressView {
                    action: "remove".into(),
                    container: Some("e".into()),
                    image: None,
                }],
            }),
            "* remove e (in progress)\n"
        );
    }
}
