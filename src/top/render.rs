//! Rows as text: the `--once` table and the screens of the live view. Pure: a sample and a
//! view in, lines out. Every name shown (comms, cgroup names, rule names) passes through
//! [`clean`], so a task cannot write escape sequences to the terminal of whoever watches.

use std::collections::{BTreeSet, HashMap};

use super::model::{GroupRow, Sample, TaskRow, parent};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Cpu,
    Pressure,
    Threads,
    Name,
}

impl SortKey {
    pub fn name(self) -> &'static str {
        match self {
            SortKey::Cpu => "cpu",
            SortKey::Pressure => "pressure",
            SortKey::Threads => "threads",
            SortKey::Name => "name",
        }
    }

    pub fn next(self) -> SortKey {
        match self {
            SortKey::Cpu => SortKey::Pressure,
            SortKey::Pressure => SortKey::Threads,
            SortKey::Threads => SortKey::Name,
            SortKey::Name => SortKey::Cpu,
        }
    }
}

/// What the live view shows: sort order, expanded groups (by path), the selected row.
#[derive(Debug, Clone)]
pub struct View {
    pub sort: SortKey,
    pub expanded: BTreeSet<String>,
    pub selected: usize,
}

impl Default for View {
    fn default() -> Self {
        View {
            sort: SortKey::Cpu,
            expanded: BTreeSet::new(),
            selected: 0,
        }
    }
}

pub const HELP: &str = "q quit  c/p/t/n sort by cpu/pressure/threads/name (s: next)  \
up/down (k/j) select  Enter/e or 1-9 expand  +/- interval";

/// Printable text only: control characters (C0, DEL, C1: escape sequences) and the
/// bidirectional overrides (which reorder what follows them) become `?`.
pub fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control()
                || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
            {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// The first `width` characters.
fn fit(s: &str, width: usize) -> String {
    s.chars().take(width).collect()
}

/// Group rows in display order: the tree kept, siblings sorted by the key (busiest first;
/// by name for `Name` and for ties).
pub fn order(rows: &[GroupRow], sort: SortKey) -> Vec<usize> {
    let index: HashMap<&str, usize> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (r.path.as_str(), i))
        .collect();
    let mut children: HashMap<Option<usize>, Vec<usize>> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        let up = parent(&r.path).and_then(|p| index.get(p).copied());
        children.entry(up).or_default().push(i);
    }
    let key = |i: usize| -> f64 {
        let r = &rows[i];
        match sort {
            SortKey::Cpu => r.cpu_percent.unwrap_or(-1.0),
            SortKey::Pressure => r.pressure_some_avg10.unwrap_or(-1.0),
            SortKey::Threads => r.threads as f64,
            SortKey::Name => 0.0,
        }
    };
    for list in children.values_mut() {
        list.sort_by(|&a, &b| {
            key(b)
                .total_cmp(&key(a))
                .then_with(|| rows[a].path.cmp(&rows[b].path))
        });
    }
    let mut out = Vec::with_capacity(rows.len());
    let mut stack: Vec<usize> = children.get(&None).cloned().unwrap_or_default();
    stack.reverse();
    while let Some(i) = stack.pop() {
        out.push(i);
        if let Some(kids) = children.get(&Some(i)) {
            stack.extend(kids.iter().rev());
        }
    }
    out
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.digits$}"))
}

fn name_of(r: &GroupRow) -> String {
    let last = r.path.rsplit('/').next().unwrap_or("");
    let name = if r.path.is_empty() { "." } else { last };
    let more = if r.outside { "/*" } else { "" };
    format!(
        "{:indent$}{}{more}",
        "",
        clean(name),
        indent = r.depth.min(8) * 2
    )
}

fn busiest(t: Option<&TaskRow>) -> String {
    match t {
        Some(t) if t.cpu_percent > 0.0 => format!(
            "{}[{}] {:.1}% {}",
            clean(&t.comm),
            t.tid,
            t.cpu_percent,
            t.placed_by
                .as_deref()
                .map_or("(not placed by cgqos)".to_string(), |b| format!(
                    "by {}",
                    clean(b)
                ))
        ),
        _ => String::new(),
    }
}

const COLUMNS: &str =
    "GROUP                          PROCS THREADS   CPU%  PSI10 CPUS       UCLAMP BUSIEST TASK";

fn group_line(r: &GroupRow) -> String {
    format!(
        "{:<30} {:>5} {:>7} {:>6} {:>6} {:<10} {:>6} {}",
        fit(&name_of(r), 30),
        r.processes,
        r.threads,
        opt(r.cpu_percent, 1),
        opt(r.pressure_some_avg10, 2),
        fit(&clean(r.cpus_effective.as_deref().unwrap_or("-")), 10),
        opt(r.uclamp_min_effective, 1),
        busiest(r.tasks.first())
    )
}

