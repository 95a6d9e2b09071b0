//! resourced's process and thread states (`SetProcessState`, `SetThreadState`) as cgqos's
//! process groups and thread classes: the whole of the ChromeOS API's meaning, pure.

use crate::rules::ClassDef;
use crate::sched;

/// `ProcessState`: 0 Normal, 1 Background, as the process group each one puts a process in
/// (an alias the layout table resolves).
pub const PROCESS_GROUPS: [&str; 2] = ["foreground", "background"];

/// `ThreadState` 0..=7, as the thread class of the same name.
pub const THREAD_CLASSES: [&str; 8] = [
    "urgent-bursty",
    "urgent",
    "balanced",
    "eco",
    "utility",
    "background",
    "urgent-bursty-server",
    "urgent-bursty-client",
];

/// The process group of a `ProcessState`; `None` for a value resourced does not define.
pub fn process_group(state: u8) -> Option<&'static str> {
    PROCESS_GROUPS.get(usize::from(state)).copied()
}

/// The thread class of a `ThreadState`; `None` for a value resourced does not define.
pub fn thread_class(state: u8) -> Option<&'static str> {
    THREAD_CLASSES.get(usize::from(state)).copied()
}

/// resourced never gives a thread of a background process a real-time policy: whether
/// `class` would (a `rules.d` class may opt in to SCHED_FIFO or SCHED_RR).
pub fn real_time(class: &ClassDef) -> bool {
    matches!(
        class.attrs.policy,
        Some(sched::SCHED_FIFO | sched::SCHED_RR)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Target;
    use crate::rules::Classes;

    #[test]
    fn every_thread_state_is_a_shipped_class_of_its_name() {
        let classes = Classes::default();
        for (state, name) in THREAD_CLASSES.iter().enumerate() {
            let c = classes.get(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(c.name, *name, "state {state}");
        }
        let urgent = |s: u8| {
            classes
                .get(thread_class(s).unwrap())
                .unwrap()
                .cgroup_class
                .layout_class()
        };
        // UrgentBursty, Urgent and the two IPC ends: the urgent cgroup class (all CPUs).
        for s in [0, 1, 6, 7] {
            assert_eq!(urgent(s), Some(crate::layout::URGENT), "state {s}");
        }
        assert_eq!(urgent(2), None);
        for s in [3, 4, 5] {
            assert_eq!(urgent(s), Some(crate::layout::NON_URGENT), "state {s}");
        }
        let nice = |n: &str| classes.get(n).unwrap().attrs.nice;
        assert_eq!(nice("urgent-bursty-server"), Some(-12), "resourced's nice");
        assert_eq!(nice("urgent-bursty-client"), Some(-10));
        assert!(
            !THREAD_CLASSES
                .iter()
                .any(|n| real_time(classes.get(n).unwrap()))
        );
    }

    #[test]
    fn states_resourced_does_not_define_are_none() {
        assert_eq!(thread_class(8), None);
        assert_eq!(thread_class(255), None);
        assert_eq!(process_group(2), None);
    }

    #[test]
    fn process_states_are_the_browser_groups() {
        let path = |s: u8| Target::parse(process_group(s).unwrap()).unwrap().path();
        assert_eq!(path(0), "chrome/foreground");
        assert_eq!(path(1), "chrome/background");
    }
}
