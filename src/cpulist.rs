//! CPU lists in the kernel's text form (`0-5,8`), as used by sysfs and `cpuset.cpus`.
//!
//! Parsing accepts what the kernel accepts (ranges, singles, whitespace around commas, an
//! empty list); printing always gives the canonical form, sorted numerically and with runs
//! collapsed. ChromeOS sorts CPU ids as strings (`10,11,4,5`); we never do.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// Largest CPU id accepted. The kernel's NR_CPUS tops out at 8192; anything beyond is a typo
/// and would otherwise let `0-4000000000` allocate without bound.
pub const MAX_CPU: u32 = 8191;

#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CpuList(BTreeSet<u32>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CPU list {input:?}: {reason}")]
pub struct CpuListError {
    pub input: String,
    pub reason: String,
}

impl CpuList {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn contains(&self, cpu: u32) -> bool {
        self.0.contains(&cpu)
    }

    pub fn insert(&mut self, cpu: u32) {
        self.0.insert(cpu);
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }

    pub fn intersection(&self, other: &CpuList) -> CpuList {
        CpuList(self.0.intersection(&other.0).copied().collect())
    }

    pub fn difference(&self, other: &CpuList) -> CpuList {
        CpuList(self.0.difference(&other.0).copied().collect())
    }

    pub fn is_subset(&self, other: &CpuList) -> bool {
        self.0.is_subset(&other.0)
    }
}

impl FromIterator<u32> for CpuList {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        CpuList(iter.into_iter().collect())
    }
}

impl FromStr for CpuList {
    type Err = CpuListError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| CpuListError {
            input: input.to_string(),
            reason,
        };
        let mut set = BTreeSet::new();
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Ok(CpuList(set));
        }
        for part in trimmed.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(err("empty element between commas".into()));
            }
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (parse_cpu(a.trim()), parse_cpu(b.trim())),
                None => (parse_cpu(part), parse_cpu(part)),
            };
            let (lo, hi) = match (lo, hi) {
                (Ok(lo), Ok(hi)) => (lo, hi),
                (Err(e), _) | (_, Err(e)) => return Err(err(e)),
            };
            if lo > hi {
                return Err(err(format!("range {part:?} runs backwards")));
            }
            set.extend(lo..=hi);
        }
        Ok(CpuList(set))
    }
}

fn parse_cpu(s: &str) -> Result<u32, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a CPU number"));
    }
    match s.parse::<u32>() {
        Ok(n) if n <= MAX_CPU => Ok(n),
        _ => Err(format!("CPU {s} is above the kernel's limit of {MAX_CPU}")),
    }
}

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut iter = self.0.iter().copied().peekable();
        while let Some(start) = iter.next() {
            let mut end = start;
            while iter.peek() == Some(&(end + 1)) {
                end += 1;
                iter.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CpuList({self})")
    }
}

impl serde::Serialize for CpuList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &str) -> CpuList {
        s.parse().unwrap()
    }

    #[test]
    fn prints_numerically_sorted_runs_not_string_sorted() {
        let l: CpuList = [10, 11, 4, 5, 6, 7, 8, 9, 12, 13].into_iter().collect();
        assert_eq!(l.to_string(), "4-13");
        assert_eq!(list("10,11,4,5").to_string(), "4-5,10-11");
    }

    #[test]
    fn parses_kernel_forms() {
        assert_eq!(
            list("0-5,8").iter().collect::<Vec<_>>(),
            [0, 1, 2, 3, 4, 5, 8]
        );
        assert_eq!(list("3").to_string(), "3");
        assert_eq!(list(" 0 - 1 , 3\n").to_string(), "0-1,3");
        assert!(list("\n").is_empty());
        assert_eq!(list("0-3,6").to_string(), "0-3,6");
        assert_eq!(list("2,1,1,0").to_string(), "0-2");
    }

    #[test]
    fn rejects_garbage_with_reason() {
        for bad in ["a", "1-", "-1", "3-1", "0,,1", "1.5", "0-99999", "+1"] {
            let e = bad.parse::<CpuList>().unwrap_err();
            assert_eq!(e.input, bad);
            assert!(!e.reason.is_empty());
        }
    }

    #[test]
    fn round_trips_many_sets() {
        // Deterministic pseudo-random sets: print then parse gives the same set.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..500 {
            let mut set = CpuList::new();
            for _ in 0..(x % 40) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                set.insert((x % 70) as u32);
            }
            let printed = set.to_string();
            assert_eq!(printed.parse::<CpuList>().unwrap(), set, "{printed}");
        }
    }

    #[test]
    fn set_operations() {
        let all = list("0-7");
        assert_eq!(all.difference(&list("3,7")).to_string(), "0-2,4-6");
        assert_eq!(all.intersection(&list("6-9")).to_string(), "6-7");
        assert!(list("1-2").is_subset(&all));
    }
}