fn task_line(t: &TaskRow) -> String {
    format!(
        "      {:>7} {:>7} {:<16} {:>5.1}% {:<28} {}",
        t.tid,
        t.pid,
        fit(&clean(&t.comm), 16),
        t.cpu_percent,
        fit(
            &clean(if t.cgroup.is_empty() { "." } else { &t.cgroup }),
            28
        ),
        t.placed_by.as_deref().map_or("-".to_string(), clean)
    )
}

fn header(s: &Sample) -> String {
    format!(
        "cgqos top  root {}  {} CPUs  interval {:.2} s",
        clean(&s.root),
        s.cpus,
        s.interval_ms as f64 / 1000.0
    )
}

/// One sample as a table, for `--once` and pipes: every group, then the busiest tasks of
/// each group that used CPU.
pub fn once(s: &Sample) -> String {
    let mut out = format!("{}\n{COLUMNS}\n", header(s));
    for &i in &order(&s.groups, SortKey::Name) {
        out.push_str(group_line(&s.groups[i]).trim_end());
        out.push('\n');
    }
    out.push_str("\nTASKS       TID     PID COMM               CPU% CGROUP                       PLACED BY\n");
    let mut seen = BTreeSet::new();
    let mut tasks: Vec<&TaskRow> = s
        .groups
        .iter()
        .flat_map(|g| g.tasks.iter())
        .filter(|t| seen.insert(t.tid))
        .collect();
    tasks.sort_by(|a, b| {
        b.cpu_percent
            .total_cmp(&a.cpu_percent)
            .then(a.tid.cmp(&b.tid))
    });
    for t in tasks {
        out.push_str(task_line(t).trim_end());
        out.push('\n');
    }
    for w in &s.warnings {
        out.push_str(&format!("warning: {}\n", clean(w)));
    }
    out
}

