//! "Did you mean": the closest of some known names to what was typed. Pure string work,
//! below everything that names things (layout, board, rules).

/// The candidate closest to `input`, if it is close enough to be what was meant: at most
/// one edit per three characters (one for two-letter words, none for one letter), or `input`
/// a prefix of it.
pub fn closest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let input_l = input.to_ascii_lowercase();
    let len = input.chars().count();
    let budget = if len < 2 { 0 } else { (len / 3).max(1) };
    candidates
        .into_iter()
        .filter(|c| *c != input)
        .filter_map(|c| {
            let d = edit_distance(&input_l, &c.to_ascii_lowercase());
            let prefix = input.len() >= 3 && c.starts_with(input);
            (d <= budget || prefix).then_some((if prefix { 0 } else { d }, c))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// ` (did you mean "x"?)` for the closest candidate, or nothing.
pub fn suggest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(input, candidates)
        .map(|c| format!(" (did you mean {c:?}?)"))
        .unwrap_or_default()
}

/// Edit distance over characters (insertions, deletions, substitutions and swaps of two
/// neighbours, the usual typing slips). Inputs are names typed on a command line: short, so
/// the quadratic table is fine; longer inputs are not compared at all.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len() > 256 || b.len() > 256 {
        return usize::MAX;
    }
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}
