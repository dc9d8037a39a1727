//! "Did you mean" for misspelt names.

/// The candidate closest to `name`, if any is close enough to be a likely typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lowered = name.to_lowercase();
    candidates
        .into_iter()
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
}