/// A screen of the live view: lines of at most `width` characters, at most `height` lines,
/// and which line is the selected group (to highlight). `view.selected` is clamped.
pub fn screen(
    s: Option<&Sample>,
    view: &mut View,
    status: &str,
    width: usize,
    height: usize,
) -> (Vec<String>, Option<usize>) {
    let mut lines = vec![
        match s {
            Some(s) => format!("{}  sorted by {}", header(s), view.sort.name()),
            None => "cgqos top  sampling...".to_string(),
        },
        HELP.to_string(),
        format!("#  {COLUMNS}"),
    ];
    let mut selected_line = None;
    if let Some(s) = s {
        let ord = order(&s.groups, view.sort);
        view.selected = view.selected.min(ord.len().saturating_sub(1));
        for (n, &i) in ord.iter().enumerate() {
            let r = &s.groups[i];
            let num = if n < 9 {
                (n + 1).to_string()
            } else {
                " ".into()
            };
            if n == view.selected {
                selected_line = Some(lines.len());
            }
            lines.push(format!("{num:<2} {}", group_line(r)));
            if view.expanded.contains(&r.path) {
                lines.push(format!(
                    "         {:>7} {:>7} {:<16} {:>6} {:<28} PLACED BY",
                    "TID", "PID", "COMM", "CPU", "CGROUP"
                ));
                // Leave a line for each group row still to come.
                let later = ord.len() - n - 1;
                let room = height.saturating_sub(lines.len() + 1 + later).max(3);
                for t in r.tasks.iter().take(room) {
                    lines.push(format!("   {}", task_line(t)));
                }
                if r.tasks.len() > room {
                    lines.push(format!("         ... {} more", r.tasks.len() - room));
                }
            }
        }
        for w in &s.warnings {
            lines.push(format!("warning: {}", clean(w)));
        }
    }
    if !status.is_empty() {
        lines.push(clean(status));
    }
    // Keep the selected row on screen when the list is longer than the terminal.
    let height = height.max(4);
    if lines.len() > height {
        if let Some(sel) = selected_line.filter(|&l| l >= height) {
            // Drop just enough rows under the header for the selection to be the last line.
            let skip = sel + 1 - height;
            lines.drain(3..3 + skip);
            selected_line = Some(sel - skip);
        }
        lines.truncate(height);
    }
    (
        lines.into_iter().map(|l| fit(&l, width)).collect(),
        selected_line,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &str, cpu: Option<f64>, threads: usize) -> GroupRow {
        GroupRow {
            path: path.into(),
            depth: if path.is_empty() {
                0
            } else {
                path.split('/').count()
            },
            kind: "threaded".into(),
            group: None,
            class: None,
            outside: false,
            processes: 1,
            threads,
            cpu_percent: cpu,
            pressure_some_avg10: None,
            cpus_effective: None,
            uclamp_min: None,
            uclamp_min_effective: None,
            tasks: vec![],
        }
    }

    fn paths(rows: &[GroupRow], sort: SortKey) -> Vec<&str> {
        order(rows, sort)
            .into_iter()
            .map(|i| rows[i].path.as_str())
            .collect()
    }

    #[test]
    fn sorting_keeps_the_tree() {
        let rows = vec![
            row("", Some(90.0), 9),
            row("chrome", Some(80.0), 5),
            row("chrome/ui", Some(10.0), 4),
            row("chrome/background", Some(70.0), 1),
            row("vms", Some(85.0), 1),
        ];
        assert_eq!(
            paths(&rows, SortKey::Cpu),
            ["", "vms", "chrome", "chrome/background", "chrome/ui"]
        );
        assert_eq!(
            paths(&rows, SortKey::Threads),
            ["", "chrome", "chrome/ui", "chrome/background", "vms"]
        );
        assert_eq!(
            paths(&rows, SortKey::Name),
            ["", "chrome", "chrome/background", "chrome/ui", "vms"]
        );
    }

    #[test]
    fn names_cannot_carry_escape_sequences() {
        assert_eq!(clean("a\x1b[2Jb\u{9b}c\u{202e}d\n"), "a?[2Jb?c?d?");
        let mut r = row("chrome/\x1b]0;pwned\x07", Some(1.0), 1);
        r.tasks.push(TaskRow {
            tid: 5,
            pid: 5,
            comm: "\x1b[31mred".into(),
            cgroup: "x\ry".into(),
            cpu_percent: 1.0,
            placed_by: Some("rule \x1b[H".into()),
        });
        let s = Sample {
            root: "/r\x1b".into(),
            interval_ms: 1000,
            cpus: 4,
            groups: vec![r],
            warnings: vec!["w\x1b".into()],
        };
        let text = once(&s);
        assert!(!text.contains('\x1b') && !text.contains('\r') && !text.contains('\x07'));
        let mut v = View::default();
        v.expanded.insert(s.groups[0].path.clone());
        let (lines, _) = screen(Some(&s), &mut v, "", 200, 50);
        assert!(lines.iter().all(|l| !l.contains('\x1b')), "{lines:?}");
    }

    #[test]
    fn the_screen_fits_and_follows_the_selection() {
        let mut rows = vec![row("", Some(1.0), 1)];
        for i in 0..40 {
            rows.push(row(&format!("vms/vm{i:02}"), Some(1.0), 1));
        }
        rows.insert(1, row("vms", Some(1.0), 1));
        let s = Sample {
            root: "/r".into(),
            interval_ms: 1000,
            cpus: 4,
            groups: rows,
            warnings: vec![],
        };
        let mut v = View {
            sort: SortKey::Name,
            selected: 30,
            ..Default::default()
        };
        let (lines, sel) = screen(Some(&s), &mut v, "", 40, 20);
        assert_eq!(lines.len(), 20);
        assert!(lines.iter().all(|l| l.chars().count() <= 40));
        let sel = sel.unwrap();
        assert!(sel < 20 && lines[sel].contains("vm28"), "{lines:?}");
        v.selected = 1000;
        screen(Some(&s), &mut v, "", 40, 20);
        assert_eq!(v.selected, 41);
    }

    #[test]
    fn an_expanded_group_leaves_room_for_the_rows_after_it() {
        let mut root = row("", Some(1.0), 100);
        root.tasks = (1..=100)
            .map(|tid| TaskRow {
                tid,
                pid: tid,
                comm: format!("t{tid}"),
                cgroup: String::new(),
                cpu_percent: 0.0,
                placed_by: None,
            })
            .collect();
        let s = Sample {
            root: "/r".into(),
            interval_ms: 1000,
            cpus: 1,
            groups: vec![root, row("chrome", None, 0), row("vms", None, 0)],
            warnings: vec![],
        };
        let mut v = View::default();
        v.expanded.insert(String::new());
        let (lines, _) = screen(Some(&s), &mut v, "", 100, 20);
        assert_eq!(lines.len(), 20);
        assert!(
            lines[18].contains("chrome") && lines[19].contains("vms"),
            "{lines:#?}"
        );
        assert!(lines[17].contains("more"), "{lines:#?}");
    }
}
