//! "Did you mean" for misspelt names.

/// The candidate closest to `name`, if any is close enough to be a likely typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lowered = name.to_lowercase();
    let length = lowered.chars().count();
    candidates
        .into_iter()
        .filter(|candidate| comparable(length, candidate.chars().count()))
        .map(|candidate| {
            let score = strsim::jaro_winkler(&lowered, &candidate.to_lowercase());
            let distance = strsim::damerau_levenshtein(&lowered, &candidate.to_lowercase());
            (candidate, score, distance)
        })
        .filter(|&(candidate, score, distance)| {
            score >= 0.85 || distance <= 2.min(candidate.len() / 3 + 1)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.2.cmp(&a.2)))
        .map(|(candidate, _, _)| candidate)
}

/// Whether names of these lengths (in characters) can be close at all; the measures cost the
/// product of the lengths, so a long name is not compared with short candidates. Apart from
/// that, one at least five times the other's length scores below 0.85 (Jaro is at most
/// (1/5 + 1 + 1) / 3, Winkler's prefix bonus adds at most 0.4 of the rest) and is more than 2
/// edits away when they differ by more than 2.
fn comparable(a: usize, b: usize) -> bool {
    let (short, long) = (a.min(b), a.max(b));
    long < 5 * short || long - short <= 2
}

/// A `help` text: "did you mean `x`?", or the list of valid names when none is close.
pub fn help_for(name: &str, candidates: &[&str], what: &str) -> String {
    match closest(name, candidates.iter().copied()) {
        Some(best) => format!("did you mean `{best}`?"),
        None if candidates.is_empty() => format!("this object has no {what}s"),
        None => {
            let list: Vec<String> = candidates.iter().map(|c| format!("`{c}`")).collect();
            format!("valid {what}s: {}", list.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_typos_and_ignores_strangers() {
        let fields = ["mem", "vcpu", "hypervisor", "volumes", "forwardPorts"];
        assert_eq!(closest("memm", fields), Some("mem"));
        assert_eq!(closest("hypervsior", fields), Some("hypervisor"));
        assert_eq!(closest("forwardports", fields), Some("forwardPorts"));
        assert_eq!(closest("volume", fields), Some("volumes"));
        assert_eq!(closest("completelyDifferent", fields), None);
        assert_eq!(
            closest("qemu-kvm", ["qemu", "crosvm", "firecracker"]),
            Some("qemu")
        );
    }

    /// A name far longer than every candidate is not compared with them: the measures would
    /// cost the product of the lengths (a 20 MB string took minutes and gigabytes).
    #[test]
    fn long_names_are_not_compared() {
        for (a, b) in [(1, 3), (2, 4), (4, 19), (10, 49), (49, 10)] {
            assert!(comparable(a, b), "{a} and {b}");
        }
        for (a, b) in [(0, 3), (4, 20), (10, 50), (50, 10), (1_000_000, 12)] {
            assert!(!comparable(a, b), "{a} and {b}");
        }
        // At the bound, nothing that is compared could have scored.
        let long = "q".repeat(50);
        assert_eq!(closest(&long, ["qqqqqqqqqq"]), None);
    }
}
